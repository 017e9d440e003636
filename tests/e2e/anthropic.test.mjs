// End-to-end: the official Anthropic Node SDK (@anthropic-ai/sdk) against a running
// NexusFlow (tools/run) on POST /v1/messages and /v1/messages/count_tokens, for every
// model in MODELS whatever protocol its upstream speaks (the gateway translates). Covers
// sync, the SDK's stream helper, forced tool calls and their results, the SDK's error
// classes, exact billing (BigInt nano-USD) and count_tokens.
//
// Adding a model id to MODELS is all it takes to cover it.

import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';

import {
  ORIGIN, DEMO_KEY, RUN_ID, anthropic, createAccountWithKey, accountMoney, eventually,
  userUsage, usdToNano, nanoToUsd, modelPricing, tokensCostNano, anthropicTokens, recordTokens,
} from './lib.mjs';

const MODELS = ['qwen3-max', 'claude-sonnet-4-6', 'gemini-2.5-flash'];

const SYSTEM = 'You are a terse assistant.';
const MAX_TOKENS = 1024;

const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Current weather for a city',
  input_schema: {
    type: 'object',
    properties: {
      city: { type: 'string', description: 'City name' },
      unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
      days: { type: 'integer' },
    },
    required: ['city', 'unit'],
  },
};
const FORCE_WEATHER = { type: 'tool', name: 'get_weather' };

const client = anthropic();

// The Anthropic usage object: input/output positive, the cache counts integers ≥ 0.
function assertUsage(usage, what) {
  assert.ok(usage && typeof usage === 'object', `${what}: usage missing`);
  for (const f of ['input_tokens', 'output_tokens']) {
    assert.ok(Number.isInteger(usage[f]) && usage[f] > 0, `${what}: usage.${f} = ${usage[f]}`);
  }
  for (const f of ['cache_creation_input_tokens', 'cache_read_input_tokens']) {
    assert.ok(f in usage, `${what}: usage.${f} missing: ${JSON.stringify(usage)}`);
    assert.ok(usage[f] === null || (Number.isInteger(usage[f]) && usage[f] >= 0),
              `${what}: usage.${f} = ${usage[f]}`);
  }
}

// count_tokens is an estimate (the gateway's own, not the upstream's count): within 10 %
// or 2 tokens of what the upstream reported for the same prompt.
function assertClose(estimate, actual, what) {
  assert.ok(Math.abs(estimate - actual) <= Math.max(2, Math.ceil(actual / 10)), `${what}: ${estimate} vs ${actual}`);
}

function textOf(message) {
  return message.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
}

function assertRequestId(headers, what) {
  const rid = headers.get('request-id');
  const xrid = headers.get('x-request-id');
  assert.ok(rid && rid.length >= 8, `${what}: request-id header ${rid}`);
  assert.equal(xrid, rid, `${what}: x-request-id != request-id`);
  return rid;
}

// Runs the SDK's stream helper and returns the final message plus what the events showed.
async function streamed(params, c = client) {
  const stream = c.messages.stream(params);
  const out = { events: [], text: '', partialJson: new Map(), stream };
  stream.on('streamEvent', (event) => {
    out.events.push(event.type);
    if (event.type === 'content_block_delta' && event.delta.type === 'input_json_delta') {
      out.partialJson.set(event.index, (out.partialJson.get(event.index) ?? '') + event.delta.partial_json);
    }
  });
  stream.on('text', (delta) => { out.text += delta; });
  out.final = await stream.finalMessage();
  return out;
}

function assertStreamShape(s, what) {
  assert.equal(s.events[0], 'message_start', `${what}: first event ${s.events[0]}`);
  assert.equal(s.events.at(-1), 'message_stop', `${what}: last event ${s.events.at(-1)}`);
  assert.equal(s.events.filter((e) => e === 'message_delta').length, 1, `${what}: events ${s.events}`);
  assert.equal(s.events.filter((e) => e === 'content_block_start').length,
               s.events.filter((e) => e === 'content_block_stop').length, `${what}: events ${s.events}`);
}

