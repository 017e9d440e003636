// End-to-end: the gateway's HTTP edge under load and abuse. Many concurrent streams with
// exact billing, a client that leaves mid-stream, connections that drip their headers or
// body, a body that must not be read when the key is wrong, and the header caps. Uses the
// official OpenAI SDK where a client fits and raw sockets where the test is about framing.
//
// The assertions on gauges and the mock's open-stream count assume no other test file
// streams at the same moment: node --test runs files one at a time on a 2-core machine
// (its default file concurrency is the number of cores minus one).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';

import {
  BASE_URL, DEMO_KEY, RUN_ID, HEADER_TIMEOUT_MS, BODY_TIMEOUT_MS,
  openai, adminOk, createAccountWithKey, usdToNano, nanoToUsd, chatCostNano, accountMoney,
  eventually, assertUsage, sleep, mockStats, gatewayMetric, RawHttp,
} from './lib.mjs';

const MODEL = 'qwen3-max';
const client = openai();

// Whether the mock honours [mock:chunk-delay=MS] (spaces the words of a stream). Asked
// once, through the gateway: three words 300 ms apart arrive ≥ 450 ms apart end to end.
let chunkDelayProbe;
function mockHasChunkDelay() {
  chunkDelayProbe ??= (async () => {
    const stream = await client.chat.completions.create({
      model: MODEL, stream: true,
      messages: [{ role: 'user', content: `probe ${RUN_ID} [mock:words=3][mock:chunk-delay=300]` }],
    });
    const at = [];
    for await (const chunk of stream) {
      if (chunk.choices?.[0]?.delta?.content) at.push(performance.now());
    }
    return at.length === 3 && at[2] - at[0] >= 450;
  })();
  return chunkDelayProbe;
}

// Reads one SDK chat stream: its text, usage, chunk ids, and when content came.
async function readStream(stream) {
  const out = { text: '', usage: null, ids: new Set(), finish: [], firstContentAt: null,
                lastContentAt: null };
  for await (const chunk of stream) {
    out.ids.add(chunk.id);
    if (chunk.usage) out.usage = chunk.usage;
    for (const choice of chunk.choices ?? []) {
      const piece = choice.delta?.content;
      if (piece) {
        out.lastContentAt = performance.now();
        out.firstContentAt ??= out.lastContentAt;
        out.text += piece;
      }
      if (choice.finish_reason) out.finish.push(choice.finish_reason);
    }
  }
  return out;
}

// The most intervals [from, to] that hold one instant.
function peakOverlap(intervals) {
  const edges = [];
  for (const [from, to] of intervals) edges.push([from, 1], [to, -1]);
  edges.sort((a, b) => a[0] - b[0] || b[1] - a[1]); // opens before closes at a tie
  let open = 0;
  let peak = 0;
  for (const [, d] of edges) peak = Math.max(peak, (open += d));
  return peak;
}

// Every usage record of an account, paging with `after`.
async function allUsage(accountId) {
  const records = [];
  let after = '';
  for (let page = 0; page < 20; page++) {
    const q = `limit=1000${after ? `&after=${encodeURIComponent(after)}` : ''}`;
    const p = await adminOk('GET', `/admin/v1/accounts/${accountId}/usage?${q}`);
    records.push(...p.data);
    if (!p.has_more) return records;
    after = p.data.at(-1).request_id;
  }
  throw new Error('more than 20 pages of usage records');
}

// Asserts `body` (text) is an OpenAI error body; returns its `error` object.
function assertOpenAiError(body, what) {
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch {
    assert.fail(`${what}: the body is not JSON: ${JSON.stringify(body.slice(0, 300))}`);
  }
  const e = parsed?.error;
  assert.ok(e && typeof e === 'object', `${what}: no "error" object: ${body.slice(0, 300)}`);
  assert.equal(typeof e.message, 'string', `${what}: error.message`);
  assert.ok(e.message.length > 0, `${what}: empty error.message`);
  assert.equal(typeof e.type, 'string', `${what}: error.type`);
  assert.ok('param' in e && 'code' in e, `${what}: error.param and error.code must be present: ${body}`);
  return e;
}

