// End-to-end: every model of the catalog answers on each interface its
// `supported_protocols` lists — chat models on the chat protocols (openai, anthropic,
// gemini), embedding models on `openai:embeddings`, image models on
// `openai:image-generations` and the tasks API (`nexusflow:tasks`), video models on the
// tasks API — and the catalog holds every model the product documentation names.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { BASE_URL, RUN_ID, openai, anthropic, genai, createAccountWithKey } from './lib.mjs';

// The models the product documentation's examples use (CATALOG.md).
const DOCUMENTED = [
  'qwen3.5-plus', 'qwen3-max', 'qwen-turbo', 'qwen-max', 'deepseek-v4', 'deepseek-v4-flash',
  'claude-opus-4-7', 'claude-sonnet-4-6', 'claude-haiku-4-5', 'text-embedding-v4', 'wan2.6-t2i',
  'happyhorse-1.0-t2v',
];
const KNOWN = new Set(['openai', 'anthropic', 'gemini', 'openai:embeddings', 'openai:image-generations',
                       'nexusflow:tasks']);

async function post(path, apiKey, body) {
  const res = await fetch(`${BASE_URL}${path}`, {
    method: 'POST', headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

describe('catalog', () => {
  test('every model answers on every interface it lists', async () => {
    const { key } = await createAccountWithKey({ name: 'catalog', credit: '50.00' });
    const oa = openai(key.key);
    const an = anthropic(key.key);
    const gg = genai(key.key);
    const models = (await oa.models.list()).data;
    const ids = models.map((m) => m.id);
    for (const id of DOCUMENTED) assert.ok(ids.includes(id), `${id} is not in the catalog`);
    let calls = 0;
    for (const m of models) {
      assert.ok(m.supported_protocols.length > 0, `${m.id} lists no protocol`);
      for (const p of m.supported_protocols) {
        assert.ok(KNOWN.has(p), `${m.id}: unknown protocol name ${p}`);
        const what = `${m.id} on ${p}`;
        if (p === 'openai') {
          const r = await oa.chat.completions.create({ model: m.id, messages: [{ role: 'user', content: `hi ${RUN_ID}` }],
                                                      max_tokens: 16 });
          assert.ok(r.choices[0].message.content.length > 0, what);
        } else if (p === 'anthropic') {
          const r = await an.messages.create({ model: m.id, max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] });
          assert.ok(r.content.length > 0, what);
        } else if (p === 'gemini') {
          const r = await gg.models.generateContent({ model: m.id, contents: 'Hello!' });
          assert.ok(r.text.length > 0, what);
        } else if (p === 'openai:embeddings') {
          const r = await oa.embeddings.create({ model: m.id, input: 'Your text string goes here' });
          assert.ok(r.data[0].embedding.length > 0, what);
        } else if (p === 'openai:image-generations') {
          const r = await oa.images.generate({ model: m.id, prompt: `a fox ${RUN_ID} [mock:task-ms=200]`, size: '1024x1024', n: 1 });
          assert.match(r.data[0].url, /^http/, what);
        } else if (p === 'nexusflow:tasks') {
          const r = await post('/tasks', key.key, { model: m.id, prompt: `tasks ${RUN_ID} [mock:task-ms=60000]` });
          assert.equal(r.status, 202, `${what}: ${JSON.stringify(r.json)}`);
          const c = await post(`/tasks/${r.json.id}/cancel`, key.key, {});
          assert.equal(c.status, 200, what);
        }
        calls++;
      }
    }
    assert.ok(calls >= DOCUMENTED.length);
  });

  test('interfaces a model does not list refuse it', async () => {
    const client = openai();
    const byId = Object.fromEntries((await client.models.list()).data.map((m) => [m.id, m]));
    assert.deepEqual(byId['text-embedding-v4'].supported_protocols, ['openai:embeddings']);
    assert.deepEqual(byId['wan2.6-t2i'].supported_protocols, ['openai:image-generations', 'nexusflow:tasks']);
    assert.deepEqual(byId['happyhorse-1.0-t2v'].supported_protocols, ['nexusflow:tasks']);
    for (const id of ['text-embedding-v4', 'wan2.6-t2i', 'happyhorse-1.0-t2v']) {
      await assert.rejects(client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'x' }] }),
                           (err) => err.status === 400, id);
    }
  });
});
