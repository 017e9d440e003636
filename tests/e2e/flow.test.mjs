// End-to-end: flow control and what a stream that does not finish costs.
//
//  - A client that stops reading a long stream makes the gateway stop taking chunks, which
//    pauses the upstream (the mock keeps the stream open), instead of the gateway buffering
//    the answer in memory; once the client reads again the whole answer arrives intact.
//    In split mode the same holds across gRPC (a fixed stream window between gateway and
//    connector, and the connector's bounded writer).
//  - A stream that fails after output reached the client is charged for that output; one
//    that fails before any output is not charged at all.
//
// Not covered here: a client that hangs up on a *non-streaming* request cancelling it
// upstream. The mock's GET /mock/stats counts streamed responses only (open_streams,
// streams_started/completed/aborted/dropped), so there is nothing to watch for an
// in-flight non-streamed request; edge.test.mjs covers the streamed case.
//
// Like edge.test.mjs, this assumes no other test file streams at the same moment (node
// --test runs files one at a time on a 2-core machine), since it reads the mock's
// process-wide stream counters and the gateway's RSS.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { StringDecoder } from 'node:string_decoder';
import OpenAI from 'openai';

import {
  RUN_ID, GATEWAY_ADDR,
  openai, createAccountWithKey, usdToNano, nanoToUsd, chatCostNano, accountMoney,
  eventually, sleep, mockStats, gatewayPid, listeningPids, processRssBytes, userUsage,
} from './lib.mjs';

const MODEL = 'qwen3-max';
const MiB = 1024 * 1024;
const mib = (bytes) => (bytes / MiB).toFixed(1);

// One streamed chat over a raw socket, decoded as it arrives (HTTP/1.1 head, chunked or
// close-delimited body, SSE frames) so that tens of MB cost neither memory nor quadratic
// copying in the test. Keeps counts and the concatenated content, not the raw bytes.
class RawSseStream {
  constructor(socket) {
    this.socket = socket;
    this.head = Buffer.alloc(0);
    this.status = null;
    this.headers = null;
    this.chunked = false;
    this.chunkLeft = -1; // bytes left in the current chunk; -1: reading a size line
    this.sizeLine = '';
    this.skipCrlf = 0;
    this.bodyEnded = false; // the terminating zero-size chunk arrived
    this.decoder = new StringDecoder('utf8');
    this.sse = '';
    this.bytes = 0; // every byte received, head included
    this.frames = 0;
    this.contentPieces = 0;
    this.text = '';
    this.finish = [];
    this.usage = null;
    this.errors = [];
    this.done = false; // `data: [DONE]` arrived
    this.closed = false;
    this.closeHow = null;
    this.pauseAfterHead = false;
    this.waiters = new Set();
    socket.on('data', (d) => this.onData(d));
    socket.on('end', () => this.markClosed('FIN'));
    socket.on('error', (e) => this.markClosed(e.code ?? e.message));
    socket.on('close', () => this.markClosed('close'));
  }

