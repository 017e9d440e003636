// End-to-end: the official OpenAI Node SDK against a running NexusFlow (tools/run),
// whose upstream is the deterministic mock provider. Covers sync, SSE and the SDK's
// stream helper, forced tool calls, every error status of the OpenAI surface, exact
// billing against the admin API, the catalog and the metrics endpoint.

import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

import {
  BASE_URL, DEMO_KEY, DEMO_ACCOUNT, ORIGIN, METRICS_URL, RUN_ID,
  openai, admin, adminOk, createAccountWithKey, usdToNano, nanoToUsd, chatCostNano,
  accountMoney, eventually, assertUsage,
} from './lib.mjs';

const CHAT_MODELS = ['qwen3-max', 'qwen3.5-plus', 'deepseek-v4', 'claude-sonnet-4-6',
                     'claude-haiku-4-5', 'claude-opus-4-7'];
// Every model the product documentation names (CATALOG.md).
const SEED_MODELS = [...CHAT_MODELS, 'qwen-turbo', 'qwen-max', 'deepseek-v4-flash',
                     'text-embedding-v4', 'wan2.6-t2i', 'happyhorse-1.0-t2v'];

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather for a city',
    parameters: {
      type: 'object',
      properties: {
        city: { type: 'string', description: 'City name' },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
        days: { type: 'integer' },
      },
      required: ['city', 'unit'],
    },
  },
};
const FORCE_WEATHER = { type: 'function', function: { name: 'get_weather' } };

const client = openai();

// Reads a whole chat SSE stream made with the SDK and folds it into one summary.
async function collectStream(stream) {
  const out = { chunks: [], content: '', roles: [], finishReasons: [], usageChunks: [],
                ids: new Set(), toolCalls: new Map(), nonNullUsageOnChoiceChunks: 0 };
  for await (const chunk of stream) {
    out.chunks.push(chunk);
    assert.equal(chunk.object, 'chat.completion.chunk');
    out.ids.add(chunk.id);
    if (!chunk.choices || chunk.choices.length === 0) {
      out.usageChunks.push(chunk);
      continue;
    }
    if (chunk.usage) out.nonNullUsageOnChoiceChunks++;
    for (const choice of chunk.choices) {
      assert.equal(choice.index, 0);
      const delta = choice.delta ?? {};
      if (delta.role) out.roles.push(delta.role);
      if (typeof delta.content === 'string') out.content += delta.content;
      for (const frag of delta.tool_calls ?? []) {
        let call = out.toolCalls.get(frag.index);
        if (!call) {
          // The first fragment of a call carries its id, type and name.
          assert.ok(frag.id, `first tool-call fragment has no id: ${JSON.stringify(frag)}`);
          assert.equal(frag.type, 'function');
          assert.ok(frag.function?.name, 'first tool-call fragment has no function.name');
          call = { id: frag.id, name: frag.function.name, arguments: '' };
          out.toolCalls.set(frag.index, call);
        }
        call.arguments += frag.function?.arguments ?? '';
      }
      if (choice.finish_reason) out.finishReasons.push(choice.finish_reason);
    }
  }
  return out;
}