describe('concurrency', { skip: process.env.NEXUSFLOW_E2E_GATEWAYS > 1 ? 'reads one gateway process (its gauges, its pid): the all and split runs cover it' : false }, () => {
  test('1,000 concurrent streams complete with the right text and exact billing',
       { timeout: 120_000 }, async (t) => {
    const N = 1000;
    const PROMPTS = 50; // 20 streams share each prompt; ids below tell the streams apart
    const spaced = await mockHasChunkDelay();
    // Ten words each: spaced 300 ms apart (2.7 s of content per stream) when the mock can,
    // else all after a 1.5 s first-token delay. Either way the streams overlap.
    const shape = spaced ? '[mock:words=10][mock:chunk-delay=300]' : '[mock:words=10][mock:delay=1500]';
    if (!spaced) t.diagnostic('the mock has no [mock:chunk-delay]: streams overlap by [mock:delay] only');

    const pricing = (await client.models.retrieve(MODEL)).pricing;
    // Holds are the maximum cost (32k output tokens at $6/M ≈ $0.20 each): $500 covers
    // 1,000 at once.
    const { account, key } = await createAccountWithKey({ name: 'e2e-edge-1k', credit: '500.00',
                                                          plan: 'unlimited' });
    const start = await accountMoney(account.id);
    assert.equal(start.balance, 500_000_000_000n);
    const c = openai(key.key, { timeout: 110_000 });
    const prompts = Array.from({ length: PROMPTS },
                               (_, i) => `Edge stream ${i} of ${RUN_ID}: count things ${shape}`);

    // The sync answer of each prompt (billed too, to the same account).
    const refs = await Promise.all(prompts.map(async (content) => {
      const { data, response } = await c.chat.completions
        .create({ model: MODEL, messages: [{ role: 'user', content }] })
        .withResponse();
      assertUsage(data.usage, 'sync reference');
      return { text: data.choices[0].message.content, usage: data.usage,
               requestId: response.headers.get('x-request-id') };
    }));

    const t0 = performance.now();
    const settled = await Promise.allSettled(Array.from({ length: N }, async (_, i) => {
      const p = i % PROMPTS;
      const { data: stream, response } = await c.chat.completions
        .create({ model: MODEL, messages: [{ role: 'user', content: prompts[p] }], stream: true,
                  stream_options: { include_usage: true } })
        .withResponse();
      const s = await readStream(stream);
      return { ...s, prompt: p, requestId: response.headers.get('x-request-id'),
               endAt: performance.now() };
    }));
    const elapsed = performance.now() - t0;
    const failed = settled.filter((r) => r.status === 'rejected');
    assert.equal(failed.length, 0,
                 `${failed.length} of ${N} streams failed; first: ` +
                 failed.slice(0, 3).map((r) => String(r.reason?.message ?? r.reason)).join(' | '));
    const streams = settled.map((r) => r.value);
    t.diagnostic(`${N} streams in ${Math.round(elapsed)} ms`);

    for (const [i, s] of streams.entries()) {
      assert.equal(s.text, refs[s.prompt].text, `stream ${i}: text differs from the sync answer`);
      assert.deepEqual(s.finish, ['stop'], `stream ${i}: finish reasons`);
      assert.equal(s.ids.size, 1, `stream ${i}: chunk ids ${[...s.ids]}`);
      assertUsage(s.usage, `stream ${i}`);
      assert.equal(s.usage.prompt_tokens, refs[s.prompt].usage.prompt_tokens, `stream ${i}: prompt_tokens`);
      assert.equal(s.usage.completion_tokens, refs[s.prompt].usage.completion_tokens,
                   `stream ${i}: completion_tokens`);
      assert.ok(s.requestId, `stream ${i}: no x-request-id`);
    }
    // No two streams were crossed: each has its own completion id and request id.
    assert.equal(new Set(streams.map((s) => [...s.ids][0])).size, N, 'completion ids repeat');
    const requestIds = [...refs, ...streams].map((r) => r.requestId);
    assert.equal(new Set(requestIds).size, N + PROMPTS, 'x-request-id values repeat');

    if (spaced) {
      // The premise: the gateway held them at once, i.e. most streams were between their
      // first and last word at one instant (each spends 2.7 s there).
      const peak = peakOverlap(streams.map((s) => [s.firstContentAt, s.lastContentAt]));
      t.diagnostic(`peak streams mid-answer at once: ${peak}`);
      assert.ok(peak >= 0.9 * N, `only ${peak} of ${N} streams were mid-answer at once`);
    }

    // Billing: the balance drops by exactly the priced usage of every request.
    const all = [...refs, ...streams];
    const expected = all.reduce((sum, r) => sum + chatCostNano(pricing, r.usage), 0n);
    const end = await eventually(() => accountMoney(account.id),
                                 (m) => start.balance - m.balance >= expected,
                                 { timeoutMs: 20_000, intervalMs: 200 });
    assert.equal(nanoToUsd(start.balance - end.balance), nanoToUsd(expected),
                 'balance drop != sum of the priced usage of the requests');
    assert.equal(end.totalSpent - start.totalSpent, expected, 'total_spent moved differently');

    // One usage record per request, with its tokens and cost.
    const records = await allUsage(account.id);
    assert.equal(records.length, all.length, `usage records: ${records.length}, requests: ${all.length}`);
    const byId = new Map(records.map((r) => [r.request_id, r]));
    for (const r of all) {
      const rec = byId.get(r.requestId);
      assert.ok(rec, `no usage record for ${r.requestId}`);
      assert.equal(rec.output_tokens, r.usage.completion_tokens, `output tokens of ${r.requestId}`);
      assert.equal(rec.input_tokens + rec.cache_read_tokens + rec.cache_write_tokens,
                   r.usage.prompt_tokens, `input tokens of ${r.requestId}`);
      assert.equal(usdToNano(rec.cost), chatCostNano(pricing, r.usage), `cost of ${r.requestId}`);
    }
  });
});

