// Runs the examples of the user documentation (docs/*.md) against a running NexusFlow and
// checks their output against what the pages show. See README.md beside this file for the
// block syntax and the matching rule; run-docs.sh starts the suite and calls this.
//
//   node tests/docs/run-docs.mjs [PAGE...]    # PAGE: quickstart or docs/quickstart.md
//
// Environment: NEXUSFLOW_DOCS_ORIGIN (the suite's http://127.0.0.1:PORT, required),
// NEXUSFLOW_ADMIN_KEY (required: each page gets a fresh, credited account and key),
// NEXUSFLOW_DOCS_BLOCK_TIMEOUT_MS (60000).

import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { catalogIds, modelIds, outputMatches, runnableBlocks } from './blocks.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
// NEXUSFLOW_DOCS_DIR: another folder of pages (run-docs.sh checks a broken one with it).
const DOCS = path.resolve(ROOT, process.env.NEXUSFLOW_DOCS_DIR || 'docs');
const DOCS_LABEL = path.relative(ROOT, DOCS);
// JavaScript blocks are written here, so `import OpenAI from 'openai'` resolves from
// tests/e2e/node_modules.
const JS_DIR = path.join(ROOT, 'tests/e2e/.docs-blocks');

// Every model a runnable block names must be in the catalog tools/run serves, except this
// one, which error examples use as the model that does not exist.
const CATALOG = catalogIds(readFileSync(path.join(ROOT, 'deploy/local/nexusflow.yaml'), 'utf8'));
const UNKNOWN_MODEL = 'no-such-model';

// What a page writes, and what the runner puts in its place.
const PAGE_ORIGIN = 'http://localhost:8080';

const ORIGIN = required('NEXUSFLOW_DOCS_ORIGIN').replace(/\/+$/, '');
const ADMIN_KEY = required('NEXUSFLOW_ADMIN_KEY');
const BLOCK_TIMEOUT_MS = Number(process.env.NEXUSFLOW_DOCS_BLOCK_TIMEOUT_MS || 60_000);
const RUN_ID = `${Date.now().toString(36)}-${process.pid}`;

function required(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`run-docs: ${name} is not set (start through tests/docs/run-docs.sh)`);
    process.exit(2);
  }
  return v;
}

// ---------------------------------------------------------------------------------------
// Accounts: a fresh credited account and key per page, through the admin API.

async function adminCall(method, urlPath, body) {
  const res = await fetch(`${ORIGIN}${urlPath}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${urlPath} → ${res.status} ${text}`);
  return JSON.parse(text);
}

async function pageAccount(pageName) {
  const account = await adminCall('POST', '/admin/v1/accounts', { name: `docs-${pageName}-${RUN_ID}` });
  await adminCall('POST', `/admin/v1/accounts/${account.id}/credits`,
                  { amount: '10.00', idempotency_key: `docs-${pageName}-${RUN_ID}`, note: 'docs examples' });
  const key = await adminCall('POST', '/admin/v1/keys', { account_id: account.id, name: `docs-${pageName}` });
  return { accountId: account.id, apiKey: key.key };
}

// ---------------------------------------------------------------------------------------
// Running one block.

function runProcess(command, args, env) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* already gone */ }
    }, BLOCK_TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

let jsCounter = 0;

async function runBlock(block, env) {
  const code = block.code.split(PAGE_ORIGIN).join(ORIGIN);
  if (block.kind === 'bash') return runProcess('bash', ['-euo', 'pipefail', '-c', code], env);
  mkdirSync(JS_DIR, { recursive: true });
  const file = path.join(JS_DIR, `block-${process.pid}-${++jsCounter}.mjs`);
  writeFileSync(file, code);
  try {
    return await runProcess(process.execPath, [file], env);
  } finally {
    rmSync(file, { force: true });
  }
}

function indent(text) {
  const t = text.replace(/\s+$/, '');
  return t ? t.split('\n').map((l) => `    ${l}`).join('\n') : '    (nothing)';
}

// ---------------------------------------------------------------------------------------

async function main() {
  const wanted = process.argv.slice(2).map((a) => path.basename(a).replace(/\.md$/, ''));
  const pages = readdirSync(DOCS).filter((f) => f.endsWith('.md')).sort()
    .filter((f) => wanted.length === 0 || wanted.includes(f.replace(/\.md$/, '')));
  if (wanted.length && pages.length !== wanted.length) {
    console.error(`run-docs: no such page among ${wanted.join(', ')}`);
    process.exit(2);
  }
  let total = 0;
  const failures = [];
  const started = Date.now();
  for (const file of pages) {
    const page = `${DOCS_LABEL}/${file}`;
    const { blocks, errors } = runnableBlocks(page, readFileSync(path.join(DOCS, file), 'utf8'));
    for (const b of blocks) {
      for (const id of modelIds(b.code)) {
        if (id !== UNKNOWN_MODEL && !CATALOG.has(id)) {
          errors.push(`${page}:${b.line}: model \`${id}\` is not in deploy/local/nexusflow.yaml`);
        }
      }
    }
    for (const e of errors) failures.push(e);
    for (const e of errors) console.log(`FAIL ${e}`);
    if (blocks.length === 0) {
      console.log(`${page}: no runnable blocks`);
      continue;
    }
    const { accountId, apiKey } = await pageAccount(file.replace(/\.md$/, ''));
    const env = {
      ...process.env,
      NEXUSFLOW_API_KEY: apiKey,
      NEXUSFLOW_ACCOUNT_ID: accountId,
      NEXUSFLOW_ADMIN_KEY: ADMIN_KEY,
      NEXUSFLOW_URL: ORIGIN,
    };
    const pageStarted = Date.now();
    let failed = 0;
    for (const block of blocks) {
      const where = `${page}:${block.line}`;
      const r = await runBlock(block, env);
      let why = '';
      if (r.timedOut) why = `timed out after ${BLOCK_TIMEOUT_MS} ms`;
      else if (r.code !== 0) why = `exited with ${r.signal ?? `status ${r.code}`}`;
      else if (block.expected && !outputMatches(block.expected.kind, block.expected.text, r.stdout)) {
        why = `output does not match the ${block.expected.kind} output block at line ${block.expected.line}`;
      }
      if (!why) continue;
      failed++;
      failures.push(`${where}: ${why}`);
      console.log(`FAIL ${where}: ${why}`);
      console.log(`  ${block.kind} block:\n${indent(block.code)}`);
      console.log(`  stdout:\n${indent(r.stdout)}`);
      if (r.stderr.trim()) console.log(`  stderr:\n${indent(r.stderr)}`);
      if (block.expected) console.log(`  expected (${block.expected.kind} output):\n${indent(block.expected.text)}`);
    }
    total += blocks.length;
    const secs = ((Date.now() - pageStarted) / 1000).toFixed(1);
    console.log(`${page}: ${blocks.length} blocks ran${failed ? `, ${failed} failed` : ''} (${secs} s)`);
  }
  rmSync(JS_DIR, { recursive: true, force: true });
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`docs: ${total} runnable blocks ran on ${pages.length} pages in ${secs} s; ` +
              `${failures.length ? `${failures.length} FAILED:` : 'all passed'}`);
  for (const f of failures) console.log(`  ${f}`);
  process.exit(failures.length ? 1 : 0);
}

await main();