describe('chat completions', () => {
  const messages = [
    { role: 'system', content: 'You are a terse assistant.' },
    { role: 'user', content: `Name three rivers in Europe. (e2e ${RUN_ID})` },
  ];
  let sync; // the sync answer, compared against the streamed ones

  before(async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'qwen3-max', messages })
      .withResponse();
    sync = { data, response };
  });

  test('sync completion returns content, consistent usage and x-request-id', () => {
    const { data, response } = sync;
    assert.equal(response.status, 200);
    const requestId = response.headers.get('x-request-id');
    assert.ok(requestId && requestId.length >= 8, `x-request-id: ${requestId}`);
    // The demo key is on plan `default` (1000 requests per minute).
    assert.equal(response.headers.get('x-ratelimit-limit-requests'), '1000');
    const remaining = Number(response.headers.get('x-ratelimit-remaining-requests'));
    assert.ok(Number.isInteger(remaining) && remaining >= 0 && remaining < 1000,
              `x-ratelimit-remaining-requests: ${response.headers.get('x-ratelimit-remaining-requests')}`);
    assert.equal(data.object, 'chat.completion');
    assert.match(data.id, /^chatcmpl-/);
    assert.equal(data.model, 'qwen3-max');
    assert.ok(Number.isInteger(data.created) && data.created > 1_600_000_000);
    assert.equal(data.choices.length, 1);
    const [choice] = data.choices;
    assert.equal(choice.index, 0);
    assert.equal(choice.message.role, 'assistant');
    assert.equal(typeof choice.message.content, 'string');
    assert.ok(choice.message.content.trim().length > 0, 'empty content');
    assert.equal(choice.finish_reason, 'stop');
    assertUsage(data.usage, 'sync');
  });

  test('sync completion is deterministic for the same request', async () => {
    const again = await client.chat.completions.create({ model: 'qwen3-max', messages });
    assert.equal(again.choices[0].message.content, sync.data.choices[0].message.content);
    assert.deepEqual(
      [again.usage.prompt_tokens, again.usage.completion_tokens],
      [sync.data.usage.prompt_tokens, sync.data.usage.completion_tokens]);
    assert.notEqual(again.id, sync.data.id, 'two requests share a completion id');
  });

  test('streaming with include_usage matches the sync answer', async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'qwen3-max', messages, stream: true,
                stream_options: { include_usage: true } })
      .withResponse();
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.ok(response.headers.get('x-request-id'), 'stream has no x-request-id');
    const s = await collectStream(stream);

    assert.ok(s.chunks.length >= 3, `only ${s.chunks.length} chunks`);
    assert.equal(s.ids.size, 1, `chunk ids differ: ${[...s.ids]}`);
    assert.deepEqual(s.roles, ['assistant'], 'role must come once, in the first delta');
    assert.equal(s.content, sync.data.choices[0].message.content);
    assert.deepEqual(s.finishReasons, ['stop']);

    assert.equal(s.usageChunks.length, 1, 'exactly one usage chunk');
    const usageChunk = s.usageChunks[0];
    assert.deepEqual(usageChunk.choices, []);
    assert.equal(s.chunks.at(-1), usageChunk, 'the usage chunk must be the last one');
    assert.equal(s.nonNullUsageOnChoiceChunks, 0, 'choice chunks must carry usage:null');
    assertUsage(usageChunk.usage, 'stream');
    assert.equal(usageChunk.usage.prompt_tokens, sync.data.usage.prompt_tokens);
    assert.equal(usageChunk.usage.completion_tokens, sync.data.usage.completion_tokens);
  });

  test('streaming without include_usage sends no usage chunk', async () => {
    const stream = await client.chat.completions.create({ model: 'qwen3-max', messages,
                                                          stream: true });
    const s = await collectStream(stream);
    assert.equal(s.usageChunks.length, 0);
    assert.equal(s.content, sync.data.choices[0].message.content);
    assert.deepEqual(s.finishReasons, ['stop']);
  });

  test('SDK stream helper yields a final completion equal to the sync one', async () => {
    const runner = client.chat.completions.stream({
      model: 'qwen3-max', messages, stream_options: { include_usage: true },
    });
    let deltas = '';
    runner.on('content', (delta) => { deltas += delta; });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.role, 'assistant');
    assert.equal(final.choices[0].message.content, sync.data.choices[0].message.content);
    assert.equal(deltas, sync.data.choices[0].message.content);
    assert.equal(final.choices[0].finish_reason, 'stop');
    assertUsage(final.usage, 'stream helper');
    assert.equal(final.usage.completion_tokens, sync.data.usage.completion_tokens);
  });

  test('[mock:words=N] asks for a longer answer, streamed in many chunks', async () => {
    const long = [{ role: 'user', content: `Tell a long story [mock:words=200] (${RUN_ID})` }];
    const syncLong = await client.chat.completions.create({ model: 'deepseek-v4', messages: long });
    assert.ok(syncLong.usage.completion_tokens >= 100,
              `completion_tokens ${syncLong.usage.completion_tokens}`);
    const s = await collectStream(await client.chat.completions.create({
      model: 'deepseek-v4', messages: long, stream: true }));
    assert.equal(s.content, syncLong.choices[0].message.content);
    assert.ok(s.chunks.length > 10, `only ${s.chunks.length} chunks for a long answer`);
  });
});

