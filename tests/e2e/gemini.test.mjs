// End-to-end: the official Google GenAI SDK (@google/genai, Gemini API v1beta) against a
// running NexusFlow (tools/run) on /v1beta/models/{model}:generateContent,
// :streamGenerateContent (the SDK always asks alt=sse), :countTokens and GET
// /v1beta/models[/{model}], for every model in MODELS whatever protocol its upstream
// speaks (the gateway translates). Covers sync, streaming, forced function calls and
// their responses, the SDK's ApiError, exact billing (BigInt nano-USD), countTokens and
// the model list.
//
// Adding a model id to MODELS is all it takes to cover it.

import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { ApiError, FunctionCallingConfigMode, Type } from '@google/genai';

import {
  RUN_ID, genai, createAccountWithKey, accountMoney, eventually, userUsage, usdToNano, nanoToUsd,
  modelPricing, tokensCostNano, geminiTokens, recordTokens,
} from './lib.mjs';

const MODELS = ['qwen3-max', 'claude-sonnet-4-6', 'gemini-2.5-flash'];

const SYSTEM = 'You are a terse assistant.';

// Gemini Schema with uppercase types, as SDK users write it (the gateway lowers them
// for other protocols).
const WEATHER_FN = {
  name: 'get_weather',
  description: 'Current weather for a city',
  parameters: {
    type: Type.OBJECT,
    properties: {
      city: { type: Type.STRING, description: 'City name' },
      unit: { type: Type.STRING, enum: ['celsius', 'fahrenheit'] },
      days: { type: Type.INTEGER },
    },
    required: ['city', 'unit'],
  },
};
const WEATHER_TOOLS = [{ functionDeclarations: [WEATHER_FN] }];
const FORCE_WEATHER = {
  functionCallingConfig: { mode: FunctionCallingConfigMode.ANY, allowedFunctionNames: ['get_weather'] },
};

const ai = genai();

// usageMetadata: prompt and candidates positive, total their sum (plus thoughts and
// tool-use prompt when present).
function assertUsage(meta, what) {
  assert.ok(meta && typeof meta === 'object', `${what}: usageMetadata missing`);
  for (const f of ['promptTokenCount', 'candidatesTokenCount', 'totalTokenCount']) {
    assert.ok(Number.isInteger(meta[f]) && meta[f] > 0, `${what}: usageMetadata.${f} = ${meta[f]}`);
  }
  assert.equal(meta.totalTokenCount,
               meta.promptTokenCount + meta.candidatesTokenCount + (meta.thoughtsTokenCount ?? 0) +
               (meta.toolUsePromptTokenCount ?? 0),
               `${what}: totalTokenCount is not the sum: ${JSON.stringify(meta)}`);
  if (meta.cachedContentTokenCount !== undefined) {
    assert.ok(Number.isInteger(meta.cachedContentTokenCount) &&
              meta.cachedContentTokenCount <= meta.promptTokenCount, `${what}: ${JSON.stringify(meta)}`);
  }
}

function requestIdOf(response, what) {
  const headers = response.sdkHttpResponse?.headers ?? {};
  const xrid = headers['x-request-id'];
  assert.ok(xrid && xrid.length >= 8, `${what}: x-request-id ${xrid}`);
  assert.equal(headers['request-id'], xrid, `${what}: request-id != x-request-id`);
  return xrid;
}

// Reads a whole generateContentStream and folds it into one summary.
async function collectStream(iterable, what) {
  const out = { chunks: [], text: '', functionCalls: [], finishReasons: [], usage: undefined,
                requestIds: new Set() };
  for await (const chunk of iterable) {
    out.chunks.push(chunk);
    out.requestIds.add(requestIdOf(chunk, what));
    const cand = chunk.candidates?.[0];
    for (const part of cand?.content?.parts ?? []) {
      if (typeof part.text === 'string' && !part.thought) out.text += part.text;
      if (part.functionCall) out.functionCalls.push(part.functionCall);
    }
    if (cand?.finishReason) out.finishReasons.push(cand.finishReason);
    // The last usage is the final one (streamed usage is cumulative, not summed).
    if (chunk.usageMetadata) out.usage = chunk.usageMetadata;
  }
  assert.ok(out.chunks.length >= 1, `${what}: no chunks`);
  assert.equal(out.requestIds.size, 1, `${what}: request ids ${[...out.requestIds]}`);
  assert.deepEqual(out.finishReasons, ['STOP'], `${what}: finish reasons`);
  assert.ok(out.chunks.at(-1).candidates?.[0]?.finishReason, `${what}: the last chunk has no finishReason`);
  return out;
}