function assertWeatherInput(input, what) {
  assert.ok(input && typeof input === 'object' && !Array.isArray(input), `${what}: input ${JSON.stringify(input)}`);
  for (const field of WEATHER_TOOL.input_schema.required) {
    assert.ok(field in input, `${what}: required field ${field} missing: ${JSON.stringify(input)}`);
  }
  assert.equal(typeof input.city, 'string');
  assert.ok(WEATHER_TOOL.input_schema.properties.unit.enum.includes(input.unit), `${what}: unit ${input.unit}`);
}

for (const model of MODELS) {
  describe(`anthropic messages: ${model}`, () => {
    const params = {
      model, max_tokens: MAX_TOKENS, system: SYSTEM,
      messages: [{ role: 'user', content: `Name three rivers in Europe. (e2e ${RUN_ID})` }],
    };
    let sync; // {data, response, request_id} of the sync answer

    before(async () => {
      sync = await client.messages.create(params).withResponse();
    });

    test('sync: text, usage, end_turn and the request id', () => {
      const { data, response, request_id: requestId } = sync;
      assert.equal(response.status, 200);
      const rid = assertRequestId(response.headers, 'sync');
      assert.equal(requestId, rid, 'withResponse().request_id');
      assert.equal(data._request_id, rid, 'message._request_id');
      assert.equal(data.type, 'message');
      assert.equal(data.role, 'assistant');
      assert.match(data.id, /^msg_/);
      assert.equal(data.model, model);
      assert.ok(data.content.length >= 1, `no content: ${JSON.stringify(data)}`);
      for (const block of data.content) assert.equal(block.type, 'text', JSON.stringify(block));
      assert.ok(textOf(data).trim().length > 0, 'empty text');
      assert.equal(data.stop_reason, 'end_turn');
      assert.equal(data.stop_sequence, null);
      assertUsage(data.usage, 'sync');
    });

    test('the system prompt reaches the model (it counts as input)', async () => {
      const { system, ...noSystem } = params;
      const bare = await client.messages.create(noSystem);
      const total = (u) => u.input_tokens + (u.cache_read_input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0);
      assert.ok(total(sync.data.usage) > total(bare.usage),
                `input with system ${JSON.stringify(sync.data.usage)} <= without ${JSON.stringify(bare.usage)}`);
    });

    test('stream helper: finalMessage equals the sync answer, usage at the end', async () => {
      const s = await streamed(params);
      assertStreamShape(s, 'stream');
      const { response, request_id: requestId } = await s.stream.withResponse();
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
      assert.equal(requestId, assertRequestId(response.headers, 'stream'));
      assert.equal(s.text, textOf(sync.data), 'streamed text deltas != sync text');
      assert.equal(textOf(s.final), textOf(sync.data), 'finalMessage text != sync text');
      assert.equal(s.final.role, 'assistant');
      assert.equal(s.final.model, model);
      assert.equal(s.final.stop_reason, 'end_turn');
      assertUsage(s.final.usage, 'stream');
      assert.deepEqual(anthropicTokens(s.final.usage), anthropicTokens(sync.data.usage),
                       `stream usage ${JSON.stringify(s.final.usage)} != sync ${JSON.stringify(sync.data.usage)}`);
    });

    describe('forced tool call', () => {
      const toolParams = {
        model, max_tokens: MAX_TOKENS, tools: [WEATHER_TOOL], tool_choice: FORCE_WEATHER,
        messages: [{ role: 'user', content: `What is the weather in Lisbon? (e2e ${RUN_ID})` }],
      };
      let syncCall; // the sync answer's tool_use block

      // The tool result goes back with the assistant turn; the follow-up lets the model
      // answer in text (tool_choice auto) and must end the turn.
      async function answerToolCall(assistantContent, toolUse, stream) {
        const followUp = {
          model, max_tokens: MAX_TOKENS, tools: [WEATHER_TOOL], tool_choice: { type: 'auto' },
          messages: [
            ...toolParams.messages,
            { role: 'assistant', content: assistantContent },
            { role: 'user', content: [{ type: 'tool_result', tool_use_id: toolUse.id,
                                        content: '18 degrees celsius, sunny' }] },
          ],
        };
        const final = stream ? (await streamed(followUp)).final : await client.messages.create(followUp);
        assert.equal(final.stop_reason, 'end_turn', `after the tool result: ${JSON.stringify(final)}`);
        assert.ok(final.content.every((b) => b.type === 'text'), JSON.stringify(final.content));
        assert.ok(textOf(final).trim().length > 0, 'no text after the tool result');
        assertUsage(final.usage, 'after the tool result');
        return final;
      }

      test('sync: tool_use with the required fields, then a text answer to the tool_result', async () => {
        const res = await client.messages.create(toolParams);
        assert.equal(res.stop_reason, 'tool_use', JSON.stringify(res));
        const uses = res.content.filter((b) => b.type === 'tool_use');
        assert.equal(uses.length, 1, `tool_use blocks: ${JSON.stringify(res.content)}`);
        const [use] = uses;
        assert.ok(use.id, 'tool_use has no id');
        assert.equal(use.name, 'get_weather');
        assertWeatherInput(use.input, 'sync');
        assertUsage(res.usage, 'sync tool call');
        syncCall = use;
        await answerToolCall(res.content, use, false);
      });

      test('streamed: input_json deltas assemble into the sync input, then a text answer', async () => {
        const s = await streamed(toolParams);
        assertStreamShape(s, 'tool stream');
        assert.equal(s.final.stop_reason, 'tool_use');
        const uses = s.final.content.filter((b) => b.type === 'tool_use');
        assert.equal(uses.length, 1, `tool_use blocks: ${JSON.stringify(s.final.content)}`);
        const [use] = uses;
        const index = s.final.content.indexOf(use);
        assert.ok(use.id, 'streamed tool_use has no id');
        assert.equal(use.name, 'get_weather');
        assert.ok(s.partialJson.has(index), `no input_json_delta for block ${index}: ${s.events}`);
        const assembled = JSON.parse(s.partialJson.get(index));
        assertWeatherInput(assembled, 'streamed');
        assert.deepEqual(use.input, assembled, 'finalMessage input != the assembled partial_json');
        if (syncCall) assert.deepEqual(assembled, syncCall.input, 'streamed input differs from sync');
        assertUsage(s.final.usage, 'streamed tool call');
        await answerToolCall(s.final.content, use, true);
      });
    });

    test('count_tokens returns a positive input_tokens, close to the input the sync answer reported', async () => {
      const { data, response } = await client.messages.countTokens({
        model, system: SYSTEM, messages: params.messages,
      }).withResponse();
      assert.equal(response.status, 200);
      assertRequestId(response.headers, 'count_tokens');
      assert.ok(Number.isInteger(data.input_tokens) && data.input_tokens > 0,
                `count_tokens: ${JSON.stringify(data)}`);
      // The same system + messages as the sync answer: an estimate close to its input.
      const u = sync.data.usage;
      assertClose(data.input_tokens,
                  u.input_tokens + (u.cache_read_input_tokens ?? 0) + (u.cache_creation_input_tokens ?? 0),
                  `count_tokens ${JSON.stringify(data)} vs the sync usage ${JSON.stringify(u)}`);
      const withTools = await client.messages.countTokens({
        model, tools: [WEATHER_TOOL], messages: params.messages,
      });
      assert.ok(Number.isInteger(withTools.input_tokens) && withTools.input_tokens > 0,
                `count_tokens with tools: ${JSON.stringify(withTools)}`);
    });
  });
}

