// End-to-end, scale run only (two gateways and two rate-limiters sharing one Redis): Redis
// goes away mid-load and comes back. With the default policy (rate_limiter.redis_failure:
// open) requests are still served and each such admission is counted; once Redis is back,
// limits apply again.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

import { ORIGIN, createAccountWithKey, sleep } from './lib.mjs';

const REDIS_DIR = process.env.NEXUSFLOW_E2E_REDIS_DIR;
const REDIS_PORT = process.env.NEXUSFLOW_E2E_REDIS_PORT;
const LIMITER_METRICS = (process.env.NEXUSFLOW_E2E_LIMITER_METRICS ?? '').split(',').filter(Boolean);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

async function failOpenCount() {
  let total = 0;
  for (const url of LIMITER_METRICS) {
    const text = await fetch(url).then((r) => r.text());
    const line = text.split('\n').find((l) => l.startsWith('nexusflow_ratelimit_fail_open_total'));
    if (line) total += Number(line.split(' ').pop());
  }
  return total;
}

describe('Redis lost and back', { skip: REDIS_DIR && REDIS_PORT ? false : 'the scale run only' }, () => {
  test('fail-open serves while Redis is down, counts it, and limits resume when it returns',
       { timeout: 60_000 }, async () => {
    const { key } = await createAccountWithKey({ name: 'e2e-redis-down', credit: '1.00', plan: 'free' });
    const send = (i) => fetch(`${ORIGIN}/v1/chat/completions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key.key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'qwen3-max', max_tokens: 5, messages: [{ role: 'user', content: `r ${i} [mock:words=2]` }] }),
    }).then((r) => r.status);
    for (let i = 0; i < 10; i++) assert.equal(await send(i), 200);
    assert.equal(await send('over'), 429, 'the limit holds while Redis is up');

    const before = await failOpenCount();
    execFileSync('redis-cli', ['-h', '127.0.0.1', '-p', REDIS_PORT, 'shutdown', 'nosave']);
    try {
      // Down: admitted without limits (the free key is past its 10), and counted.
      const down = [];
      for (let i = 0; i < 5; i++) down.push(await send(`down ${i}`));
      assert.deepEqual(down, [200, 200, 200, 200, 200]);
      assert.ok(await failOpenCount() >= before + 5, 'fail-open admissions are counted');
    } finally {
      execFileSync('bash', ['-c', `source "${ROOT}/tools/lib/redis.sh" && nf_redis_start "$0" "$1"`, REDIS_DIR, REDIS_PORT]);
    }
    // Back (an empty Redis: the minute starts afresh): once the limiters reconnect, the
    // free key gets its 10 again, then 429.
    let statuses = [];
    for (let attempt = 0; attempt < 20; attempt++) {
      await sleep(500);
      statuses = [];
      for (let i = 0; i < 11; i++) statuses.push(await send(`back ${attempt} ${i}`));
      if (statuses.includes(429)) break;
    }
    assert.ok(statuses.includes(429), `limits did not resume: ${statuses}`);
  });
});
