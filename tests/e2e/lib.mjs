// Shared plumbing for the end-to-end tests: environment, admin API calls, money
// arithmetic in integer nano-USD (BigInt), and the billing formula.
//
// The tests run against a NexusFlow started by tools/run (see run-e2e.sh), which
// writes demo.env with the variables read here.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { GoogleGenAI } from '@google/genai';

function requireEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run the tests through tests/e2e/run-e2e.sh, ` +
                    'or source $NEXUSFLOW_DATA_DIR/demo.env of a running tools/run');
  }
  return value;
}

export const BASE_URL = requireEnv('NEXUSFLOW_BASE_URL').replace(/\/+$/, '');
export const DEMO_KEY = requireEnv('NEXUSFLOW_DEMO_KEY');
export const ADMIN_KEY = requireEnv('NEXUSFLOW_ADMIN_KEY');
export const DEMO_ACCOUNT = requireEnv('NEXUSFLOW_DEMO_ACCOUNT');
// http://127.0.0.1:PORT, where /admin, /metrics and /readyz live.
export const ORIGIN = new URL(BASE_URL).origin;
// Optional: the process's separate metrics listener (NEXUSFLOW_METRICS_PORT), when
// /metrics is not served on the public port.
export const METRICS_URL = process.env.NEXUSFLOW_METRICS_URL || '';

// A unique suffix so repeated runs against one data dir never collide.
export const RUN_ID = `${Date.now().toString(36)}-${process.pid}`;

export function openai(apiKey = DEMO_KEY, extra = {}) {
  return new OpenAI({ apiKey, baseURL: BASE_URL, maxRetries: 0, timeout: 30_000, ...extra });
}

// The Anthropic SDK: its baseURL is the origin (it adds /v1/messages itself). No
// retries, so a test sees the gateway's first answer.
export function anthropic(apiKey = DEMO_KEY, extra = {}) {
  return new Anthropic({ apiKey, baseURL: ORIGIN, maxRetries: 0, timeout: 30_000, ...extra });
}

// The Google GenAI SDK (Gemini API, v1beta): baseUrl is the origin, the SDK adds
// /v1beta/models/{model}:method. It sends the key as x-goog-api-key and retries nothing
// unless httpOptions.retryOptions is set.
export function genai(apiKey = DEMO_KEY, httpOptions = {}) {
  return new GoogleGenAI({ apiKey, httpOptions: { baseUrl: ORIGIN, timeout: 30_000, ...httpOptions } });
}

// Calls the admin API and returns {status, headers, body}; body is parsed JSON when it
// parses, else the raw text.
export async function admin(method, path, body) {
  const res = await fetch(`${ORIGIN}${path}`, {
    method,
    headers: {
      Authorization: `Bearer ${ADMIN_KEY}`,
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // keep the text: the assertion message will show it
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

// Admin call that must succeed with `expectStatus`; returns the parsed body.
export async function adminOk(method, path, body, expectStatus = 200) {
  const res = await admin(method, path, body);
  assert.equal(res.status, expectStatus,
               `${method} ${path} ${JSON.stringify(body ?? null)} → ${res.status} ` +
               `${typeof res.body === 'string' ? res.body : JSON.stringify(res.body)}`);
  return res.body;
}

// Creates an account, optionally credited, and a key on it.
// Returns {account, key} where key.key is the secret.
export async function createAccountWithKey({ name, credit, plan, models } = {}) {
  const account = await adminOk('POST', '/admin/v1/accounts', { name: `${name}-${RUN_ID}` }, 201);
  assert.match(account.id, /^acct_/);
  if (credit) {
    await adminOk('POST', `/admin/v1/accounts/${account.id}/credits`,
                  { amount: credit, idempotency_key: `e2e-${name}-${RUN_ID}`, note: 'e2e' });
  }
  const keyBody = { account_id: account.id, name: `${name}-key` };
  if (plan) keyBody.plan = plan;
  if (models) keyBody.models = models;
  const key = await adminOk('POST', '/admin/v1/keys', keyBody, 201);
  assert.match(key.key, /^sk-nf-/);
  return { account, key };
}

const DECIMAL_RE = /^(-?)(\d+)(?:\.(\d{1,9}))?$/;

// "12.345" (USD, up to 9 decimals) → 12345000000n nano-USD. Refuses anything that is
// not a plain decimal string, so a float sneaking into the API fails loudly.
export function usdToNano(text) {
  assert.equal(typeof text, 'string', `money must be a decimal string, got ${JSON.stringify(text)}`);
  const m = DECIMAL_RE.exec(text);
  assert.ok(m, `not a decimal money string: ${JSON.stringify(text)}`);
  const nano = BigInt(m[2]) * 1_000_000_000n + BigInt((m[3] ?? '').padEnd(9, '0'));
  return m[1] === '-' ? -nano : nano;
}

export function nanoToUsd(nano) {
  const sign = nano < 0n ? '-' : '';
  const abs = nano < 0n ? -nano : nano;
  return `${sign}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, '0')}`;
}

function ceilDiv(a, b) {
  return (a + b - 1n) / b;
}

// Cost in nano-USD of one chat request. pricing is the /v1/models `pricing` object
// (USD per million tokens as decimal strings); usage is the OpenAI usage object the
// response reported. cacheWrite is not visible in OpenAI usage and defaults to 0.
export function chatCostNano(pricing, usage, cacheWrite = 0) {
  const pin = usdToNano(pricing.input);   // nano-USD per million input tokens
  const pout = usdToNano(pricing.output); // nano-USD per million output tokens
  const prompt = BigInt(usage.prompt_tokens);
  const completion = BigInt(usage.completion_tokens);
  const cached = BigInt(usage.prompt_tokens_details?.cached_tokens ?? 0);
  const written = BigInt(cacheWrite);
  const uncached = prompt - cached - written;
  assert.ok(uncached >= 0n, `usage has more cached than prompt tokens: ${JSON.stringify(usage)}`);
  return ceilDiv(uncached * pin * 100n + cached * pin * 10n + written * pin * 125n +
                 completion * pout * 100n, 100_000_000n);
}

// The catalog's prices of one model (GET /v1/models/{id} `pricing`, USD per million
// tokens as decimal strings).
export async function modelPricing(model, apiKey = DEMO_KEY) {
  const res = await fetch(`${BASE_URL}/models/${encodeURIComponent(model)}`,
                          { headers: { Authorization: `Bearer ${apiKey}` } });
  const text = await res.text();
  assert.equal(res.status, 200, `GET /v1/models/${model} → ${res.status} ${text.slice(0, 200)}`);
  const body = JSON.parse(text);
  assert.equal(body.pricing?.currency, 'USD', `${model}.pricing ${JSON.stringify(body.pricing)}`);
  return body.pricing;
}

// The billing formula of docs/ARCHITECTURE.md, protocol-neutral: tokens are the canonical
// {input (uncached), cacheRead, cacheWrite, cacheWrite1h (the 1-hour part of cacheWrite),
// output}; prices are the catalog's `pricing` (cache_read / cache_write / cache_write_1h
// when listed, else 0.1x / 1.25x / cache_write of input). Returns nano-USD (BigInt):
// ceil((uncached·Pin + cache_read·Pcr + cache_write·Pcw + output·Pout) / 1e6).
export function tokensCostNano(pricing, { input = 0, cacheRead = 0, cacheWrite = 0, cacheWrite1h = 0,
                                          output = 0 }) {
  const pin = usdToNano(pricing.input);
  const pout = usdToNano(pricing.output ?? '0');
  const pcr = pricing.cache_read !== undefined ? usdToNano(pricing.cache_read) * 100n : pin * 10n;
  const pcw = pricing.cache_write !== undefined ? usdToNano(pricing.cache_write) * 100n : pin * 125n;
  const pcw1h = pricing.cache_write_1h !== undefined ? usdToNano(pricing.cache_write_1h) * 100n : pcw;
  for (const [k, v] of Object.entries({ input, cacheRead, cacheWrite, cacheWrite1h, output })) {
    assert.ok(Number.isInteger(v) && v >= 0, `token count ${k} = ${v}`);
  }
  assert.ok(cacheWrite1h <= cacheWrite, `cacheWrite1h ${cacheWrite1h} > cacheWrite ${cacheWrite}`);
  // Everything in hundredths of a nano-USD per million tokens, to keep the 0.1x / 1.25x exact.
  const total = BigInt(input) * pin * 100n + BigInt(cacheRead) * pcr +
                BigInt(cacheWrite - cacheWrite1h) * pcw + BigInt(cacheWrite1h) * pcw1h +
                BigInt(output) * pout * 100n;
  return ceilDiv(total, 100_000_000n);
}

// Canonical tokens of an Anthropic `usage` object (input_tokens excludes cache reads and
// writes there).
export function anthropicTokens(usage) {
  return {
    input: usage.input_tokens,
    cacheRead: usage.cache_read_input_tokens ?? 0,
    cacheWrite: usage.cache_creation_input_tokens ?? 0,
    cacheWrite1h: usage.cache_creation?.ephemeral_1h_input_tokens ?? 0,
    output: usage.output_tokens,
  };
}

// Canonical tokens of a Gemini `usageMetadata` (promptTokenCount includes cached tokens;
// a cache write is not visible in Gemini usage, so `cacheWrite` must come from elsewhere).
export function geminiTokens(meta, cacheWrite = 0) {
  const prompt = (meta.promptTokenCount ?? 0) + (meta.toolUsePromptTokenCount ?? 0);
  const cacheRead = meta.cachedContentTokenCount ?? 0;
  return {
    input: prompt - cacheRead - cacheWrite,
    cacheRead,
    cacheWrite,
    output: (meta.candidatesTokenCount ?? 0) + (meta.thoughtsTokenCount ?? 0),
  };
}

// Canonical tokens of a usage record (GET /v1/usage, /admin/v1/accounts/{id}/usage).
export function recordTokens(rec) {
  return { input: rec.input_tokens, cacheRead: rec.cache_read_tokens,
           cacheWrite: rec.cache_write_tokens, output: rec.output_tokens };
}

export async function accountMoney(accountId) {
  const acct = await adminOk('GET', `/admin/v1/accounts/${accountId}`);
  return { balance: usdToNano(acct.balance), totalSpent: usdToNano(acct.total_spent), raw: acct };
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `read` until `done(value)` or the deadline; returns the last value read.
// Settlement happens after the response, so balances converge shortly after it.
export async function eventually(read, done, { timeoutMs = 10_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!done(value) && Date.now() < deadline) {
    await sleep(intervalMs);
    value = await read();
  }
  return value;
}

// Asserts the OpenAI usage object is self-consistent and non-trivial.
export function assertUsage(usage, what) {
  assert.ok(usage, `${what}: usage missing`);
  assert.ok(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0,
            `${what}: prompt_tokens ${usage.prompt_tokens}`);
  assert.ok(Number.isInteger(usage.completion_tokens) && usage.completion_tokens > 0,
            `${what}: completion_tokens ${usage.completion_tokens}`);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens,
               `${what}: total_tokens != prompt + completion`);
}

// ---------------------------------------------------------------------------------------
// The edge (edge.test.mjs): the mock provider's counters, /metrics, raw HTTP connections.

// The mock provider tools/run started (NEXUSFLOW_MOCK_PORT, exported by run-e2e.sh).
export const MOCK_URL = process.env.NEXUSFLOW_MOCK_PORT
  ? `http://127.0.0.1:${process.env.NEXUSFLOW_MOCK_PORT}` : '';