describe('forced tool calls', () => {
  const messages = [{ role: 'user', content: `What is the weather in Lisbon? (${RUN_ID})` }];
  let syncArgs;

  test('sync: the forced function is called with its required arguments', async () => {
    const res = await client.chat.completions.create({
      model: 'qwen3-max', messages, tools: [WEATHER_TOOL], tool_choice: FORCE_WEATHER,
    });
    const [choice] = res.choices;
    // OpenAI itself answers "stop" for a named tool_choice; "tool_calls" is also fine.
    assert.ok(['tool_calls', 'stop'].includes(choice.finish_reason),
              `finish_reason ${choice.finish_reason}`);
    assert.equal(choice.message.role, 'assistant');
    assert.ok(Array.isArray(choice.message.tool_calls) && choice.message.tool_calls.length >= 1,
              `no tool_calls: ${JSON.stringify(choice.message)}`);
    const [call] = choice.message.tool_calls;
    assert.equal(call.type, 'function');
    assert.ok(call.id, 'tool call has no id');
    assert.equal(call.function.name, 'get_weather');
    assert.equal(typeof call.function.arguments, 'string');
    syncArgs = JSON.parse(call.function.arguments);
    assert.equal(typeof syncArgs, 'object');
    for (const field of WEATHER_TOOL.function.parameters.required) {
      assert.ok(field in syncArgs, `required field ${field} missing: ${call.function.arguments}`);
    }
    assert.equal(typeof syncArgs.city, 'string');
    assertUsage(res.usage, 'tool call');
  });

  test('streamed: fragments assemble into the same call', async () => {
    const stream = await client.chat.completions.create({
      model: 'qwen3-max', messages, tools: [WEATHER_TOOL], tool_choice: FORCE_WEATHER,
      stream: true, stream_options: { include_usage: true },
    });
    const s = await collectStream(stream);
    assert.equal(s.toolCalls.size, 1, `tool calls: ${JSON.stringify([...s.toolCalls])}`);
    const call = s.toolCalls.get(0);
    assert.ok(call, 'the tool call has index 0');
    assert.equal(call.name, 'get_weather');
    const args = JSON.parse(call.arguments);
    for (const field of WEATHER_TOOL.function.parameters.required) {
      assert.ok(field in args, `required field ${field} missing: ${call.arguments}`);
    }
    if (syncArgs) assert.deepEqual(args, syncArgs, 'streamed arguments differ from sync');
    assert.equal(s.finishReasons.length, 1);
    assert.ok(['tool_calls', 'stop'].includes(s.finishReasons[0]));
    assert.equal(s.usageChunks.length, 1);
    assertUsage(s.usageChunks[0].usage, 'streamed tool call');
  });

  test('stream helper accumulates the tool call', async () => {
    const final = await client.chat.completions.stream({
      model: 'claude-sonnet-4-6', messages, tools: [WEATHER_TOOL], tool_choice: FORCE_WEATHER,
    }).finalChatCompletion();
    const call = final.choices[0].message.tool_calls?.[0];
    assert.ok(call, `no tool call: ${JSON.stringify(final.choices[0].message)}`);
    assert.equal(call.function.name, 'get_weather');
    const args = JSON.parse(call.function.arguments);
    assert.ok('city' in args && 'unit' in args, call.function.arguments);
  });
});

// Expects `promise` to reject with an OpenAI APIError of `status`; returns the error.
async function expectApiError(promise, status) {
  let err;
  try {
    const res = await promise;
    assert.fail(`expected HTTP ${status}, got a success: ${JSON.stringify(res).slice(0, 300)}`);
  } catch (e) {
    err = e;
  }
  if (!(err instanceof OpenAI.APIError)) throw err;
  const allowed = Array.isArray(status) ? status : [status];
  assert.ok(allowed.includes(err.status), `expected HTTP ${allowed}, got ${err.status}: ${err.message}`);
  assert.ok(err.error && typeof err.error === 'object', `no OpenAI error body: ${err.message}`);
  assert.equal(typeof err.error.message, 'string');
  assert.ok(err.error.message.length > 0, 'empty error message');
  assert.ok('param' in err.error, 'error.param missing (must be present, may be null)');
  assert.ok(err.headers?.get('x-request-id'), `HTTP ${status} has no x-request-id`);
  assert.equal(err.requestID, err.headers.get('x-request-id'));
  return err;
}

