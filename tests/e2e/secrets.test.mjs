// End-to-end: no error body carries key material. A wrong key, a revoked key and a good
// key with a bad request, sent in every header the gateway accepts (and Gemini's ?key=),
// on each protocol's routes: the answer names the problem without echoing the secret.
// (run-e2e.sh also scans every process log and /metrics page of the run for secrets.)

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { BASE_URL, ORIGIN, ADMIN_KEY, adminOk, createAccountWithKey, eventually } from './lib.mjs';

const ROUTES = [
  ['POST', `${BASE_URL}/chat/completions`, { model: 'qwen3-max', messages: 'not a list' }],
  ['POST', `${BASE_URL}/messages`, { model: 'qwen3-max', max_tokens: 'x', messages: [] }],
  ['POST', `${ORIGIN}/v1beta/models/qwen-turbo:generateContent`, { contents: 7 }],
  ['POST', `${BASE_URL}/embeddings`, { model: 'text-embedding-v4', input: '' }],
  ['POST', `${BASE_URL}/images/generations`, { model: 'wan2.6-t2i', prompt: '', n: 99 }],
  ['POST', `${BASE_URL}/tasks`, { model: 'happyhorse-1.0-t2v', prompt: 'x', duration: 99 }],
  ['GET', `${BASE_URL}/tasks/task_nope`, undefined],
  ['GET', `${BASE_URL}/balance`, undefined],
  ['GET', `${BASE_URL}/models/no-such-model`, undefined],
];

function headerSets(key) {
  return [
    { Authorization: `Bearer ${key}` },
    { 'x-api-key': key, 'anthropic-version': '2023-06-01' },
    { 'x-goog-api-key': key },
  ];
}

async function bodiesFor(key) {
  const bodies = [];
  for (const [method, url, body] of ROUTES) {
    for (const headers of headerSets(key)) {
      const res = await fetch(url, {
        method, headers: { ...headers, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      bodies.push({ what: `${method} ${url} ${Object.keys(headers)[0]} → ${res.status}`, status: res.status,
                    text: await res.text(), headers: [...res.headers].map(([k, v]) => `${k}: ${v}`).join('\n') });
    }
  }
  const gemini = await fetch(`${ORIGIN}/v1beta/models/qwen-turbo:generateContent?key=${encodeURIComponent(key)}`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"contents":7}' });
  bodies.push({ what: `gemini ?key= → ${gemini.status}`, status: gemini.status, text: await gemini.text(),
                headers: [...gemini.headers].map(([k, v]) => `${k}: ${v}`).join('\n') });
  return bodies;
}

function assertNoSecret(bodies, secret) {
  const fragment = secret.slice(6, 26);  // past "sk-nf-": any echo, masked at the ends or not
  for (const b of bodies) {
    assert.ok(!b.text.includes(fragment), `${b.what} echoes the key: ${b.text.slice(0, 200)}`);
    assert.ok(!b.headers.includes(fragment), `${b.what} echoes the key in a header`);
  }
}

describe('secrets', () => {
  test('a wrong key is refused without being echoed, in every header and protocol', async () => {
    const wrong = `sk-nf-${'Q'.repeat(20)}${'7'.repeat(20)}`;
    const bodies = await bodiesFor(wrong);
    for (const b of bodies) assert.equal(b.status, 401, b.what);
    assertNoSecret(bodies, wrong);
  });

  test('a good key with bad requests, and the same key revoked: no body echoes it', async () => {
    const { key } = await createAccountWithKey({ name: 'secrets', credit: '1.00' });
    const bodies = await bodiesFor(key.key);
    assert.ok(bodies.some((b) => b.status === 400), 'the bad requests reached validation');
    assertNoSecret(bodies, key.key);
    await adminOk('DELETE', `/admin/v1/keys/${key.id}`);
    // Every gateway hears of the revocation within a second (two of them in the scale run).
    const revoked = await eventually(() => bodiesFor(key.key), (bs) => bs.every((b) => b.status === 401),
                                     { timeoutMs: 5000, intervalMs: 200 });
    for (const b of revoked) assert.equal(b.status, 401, b.what);
    assertNoSecret(revoked, key.key);
  });

  test('the admin API does not show a secret again, nor echo a wrong admin key', async () => {
    const { account, key } = await createAccountWithKey({ name: 'secrets-admin' });
    const listed = await adminOk('GET', `/admin/v1/keys?account_id=${account.id}`);
    assert.ok(!JSON.stringify(listed).includes(key.key.slice(6, 26)), 'a key list shows a secret');
    const wrongAdmin = `nf-admin-${'z'.repeat(24)}`;
    const res = await fetch(`${ORIGIN}/admin/v1/keys?account_id=${account.id}`, { headers: { Authorization: `Bearer ${wrongAdmin}` } });
    assert.equal(res.status, 401);
    const text = await res.text();
    assert.ok(!text.includes(wrongAdmin.slice(9)) && !text.includes(ADMIN_KEY), text);
  });
});

describe('access log', () => {
  test('one JSON line per request with its fields; no prompt and no key in any log', async () => {
    const dataDir = process.env.NEXUSFLOW_DATA_DIR;
    assert.ok(dataDir, 'NEXUSFLOW_DATA_DIR is set by run-e2e.sh');
    const { key } = await createAccountWithKey({ name: 'access-log', credit: '1.00' });
    const marker = `prompt-marker-${Date.now().toString(36)}-never-logged`;
    const res = await fetch(`${BASE_URL}/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key.key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'qwen3-max', stream: true, max_tokens: 20,
                             messages: [{ role: 'user', content: `${marker} [mock:words=4]` }] }),
    });
    assert.equal(res.status, 200);
    await res.text();
    const requestId = res.headers.get('x-request-id');
    const { readdirSync, readFileSync } = await import('node:fs');
    const logs = () => readdirSync(`${dataDir}/logs`).filter((f) => f.endsWith('.log') && f !== 'mock-provider.log')
      .map((f) => readFileSync(`${dataDir}/logs/${f}`, 'utf8'));
    const line = await eventually(
      () => logs().flatMap((t) => t.split('\n')).find((l) => l.includes(`"request_id":"${requestId}"`)),
      (l) => l !== undefined, { timeoutMs: 5000, intervalMs: 100 });
    assert.ok(line, `no access-log line for ${requestId}`);
    const entry = JSON.parse(line);
    for (const field of ['ts', 'request_id', 'method', 'path', 'route', 'status', 'duration_us', 'account_id',
                         'key_id', 'key_prefix', 'model', 'deployment', 'protocol', 'stream', 'ttft_us',
                         'input_tokens', 'output_tokens', 'cost_usd']) {
      assert.ok(field in entry, `${field} missing from ${line}`);
    }
    assert.equal(entry.status, 200);
    assert.equal(entry.protocol, 'openai');
    assert.equal(entry.stream, true);
    assert.equal(entry.key_prefix, key.key.slice(0, 10));
    assert.equal(entry.model, 'qwen3-max');
    for (const text of logs()) {
      assert.ok(!text.includes(marker), 'a prompt reached a log');
      assert.ok(!text.includes(key.key.slice(10, 30)), 'a key secret reached a log');
    }
  });
});