function assertWeatherArgs(args, what) {
  assert.ok(args && typeof args === 'object' && !Array.isArray(args), `${what}: args ${JSON.stringify(args)}`);
  for (const field of WEATHER_FN.parameters.required) {
    assert.ok(field in args, `${what}: required field ${field} missing: ${JSON.stringify(args)}`);
  }
  assert.equal(typeof args.city, 'string');
  assert.ok(WEATHER_FN.parameters.properties.unit.enum.includes(args.unit), `${what}: unit ${args.unit}`);
}

for (const model of MODELS) {
  describe(`gemini generateContent: ${model}`, () => {
    const params = {
      model,
      contents: [{ role: 'user', parts: [{ text: `Name three rivers in Europe. (e2e ${RUN_ID})` }] }],
      config: { systemInstruction: SYSTEM },
    };
    let sync;

    before(async () => {
      sync = await ai.models.generateContent(params);
    });

    test('sync: text, usageMetadata, STOP and the request id', () => {
      requestIdOf(sync, 'sync');
      assert.equal(sync.candidates?.length, 1, JSON.stringify(sync));
      const [cand] = sync.candidates;
      assert.equal(cand.content.role, 'model');
      assert.equal(cand.finishReason, 'STOP');
      assert.equal(typeof sync.text, 'string');
      assert.ok(sync.text.trim().length > 0, 'empty text');
      assert.equal(sync.functionCalls, undefined);
      assertUsage(sync.usageMetadata, 'sync');
    });

    test('the systemInstruction reaches the model (it counts as prompt)', async () => {
      const bare = await ai.models.generateContent({ model, contents: params.contents });
      assert.ok(sync.usageMetadata.promptTokenCount > bare.usageMetadata.promptTokenCount,
                `prompt with systemInstruction ${JSON.stringify(sync.usageMetadata)} <= without ` +
                JSON.stringify(bare.usageMetadata));
    });

    test('generateContentStream yields the sync text, usage at the end', async () => {
      const s = await collectStream(await ai.models.generateContentStream(params), 'stream');
      assert.equal(s.text, sync.text, 'streamed text != sync text');
      assert.ok(s.usage, 'no usageMetadata in the stream');
      assert.equal(s.chunks.at(-1).usageMetadata, s.usage, 'the last chunk must carry the final usage');
      assertUsage(s.usage, 'stream');
      assert.deepEqual(geminiTokens(s.usage), geminiTokens(sync.usageMetadata),
                       `stream usage ${JSON.stringify(s.usage)} != sync ${JSON.stringify(sync.usageMetadata)}`);
    });

    describe('forced function call', () => {
      const contents = [{ role: 'user', parts: [{ text: `What is the weather in Lisbon? (e2e ${RUN_ID})` }] }];
      const toolParams = { model, contents, config: { tools: WEATHER_TOOLS, toolConfig: FORCE_WEATHER } };
      let syncCall;

      // Sends the function's result back (functionResponse in a user turn, after the
      // model's turn as it came) and expects a final text answer.
      async function answerCall(modelContent, call, stream) {
        const followUp = {
          model,
          contents: [
            ...contents,
            modelContent,
            { role: 'user', parts: [{ functionResponse: { name: call.name, id: call.id,
                                                          response: { output: '18 degrees celsius, sunny' } } }] },
          ],
          config: { tools: WEATHER_TOOLS,
                    toolConfig: { functionCallingConfig: { mode: FunctionCallingConfigMode.AUTO } } },
        };
        let text;
        let usage;
        if (stream) {
          const s = await collectStream(await ai.models.generateContentStream(followUp), 'stream after the call');
          assert.deepEqual(s.functionCalls, []);
          text = s.text;
          usage = s.usage;
        } else {
          const res = await ai.models.generateContent(followUp);
          assert.equal(res.candidates?.[0]?.finishReason, 'STOP');
          assert.equal(res.functionCalls, undefined, `a function call again: ${JSON.stringify(res.candidates)}`);
          text = res.text;
          usage = res.usageMetadata;
        }
        assert.ok(typeof text === 'string' && text.trim().length > 0, 'no text after the functionResponse');
        assertUsage(usage, 'after the functionResponse');
      }

      test('sync: functionCall with the required fields, then text after the functionResponse', async () => {
        const res = await ai.models.generateContent(toolParams);
        requestIdOf(res, 'sync call');
        const [cand] = res.candidates ?? [];
        assert.ok(cand, JSON.stringify(res));
        assert.equal(cand.finishReason, 'STOP', 'a function call still finishes STOP');
        assert.equal(cand.content.role, 'model');
        const calls = res.functionCalls;
        assert.ok(Array.isArray(calls) && calls.length === 1, `function calls: ${JSON.stringify(cand.content)}`);
        const [call] = calls;
        assert.equal(call.name, 'get_weather');
        assertWeatherArgs(call.args, 'sync');
        assertUsage(res.usageMetadata, 'sync call');
        syncCall = call;
        await answerCall(cand.content, call, false);
      });

      test('streamed: the functionCall arrives whole, same args as sync, then text', async () => {
        const s = await collectStream(await ai.models.generateContentStream(toolParams), 'stream call');
        assert.equal(s.functionCalls.length, 1, `function calls: ${JSON.stringify(s.chunks)}`);
        const [call] = s.functionCalls;
        assert.equal(call.name, 'get_weather');
        assertWeatherArgs(call.args, 'streamed');
        if (syncCall) assert.deepEqual(call.args, syncCall.args, 'streamed args differ from sync');
        assert.ok(s.usage, 'no usageMetadata in the stream');
        assertUsage(s.usage, 'stream call');
        // The model's turn as the stream gave it: every part of every chunk.
        const parts = s.chunks.flatMap((c) => c.candidates?.[0]?.content?.parts ?? [])
                              .filter((p) => p.functionCall || (typeof p.text === 'string' && p.text !== ''));
        await answerCall({ role: 'model', parts }, call, true);
      });
    });

    test('countTokens returns a positive totalTokens, close to the prompt generateContent reported', async () => {
      const res = await ai.models.countTokens({ model, contents: params.contents });
      assert.ok(Number.isInteger(res.totalTokens) && res.totalTokens > 0, `countTokens: ${JSON.stringify(res)}`);
      // An estimate (the gateway's own) close to the prompt the upstream reports; the Gemini
      // API counts no systemInstruction here, so compare with a request without one.
      const bare = await ai.models.generateContent({ model, contents: params.contents });
      const actual = bare.usageMetadata.promptTokenCount;
      assert.ok(Math.abs(res.totalTokens - actual) <= Math.max(2, Math.ceil(actual / 10)),
                `countTokens ${JSON.stringify(res)} vs usageMetadata ${JSON.stringify(bare.usageMetadata)}`);
    });

    test('models.get shows the catalog model', async () => {
      const m = await ai.models.get({ model });
      assert.equal(m.name, `models/${model}`);
      assert.equal(typeof m.displayName, 'string');
      assert.ok(Number.isInteger(m.inputTokenLimit) && m.inputTokenLimit > 0, `inputTokenLimit ${m.inputTokenLimit}`);
      assert.ok(Number.isInteger(m.outputTokenLimit) && m.outputTokenLimit > 0, `outputTokenLimit ${m.outputTokenLimit}`);
      for (const method of ['generateContent', 'streamGenerateContent', 'countTokens']) {
        assert.ok(m.supportedActions?.includes(method), `${model} supportedActions ${m.supportedActions}`);
      }
    });
  });
}