// n > 1 on a model whose upstream generates several candidates (Gemini candidateCount):
// every choice comes back with its index, sync and streamed, and each is billed.
describe('several choices', () => {
  const model = 'gemini-2.5-flash';
  const messages = [{ role: 'user', content: `Two takes ${RUN_ID} [mock:words=6]` }];

  test('sync: n choices with their indexes, output billed n times', async () => {
    const one = await client.chat.completions.create({ model, messages });
    const two = await client.chat.completions.create({ model, messages, n: 2 });
    assert.equal(two.choices.length, 2);
    assert.deepEqual(two.choices.map((c) => c.index), [0, 1]);
    for (const c of two.choices) {
      assert.equal(c.message.content, one.choices[0].message.content);
      assert.equal(c.finish_reason, 'stop');
    }
    assert.equal(two.usage.completion_tokens, 2 * one.usage.completion_tokens);
    assert.equal(two.usage.prompt_tokens, one.usage.prompt_tokens);
  });

  test('streamed: each choice assembles from its own deltas', async () => {
    const sync = await client.chat.completions.create({ model, messages });
    const stream = await client.chat.completions.create({ model, messages, n: 2, stream: true });
    const text = new Map();
    const finished = new Set();
    for await (const chunk of stream) {
      for (const c of chunk.choices) {
        text.set(c.index, (text.get(c.index) ?? '') + (c.delta?.content ?? ''));
        if (c.finish_reason) finished.add(c.index);
      }
    }
    assert.deepEqual([...text.keys()].sort(), [0, 1]);
    assert.deepEqual([...finished].sort(), [0, 1]);
    for (const t of text.values()) assert.equal(t, sync.choices[0].message.content);
  });
});