// Expects `promise` to reject with the SDK's `Class` (an APIError of `status`) carrying an
// Anthropic error body of `type`; returns the error.
async function expectApiError(promise, Class, status, type) {
  let err;
  try {
    const res = await promise;
    assert.fail(`expected HTTP ${status}, got a success: ${JSON.stringify(res).slice(0, 300)}`);
  } catch (e) {
    err = e;
  }
  if (!(err instanceof Anthropic.APIError)) throw err;
  assert.equal(err.status, status, `expected HTTP ${status}, got ${err.status}: ${err.message}`);
  assert.ok(err instanceof Class, `expected ${Class.name}, got ${err.constructor.name}: ${err.message}`);
  assert.equal(err.error?.type, 'error', `not an Anthropic error body: ${JSON.stringify(err.error)}`);
  assert.equal(err.type, type, `error.type: ${JSON.stringify(err.error)}`);
  assert.equal(typeof err.apiMessage, 'string');
  assert.ok(err.apiMessage.length > 0, 'empty error message');
  assert.ok(err.requestID, `HTTP ${status} has no request-id header`);
  assert.equal(err.headers.get('x-request-id'), err.requestID);
  assert.equal(err.error.request_id, err.requestID, `body request_id: ${JSON.stringify(err.error)}`);
  return err;
}