describe('gemini models.list', () => {
  test('lists every model of MODELS, each once', async () => {
    const names = [];
    const pager = await ai.models.list({ config: { pageSize: 5 } });
    for await (const m of pager) {
      names.push(m.name);
      if (names.length > 1000) break; // bounded: a pager that never ends fails below
    }
    assert.ok(names.length < 1000, `models.list did not end (${names.length} models)`);
    assert.equal(new Set(names).size, names.length, `duplicates: ${names}`);
    for (const model of MODELS) assert.ok(names.includes(`models/${model}`), `models/${model} missing from ${names}`);
  });

  test('pageSize bounds each page and nextPageToken walks the rest', async () => {
    // v1beta: pageSize is "the maximum number of Models to return (per page)".
    const pager = await ai.models.list({ config: { pageSize: 2 } });
    const names = [];
    const pageLengths = [];
    for (let page = 0; page < 100; page++) {
      pageLengths.push(pager.pageLength);
      names.push(...pager.page.map((m) => m.name));
      if (!pager.hasNextPage()) break;
      await pager.nextPage();
    }
    assert.ok(pageLengths.every((n) => n <= 2), `page lengths with pageSize=2: ${pageLengths}`);
    assert.equal(new Set(names).size, names.length, `duplicates across pages: ${names}`);
    for (const model of MODELS) assert.ok(names.includes(`models/${model}`), `models/${model} missing from ${names}`);
  });
});