// The gateway's connection deadlines (server.header_timeout_ms / body_timeout_ms), as
// run-e2e.sh sets them; the defaults are deploy/local/nexusflow.yaml's.
export const HEADER_TIMEOUT_MS = Number(process.env.NEXUSFLOW_HEADER_TIMEOUT_MS || 10_000);
export const BODY_TIMEOUT_MS = Number(process.env.NEXUSFLOW_BODY_TIMEOUT_MS || 60_000);

// GET /mock/stats of the mock provider: {"open_streams": N, ...}.
export async function mockStats() {
  assert.ok(MOCK_URL, 'NEXUSFLOW_MOCK_PORT is not set: run the tests through run-e2e.sh');
  const res = await fetch(`${MOCK_URL}/mock/stats`);
  const text = await res.text();
  assert.equal(res.status, 200, `GET ${MOCK_URL}/mock/stats → ${res.status} ${text.slice(0, 200)} ` +
                                '(the mock provider needs its /mock/stats route)');
  const body = JSON.parse(text);
  assert.ok(Number.isInteger(body.open_streams) && body.open_streams >= 0,
            `/mock/stats open_streams: ${text.slice(0, 200)}`);
  return body;
}

// The sum of every sample of metric `name` (all label sets) on the gateway's /metrics
// (its public port, else the metrics listener); undefined when no sample is there.
export async function gatewayMetric(name) {
  const urls = [`${ORIGIN}/metrics`];
  if (METRICS_URL) urls.push(METRICS_URL);
  const sample = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)`);
  const tried = [];
  for (const url of urls) {
    let res;
    try {
      res = await fetch(url);
    } catch (e) {
      tried.push(`${url}: ${e.cause?.code ?? e.message}`);
      continue;
    }
    const text = await res.text();
    tried.push(`${url} → ${res.status}`);
    if (res.status !== 200) continue;
    let found = false;
    let sum = 0;
    for (const line of text.split('\n')) {
      const m = sample.exec(line);
      if (m) {
        found = true;
        sum += Number(m[2]);
      }
    }
    if (found) return { value: sum, tried };
  }
  return { value: undefined, tried };
}

// The gateway's host and port, for raw connections.
export const GATEWAY_ADDR = {
  host: new URL(BASE_URL).hostname,
  port: Number(new URL(BASE_URL).port || 80),
};

// A chunked body starting at `pos`: {body, end} (end is just past the last chunk and the
// trailers), or null while incomplete.
function parseChunked(buf, pos) {
  const parts = [];
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', pos, 'latin1');
    if (lineEnd < 0) return null;
    const size = parseInt(buf.toString('latin1', pos, lineEnd), 16);
    if (Number.isNaN(size)) throw new Error(`bad chunk size at byte ${pos}`);
    if (size === 0) {
      // Optional trailer fields, then an empty line.
      const end = buf.indexOf('\r\n\r\n', lineEnd, 'latin1');
      return end < 0 ? null : { body: Buffer.concat(parts), end: end + 4 };
    }
    if (lineEnd + 2 + size + 2 > buf.length) return null;
    parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
    pos = lineEnd + 2 + size + 2;
  }
}

// Parses the HTTP/1.1 responses at the start of `buf` (a Buffer). Interim 1xx responses
// are returned like the others. A body is framed by Content-Length, chunked encoding or,
// without either, the close (`eof`). Returns {responses, partial}: partial is true when
// bytes after the last complete response do not make a whole response yet.
export function parseHttpResponses(buf, eof = false) {
  const responses = [];
  let pos = 0;
  while (pos < buf.length) {
    const headEnd = buf.indexOf('\r\n\r\n', pos, 'latin1');
    if (headEnd < 0) break;
    const lines = buf.toString('latin1', pos, headEnd).split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(lines[0].slice(0, 100))}`);
    const status = Number(m[1]);
    const headers = {};
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let bodyStart = headEnd + 4;
    let body;
    if (status < 200 || status === 204 || status === 304) {
      body = Buffer.alloc(0);
    } else if (/\bchunked\b/i.test(headers['transfer-encoding'] ?? '')) {
      const chunked = parseChunked(buf, bodyStart);
      if (!chunked) return { responses, partial: true };
      body = chunked.body;
      bodyStart = chunked.end;
    } else if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length']);
      if (bodyStart + length > buf.length) return { responses, partial: true };
      body = buf.subarray(bodyStart, bodyStart + length);
      bodyStart += length;
    } else {
      if (!eof) return { responses, partial: true };
      body = buf.subarray(bodyStart);
      bodyStart = buf.length;
    }
    responses.push({ status, headers, body: body.toString('utf8') });
    pos = bodyStart;
  }
  return { responses, partial: pos < buf.length };
}