describe('anthropic errors', () => {
  const hello = [{ role: 'user', content: 'hello' }];

  test('wrong key → AuthenticationError (401 authentication_error)', async () => {
    const bad = anthropic('sk-nf-this-key-does-not-exist-000000000000');
    for (const model of MODELS) {
      await expectApiError(bad.messages.create({ model, max_tokens: 16, messages: hello }),
                           Anthropic.AuthenticationError, 401, 'authentication_error');
    }
    await expectApiError(bad.messages.countTokens({ model: MODELS[0], messages: hello }),
                         Anthropic.AuthenticationError, 401, 'authentication_error');
  });

  test('unknown model → NotFoundError (404 not_found_error)', async () => {
    await expectApiError(client.messages.create({ model: 'no-such-model-e2e', max_tokens: 16, messages: hello }),
                         Anthropic.NotFoundError, 404, 'not_found_error');
    await expectApiError(client.messages.stream({ model: 'no-such-model-e2e', max_tokens: 16, messages: hello })
                           .finalMessage(),
                         Anthropic.NotFoundError, 404, 'not_found_error');
  });

  test('missing max_tokens or messages → BadRequestError (400 invalid_request_error)', async () => {
    for (const model of MODELS) {
      const noMax = await expectApiError(client.messages.create({ model, messages: hello }),
                                         Anthropic.BadRequestError, 400, 'invalid_request_error');
      assert.match(noMax.apiMessage, /max_tokens/, `message should name max_tokens: ${noMax.apiMessage}`);
      const noMessages = await expectApiError(client.messages.create({ model, max_tokens: 16 }),
                                              Anthropic.BadRequestError, 400, 'invalid_request_error');
      assert.match(noMessages.apiMessage, /messages/, `message should name messages: ${noMessages.apiMessage}`);
    }
  });

  test('no anthropic-version header → 400 with an Anthropic error body (raw fetch)', async () => {
    // The SDK always sends anthropic-version, so this one is a plain fetch.
    const res = await fetch(`${ORIGIN}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': DEMO_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ model: MODELS[0], max_tokens: 16, messages: hello }),
    });
    const text = await res.text();
    assert.equal(res.status, 400, `no anthropic-version → ${res.status} ${text}`);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    assertRequestId(res.headers, 'no anthropic-version');
    const body = JSON.parse(text);
    assert.equal(body.type, 'error', text);
    assert.equal(body.error?.type, 'invalid_request_error', text);
    assert.match(body.error.message, /anthropic-version/, text);
  });
});

describe('anthropic billing', () => {
  test('the balance drops by exactly the priced usage records of the requests', async (t) => {
    const { account, key } = await createAccountWithKey({ name: 'e2e-anthropic-billing', credit: '10.00',
                                                          plan: 'unlimited' });
    const c = anthropic(key.key);
    const start = await accountMoney(account.id);
    assert.equal(start.balance, 10_000_000_000n);
    const pricing = new Map();
    for (const model of MODELS) pricing.set(model, await modelPricing(model));

    // A sync and a streamed request per model, one of them long, then two with a
    // cache_control'd system prompt (a cache write, then a read, where the upstream
    // caches): whatever cache tokens come back are priced by the same formula.
    const plan = MODELS.flatMap((model, i) => [
      { model, stream: false, words: i === 0 ? 120 : 0 },
      { model, stream: true, words: 0 },
      { model, stream: false, words: 0, cache: true },
      { model, stream: true, words: 0, cache: true },
    ]);
    const done = [];
    for (const [i, p] of plan.entries()) {
      const content = `Billing check ${i} ${RUN_ID}` + (p.words ? ` [mock:words=${p.words}]` : '');
      const system = p.cache
        ? [{ type: 'text', cache_control: { type: 'ephemeral' },
             text: `${SYSTEM} (cache ${p.model} ${RUN_ID}) ${'Answer in plain words. '.repeat(200)}` }]
        : SYSTEM;
      const params = { model: p.model, max_tokens: MAX_TOKENS, system,
                       messages: [{ role: 'user', content }] };
      let message;
      let requestId;
      if (p.stream) {
        const s = await streamed(params, c);
        message = s.final;
        requestId = s.stream.request_id;
      } else {
        const { data, request_id: rid } = await c.messages.create(params).withResponse();
        message = data;
        requestId = rid;
      }
      assert.ok(requestId, `${p.model} stream=${p.stream}: no request id`);
      assertUsage(message.usage, `${p.model} stream=${p.stream}`);
      done.push({ ...p, requestId, usage: message.usage,
                  cost: tokensCostNano(pricing.get(p.model), anthropicTokens(message.usage)) });
    }
    const expected = done.reduce((sum, r) => sum + r.cost, 0n);
    assert.ok(expected > 0n);
    const detail = done.map((r) => `${r.model} stream=${r.stream} cache=${!!r.cache}: ` +
                                   `${JSON.stringify(r.usage)} → ${nanoToUsd(r.cost)}`).join('\n');
    t.diagnostic(detail);

    const end = await eventually(() => accountMoney(account.id),
                                 (m) => start.balance - m.balance >= expected);
    assert.equal(nanoToUsd(start.balance - end.balance), nanoToUsd(expected),
                 `balance drop != sum of priced usage\n${detail}`);
    assert.equal(end.totalSpent - start.totalSpent, expected, 'total_spent moved differently');

    // GET /v1/usage with the key: one record per request, same tokens, cost by the formula.
    const usage = await userUsage(key.key, 100);
    assert.equal(usage.data.length, done.length, `usage records: ${JSON.stringify(usage.data, null, 1)}`);
    const byId = new Map(usage.data.map((r) => [r.request_id, r]));
    let recordSum = 0n;
    for (const r of done) {
      const rec = byId.get(r.requestId);
      assert.ok(rec, `no usage record for request-id ${r.requestId}; have ${[...byId.keys()]}`);
      assert.equal(rec.model, r.model);
      assert.equal(rec.protocol, 'anthropic', `record protocol ${JSON.stringify(rec)}`);
      const tokens = anthropicTokens(r.usage);
      delete tokens.cacheWrite1h;
      assert.deepEqual(recordTokens(rec), tokens,
                       `record tokens of ${r.model} stream=${r.stream} != response usage ${JSON.stringify(r.usage)}`);
      assert.equal(usdToNano(rec.cost), tokensCostNano(pricing.get(r.model), recordTokens(rec)),
                   `record cost of ${JSON.stringify(rec)} != formula`);
      assert.equal(usdToNano(rec.cost), r.cost, `cost of ${r.model} ${JSON.stringify(rec)}`);
      recordSum += usdToNano(rec.cost);
    }
    assert.equal(nanoToUsd(recordSum), nanoToUsd(start.balance - end.balance),
                 'balance drop != sum of the usage records');
  });
});