  static open(requestText) {
    return new Promise((resolve, reject) => {
      const socket = net.connect(GATEWAY_ADDR);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        const s = new RawSseStream(socket);
        socket.write(requestText);
        resolve(s);
      });
    });
  }

  markClosed(how) {
    if (!this.closed) {
      this.closed = true;
      this.closeHow = how;
    }
    this.wake();
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  // Resolves true once `pred()` holds, false after `timeoutMs` without it.
  waitUntil(pred, timeoutMs) {
    if (pred()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => { if (pred()) finish(true); };
      const timer = setTimeout(() => finish(pred()), timeoutMs);
      const finish = (v) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(v);
      };
      this.waiters.add(check);
    });
  }

  onData(d) {
    this.bytes += d.length;
    if (this.status === null) {
      this.head = Buffer.concat([this.head, d]);
      const end = this.head.indexOf('\r\n\r\n', 0, 'latin1');
      if (end < 0) {
        assert.ok(this.head.length < 65536, 'no end of the response head in 64 KiB');
        return this.wake();
      }
      const lines = this.head.toString('latin1', 0, end).split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
      this.status = m ? Number(m[1]) : 0;
      this.headers = {};
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(':');
        if (colon > 0) this.headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      this.chunked = /\bchunked\b/i.test(this.headers['transfer-encoding'] ?? '');
      const rest = this.head.subarray(end + 4);
      this.head = null;
      if (this.pauseAfterHead) this.socket.pause();
      this.onBody(rest);
    } else {
      this.onBody(d);
    }
    this.wake();
  }

  onBody(buf) {
    if (!this.chunked) return this.onSse(buf);
    let pos = 0;
    while (pos < buf.length && !this.bodyEnded) {
      if (this.skipCrlf > 0) {
        const n = Math.min(this.skipCrlf, buf.length - pos);
        this.skipCrlf -= n;
        pos += n;
      } else if (this.chunkLeft < 0) {
        const nl = buf.indexOf(0x0a, pos);
        if (nl < 0) {
          this.sizeLine += buf.toString('latin1', pos);
          pos = buf.length;
        } else {
          this.sizeLine += buf.toString('latin1', pos, nl);
          pos = nl + 1;
          const size = parseInt(this.sizeLine.trim(), 16);
          assert.ok(!Number.isNaN(size), `bad chunk size line ${JSON.stringify(this.sizeLine)}`);
          this.sizeLine = '';
          if (size === 0) this.bodyEnded = true; // trailers, if any, are not read
          else this.chunkLeft = size;
        }
      } else {
        const n = Math.min(this.chunkLeft, buf.length - pos);
        this.onSse(buf.subarray(pos, pos + n));
        this.chunkLeft -= n;
        pos += n;
        if (this.chunkLeft === 0) {
          this.chunkLeft = -1;
          this.skipCrlf = 2;
        }
      }
    }
  }

  onSse(buf) {
    this.sse += this.decoder.write(buf);
    let sep;
    while ((sep = this.sse.indexOf('\n\n')) >= 0) {
      const frame = this.sse.slice(0, sep);
      this.sse = this.sse.slice(sep + 2);
      this.onFrame(frame);
    }
  }

  onFrame(frame) {
    const data = frame.split('\n').filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trimStart()).join('\n');
    if (!data) return;
    this.frames++;
    if (data === '[DONE]') {
      this.done = true;
      return;
    }
    const chunk = JSON.parse(data);
    if (chunk.error) {
      this.errors.push(chunk.error);
      return;
    }
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices ?? []) {
      const piece = choice.delta?.content;
      if (piece) {
        this.contentPieces++;
        this.text += piece;
      }
      if (choice.finish_reason) this.finish.push(choice.finish_reason);
    }
  }

  get words() {
    return (this.text.match(/\S+/g) ?? []).length;
  }

  destroy() {
    this.socket.destroy();
  }
}