describe('errors', () => {
  const hello = [{ role: 'user', content: 'hello' }];

  test('wrong key → 401 invalid_api_key', async () => {
    const bad = openai('sk-nf-this-key-does-not-exist-000000000000');
    const err = await expectApiError(
      bad.chat.completions.create({ model: 'qwen3-max', messages: hello }), 401);
    assert.ok(err instanceof OpenAI.AuthenticationError);
    assert.equal(err.type, 'invalid_request_error');
    assert.equal(err.code, 'invalid_api_key');
  });

  test('missing key → 401 invalid_api_key', async () => {
    const err = await expectApiError(
      client.chat.completions.create({ model: 'qwen3-max', messages: hello },
                                     { headers: { Authorization: null } }), 401);
    assert.equal(err.type, 'invalid_request_error');
    assert.equal(err.code, 'invalid_api_key');
  });

  test('unknown model → 404 model_not_found', async () => {
    const err = await expectApiError(
      client.chat.completions.create({ model: 'no-such-model-e2e', messages: hello }), 404);
    assert.ok(err instanceof OpenAI.NotFoundError);
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.type, 'invalid_request_error');
  });

  test('bad body → 400 invalid_request_error', async () => {
    const err = await expectApiError(
      client.chat.completions.create({ model: 'qwen3-max', messages: 'not-an-array' }), 400);
    assert.ok(err instanceof OpenAI.BadRequestError);
    assert.equal(err.type, 'invalid_request_error');

    const missing = await expectApiError(
      client.chat.completions.create({ model: 'qwen3-max' }), 400);
    assert.equal(missing.type, 'invalid_request_error');
  });

  test('malformed JSON → 400 with an OpenAI error body', async () => {
    const res = await fetch(`${BASE_URL}/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${DEMO_KEY}`, 'Content-Type': 'application/json' },
      body: '{"model": "qwen3-max", "messages": [',
    });
    assert.equal(res.status, 400);
    assert.ok(res.headers.get('x-request-id'));
    const body = await res.json();
    assert.equal(body.error?.type, 'invalid_request_error');
  });

  test('a request over the plan TPM by itself → 429 that says not to retry', async () => {
    const { key } = await createAccountWithKey({ name: 'e2e-tpm', credit: '5.00', plan: 'tiny' });
    const res = await fetch(`${BASE_URL}/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key.key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'qwen3-max', max_tokens: 200000,  // the tiny plan: 100,000 TPM
                             messages: [{ role: 'user', content: 'hi' }] }),
    });
    const body = await res.json();
    assert.equal(res.status, 429, JSON.stringify(body));
    assert.equal(body.error.code, 'rate_limit_exceeded');
    assert.match(body.error.message, /Request too large/);
    assert.equal(res.headers.get('x-should-retry'), 'false');
    assert.equal(res.headers.get('retry-after'), null, 'no wait would admit it');
  });

  test('the free plan admits 10 requests a minute, then 429 with retry-after', async () => {
    const { key } = await createAccountWithKey({ name: 'e2e-free', credit: '1.00', plan: 'free' });
    const client = openai(key.key);
    for (let i = 0; i < 10; i++) {
      await client.chat.completions.create({ model: 'qwen3-max', max_tokens: 5,
                                             messages: [{ role: 'user', content: `free ${i} [mock:words=2]` }] });
    }
    const res = await fetch(`${BASE_URL}/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key.key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'qwen3-max', max_tokens: 5, messages: [{ role: 'user', content: 'one more' }] }),
    });
    assert.equal(res.status, 429, await res.text());
    assert.equal(res.headers.get('x-ratelimit-limit-requests'), '10');
    assert.ok(Number(res.headers.get('retry-after')) >= 1);
  });

  test('over the plan RPM → 429 rate_limit_exceeded with retry-after', async () => {
    const { key } = await createAccountWithKey({ name: 'e2e-tiny', credit: '5.00', plan: 'tiny' });
    assert.equal(key.plan, 'tiny');
    const tiny = openai(key.key);
    let ok = 0;
    let err;
    // plan tiny allows 3 requests per minute; bounded: at most 8 tries.
    for (let i = 0; i < 8 && !err; i++) {
      try {
        await tiny.chat.completions.create({ model: 'qwen3-max', messages: hello });
        ok++;
      } catch (e) {
        err = e;
      }
    }
    assert.ok(err, `8 requests passed a 3 rpm plan`);
    assert.ok(ok >= 3, `only ${ok} requests passed before the first 429 (plan allows 3)`);
    assert.ok(ok <= 3, `${ok} requests passed a 3 rpm plan`);
    await expectApiError(Promise.reject(err), 429);
    assert.ok(err instanceof OpenAI.RateLimitError);
    assert.equal(err.type, 'rate_limit_error');
    assert.equal(err.code, 'rate_limit_exceeded');
    const retryAfter = err.headers.get('retry-after');
    assert.match(retryAfter ?? '', /^\d+$/, `retry-after: ${retryAfter}`);
    assert.ok(Number(retryAfter) >= 1 && Number(retryAfter) <= 60, `retry-after: ${retryAfter}`);
    assert.equal(err.headers.get('x-ratelimit-limit-requests'), '3');
    assert.equal(err.headers.get('x-ratelimit-remaining-requests'), '0');
  });

  test('no credit → 402 insufficient_balance, and nothing is charged', async () => {
    const { account, key } = await createAccountWithKey({ name: 'e2e-broke' });
    assert.equal(usdToNano(account.balance), 0n);
    const err = await expectApiError(
      openai(key.key).chat.completions.create({ model: 'qwen3-max', messages: hello }), 402);
    assert.equal(err.type, 'insufficient_quota');
    assert.equal(err.code, 'insufficient_balance');
    const after = await accountMoney(account.id);
    assert.equal(after.balance, 0n);
    assert.equal(after.totalSpent, 0n);
  });

  test('revoked key → 401 within a second', async () => {
    const { key } = await createAccountWithKey({ name: 'e2e-revoke', credit: '1.00' });
    const c = openai(key.key);
    await c.chat.completions.create({ model: 'qwen3-max', messages: hello });
    const revoked = await adminOk('DELETE', `/admin/v1/keys/${key.id}`);
    assert.equal(revoked.status, 'revoked');
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const err = await expectApiError(
      c.chat.completions.create({ model: 'qwen3-max', messages: hello }), 401);
    assert.equal(err.code, 'invalid_api_key');
  });
});

