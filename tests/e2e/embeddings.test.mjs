// End-to-end: /v1/embeddings with the official OpenAI SDK (which asks for base64 by default
// and decodes it) on text-embedding-v4, served by the mock's OpenAI-compatible endpoint.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  BASE_URL, RUN_ID, openai, createAccountWithKey, accountMoney, usdToNano, eventually,
} from './lib.mjs';

const MODEL = 'text-embedding-v4';

describe('embeddings', () => {
  const client = openai();

  test('the SDK default (base64) and float give the same vectors', async () => {
    const input = `Your text string goes here ${RUN_ID}`;
    const viaDefault = await client.embeddings.create({ model: MODEL, input });
    const viaFloat = await client.embeddings.create({ model: MODEL, input, encoding_format: 'float' });
    assert.equal(viaDefault.object, 'list');
    assert.equal(viaDefault.model, MODEL);
    assert.equal(viaDefault.data.length, 1);
    const a = viaDefault.data[0].embedding;
    const b = viaFloat.data[0].embedding;
    assert.equal(a.length, 1024);
    // The same float32 vector: base64 carries its bytes, float its shortest decimals.
    assert.deepEqual(new Float32Array(a), new Float32Array(b));
    const norm = Math.sqrt(a.reduce((s, x) => s + x * x, 0));
    assert.ok(Math.abs(norm - 1) < 1e-3, `unit vector, norm ${norm}`);
    assert.ok(viaDefault.usage.prompt_tokens > 0);
    assert.equal(viaDefault.usage.total_tokens, viaDefault.usage.prompt_tokens);
  });

  test('a batch keeps its order; token arrays and dimensions', async () => {
    const res = await client.embeddings.create({ model: MODEL, input: ['alpha', 'beta', 'alpha'], dimensions: 64 });
    assert.deepEqual(res.data.map((d) => d.index), [0, 1, 2]);
    assert.equal(res.data[0].embedding.length, 64);
    assert.deepEqual(res.data[0].embedding, res.data[2].embedding);
    assert.notDeepEqual(res.data[0].embedding, res.data[1].embedding);
    const tokens = await client.embeddings.create({ model: MODEL, input: [[1, 2, 3], [4]], encoding_format: 'float' });
    assert.equal(tokens.usage.prompt_tokens, 4);
  });

  test('bad input is a 400 naming the parameter; a chat model is refused', async () => {
    for (const [body, param] of [
      [{ model: MODEL, input: '' }, 'input'],
      [{ model: MODEL, input: [] }, 'input'],
      [{ model: MODEL, input: ['ok', 3] }, 'input'],
      [{ model: MODEL, input: Array(2049).fill('x') }, 'input'],
      [{ model: MODEL, input: 'x', encoding_format: 'int8' }, 'encoding_format'],
      [{ model: MODEL, input: 'x', dimensions: 0 }, 'dimensions'],
    ]) {
      await assert.rejects(client.embeddings.create(body), (err) => {
        assert.equal(err.status, 400, JSON.stringify(body).slice(0, 80));
        assert.equal(err.param, param);
        return true;
      });
    }
    await assert.rejects(client.embeddings.create({ model: 'qwen3-max', input: 'x' }), (err) => err.status === 400);
    await assert.rejects(client.embeddings.create({ model: 'no-such-model', input: 'x' }), (err) => err.status === 404);
  });

  test('each request is billed per input token, exactly', async () => {
    const { account, key } = await createAccountWithKey({ name: 'e2e-embed', credit: '1.00' });
    const c = openai(key.key);
    const start = await accountMoney(account.id);
    const { data, response } = await c.embeddings.create({ model: MODEL, input: ['one two three', '你好'] }).withResponse();
    const requestId = response.headers.get('x-request-id');
    const usage = await eventually(
      () => fetch(`${BASE_URL}/usage?limit=5`, { headers: { Authorization: `Bearer ${key.key}` } }).then((r) => r.json()),
      (u) => u.data.some((r) => r.request_id === requestId));
    const rec = usage.data.find((r) => r.request_id === requestId);
    assert.equal(rec.model, MODEL);
    assert.equal(rec.input_tokens, data.usage.prompt_tokens);
    assert.equal(rec.output_tokens, 0);
    // 0.07 USD per million input tokens, rounded up once.
    const expected = (BigInt(data.usage.prompt_tokens) * 70_000_000n + 999_999n) / 1_000_000n;
    assert.equal(usdToNano(rec.cost), expected);
    const end = await eventually(() => accountMoney(account.id), (m) => m.balance < start.balance);
    assert.equal(start.balance - end.balance, expected);
  });
});