describe('client disconnect', { skip: process.env.NEXUSFLOW_E2E_GATEWAYS > 1 ? 'reads one gateway process (its gauges, its pid): the all and split runs cover it' : false }, () => {
  test('a client that disconnects mid-stream frees its upstream within 1 s, and the ' +
       'active-streams gauge returns to zero', { timeout: 30_000 }, async () => {
    const before = await mockStats();
    assert.ok(await mockHasChunkDelay(),
              'the mock provider does not honour [mock:chunk-delay=MS]: no slow stream to leave');
    const { account, key } = await createAccountWithKey({ name: 'e2e-edge-abort', credit: '5.00',
                                                          plan: 'unlimited' });
    const start = await accountMoney(account.id);
    const c = openai(key.key);
    const abort = new AbortController();
    // 2,000 words 50 ms apart: 100 s if nobody stops it.
    const { data: stream, response } = await c.chat.completions
      .create({ model: MODEL, stream: true, stream_options: { include_usage: true },
                messages: [{ role: 'user',
                             content: `Leave me ${RUN_ID} [mock:words=2000][mock:chunk-delay=50]` }] },
              { signal: abort.signal })
      .withResponse();
    const requestId = response.headers.get('x-request-id');
    assert.ok(requestId, 'no x-request-id');

    // A few words in, the stream is open at the mock and counted by the gauge.
    const it = stream[Symbol.asyncIterator]();
    let words = 0;
    while (words < 3) {
      const { value, done } = await it.next();
      assert.ok(!done, `the stream ended after ${words} words, before the client left`);
      if (value.choices?.[0]?.delta?.content) words++;
    }
    const during = await mockStats();
    assert.ok(during.open_streams > before.open_streams,
              `/mock/stats open_streams ${during.open_streams} while streaming (was ${before.open_streams})`);
    const gaugeDuring = await gatewayMetric('nexusflow_gateway_active_streams');
    assert.ok(gaugeDuring.value >= 1,
              `nexusflow_gateway_active_streams = ${gaugeDuring.value} during a stream (${gaugeDuring.tried})`);

    abort.abort();
    const abortedAt = performance.now();
    await it.return?.().catch(() => {});

    // The upstream stream closes within 1 s. Polled every 50 ms, so the poll that sees it
    // may come up to one interval after the close: that interval is the only slack.
    const POLL_MS = 50;
    let stats = during;
    let freedAt = null;
    while (performance.now() - abortedAt <= 1000 + POLL_MS) {
      stats = await mockStats();
      if (stats.open_streams <= before.open_streams) {
        freedAt = performance.now();
        break;
      }
      await sleep(POLL_MS);
    }
    assert.ok(freedAt !== null,
              `the mock still has ${stats.open_streams} open streams (${before.open_streams} before) ` +
              `${Math.round(performance.now() - abortedAt)} ms after the client left`);
    assert.ok(freedAt - abortedAt <= 1000 + POLL_MS, `upstream freed after ${freedAt - abortedAt} ms`);

    // The gateway's gauge is back to zero within 2 s of the abort.
    let gauge;
    do {
      gauge = await gatewayMetric('nexusflow_gateway_active_streams');
      if (gauge.value === 0) break;
      await sleep(100);
    } while (performance.now() - abortedAt <= 2000);
    assert.equal(gauge.value, 0,
                 `nexusflow_gateway_active_streams = ${gauge.value} ` +
                 `${Math.round(performance.now() - abortedAt)} ms after the client left`);

    // Charged for what was produced: checked on the usage record of its request id (GET
    // /v1/usage with the key), which must have output tokens, but fewer than the 2,000
    // words the whole answer would have had (the gateway may estimate the tokens of a
    // cut-off answer, so no tighter bound), and on the balance, which drops by exactly
    // that record's cost.
    const usage = await eventually(async () => {
      const res = await fetch(`${BASE_URL}/usage?limit=10`, { headers: { Authorization: `Bearer ${key.key}` } });
      assert.equal(res.status, 200, `GET /v1/usage → ${res.status}`);
      return res.json();
    }, (u) => u.data.some((r) => r.request_id === requestId), { timeoutMs: 5_000 });
    const rec = usage.data.find((r) => r.request_id === requestId);
    assert.ok(rec, `no usage record for the aborted request ${requestId}: ${JSON.stringify(usage.data)}`);
    assert.ok(rec.output_tokens > 0 && rec.output_tokens < 2000,
              `aborted after ${words} words, charged output_tokens ${rec.output_tokens}`);
    assert.ok(usdToNano(rec.cost) > 0n, `cost ${rec.cost}`);
    const end = await eventually(() => accountMoney(account.id),
                                 (m) => start.balance - m.balance >= usdToNano(rec.cost));
    assert.equal(nanoToUsd(start.balance - end.balance), nanoToUsd(usdToNano(rec.cost)),
                 'the balance dropped by other than the record\'s cost');
  });
});

