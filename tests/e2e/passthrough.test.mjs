// End-to-end: native pass-through. When the caller speaks the upstream's protocol
// (claude-* on /v1/messages, served by an Anthropic-protocol upstream in the demo
// catalog), the caller's body goes upstream as it was written (only the model renamed,
// and here the name is the same) and the answer comes back as the upstream wrote it. The
// mock's answer is a function of the request (its ids too), so the answer relayed by the
// gateway must equal, byte for byte, the answer the mock gives to the same body asked
// directly.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ORIGIN, DEMO_KEY } from './lib.mjs';

const MOCK_PORT = process.env.NEXUSFLOW_MOCK_PORT;
const MOCK_KEY = process.env.NEXUSFLOW_MOCK_API_KEY;
const MOCK = `http://127.0.0.1:${MOCK_PORT}`;

async function post(url, headers, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', ...headers },
    body,
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

describe('native pass-through', { skip: !MOCK_PORT || !MOCK_KEY ? 'NEXUSFLOW_MOCK_PORT/API_KEY not set' : false }, () => {
  // Fields the gateway does not interpret still reach the upstream (top_k, metadata);
  // key order and spacing are the caller's own.
  const request = (stream) =>
    `{"model": "claude-sonnet-4-6", "max_tokens": 64, "stream": ${stream},\n` +
    ` "top_k": 5, "metadata": {"user_id": "e2e"},\n` +
    ` "messages": [{"role": "user", "content": "Tell me something [mock:words=12]"}]}`;

  test('a streamed answer is the upstream SSE stream, byte for byte', async () => {
    const body = request(true);
    const via = await post(`${ORIGIN}/v1/messages`, { 'x-api-key': DEMO_KEY }, body);
    const direct = await post(`${MOCK}/v1/messages`, { 'x-api-key': MOCK_KEY }, body);
    assert.equal(direct.status, 200, `${direct.text} (key ${MOCK_KEY}, ${MOCK})`);
    assert.equal(via.status, 200, via.text);
    assert.match(via.headers.get('content-type') ?? '', /text\/event-stream/);
    assert.ok(via.headers.get('request-id'), 'request-id header');
    assert.match(direct.text, /event: message_start/);
    assert.equal(via.text, direct.text);
  });

  test('a whole answer is the upstream body, byte for byte', async () => {
    const body = request(false);
    const via = await post(`${ORIGIN}/v1/messages`, { 'x-api-key': DEMO_KEY }, body);
    const direct = await post(`${MOCK}/v1/messages`, { 'x-api-key': MOCK_KEY }, body);
    assert.equal(direct.status, 200, direct.text);
    assert.equal(via.status, 200, via.text);
    assert.equal(via.text, direct.text);
  });

  test('a model on an OpenAI-compatible upstream is translated instead', async () => {
    const body = request(false).replace('claude-sonnet-4-6', 'qwen3-max');
    const via = await post(`${ORIGIN}/v1/messages`, { 'x-api-key': DEMO_KEY }, body);
    assert.equal(via.status, 200, via.text);
    const message = JSON.parse(via.text);
    assert.equal(message.type, 'message');
    assert.equal(message.model, 'qwen3-max');
    assert.equal(message.content[0].type, 'text');
    assert.equal(message.content[0].text.split(' ').length, 12);
  });
});
