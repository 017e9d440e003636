// Shared plumbing for the end-to-end tests: environment, admin API calls, money
// arithmetic in integer nano-USD (BigInt), and the billing formula.
//
// The tests run against a NexusFlow started by tools/run (see run-e2e.sh), which
// writes demo.env with the variables read here.

import assert from 'node:assert/strict';
import OpenAI from 'openai';

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