describe('billing', () => {
  test('credits are idempotent on idempotency_key', async () => {
    const account = await adminOk('POST', '/admin/v1/accounts', { name: `e2e-idem-${RUN_ID}` }, 201);
    assert.equal(account.currency, 'USD');
    assert.equal(usdToNano(account.balance), 0n);
    const body = { amount: '2.50', idempotency_key: `e2e-idem-${RUN_ID}` };
    const first = await adminOk('POST', `/admin/v1/accounts/${account.id}/credits`, body);
    assert.equal(usdToNano(first.balance), 2_500_000_000n);
    const second = await adminOk('POST', `/admin/v1/accounts/${account.id}/credits`, body);
    assert.equal(usdToNano(second.balance), 2_500_000_000n);
    const third = await adminOk('POST', `/admin/v1/accounts/${account.id}/credits`,
                                { amount: '0.000000001', idempotency_key: `e2e-idem2-${RUN_ID}` });
    assert.equal(usdToNano(third.balance), 2_500_000_001n);
    // The same key for another amount is another credit: refused, nothing changes.
    const clash = await admin('POST', `/admin/v1/accounts/${account.id}/credits`,
                              { amount: '9.00', idempotency_key: `e2e-idem-${RUN_ID}` });
    assert.equal(clash.status, 409, JSON.stringify(clash.body));
    assert.equal((await accountMoney(account.id)).balance, 2_500_000_001n);
  });

  test('the balance drops by exactly the priced usage of each request', async () => {
    const catalog = await client.models.list();
    const pricing = new Map(catalog.data.map((m) => [m.id, m.pricing]));
    const { account, key } = await createAccountWithKey({ name: 'e2e-billing', credit: '10.00' });
    const c = openai(key.key);
    const start = await accountMoney(account.id);
    assert.equal(start.balance, 10_000_000_000n);

    // Requests over models with different prices, sync and streamed.
    const plan = [
      { model: 'qwen3-max', stream: false },
      { model: 'claude-sonnet-4-6', stream: true },
      { model: 'deepseek-v4', stream: false },
      { model: 'claude-opus-4-7', stream: true },
      { model: 'qwen3.5-plus', stream: false, words: 300 },
      // A Gemini-protocol upstream, both ways.
      { model: 'gemini-2.5-flash', stream: true },
      { model: 'gemini-2.5-flash', stream: false },
    ];
    const prices = new Set(plan.map((p) => `${pricing.get(p.model)?.input}/${pricing.get(p.model)?.output}`));
    assert.ok(prices.size >= 2, `the billing mix should span several prices: ${[...prices]}`);

    const done = [];
    for (const [i, p] of plan.entries()) {
      const content = `Billing check ${i} ${RUN_ID}` + (p.words ? ` [mock:words=${p.words}]` : '');
      const messages = [{ role: 'user', content }];
      let usage;
      let requestId;
      if (p.stream) {
        const { data: stream, response } = await c.chat.completions
          .create({ model: p.model, messages, stream: true,
                    stream_options: { include_usage: true } })
          .withResponse();
        requestId = response.headers.get('x-request-id');
        const s = await collectStream(stream);
        assert.equal(s.usageChunks.length, 1);
        usage = s.usageChunks[0].usage;
      } else {
        const { data, response } = await c.chat.completions
          .create({ model: p.model, messages })
          .withResponse();
        requestId = response.headers.get('x-request-id');
        usage = data.usage;
      }
      assertUsage(usage, `${p.model} stream=${p.stream}`);
      assert.ok(pricing.get(p.model), `${p.model} has no pricing in /v1/models`);
      done.push({ ...p, requestId, usage, cost: chatCostNano(pricing.get(p.model), usage) });
    }
    const expected = done.reduce((sum, r) => sum + r.cost, 0n);
    assert.ok(expected > 0n);

    const end = await eventually(() => accountMoney(account.id),
                                 (m) => start.balance - m.balance >= expected);
    const detail = done.map((r) => `${r.model}: ${JSON.stringify(r.usage)} → ${nanoToUsd(r.cost)}`)
                       .join('\n');
    assert.equal(nanoToUsd(start.balance - end.balance), nanoToUsd(expected),
                 `balance drop != sum of priced usage\n${detail}`);
    assert.equal(end.totalSpent - start.totalSpent, expected, 'total_spent moved differently');

    // The usage log lists exactly these requests, with the same tokens and costs.
    const usage = await adminOk('GET', `/admin/v1/accounts/${account.id}/usage?limit=100`);
    assert.equal(usage.object, 'list');
    assert.equal(usage.has_more, false);
    assert.equal(usage.data.length, done.length,
                 `usage records: ${JSON.stringify(usage.data, null, 1)}`);
    const byId = new Map(usage.data.map((r) => [r.request_id, r]));
    for (const r of done) {
      const rec = byId.get(r.requestId);
      assert.ok(rec, `no usage record for x-request-id ${r.requestId}; have ${[...byId.keys()]}`);
      assert.equal(rec.model, r.model);
      assert.equal(rec.protocol, 'openai');
      const cached = r.usage.prompt_tokens_details?.cached_tokens ?? 0;
      assert.equal(rec.cache_read_tokens, cached);
      assert.equal(rec.input_tokens + rec.cache_read_tokens + rec.cache_write_tokens,
                   r.usage.prompt_tokens, `input tokens of ${r.model}`);
      assert.equal(rec.output_tokens, r.usage.completion_tokens);
      assert.equal(usdToNano(rec.cost), r.cost, `cost of ${r.model} ${JSON.stringify(rec)}`);
      assert.ok(!Number.isNaN(Date.parse(rec.created_at)), `created_at ${rec.created_at}`);
    }

    // Paging: two at a time with `after` walks every record once.
    const seen = [];
    let after = '';
    for (let page = 0; page < 10; page++) {
      const q = `limit=2${after ? `&after=${encodeURIComponent(after)}` : ''}`;
      const p = await adminOk('GET', `/admin/v1/accounts/${account.id}/usage?${q}`);
      assert.ok(p.data.length <= 2);
      seen.push(...p.data.map((r) => r.request_id));
      if (!p.has_more) break;
      assert.equal(p.data.length, 2);
      after = p.data.at(-1).request_id;
    }
    assert.deepEqual([...seen].sort(), done.map((r) => r.requestId).sort());
  });

  test('a request that fails upstream is not charged', async () => {
    const { account, key } = await createAccountWithKey({ name: 'e2e-upstream-fail', credit: '1.00' });
    // Every deployment answers 500 → "all upstream deployments failed".
    const err = await expectApiError(openai(key.key).chat.completions.create({
      model: 'qwen3-max', messages: [{ role: 'user', content: 'fail please [mock:status=500]' }],
    }), [502, 503]);
    assert.equal(err.type, 'server_error');
    await new Promise((resolve) => setTimeout(resolve, 500));
    const money = await accountMoney(account.id);
    assert.equal(money.balance, 1_000_000_000n);
    const usage = await adminOk('GET', `/admin/v1/accounts/${account.id}/usage?limit=10`);
    assert.equal(usage.data.length, 0);
  });

  test('/v1/balance with the demo key agrees with the admin API', async () => {
    // Other test files may spend from the demo account meanwhile: bracket the read.
    const before = await accountMoney(DEMO_ACCOUNT);
    const res = await fetch(`${BASE_URL}/balance`, { headers: { Authorization: `Bearer ${DEMO_KEY}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.currency, 'USD');
    assert.equal(typeof body.balance, 'number');
    assert.equal(typeof body.total_spent, 'number');
    assert.ok(body.last_updated === null || !Number.isNaN(Date.parse(body.last_updated)),
              `last_updated ${body.last_updated}`);
    const after = await accountMoney(DEMO_ACCOUNT);
    // /v1/balance is a float for humans: allow a micro-dollar of rounding.
    const asNano = BigInt(Math.round(body.balance * 1e9));
    assert.ok(asNano <= before.balance + 1000n && asNano >= after.balance - 1000n,
              `/v1/balance ${body.balance} outside admin [${after.raw.balance}, ${before.raw.balance}]`);
    assert.ok(after.balance > 0n && after.balance <= 100_000_000_000n,
              `demo balance ${after.raw.balance} (credited $100)`);
  });
});

describe('catalog', () => {
  test('/v1/models lists the seed models with pricing', async () => {
    const res = await fetch(`${BASE_URL}/models`, { headers: { Authorization: `Bearer ${DEMO_KEY}` } });
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.object, 'list');
    const ids = body.data.map((m) => m.id);
    for (const id of SEED_MODELS) assert.ok(ids.includes(id), `${id} missing from ${ids}`);
    for (const m of body.data) {
      assert.equal(m.object, 'model');
      assert.ok(Number.isInteger(m.created), `${m.id}.created`);
      assert.equal(typeof m.owned_by, 'string');
      assert.ok(Array.isArray(m.supported_protocols), `${m.id}.supported_protocols`);
      assert.ok(m.capabilities !== undefined, `${m.id}.capabilities`);
    }
    for (const id of CHAT_MODELS) {
      const m = body.data.find((x) => x.id === id);
      assert.ok(m.supported_protocols.includes('openai'), `${id} protocols ${m.supported_protocols}`);
      assert.ok(Number.isInteger(m.context_window) && m.context_window > 0, `${id}.context_window`);
      assert.ok(Number.isInteger(m.max_output_tokens) && m.max_output_tokens > 0);
      assert.equal(m.pricing?.currency, 'USD', `${id}.pricing ${JSON.stringify(m.pricing)}`);
      assert.equal(m.pricing.unit, 'per_million_tokens');
      assert.ok(usdToNano(m.pricing.input) > 0n, `${id} input price ${m.pricing.input}`);
      assert.ok(usdToNano(m.pricing.output) > 0n, `${id} output price ${m.pricing.output}`);
      for (const f of ['cache_read', 'cache_write']) {
        if (m.pricing[f] !== undefined) usdToNano(m.pricing[f]);
      }
    }
    const distinct = new Set(CHAT_MODELS.map((id) => body.data.find((x) => x.id === id).pricing.input));
    assert.ok(distinct.size >= 2, 'all chat models cost the same: the billing test needs spread');
  });

  test('the Claude models carry the facts the Claude page gives', async () => {
    const facts = {
      'claude-opus-4-7': { context: 1_000_000, output: 128_000, input: '5.00', out: '25.00' },
      'claude-sonnet-4-6': { context: 1_000_000, output: 64_000, input: '3.00', out: '15.00' },
      'claude-haiku-4-5': { context: 200_000, output: 64_000, input: '1.00', out: '5.00' },
    };
    for (const [id, f] of Object.entries(facts)) {
      const m = await client.models.retrieve(id);
      assert.equal(m.context_window, f.context, `${id} context`);
      assert.equal(m.max_output_tokens, f.output, `${id} max output`);
      assert.equal(usdToNano(m.pricing.input), usdToNano(f.input), `${id} input price`);
      assert.equal(usdToNano(m.pricing.output), usdToNano(f.out), `${id} output price`);
    }
  });

  test('SDK models.list and models.retrieve', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.ok(ids.includes('qwen3-max'));
    const one = await client.models.retrieve('claude-haiku-4-5');
    assert.equal(one.id, 'claude-haiku-4-5');
    assert.equal(one.object, 'model');
    assert.equal(one.pricing?.currency, 'USD');
    const err = await expectApiError(client.models.retrieve('no-such-model-e2e'), 404);
    assert.equal(err.code, 'model_not_found');
  });
});

describe('ops', () => {
  test('/readyz is 200', async () => {
    const res = await fetch(`${ORIGIN}/readyz`);
    assert.equal(res.status, 200);
  });

  test('/metrics exposes nexusflow_ counters that moved', async () => {
    // Served on the public port; tools/run may also expose it on the metrics port.
    const urls = [`${ORIGIN}/metrics`];
    if (METRICS_URL) urls.push(METRICS_URL);
    const tried = [];
    let text = '';
    for (const url of urls) {
      const res = await fetch(url);
      tried.push(`${url} → ${res.status}`);
      if (res.status === 200) {
        text = await res.text();
        if (/^nexusflow_/m.test(text)) break;
      }
    }
    assert.ok(text, `no /metrics answered 200: ${tried}`);
    const counters = text.split('\n')
      .filter((l) => /^nexusflow_\w+_total(\{.*\})? /.test(l))
      .map((l) => ({ line: l, value: Number(l.split(' ').at(-1)) }));
    assert.ok(counters.length > 0, `no nexusflow_*_total counters (${tried}):\n${text.slice(0, 500)}`);
    assert.ok(counters.some((c) => c.value > 0),
              `every nexusflow counter is 0 after the tests made requests:\n${counters.map((c) => c.line).join('\n')}`);
    assert.ok(/^# TYPE nexusflow_\w+_total counter$/m.test(text), 'no counter TYPE lines');
    assert.ok(counters.some((c) => c.line.startsWith('nexusflow_gateway_') && c.value > 0),
              'no nexusflow_gateway_*_total counter moved, though the gateway served requests');
  });
});