// One raw TCP connection to the gateway, for tests about HTTP framing and deadlines. It
// keeps every byte received and the moment the server ended the connection (FIN, reset,
// or a write that failed because it was gone); times are performance.now() milliseconds.
export class RawHttp {
  static open({ host, port } = GATEWAY_ADDR) {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawHttp(socket));
      });
    });
  }

  constructor(socket) {
    this.socket = socket;
    this.openedAt = performance.now();
    this.data = Buffer.alloc(0);
    this.firstByteAt = null;
    this.closedAt = null;
    this.closeHow = null;
    this.bytesWritten = 0;
    this.waiters = new Set();
    socket.setNoDelay(true);
    socket.on('data', (d) => {
      if (this.firstByteAt === null) this.firstByteAt = performance.now();
      this.data = Buffer.concat([this.data, d]);
      this.wake();
    });
    socket.on('end', () => this.markClosed('FIN'));
    socket.on('error', (e) => this.markClosed(e.code ?? e.message));
    socket.on('close', () => this.markClosed('close'));
  }

  markClosed(how) {
    if (this.closedAt === null) {
      this.closedAt = performance.now();
      this.closeHow = how;
    }
    this.wake();
  }

  wake() {
    for (const w of [...this.waiters]) w();
  }

  get closed() {
    return this.closedAt !== null;
  }

  // Writes unless the server already closed; false when it did.
  write(data) {
    if (this.closed || this.socket.destroyed) return false;
    const buf = Buffer.from(data, 'latin1');
    this.bytesWritten += buf.length;
    this.socket.write(buf);
    return true;
  }

  // Resolves true as soon as `pred()` holds, false once `timeoutMs` passed without it.
  waitUntil(pred, timeoutMs) {
    if (pred()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const check = () => {
        if (!pred()) return;
        finish(true);
      };
      const timer = setTimeout(() => finish(pred()), timeoutMs);
      const finish = (v) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(v);
      };
      this.waiters.add(check);
    });
  }

  responses() {
    return parseHttpResponses(this.data, this.closed).responses;
  }

  // The received bytes, for assertion messages.
  preview(max = 300) {
    const s = this.data.toString('latin1');
    return JSON.stringify(s.length > max ? `${s.slice(0, max)}…` : s);
  }

  destroy() {
    this.socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------
// Processes and memory (flow.test.mjs): which process listens on a port, and its RSS.

// The ids of the processes listening on TCP `port` on this machine, from
// `ss -Hltnp "sport = :PORT"` (its `users:(("nexusflow",pid=NNN,fd=N))` column). Only
// processes of this user are shown with their pid, which the ones tools/run started are.
export function listeningPids(port) {
  const out = execFileSync('ss', ['-Hltnp', `sport = :${port}`], { encoding: 'utf8', timeout: 5_000 });
  return [...new Set([...out.matchAll(/pid=(\d+)/g)].map((m) => Number(m[1])))];
}

// The one process listening on `port`; fails the test when there is none or several.
export function listeningPid(port) {
  const pids = listeningPids(port);
  assert.equal(pids.length, 1, `processes listening on port ${port}: ${JSON.stringify(pids)} ` +
                               '(ss -ltnp must show the listener with its pid)');
  return pids[0];
}

// The gateway: the process listening on the HTTP port of BASE_URL.
export function gatewayPid() {
  return listeningPid(GATEWAY_ADDR.port);
}

// Resident set size of process `pid` in bytes (VmRSS of /proc/PID/status).
export function processRssBytes(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  assert.ok(m, `no VmRSS in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

// The caller's usage records (GET /v1/usage with `apiKey`), newest first.
export async function userUsage(apiKey, limit = 20) {
  const res = await fetch(`${BASE_URL}/usage?limit=${limit}`, { headers: { Authorization: `Bearer ${apiKey}` } });
  const text = await res.text();
  assert.equal(res.status, 200, `GET /v1/usage → ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}
