// End-to-end: native pass-through. When the caller speaks the upstream's protocol
// (claude-* on /v1/messages, served by an Anthropic-protocol upstream in the demo
// catalog), the caller's body goes upstream as it was written (only the model renamed,
// and here the name is the same) and the answer comes back as the upstream wrote it. The
// mock's answer is a function of the request (its ids too), so the answer relayed by the
// gateway must equal, byte for byte, the answer the mock gives to the same body asked
// directly.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ORIGIN, DEMO_KEY, eventually } from './lib.mjs';

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

// OpenAI to an OpenAI-compatible upstream: the caller's body goes as written (fields the
// gateway does not model, such as logprobs, reach the upstream and come back), the answer
// comes back as written. The mock's chat ids and timestamps are random, so they are
// masked before comparing; every other byte must match.
describe('native pass-through, OpenAI', { skip: !MOCK_PORT || !MOCK_KEY ? 'NEXUSFLOW_MOCK_PORT/API_KEY not set' : false }, () => {
  const mask = (text) =>
    text.replace(/chatcmpl-[0-9a-f]+/g, 'chatcmpl-X').replace(/"created":\d+/g, '"created":0');
  const request = (stream, extra = '') =>
    `{"model": "qwen3-max", "stream": ${stream}, "logprobs": true, "x_vendor": {"keep": [1, 2]},${extra}\n` +
    ` "messages": [{"role": "user", "content": "Tell me something [mock:words=9]"}]}`;
  const bearer = (key) => ({ authorization: `Bearer ${key}` });

  test('a whole answer is the upstream body, logprobs included', async () => {
    const body = request(false);
    const via = await post(`${ORIGIN}/v1/chat/completions`, bearer(DEMO_KEY), body);
    const direct = await post(`${MOCK}/v1/chat/completions`, bearer(MOCK_KEY), body);
    assert.equal(direct.status, 200, direct.text);
    assert.equal(via.status, 200, via.text);
    assert.equal(JSON.parse(via.text).choices[0].logprobs.content.length, 9);
    assert.equal(mask(via.text), mask(direct.text));
  });

  // Billing needs the upstream's usage, so the gateway asks for it (the chunks then carry
  // `"usage":null`, as OpenAI writes them when asked) and keeps the usage-only chunk.
  test('a stream that did not ask for usage gets none, and is still billed on the upstream usage', async () => {
    const via = await post(`${ORIGIN}/v1/chat/completions`, bearer(DEMO_KEY), request(true));
    const direct = await post(`${MOCK}/v1/chat/completions`, bearer(MOCK_KEY),
      request(true, ' "stream_options": {"include_usage": true},'));
    assert.equal(via.status, 200, via.text);
    assert.match(via.text, /"logprobs":\{"content":\[\{"token"/);
    assert.doesNotMatch(via.text, /"usage":\{/);
    const withoutUsageChunk = direct.text.split('\n\n').filter((f) => !f.includes('"usage":{')).join('\n\n');
    assert.equal(mask(via.text), mask(withoutUsageChunk));
    const requestId = via.headers.get('x-request-id');
    const usage = await eventually(
      () => fetch(`${ORIGIN}/v1/usage?limit=20`, { headers: bearer(DEMO_KEY) }).then((r) => r.json()),
      (u) => u.data.some((r) => r.request_id === requestId));
    const record = usage.data.find((r) => r.request_id === requestId);
    assert.ok(record, `usage record for ${requestId}`);
    // The mock's own count (the usage the upstream reported, not an estimate).
    const withUsage = await post(`${MOCK}/v1/chat/completions`, bearer(MOCK_KEY),
      request(true, ' "stream_options": {"include_usage": true},'));
    const reported = JSON.parse(withUsage.text.split('\n\n').filter((f) => f.includes('"usage":{'))[0].slice(6)).usage;
    assert.equal(record.output_tokens, reported.completion_tokens);
    assert.equal(record.input_tokens, reported.prompt_tokens);
  });

  test('a stream that asked for usage gets the upstream usage chunk', async () => {
    const body = request(true, ' "stream_options": {"include_usage": true},');
    const via = await post(`${ORIGIN}/v1/chat/completions`, bearer(DEMO_KEY), body);
    const direct = await post(`${MOCK}/v1/chat/completions`, bearer(MOCK_KEY), body);
    assert.equal(via.status, 200, via.text);
    assert.match(via.text, /"choices":\[\],"usage":\{"prompt_tokens"/);
    assert.equal(mask(via.text), mask(direct.text));
  });
});

// Built-in tools (Anthropic server tools, Google's googleSearch) and Anthropic Files API
// references have no translation: they reach an upstream of their own protocol as written,
// and a model served through another protocol refuses them with a 400 naming them.
describe('provider built-in tools', () => {
  const anthropicBody = (model) => JSON.stringify({
    model, max_tokens: 32,
    tools: [{ type: 'web_search_20250305', name: 'web_search', max_uses: 2 }],
    messages: [{ role: 'user', content: 'Search for something' }],
  });
  const geminiBody = JSON.stringify({
    contents: [{ role: 'user', parts: [{ text: 'Search for something' }] }],
    tools: [{ googleSearch: {} }],
  });

  test('an Anthropic server tool reaches an Anthropic upstream', async () => {
    const via = await post(`${ORIGIN}/v1/messages`, { 'x-api-key': DEMO_KEY }, anthropicBody('claude-sonnet-4-6'));
    assert.equal(via.status, 200, via.text);
    assert.equal(JSON.parse(via.text).type, 'message');
  });

  test('elsewhere it is a 400 that names it, in the caller\'s protocol', async () => {
    const via = await post(`${ORIGIN}/v1/messages`, { 'x-api-key': DEMO_KEY }, anthropicBody('qwen3-max'));
    assert.equal(via.status, 400, via.text);
    const body = JSON.parse(via.text);
    assert.equal(body.type, 'error');
    assert.equal(body.error.type, 'invalid_request_error');
    assert.match(body.error.message, /tools\[0\] \(web_search\) is a built-in tool of the anthropic protocol/);
  });

  test('a Gemini built-in tool reaches a Gemini upstream, and only there', async () => {
    const ok = await post(`${ORIGIN}/v1beta/models/gemini-2.5-flash:generateContent`, { 'x-goog-api-key': DEMO_KEY }, geminiBody);
    assert.equal(ok.status, 200, ok.text);
    assert.ok(JSON.parse(ok.text).candidates.length >= 1);
    const refused = await post(`${ORIGIN}/v1beta/models/claude-sonnet-4-6:generateContent`, { 'x-goog-api-key': DEMO_KEY }, geminiBody);
    assert.equal(refused.status, 400, refused.text);
    const err = JSON.parse(refused.text).error;
    assert.equal(err.status, 'INVALID_ARGUMENT');
    assert.match(err.message, /google_search/);
  });
});