// Expects `promise` to reject with the SDK's ApiError of `status` and a Gemini error body
// {"error":{"code","message","status"}} (the SDK keeps the body as JSON in .message).
async function expectApiError(promise, status, grpcStatus) {
  let err;
  try {
    const res = await promise;
    assert.fail(`expected HTTP ${status}, got a success: ${JSON.stringify(res).slice(0, 300)}`);
  } catch (e) {
    err = e;
  }
  if (!(err instanceof ApiError)) throw err;
  assert.equal(err.status, status, `expected HTTP ${status}, got ${err.status}: ${err.message}`);
  let body;
  try {
    body = JSON.parse(err.message);
  } catch {
    assert.fail(`the error body is not JSON (Content-Type not application/json?): ${err.message}`);
  }
  assert.equal(body.error?.code, status, `error.code: ${err.message}`);
  assert.equal(body.error?.status, grpcStatus, `error.status: ${err.message}`);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0, 'empty error message');
  return err;
}

describe('gemini errors', () => {
  const contents = 'hello';

  test('wrong key → ApiError 401 UNAUTHENTICATED', async () => {
    const bad = genai('sk-nf-this-key-does-not-exist-000000000000');
    for (const model of MODELS) {
      await expectApiError(bad.models.generateContent({ model, contents }), 401, 'UNAUTHENTICATED');
    }
    await expectApiError((async () => {
      for await (const chunk of await bad.models.generateContentStream({ model: MODELS[0], contents })) void chunk;
    })(), 401, 'UNAUTHENTICATED');
    await expectApiError(bad.models.countTokens({ model: MODELS[0], contents }), 401, 'UNAUTHENTICATED');
  });

  test('unknown model → ApiError 404 NOT_FOUND', async () => {
    await expectApiError(ai.models.generateContent({ model: 'no-such-model-e2e', contents }), 404, 'NOT_FOUND');
    await expectApiError((async () => {
      for await (const chunk of await ai.models.generateContentStream({ model: 'no-such-model-e2e', contents })) {
        void chunk;
      }
    })(), 404, 'NOT_FOUND');
    await expectApiError(ai.models.get({ model: 'no-such-model-e2e' }), 404, 'NOT_FOUND');
  });

  test('empty contents → ApiError 400 INVALID_ARGUMENT', async () => {
    // The SDK refuses [] itself ("contents are required"); extraBody puts it on the wire.
    for (const model of MODELS) {
      await expectApiError(ai.models.generateContent({
        model, contents, config: { httpOptions: { extraBody: { contents: [] } } },
      }), 400, 'INVALID_ARGUMENT');
    }
  });
});