describe('flow control', { skip: process.env.NEXUSFLOW_E2E_GATEWAYS > 1 ? 'reads one gateway process (its gauges, its pid): the all and split runs cover it' : false }, () => {
  test('a reader that stops reading pauses the upstream instead of growing the gateway\'s ' +
       'memory, and gets the whole answer once it reads again', { timeout: 60_000 }, async (t) => {
    // The mock's cap on [mock:words=N]. About 230 bytes of SSE a word at the client
    // (`data: {"id":…,"object":"chat.completion.chunk",…,"usage":null}`): ~22 MiB, many times
    // what the client's receive buffer (128 KiB to start, and it only grows while the
    // client reads) and the gateway's send buffer (at most net.ipv4.tcp_wmem's 4 MiB)
    // hold, and at ~0.2 s of mock time with no delay between words.
    const WORDS = 100_000;
    const PAUSE_MS = 3000;
    // Growth allowed while paused. A stream's buffer between the connector and the gateway
    // is 64 KiB (kStreamBufferBytes, plus the one write the gateway has handed to the
    // socket); across gRPC in split mode, the call's flow-control window adds 256 KiB and
    // the connector's writer another 64 KiB. What the client has not read sits in kernel socket buffers (the client's
    // receive queue, the gateway's send queue, the upstream connection's queues), which
    // are not in any process's RSS. So a flow-controlled stream grows the gateway by well
    // under 24 MiB, while a gateway that buffered the answer would hold most of its ~22 MiB
    // of SSE plus the parsed events behind it (and the mock would have finished: checked
    // below, which is the sharper signal).
    const RSS_BOUND = 24 * MiB;

    const { key } = await createAccountWithKey({ name: 'e2e-flow-slow', credit: '20.00', plan: 'unlimited' });
    // Warm the path first (connection pool to the mock, the stream code's first
    // allocations), so the measurement below sees the stream, not one-off setup.
    const warm = await openai(key.key).chat.completions.create({
      model: MODEL, stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: `warm ${RUN_ID} [mock:words=2000][mock:chunk-delay=0]` }],
    });
    for await (const chunk of warm) void chunk;

    const gateway = gatewayPid();
    // Split mode: the provider connector is its own process, on the gRPC port + 5
    // (tools/run). Watched the same way when it is there.
    const watched = [{ name: 'gateway', pid: gateway }];
    if (process.env.NEXUSFLOW_GRPC_PORT) {
      const [connector] = listeningPids(Number(process.env.NEXUSFLOW_GRPC_PORT) + 5);
      if (connector && connector !== gateway) watched.push({ name: 'provider-connector', pid: connector });
    }
    const split = watched.length > 1;
    // Bytes the gateway's connections to the connector received (ss -ti), split mode only.
    const grpcBytesReceived = () => {
      const out = execFileSync('ss', ['-tinH', `dport = :${Number(process.env.NEXUSFLOW_GRPC_PORT) + 5}`],
                               { encoding: 'utf8', timeout: 5_000 });
      return [...out.matchAll(/bytes_received:(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
    };
    const grpcRxBefore = split ? grpcBytesReceived() : 0;
    for (const w of watched) {
      w.before = processRssBytes(w.pid);
      w.peak = w.before;
    }
    const statsBefore = await mockStats();

    const body = JSON.stringify({
      model: MODEL, stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: `Slow reader ${RUN_ID}: go on and on [mock:words=${WORDS}][mock:chunk-delay=0]` }],
    });
    const t0 = performance.now();
    const s = await RawSseStream.open(
      `POST /v1/chat/completions HTTP/1.1\r\nHost: ${GATEWAY_ADDR.host}\r\nAuthorization: Bearer ${key.key}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    try {
      s.pauseAfterHead = true;
      assert.ok(await s.waitUntil(() => s.status !== null || s.closed, 10_000),
                'no response head within 10 s');
      assert.equal(s.status, 200, `status ${s.status} (${s.closed ? `closed: ${s.closeHow}` : 'open'})`);
      assert.match(s.headers['content-type'] ?? '', /text\/event-stream/);
      const pausedAt = performance.now();

      // Not reading. Sample the RSS of each watched process every 250 ms.
      while (performance.now() - pausedAt < PAUSE_MS) {
        await sleep(250);
        for (const w of watched) w.peak = Math.max(w.peak, processRssBytes(w.pid));
      }
      const bytesWhilePaused = s.bytes;
      const statsPaused = await mockStats();
      for (const w of watched) {
        w.paused = processRssBytes(w.pid);
        w.peak = Math.max(w.peak, w.paused);
        t.diagnostic(`${w.name} (pid ${w.pid}) VmRSS before ${mib(w.before)} MiB, after ${PAUSE_MS} ms ` +
                     `paused ${mib(w.paused)} MiB, peak ${mib(w.peak)} MiB (+${mib(w.peak - w.before)} MiB)`);
      }
      t.diagnostic(`paused after ${Math.round(pausedAt - t0)} ms; client had ${bytesWhilePaused} bytes ` +
                   `(${s.contentPieces} words); mock: ${JSON.stringify(statsPaused)}`);

      assert.ok(!s.closed, `the gateway closed the paused stream (${s.closeHow})`);
      assert.ok(s.contentPieces < WORDS, `the client already had all ${WORDS} words before reading`);
      const upstreamOpen = statsPaused.open_streams >= 1 &&
                           statsPaused.streams_completed === statsBefore.streams_completed;
      // The upstream is held back, not drained into the gateway: the mock could have
      // written the whole answer in well under a second, yet its stream is still open. In
      // split mode the canonical answer (~27 bytes a word, ~2.7 MB here) crosses gRPC,
      // whose stream window between gateway and connector is fixed (256 KiB), so the
      // connector's bounded writer fills and it pauses the upstream just the same.
      if (split) {
        const rx = grpcBytesReceived() - grpcRxBefore;
        t.diagnostic(`split mode: the gateway's gRPC connections to the connector received ` +
                     `${rx} bytes (${mib(rx)} MiB) during the request`);
      }
      assert.ok(upstreamOpen,
                `/mock/stats ${JSON.stringify(statsPaused)} while the client is paused: ` +
                'the mock finished (or lost) the stream, so nothing held it back');
      for (const w of watched) {
        assert.ok(w.peak - w.before < RSS_BOUND,
                  `${w.name} VmRSS grew by ${mib(w.peak - w.before)} MiB (${mib(w.before)} → ` +
                  `${mib(w.peak)} MiB) while the client did not read`);
      }

      // Read again: everything arrives, in order, nothing lost while paused.
      const resumedAt = performance.now();
      s.socket.resume();
      assert.ok(await s.waitUntil(() => (s.done && (s.bodyEnded || !s.chunked)) || s.closed, 45_000),
                `not done 45 s after resuming: ${s.bytes} bytes, ${s.contentPieces} words`);
      const readMs = performance.now() - resumedAt;
      t.diagnostic(`after resuming: ${s.bytes} bytes (${mib(s.bytes)} MiB), ${s.frames} SSE frames, ` +
                   `${s.contentPieces} words in ${Math.round(readMs)} ms`);
      for (const w of watched) {
        t.diagnostic(`${w.name} VmRSS at the end: ${mib(processRssBytes(w.pid))} MiB`);
      }
      assert.deepEqual(s.errors, [], 'error frames in the stream');
      assert.ok(s.done, `no data: [DONE] (closed: ${s.closeHow}); ${s.contentPieces} words`);
      assert.equal(s.contentPieces, WORDS, 'content chunks');
      assert.equal(s.words, WORDS, 'words in the content');
      assert.deepEqual(s.finish, ['stop']);
      assert.equal(s.usage?.completion_tokens, WORDS, `usage ${JSON.stringify(s.usage)}`);
      assert.ok(s.bytes > 10 * MiB, `only ${s.bytes} bytes for ${WORDS} words`);

      // The content is exactly the answer's: the same request unstreamed (the mock's answer
      // depends on the request only).
      const sync = await openai(key.key).chat.completions.create({
        model: MODEL, messages: JSON.parse(body).messages,
      });
      assert.ok(s.text === sync.choices[0].message.content,
                'the streamed text differs from the same request\'s non-streamed answer');

      const statsEnd = await eventually(mockStats,
                                        (st) => st.streams_completed > statsBefore.streams_completed);
      assert.ok(statsEnd.streams_completed > statsBefore.streams_completed,
                `the mock never completed the stream: ${JSON.stringify(statsEnd)}`);
    } finally {
      s.destroy();
    }
  });
});

