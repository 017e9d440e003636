// The documentation's blocks and the output-matching rule (README.md), apart from the
// runner so match.test.mjs can check them without a running suite.

// Languages whose blocks must say whether they run: `run` or `norun` after the language.
const CODE_LANGS = new Set(['bash', 'sh', 'shell', 'console', 'js', 'javascript', 'mjs', 'ts', 'python', 'py']);
const RUNNABLE = { bash: 'bash', sh: 'bash', js: 'js' };
const OUTPUT_LANGS = new Set(['text', 'json']);

// ---------------------------------------------------------------------------------------
// Markdown: fenced blocks with their info string and the line of their opening fence.

export function fencedBlocks(text) {
  const lines = text.split('\n');
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^( {0,3})(`{3,}|~{3,})\s*([^`]*?)\s*$/.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence, info] = open;
    const body = [];
    let j = i + 1;
    for (; j < lines.length; j++) {
      const close = /^ {0,3}(`{3,}|~{3,})\s*$/.exec(lines[j]);
      if (close && close[1][0] === fence[0] && close[1].length >= fence.length) break;
      // Content lines lose up to the opening fence's indentation.
      let line = lines[j];
      for (let k = 0; k < indent.length && line.startsWith(' '); k++) line = line.slice(1);
      body.push(line);
    }
    blocks.push({ line: i + 1, info, words: info.split(/\s+/).filter(Boolean), text: body.join('\n') });
    i = j;
  }
  return blocks;
}

// The page's runnable blocks, each with the output block that follows it (if any).
// Problems of form (an output block without a runnable block before it, a code block that
// says neither run nor norun) come back as errors.
export function runnableBlocks(page, text) {
  const out = [];
  const errors = [];
  let previous = null; // the runnable block just before, while no other block came between
  for (const b of fencedBlocks(text)) {
    const [lang = '', ...flags] = b.words;
    if (flags.includes('output') && OUTPUT_LANGS.has(lang)) {
      if (!previous) errors.push(`${page}:${b.line}: an output block must follow a runnable block`);
      else previous.expected = { kind: lang, text: b.text, line: b.line };
      previous = null;
      continue;
    }
    previous = null;
    if (flags.includes('run')) {
      if (!RUNNABLE[lang]) {
        errors.push(`${page}:${b.line}: \`${b.info}\`: only bash, sh and js blocks run`);
        continue;
      }
      previous = { page, line: b.line, kind: RUNNABLE[lang], code: b.text, expected: null };
      out.push(previous);
    } else if (CODE_LANGS.has(lang) && !flags.includes('norun')) {
      errors.push(`${page}:${b.line}: \`${b.info}\`: say \`${lang} run\` (the runner runs it) or \`${lang} norun\``);
    }
  }
  return { blocks: out, errors };
}

// ---------------------------------------------------------------------------------------
// Output matching (README.md): whitespace runs are equal, `...` matches any text.

// JSON text without the whitespace outside its string literals.
export function squeezeJson(text) {
  let out = '';
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === '\\' && i + 1 < text.length) out += text[++i];
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
      out += c;
    } else if (!/\s/.test(c)) {
      out += c;
    }
  }
  return out;
}

function normalise(kind, text) {
  return kind === 'json' ? squeezeJson(text.trim()) : text.trim().replace(/\s+/g, ' ');
}

function escapeRegex(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// True when `actual` (a block's stdout) matches the page's `expected` output.
export function outputMatches(kind, expected, actual) {
  // `...` absorbs the whitespace around it, so it may also stand for nothing.
  const pieces = normalise(kind, expected).split(/ ?\.\.\. ?/).map(escapeRegex);
  const re = new RegExp(`^${pieces.join('[\\s\\S]*?')}$`);
  return re.test(normalise(kind, actual));
}

// The model ids a block names: `model: "…"` / `"model": "…"` values and the `{id}` of
// `/models/{id}` paths (`/v1/models/x`, `/v1beta/models/x:generateContent`).
export function modelIds(code) {
  const ids = new Set();
  for (const m of code.matchAll(/["']?\bmodel["']?\s*:\s*["']([^"'\s]+)["']/g)) ids.add(m[1]);
  for (const m of code.matchAll(/\/models\/([A-Za-z0-9][A-Za-z0-9._-]*)/g)) ids.add(m[1]);
  return [...ids];
}

// The model ids of a catalog file (`routing.models[].id` of deploy/local/nexusflow.yaml).
export function catalogIds(yamlText) {
  return new Set([...yamlText.matchAll(/^\s*- id:\s*["']?([^"'\s#]+)/gm)].map((m) => m[1]));
}