// A request that completes normally on its own connection, timed.
async function normalRequest() {
  const t0 = performance.now();
  const res = await client.chat.completions.create({
    model: MODEL, messages: [{ role: 'user', content: `meanwhile ${RUN_ID}` }],
  });
  assert.equal(res.choices[0].finish_reason, 'stop');
  return performance.now() - t0;
}

// Either a plain close or a 408 (then a close) on `conn`; returns the status or null.
function assertCutOff(conn, what) {
  const responses = conn.responses();
  if (responses.length === 0) {
    assert.ok(conn.data.length === 0, `${what}: partial response ${conn.preview()}`);
    return null;
  }
  assert.equal(responses.length, 1, `${what}: ${conn.preview()}`);
  assert.equal(responses[0].status, 408, `${what}: expected 408 or a close, got ${conn.preview()}`);
  return 408;
}

describe('connection deadlines', { concurrency: true }, () => {
  test('a slowloris connection is closed at the header deadline, while a normal request ' +
       'on another connection succeeds', { timeout: 20_000 }, async () => {
    const conn = await RawHttp.open();
    try {
      conn.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ');
      // One more header byte every 200 ms; the blank line that ends the headers never comes.
      const drip = setInterval(() => conn.write('a'), 200);
      try {
        await sleep(500);
        const ms = await normalRequest();
        assert.ok(!conn.closed, `the slow connection was closed ${Math.round(conn.closedAt - conn.openedAt)} ms ` +
                                `after connecting (header deadline ${HEADER_TIMEOUT_MS} ms)`);
        assert.ok(ms < 1000, `a normal request took ${Math.round(ms)} ms beside a slowloris`);
        await conn.waitUntil(() => conn.closed, HEADER_TIMEOUT_MS + 1000 - (performance.now() - conn.openedAt));
      } finally {
        clearInterval(drip);
      }
      const after = (conn.closedAt ?? performance.now()) - conn.openedAt;
      assert.ok(conn.closed, `still open ${Math.round(after)} ms after connecting ` +
                             `(header deadline ${HEADER_TIMEOUT_MS} ms); sent ${conn.bytesWritten} bytes`);
      if (assertCutOff(conn, 'slow headers') === 408) {
        await conn.waitUntil(() => conn.closed, 1000);
      }
      // Not much before the deadline either (timers may fire a little early): a close at
      // once would mean the deadline is not the configured one.
      assert.ok(after >= HEADER_TIMEOUT_MS - 250 && after <= HEADER_TIMEOUT_MS + 1000,
                `closed ${Math.round(after)} ms after connecting (header deadline ${HEADER_TIMEOUT_MS} ms)`);
    } finally {
      conn.destroy();
    }
  });

  test('a body that drips is cut at the body deadline, while a normal request on another ' +
       'connection succeeds', { timeout: 20_000 }, async () => {
    const content = 'x'.repeat(1000 - `{"model":"${MODEL}","messages":[{"role":"user","content":""}]}`.length);
    const body = `{"model":"${MODEL}","messages":[{"role":"user","content":"${content}"}]}`;
    assert.equal(body.length, 1000);
    const conn = await RawHttp.open();
    try {
      conn.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${DEMO_KEY}\r\n` +
                 'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n');
      const headersAt = performance.now();
      let sent = 0;
      const drip = setInterval(() => { if (sent < body.length) conn.write(body[sent++]); }, 200);
      try {
        await sleep(500);
        const ms = await normalRequest();
        assert.ok(!conn.closed, `the dripping connection was closed ${Math.round(conn.closedAt - headersAt)} ms ` +
                                `after its headers (body deadline ${BODY_TIMEOUT_MS} ms)`);
        assert.ok(ms < 1000, `a normal request took ${Math.round(ms)} ms beside a dripping body`);
        await conn.waitUntil(() => conn.closed || conn.data.length > 0,
                             BODY_TIMEOUT_MS + 1000 - (performance.now() - headersAt));
      } finally {
        clearInterval(drip);
      }
      const cutAt = (conn.firstByteAt ?? conn.closedAt ?? performance.now()) - headersAt;
      assert.ok(conn.closed || conn.data.length > 0,
                `no answer and no close ${Math.round(cutAt)} ms after the headers ` +
                `(body deadline ${BODY_TIMEOUT_MS} ms); ${sent} of 1000 body bytes sent`);
      if (!conn.closed) await conn.waitUntil(() => conn.closed, 1000);
      assertCutOff(conn, 'dripping body');
      assert.ok(conn.closed, `answered ${conn.preview()} but did not close`);
      assert.ok(cutAt >= BODY_TIMEOUT_MS - 250 && cutAt <= BODY_TIMEOUT_MS + 1000,
                `cut ${Math.round(cutAt)} ms after the headers (body deadline ${BODY_TIMEOUT_MS} ms)`);
    } finally {
      conn.destroy();
    }
  });
});

const CHAT_HEAD = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n';

// Waits for the first response on `conn`, at most `ms`.
async function firstResponse(conn, ms, what) {
  const t0 = performance.now();
  await conn.waitUntil(() => conn.responses().length > 0 || conn.closed, ms);
  const [res] = conn.responses();
  assert.ok(res, `${what}: no response within ${Math.round(performance.now() - t0)} ms ` +
                 `(${conn.closed ? `closed by ${conn.closeHow}` : 'still open'}): ${conn.preview()}`);
  return res;
}

describe('body refused before it is read', () => {
  test('a Content-Length over the body limit is a 413 in the path\'s protocol, before any body byte', async () => {
    for (const [path, type] of [['/v1/chat/completions', 'invalid_request_error'], ['/v1/messages', 'request_too_large']]) {
      const conn = await RawHttp.open();
      try {
        conn.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${DEMO_KEY}\r\n` +
                   'Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n');
        assert.ok(await conn.waitUntil(() => conn.responses().length > 0, 5000), `${path}: no answer ${conn.preview()}`);
        const [res] = conn.responses();
        assert.equal(res.status, 413, `${path}: ${conn.preview()}`);
        const body = JSON.parse(res.body.toString());
        assert.equal(body.error.type, type, `${path}: ${conn.preview()}`);
        assert.equal(conn.bytesWritten < 1000, true);
      } finally {
        conn.destroy();
      }
    }
  });

  test('a wrong key with a 10 MB body is answered 401 before any body byte is sent, then closed',
       { timeout: 10_000 }, async () => {
    const conn = await RawHttp.open();
    try {
      conn.write(`${CHAT_HEAD}Authorization: Bearer sk-nf-wrong-key-0000000000000000000000\r\n` +
                 'Content-Length: 10485760\r\n\r\n');
      const res = await firstResponse(conn, 2000, 'wrong key, 10 MB announced');
      assert.equal(res.status, 401, conn.preview());
      const e = assertOpenAiError(res.body, '401');
      assert.equal(e.code, 'invalid_api_key');
      assert.equal(e.type, 'invalid_request_error');
      // The body was never read, so the connection cannot carry another request.
      assert.ok(await conn.waitUntil(() => conn.closed, 1000), 'the connection stayed open after the 401');
    } finally {
      conn.destroy();
    }
  });

  test('a wrong key with Expect: 100-continue gets 401 instead of 100 Continue',
       { timeout: 10_000 }, async () => {
    const conn = await RawHttp.open();
    try {
      conn.write(`${CHAT_HEAD}Authorization: Bearer sk-nf-wrong-key-0000000000000000000000\r\n` +
                 'Content-Length: 10485760\r\nExpect: 100-continue\r\n\r\n');
      const res = await firstResponse(conn, 2000, 'wrong key with Expect');
      assert.equal(res.status, 401, `the first response must be the 401: ${conn.preview()}`);
      assert.equal(assertOpenAiError(res.body, '401').code, 'invalid_api_key');
      assert.ok(await conn.waitUntil(() => conn.closed, 1000), 'the connection stayed open after the 401');
    } finally {
      conn.destroy();
    }
  });

  test('a good key with Expect: 100-continue gets 100 Continue before the body, then 200',
       { timeout: 10_000 }, async () => {
    const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: `expect ${RUN_ID}` }] });
    const conn = await RawHttp.open();
    try {
      conn.write(`${CHAT_HEAD}Authorization: Bearer ${DEMO_KEY}\r\n` +
                 `Content-Length: ${Buffer.byteLength(body)}\r\nExpect: 100-continue\r\n\r\n`);
      const interim = await firstResponse(conn, 2000, 'good key with Expect');
      assert.equal(interim.status, 100, `expected 100 Continue first: ${conn.preview()}`);
      conn.write(body);
      await conn.waitUntil(() => conn.responses().length > 1 || conn.closed, 5000);
      const final = conn.responses()[1];
      assert.ok(final, `no response after the body: ${conn.preview()}`);
      assert.equal(final.status, 200, conn.preview(600));
      const completion = JSON.parse(final.body);
      assert.equal(completion.object, 'chat.completion');
      assert.ok(completion.choices[0].message.content.length > 0);
    } finally {
      conn.destroy();
    }
  });
});