// Reads an SDK chat stream to its end or its error.
async function drain(stream) {
  const out = { text: '', words: 0, finish: [], usage: null, error: null };
  try {
    for await (const chunk of stream) {
      if (chunk.usage) out.usage = chunk.usage;
      for (const choice of chunk.choices ?? []) {
        if (choice.delta?.content) {
          out.text += choice.delta.content;
          out.words++;
        }
        if (choice.finish_reason) out.finish.push(choice.finish_reason);
      }
    }
  } catch (e) {
    out.error = e;
  }
  return out;
}

describe('billing of streams that fail', () => {
  test('a stream whose upstream drops after output reached the client is charged for that ' +
       'output', { timeout: 30_000 }, async (t) => {
    const { account, key } = await createAccountWithKey({ name: 'e2e-flow-drop', credit: '5.00', plan: 'unlimited' });
    const start = await accountMoney(account.id);
    const c = openai(key.key);
    const pricing = (await c.models.retrieve(MODEL)).pricing;
    // 200 words, but the mock closes the upstream connection after the fifth.
    const { data: stream, response } = await c.chat.completions
      .create({ model: MODEL, stream: true, stream_options: { include_usage: true },
                messages: [{ role: 'user', content: `Drop me ${RUN_ID} [mock:words=200][mock:drop-after=5]` }] })
      .withResponse();
    const requestId = response.headers.get('x-request-id');
    assert.ok(requestId, 'no x-request-id');
    const s = await drain(stream);
    t.diagnostic(`client got ${s.words} words (${JSON.stringify(s.text)}), then: ` +
                 `${s.error ? `${s.error.constructor.name} ${s.error.status ?? ''} ${s.error.message}` : 'a normal end'}`);
    assert.ok(s.error, `the stream ended normally after ${s.words} words (finish ${JSON.stringify(s.finish)})`);
    assert.equal(s.words, 5, 'the words before the drop reached the client');
    assert.deepEqual(s.finish, [], 'a finish_reason on a dropped stream');
    assert.equal(s.usage, null, 'a usage chunk on a dropped stream');

    const usage = await eventually(() => userUsage(key.key),
                                   (u) => u.data.some((r) => r.request_id === requestId), { timeoutMs: 5_000 });
    const rec = usage.data.find((r) => r.request_id === requestId);
    assert.ok(rec, `no usage record for the dropped stream ${requestId}: ${JSON.stringify(usage.data)}`);
    t.diagnostic(`usage record: ${JSON.stringify(rec)}`);
    assert.ok(rec.output_tokens > 0 && rec.output_tokens < 200,
              `dropped after 5 words, charged output_tokens ${rec.output_tokens}`);
    assert.ok(rec.input_tokens > 0, `input_tokens ${rec.input_tokens}`);
    // The record's cost is its tokens at the model's price.
    assert.equal(usdToNano(rec.cost), chatCostNano(pricing, {
      prompt_tokens: rec.input_tokens + rec.cache_read_tokens + rec.cache_write_tokens,
      completion_tokens: rec.output_tokens,
      prompt_tokens_details: { cached_tokens: rec.cache_read_tokens },
    }, rec.cache_write_tokens), `cost ${rec.cost} of ${JSON.stringify(rec)}`);
    assert.ok(usdToNano(rec.cost) > 0n, `cost ${rec.cost}`);

    const end = await eventually(() => accountMoney(account.id),
                                 (m) => start.balance - m.balance >= usdToNano(rec.cost));
    assert.equal(nanoToUsd(start.balance - end.balance), nanoToUsd(usdToNano(rec.cost)),
                 'the balance dropped by other than the record\'s cost');
    assert.equal(end.totalSpent - start.totalSpent, usdToNano(rec.cost), 'total_spent');
    assert.equal(usage.data.length, 1, `usage records: ${JSON.stringify(usage.data)}`);
  });

  test('a stream that fails before any output is not charged', { timeout: 30_000 }, async (t) => {
    const { account, key } = await createAccountWithKey({ name: 'e2e-flow-500', credit: '5.00', plan: 'unlimited' });
    const start = await accountMoney(account.id);
    const c = openai(key.key);
    let err;
    try {
      const stream = await c.chat.completions.create({
        model: MODEL, stream: true, stream_options: { include_usage: true },
        messages: [{ role: 'user', content: `Fail me ${RUN_ID} [mock:status=500]` }],
      });
      await drain(stream);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof OpenAI.APIError, `expected an APIError, got ${err}`);
    assert.ok(err.status >= 500, `status ${err.status}`);
    const requestId = err.headers?.get('x-request-id');
    assert.ok(requestId, `HTTP ${err.status} has no x-request-id`);
    t.diagnostic(`HTTP ${err.status} ${err.message} (${requestId})`);

    // The hold is released (balance back where it was), and stays so: no late settlement.
    const released = await eventually(() => accountMoney(account.id), (m) => m.balance === start.balance,
                                      { timeoutMs: 5_000 });
    assert.equal(nanoToUsd(released.balance), nanoToUsd(start.balance), 'balance after the failed request');
    await sleep(1000);
    const end = await accountMoney(account.id);
    assert.equal(nanoToUsd(end.balance), nanoToUsd(start.balance), 'balance 1 s after the failed request');
    assert.equal(end.totalSpent, start.totalSpent, 'total_spent');
    const usage = await userUsage(key.key);
    assert.ok(!usage.data.some((r) => r.request_id === requestId),
              `a usage record for the failed request: ${JSON.stringify(usage.data)}`);
    assert.equal(usage.data.length, 0, `usage records: ${JSON.stringify(usage.data)}`);
  });
});
