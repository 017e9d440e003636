// The documentation runner's own rules: which blocks run, and when an output matches.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { catalogIds, modelIds, outputMatches, runnableBlocks } from './blocks.mjs';

const page = (s) => s.replace(/^\| ?/gm, '');

test('bash, sh and js blocks tagged run are found with their line and their output block', () => {
  const md = page(`| # Title
|
|\`\`\`bash run
|echo hi
|\`\`\`
|
|The answer:
|
|\`\`\`text output
|hi
|\`\`\`
|
|\`\`\`js run
|console.log(1)
|\`\`\`
|\`\`\`sh norun
|tools/run
|\`\`\`
|\`\`\`yaml
|a: 1
|\`\`\``);
  const { blocks, errors } = runnableBlocks('docs/x.md', md);
  assert.deepEqual(errors, []);
  assert.deepEqual(blocks.map((b) => [b.line, b.kind, b.code, b.expected?.text ?? null]),
                   [[3, 'bash', 'echo hi', 'hi'], [13, 'js', 'console.log(1)', null]]);
});

test('a code block that says neither run nor norun, and a stray output block, are errors', () => {
  const md = page(`|\`\`\`bash
|echo hi
|\`\`\`
|\`\`\`yaml
|a: 1
|\`\`\`
|\`\`\`text output
|hi
|\`\`\``);
  const { errors } = runnableBlocks('docs/x.md', md);
  assert.equal(errors.length, 2);
  assert.match(errors[0], /^docs\/x\.md:1: /);
  assert.match(errors[1], /^docs\/x\.md:7: an output block must follow/);
});

test('text: whitespace runs are equal, ... matches any text across lines, anything else is exact', () => {
  assert.ok(outputMatches('text', 'Hello   world\n', '  Hello\nworld'));
  assert.ok(outputMatches('text', 'id: ... done', 'id: chatcmpl-1\nmore lines\n done'));
  assert.ok(outputMatches('text', 'id: ... done', 'id: done'));
  assert.ok(outputMatches('text', '...', 'anything at all'));
  assert.ok(!outputMatches('text', 'model: qwen3-max', 'model: qwen3-plus'));
  assert.ok(!outputMatches('text', 'Hello world', 'Hello world and more'));
  assert.ok(!outputMatches('text', 'Hello world', 'Helloworld'));
  assert.ok(!outputMatches('text', 'a (b) [c] $d ... e', 'a (b) [c] $x e'));
});

test('json: whitespace outside strings is ignored, inside strings kept; a changed field fails', () => {
  const shown = `{
    "id": "chatcmpl-...",
    "object": "chat.completion",
    "model": "qwen3-max",
    "usage": {...}
  }`;
  const real = '{"id":"chatcmpl-8f2a","object":"chat.completion","model":"qwen3-max","usage":{"prompt_tokens":9}}';
  assert.ok(outputMatches('json', shown, real));
  assert.ok(!outputMatches('json', shown, real.replace('qwen3-max', 'qwen-max')));
  assert.ok(!outputMatches('json', shown, real.replace('"object"', '"kind"')));
  assert.ok(!outputMatches('json', shown, real.replace(',"model":"qwen3-max"', '')));
  assert.ok(!outputMatches('json', '{"text": "a b"}', '{"text":"ab"}'));
  assert.ok(outputMatches('json', '{"text": "a \\" b"}', '{ "text" : "a \\" b" }'));
});

test('the model ids a block names are found in SDK calls, JSON bodies and URL paths', () => {
  const code = `client.chat.completions.create({ model: "qwen3-max" });
    curl http://localhost:8080/v1beta/models/gemini-2.5-flash:generateContent -d '{"model": "x-1"}'
    curl http://localhost:8080/v1/models/deepseek-v4-flash`;
  assert.deepEqual(modelIds(code).sort(), ['deepseek-v4-flash', 'gemini-2.5-flash', 'qwen3-max', 'x-1']);
  assert.deepEqual([...catalogIds('routing:\n  models:\n    - id: qwen3-max\n      owned_by: a\n    - id: "wan2.6-t2i"\n')],
                   ['qwen3-max', 'wan2.6-t2i']);
});
