// End-to-end: a key limited to some models is refused the others on every protocol's
// routes, token counting included.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ORIGIN, createAccountWithKey } from './lib.mjs';

async function post(path, headers, body) {
  const res = await fetch(`${ORIGIN}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

describe('model allow-list', () => {
  test('chat and token counting on a model the key may not use are 403 in each protocol', async () => {
    const { key } = await createAccountWithKey({ name: 'e2e-allow', credit: '1.00', models: ['qwen3-max'] });
    const anthropic = { 'x-api-key': key.key, 'anthropic-version': '2023-06-01' };
    const messages = [{ role: 'user', content: 'hi' }];

    let r = await post('/v1/messages/count_tokens', anthropic, { model: 'claude-sonnet-4-6', messages });
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal(r.body.type, 'error');
    assert.equal(r.body.error.type, 'permission_error');
    r = await post('/v1/messages/count_tokens', anthropic, { model: 'qwen3-max', messages });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(r.body.input_tokens > 0);

    r = await post('/v1/messages', anthropic, { model: 'claude-sonnet-4-6', max_tokens: 16, messages });
    assert.equal(r.status, 403, JSON.stringify(r.body));

    const gemini = { 'x-goog-api-key': key.key };
    const contents = [{ role: 'user', parts: [{ text: 'hi' }] }];
    r = await post('/v1beta/models/gemini-2.5-flash:countTokens', gemini, { contents });
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal(r.body.error.status, 'PERMISSION_DENIED');
    r = await post('/v1beta/models/qwen3-max:countTokens', gemini, { contents });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.ok(r.body.totalTokens > 0);
    r = await post('/v1beta/models/gemini-2.5-flash:generateContent', gemini, { contents });
    assert.equal(r.status, 403, JSON.stringify(r.body));
  });
});