describe('header caps', () => {
  // GET /v1/models with the demo key and `extra` header lines; the first response.
  async function modelsWithHeaders(extra, what) {
    const conn = await RawHttp.open();
    try {
      conn.write(`GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${DEMO_KEY}\r\n` +
                 `${extra.join('\r\n')}${extra.length ? '\r\n' : ''}\r\n`);
      return await firstResponse(conn, 5000, what);
    } finally {
      conn.destroy();
    }
  }

  test('modest extra headers are accepted (the caps below are what refuses)', async () => {
    const extra = Array.from({ length: 20 }, (_, i) => `X-Edge-${i}: ${'v'.repeat(400)}`);
    const res = await modelsWithHeaders(extra, '20 headers, 8 KB');
    assert.equal(res.status, 200, res.body.slice(0, 300));
  });

  test('200 headers → 431 with an OpenAI error body', async () => {
    const extra = Array.from({ length: 200 }, (_, i) => `X-Edge-${i}: v`);
    const res = await modelsWithHeaders(extra, '200 headers');
    assert.equal(res.status, 431, `200 headers: HTTP ${res.status} ${res.body.slice(0, 200)}`);
    assertOpenAiError(res.body, '431 (count)');
  });

  test('headers over 64 KiB → 431 with an OpenAI error body', async () => {
    // Ten 7,000-byte values: 70 kB, few enough headers that only the size cap applies.
    const extra = Array.from({ length: 10 }, (_, i) => `X-Edge-Big-${i}: ${'b'.repeat(7000)}`);
    const res = await modelsWithHeaders(extra, '70 kB of headers');
    assert.equal(res.status, 431, `70 kB of headers: HTTP ${res.status} ${res.body.slice(0, 200)}`);
    assertOpenAiError(res.body, '431 (size)');
  });
});