describe('gemini billing', () => {
  test('the balance drops by exactly the priced usage records of the requests', async (t) => {
    const { account, key } = await createAccountWithKey({ name: 'e2e-gemini-billing', credit: '10.00',
                                                          plan: 'unlimited' });
    const c = genai(key.key);
    const start = await accountMoney(account.id);
    assert.equal(start.balance, 10_000_000_000n);
    const pricing = new Map();
    for (const model of MODELS) pricing.set(model, await modelPricing(model));

    // A sync and a streamed request per model, one of them long, then two with a long
    // systemInstruction (Gemini's implicit cache: a write, then a read, where the upstream
    // caches): whatever cache tokens come back are priced by the same formula.
    const plan = MODELS.flatMap((model, i) => [
      { model, stream: false, words: i === 0 ? 120 : 0 },
      { model, stream: true, words: 0 },
      { model, stream: false, words: 0, cache: true },
      { model, stream: true, words: 0, cache: true },
    ]);
    const done = [];
    for (const [i, p] of plan.entries()) {
      const text = `Billing check ${i} ${RUN_ID}` + (p.words ? ` [mock:words=${p.words}]` : '');
      const systemInstruction = p.cache
        ? `${SYSTEM} (cache ${p.model} ${RUN_ID}) ${'Answer in plain words. '.repeat(250)}`
        : SYSTEM;
      const params = { model: p.model, contents: [{ role: 'user', parts: [{ text }] }],
                       config: { systemInstruction } };
      let usage;
      let requestId;
      if (p.stream) {
        const s = await collectStream(await c.models.generateContentStream(params), `billing ${i}`);
        usage = s.usage;
        requestId = [...s.requestIds][0];
      } else {
        const res = await c.models.generateContent(params);
        usage = res.usageMetadata;
        requestId = requestIdOf(res, `billing ${i}`);
      }
      assertUsage(usage, `${p.model} stream=${p.stream}`);
      done.push({ ...p, requestId, usage });
    }

    // GET /v1/usage with the key: one record per request, tokens as the response said.
    const usage = await eventually(() => userUsage(key.key, 100), (u) => u.data.length >= done.length);
    assert.equal(usage.data.length, done.length, `usage records: ${JSON.stringify(usage.data, null, 1)}`);
    const byId = new Map(usage.data.map((r) => [r.request_id, r]));
    let expected = 0n;
    for (const r of done) {
      const rec = byId.get(r.requestId);
      assert.ok(rec, `no usage record for x-request-id ${r.requestId}; have ${[...byId.keys()]}`);
      assert.equal(rec.model, r.model);
      assert.equal(rec.protocol, 'gemini', `record protocol ${JSON.stringify(rec)}`);
      // A cache write is not visible in Gemini usage: take it from the record.
      assert.deepEqual(recordTokens(rec), geminiTokens(r.usage, rec.cache_write_tokens),
                       `record tokens of ${r.model} stream=${r.stream} != usageMetadata ${JSON.stringify(r.usage)}`);
      r.cost = tokensCostNano(pricing.get(r.model), recordTokens(rec));
      assert.equal(usdToNano(rec.cost), r.cost, `record cost of ${JSON.stringify(rec)} != formula`);
      expected += r.cost;
    }
    assert.ok(expected > 0n);
    const detail = done.map((r) => `${r.model} stream=${r.stream} cache=${!!r.cache}: ` +
                                   `${JSON.stringify(r.usage)} → ${nanoToUsd(r.cost)}`).join('\n');
    t.diagnostic(detail);

    const end = await eventually(() => accountMoney(account.id),
                                 (m) => start.balance - m.balance >= expected);
    assert.equal(nanoToUsd(start.balance - end.balance), nanoToUsd(expected),
                 `balance drop != sum of the priced usage records\n${detail}`);
    assert.equal(end.totalSpent - start.totalSpent, expected, 'total_spent moved differently');
  });
});