// A header still incomplete 100 ms after its first byte is read on by the gateway's
// low-priority intake loop and handed back whole; what the client sees is unchanged.
describe('slow headers', () => {
  const body = JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: `slow header ${RUN_ID}` }] });
  const head = `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${DEMO_KEY}\r\n` +
               `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`;

  // The counter as the gateway serving `conn` sees it (with several gateway processes on
  // one port, another connection may reach another process): GET /metrics on `conn`,
  // which is its response number `index`.
  async function slowMetric(conn, index) {
    conn.write('GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n');
    await conn.waitUntil(() => conn.responses().length > index || conn.closed, 5000);
    const res = conn.responses()[index];
    assert.ok(res && res.status === 200, `GET /metrics on the connection: ${conn.preview()}`);
    const m = /^nexusflow_gateway_slow_headers_total (\S+)$/m.exec(res.body);
    assert.ok(m, 'nexusflow_gateway_slow_headers_total not exported');
    return Number(m[1]);
  }

  test('a header that arrives in pieces over a second is served, and its connection then ' +
       'serves the next request', { timeout: 15_000 }, async () => {
    const conn = await RawHttp.open();
    try {
      const before = await slowMetric(conn, 0);
      const step = Math.ceil(head.length / 8);
      for (let i = 0; i < head.length; i += step) {
        conn.write(head.slice(i, i + step));
        await sleep(150);
      }
      conn.write(body);
      await conn.waitUntil(() => conn.responses().length > 1 || conn.closed, 5000);
      const first = conn.responses()[1];
      assert.ok(first, `no answer to the slow header: ${conn.preview()}`);
      assert.equal(first.status, 200, first.body.slice(0, 300));
      const answer = JSON.parse(first.body);
      assert.equal(answer.choices[0].finish_reason, 'stop');
      assert.ok(answer.choices[0].message.content.length > 0, first.body.slice(0, 300));
      assert.ok(answer.usage.completion_tokens > 0, first.body.slice(0, 300));
      assert.ok(!conn.closed, 'the connection closed after a slow header\'s answer');
      conn.write(head + body);
      await conn.waitUntil(() => conn.responses().length > 2 || conn.closed, 5000);
      const second = conn.responses()[2];
      assert.ok(second, `no second answer on the same connection: ${conn.preview()}`);
      assert.equal(second.status, 200, second.body.slice(0, 300));
      const after = await slowMetric(conn, 3);
      assert.ok(after >= before + 1, `nexusflow_gateway_slow_headers_total ${before} → ${after}`);
    } finally {
      conn.destroy();
    }
  });

  // A request line and Host, 300 ms of nothing (so the intake reads the rest), then `rest`:
  // the answer is `status` with an OpenAI error body.
  async function slowThenRest(rest, status, what) {
    const conn = await RawHttp.open();
    try {
      conn.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n');
      await sleep(300);
      for (const part of rest) conn.write(part);
      const res = await firstResponse(conn, 5000, what);
      assert.equal(res.status, status, `${what}: HTTP ${res.status} ${res.body.slice(0, 200)}`);
      assertOpenAiError(res.body, `${status} (${what})`);
    } finally {
      conn.destroy();
    }
  }

  test('a slow header that turns out malformed is a 400 with an OpenAI error body', async () => {
    await slowThenRest(['this line has no colon\r\n\r\n'], 400, 'slow, malformed header');
  });

  test('a slow header that grows over 64 KiB is a 431 with an OpenAI error body', async () => {
    const big = Array.from({ length: 10 }, (_, i) => `X-Edge-Big-${i}: ${'b'.repeat(7000)}\r\n`);
    await slowThenRest(big, 431, 'slow 70 kB header');
  });
});
