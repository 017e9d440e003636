// End-to-end: media on the task pipeline. Image generation with the official OpenAI SDK
// (url and b64_json), and the async task API (/v1/tasks) over plain HTTP: a video task and
// image tasks from creation to the end, a failing upstream, partial success, cancel from
// queued and from running, another account's key, parameter validation. The mock speaks
// DashScope's async protocol; `[mock:task-ms=N]`, `[mock:fail]` and `[mock:images=K]` in a
// prompt shape its task. Money is checked exactly, in BigInt nano-USD: each task is charged
// once, for what it produced; reading never charges.
//
// The e2e runner sets media.max_per_key = 2 (a key's third task waits queued), polls every
// 200 ms, and image requests wait 5 s before answering 504 with the task id.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  BASE_URL, RUN_ID, openai, createAccountWithKey, accountMoney, usdToNano, eventually, userUsage, sleep,
} from './lib.mjs';

const IMAGE_MODEL = 'wan2.6-t2i';
const VIDEO_MODEL = 'happyhorse-1.0-t2v';
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

async function call(method, path, apiKey, body) {
  const res = await fetch(`${BASE_URL}${path}`, {
    method,
    headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, json, text, headers: res.headers };
}

async function createTask(apiKey, body) {
  const r = await call('POST', '/tasks', apiKey, body);
  assert.equal(r.status, 202, `POST /v1/tasks → ${r.status} ${r.text.slice(0, 300)}`);
  assert.match(r.json.id, /^task_/);
  assert.equal(r.json.object, 'task');
  assert.equal(r.json.model, body.model);
  assert.equal(r.json.status, 'queued');
  assert.ok(Number.isInteger(r.json.created_at));
  return r.json;
}

// Polls the task every 250 ms until it is final (or `until` says so).
async function waitTask(apiKey, id, until = (t) => ['succeeded', 'failed', 'canceled'].includes(t.status),
                        timeoutMs = 30_000) {
  const task = await eventually(async () => (await call('GET', `/tasks/${id}`, apiKey)).json,
                                (t) => t && until(t), { timeoutMs, intervalMs: 250 });
  assert.ok(until(task), `task ${id} is ${task?.status}`);
  return task;
}

async function pricingOf(model, apiKey) {
  const r = await call('GET', `/models/${model}`, apiKey);
  assert.equal(r.status, 200, r.text);
  return r.json.pricing;
}

// Money held for the key's account, from /v1/balance (a JSON number written exactly: read
// from the text, never through a float).
async function heldNano(apiKey) {
  const r = await call('GET', '/balance', apiKey);
  assert.equal(r.status, 200, r.text);
  const m = /"held":(-?[0-9.]+)/.exec(r.text);
  assert.ok(m, r.text);
  return usdToNano(m[1]);
}

// Balance of an account once no hold of `apiKey`'s account is open (settled or released).
async function settledMoney(account, apiKey) {
  const read = async () => ({ ...(await accountMoney(account.id)), held: await heldNano(apiKey) });
  const m = await eventually(read, (x) => x.held === 0n, { timeoutMs: 15_000 });
  assert.equal(m.held, 0n, 'a hold is still open');
  return m;
}

describe('media', () => {
  test('images.generate returns a URL, and with b64_json a decodable image; each charged once per image', async () => {
    const { account, key } = await createAccountWithKey({ name: 'media-img', credit: '5.00' });
    const client = openai(key.key);
    const before = (await accountMoney(account.id)).balance;
    const pricing = await pricingOf(IMAGE_MODEL, key.key);
    assert.equal(pricing.unit, 'per_image');
    const perImage = usdToNano(pricing.image);
    assert.ok(perImage > 0n);

    const byUrl = await client.images.generate({ model: IMAGE_MODEL, prompt: `a fox ${RUN_ID} [mock:task-ms=300]`,
                                                size: '1024x1024', n: 1 });
    assert.equal(byUrl.data.length, 1);
    assert.match(byUrl.data[0].url, /^http/);
    const file = await fetch(byUrl.data[0].url);
    assert.equal(file.status, 200);
    assert.ok(Buffer.from(await file.arrayBuffer()).subarray(0, 8).equals(PNG_MAGIC));

    const byB64 = await client.images.generate({ model: IMAGE_MODEL, prompt: `a hare ${RUN_ID} [mock:task-ms=300]`,
                                                size: '1024*1024', n: 2, response_format: 'b64_json' });
    assert.equal(byB64.data.length, 2);
    for (const d of byB64.data) {
      assert.equal(d.url, undefined);
      assert.ok(Buffer.from(d.b64_json, 'base64').subarray(0, 8).equals(PNG_MAGIC), 'a PNG');
    }
    const after = await settledMoney(account, key.key);
    assert.equal(before - after.balance, 3n * perImage);
    const usage = await userUsage(key.key);
    assert.equal(usage.data.length, 2);
    assert.deepEqual(usage.data.map((r) => r.images).sort(), [1, 2]);
  });

  test('an image that is not ready within the wait is a 504 naming its task, not retried, and charged once when done', async () => {
    const { account, key } = await createAccountWithKey({ name: 'media-slow', credit: '5.00' });
    const before = (await accountMoney(account.id)).balance;
    const perImage = usdToNano((await pricingOf(IMAGE_MODEL, key.key)).image);
    const client = openai(key.key);
    let taskId;
    await assert.rejects(
      client.images.generate({ model: IMAGE_MODEL, prompt: `slow ${RUN_ID} [mock:task-ms=7000]` }),
      (err) => {
        assert.equal(err.status, 504);
        assert.equal(err.code, 'task_pending');
        taskId = err.headers?.get?.('x-nexusflow-task-id') ?? err.headers?.['x-nexusflow-task-id'];
        assert.match(taskId, /^task_/);
        assert.ok(err.message.includes(taskId));
        return true;
      });
    const task = await waitTask(key.key, taskId);
    assert.equal(task.status, 'succeeded');
    assert.equal(task.result.urls.length, 1);
    const after = await settledMoney(account, key.key);
    assert.equal(before - after.balance, perImage, 'one task, one image, one charge (the SDK did not retry)');
    const list = await call('GET', '/tasks', key.key);
    assert.equal(list.json.data.length, 1);
  });

  test('a video task runs to succeeded with a result URL and exactly one charge; re-reading does not charge', async () => {
    const { account, key } = await createAccountWithKey({ name: 'media-video', credit: '5.00' });
    const before = (await accountMoney(account.id)).balance;
    const pricing = await pricingOf(VIDEO_MODEL, key.key);
    assert.equal(pricing.unit, 'per_second');
    const perSecond = usdToNano(pricing.video_second);
    const created = await createTask(key.key, { model: VIDEO_MODEL, prompt: `waves ${RUN_ID} [mock:task-ms=1500]`,
                                                duration: 10, resolution: '720P' });
    assert.deepEqual(created.params, { prompt: `waves ${RUN_ID} [mock:task-ms=1500]`, duration: 10, resolution: '720P' });
    // While it runs, the most it can cost is held.
    assert.equal(await heldNano(key.key), 10n * perSecond);
    const seen = new Set();
    const task = await waitTask(key.key, created.id, (t) => { seen.add(t.status); return t.status === 'succeeded'; });
    assert.ok(seen.has('running') || seen.has('queued'));
    assert.equal(task.result.urls.length, 1);
    assert.match(task.result.urls[0], /video\.mp4$/);
    assert.ok(task.result.expires_at > Date.now() / 1000 + 3600);
    assert.deepEqual(task.usage, { video_count: 1, video_seconds: 10 });
    const after = await settledMoney(account, key.key);
    assert.equal(before - after.balance, 10n * perSecond);
    for (let i = 0; i < 3; i++) assert.equal((await call('GET', `/tasks/${created.id}`, key.key)).status, 200);
    await call('GET', '/tasks', key.key);
    await sleep(300);
    assert.equal((await accountMoney(account.id)).balance, after.balance, 'reading charged');
    const usage = await userUsage(key.key);
    assert.equal(usage.data.length, 1);
    assert.equal(usage.data[0].request_id, created.id);
    assert.equal(usage.data[0].video_seconds, 10);
    assert.equal(usdToNano(usage.data[0].cost), 10n * perSecond);
  });

  test('a two-image task, a partially successful one and a failing one: billed for what was produced', async () => {
    const { account, key } = await createAccountWithKey({ name: 'media-tasks', credit: '5.00' });
    const before = (await accountMoney(account.id)).balance;
    const perImage = usdToNano((await pricingOf(IMAGE_MODEL, key.key)).image);
    const two = await createTask(key.key, { model: IMAGE_MODEL, prompt: `two ${RUN_ID} [mock:task-ms=500]`, n: 2,
                                            size: '1024x1024' });
    const partial = await createTask(key.key, { model: IMAGE_MODEL, prompt: `partial ${RUN_ID} [mock:task-ms=500][mock:images=1]`,
                                                n: 3 });
    const doneTwo = await waitTask(key.key, two.id);
    assert.equal(doneTwo.status, 'succeeded');
    assert.equal(doneTwo.result.urls.length, 2);
    assert.deepEqual(doneTwo.usage, { image_count: 2 });
    const donePartial = await waitTask(key.key, partial.id);
    assert.equal(donePartial.status, 'succeeded');
    assert.equal(donePartial.result.urls.length, 1);
    assert.deepEqual(donePartial.usage, { image_count: 1 });
    const mid = await settledMoney(account, key.key);
    assert.equal(before - mid.balance, 3n * perImage, '2 + 1 images, not 2 + 3');

    const failing = await createTask(key.key, { model: IMAGE_MODEL, prompt: `doomed ${RUN_ID} [mock:task-ms=300][mock:fail]` });
    const failed = await waitTask(key.key, failing.id);
    assert.equal(failed.status, 'failed');
    assert.ok(failed.error.code.length > 0);
    assert.ok(failed.error.message.length > 0);
    assert.equal(failed.result, undefined);
    const after = await settledMoney(account, key.key);
    assert.equal(after.balance, mid.balance, 'a failed task is not charged');
    const usage = await userUsage(key.key);
    assert.deepEqual(usage.data.map((r) => r.request_id).sort(), [two.id, partial.id].sort());
  });

  test('cancel from queued and from running releases the hold and charges nothing', async () => {
    const { account, key } = await createAccountWithKey({ name: 'media-cancel', credit: '20.00' });
    const before = (await accountMoney(account.id)).balance;
    const long = (tag) => ({ model: VIDEO_MODEL, prompt: `${tag} ${RUN_ID} [mock:task-ms=60000]`, duration: 5 });
    // Two run (the key's limit in this suite); the third waits queued.
    const a = await createTask(key.key, long('a'));
    const b = await createTask(key.key, long('b'));
    await waitTask(key.key, a.id, (t) => t.status === 'running');
    await waitTask(key.key, b.id, (t) => t.status === 'running');
    const c = await createTask(key.key, long('c'));
    await sleep(600);
    assert.equal((await call('GET', `/tasks/${c.id}`, key.key)).json.status, 'queued');

    const canceledQueued = await call('POST', `/tasks/${c.id}/cancel`, key.key);
    assert.equal(canceledQueued.status, 200, canceledQueued.text);
    assert.equal(canceledQueued.json.status, 'canceled', 'a queued task ends at once');
    for (const t of [a, b]) {
      const r = await call('POST', `/tasks/${t.id}/cancel`, key.key);
      assert.equal(r.status, 200, r.text);
      assert.ok(['running', 'canceled'].includes(r.json.status));
    }
    for (const t of [a, b]) assert.equal((await waitTask(key.key, t.id)).status, 'canceled');
    const after = await settledMoney(account, key.key);
    assert.equal(after.balance, before);
    assert.equal((await userUsage(key.key)).data.length, 0);
    // Canceling an ended task changes nothing.
    const again = await call('POST', `/tasks/${c.id}/cancel`, key.key);
    assert.equal(again.status, 200);
    assert.equal(again.json.status, 'canceled');
  });

  test('only the owning account sees a task; the list is its own, newest first, paged', async () => {
    const owner = await createAccountWithKey({ name: 'media-owner', credit: '5.00' });
    const other = await createAccountWithKey({ name: 'media-other', credit: '5.00' });
    const first = await createTask(owner.key.key, { model: IMAGE_MODEL, prompt: `one ${RUN_ID} [mock:task-ms=200]` });
    const second = await createTask(owner.key.key, { model: IMAGE_MODEL, prompt: `two ${RUN_ID} [mock:task-ms=200]` });
    for (const [method, path] of [['GET', `/tasks/${first.id}`], ['POST', `/tasks/${first.id}/cancel`]]) {
      const r = await call(method, path, other.key.key);
      assert.equal(r.status, 404, `${method} ${path} by another account → ${r.status}`);
      assert.equal(r.json.error.code, 'task_not_found');
    }
    assert.equal((await call('GET', '/tasks/task_doesnotexist', owner.key.key)).status, 404);
    assert.deepEqual((await call('GET', '/tasks', other.key.key)).json.data, []);
    const page1 = await call('GET', '/tasks?limit=1', owner.key.key);
    assert.equal(page1.status, 200);
    assert.deepEqual(page1.json.data.map((t) => t.id), [second.id]);
    assert.equal(page1.json.has_more, true);
    const page2 = await call('GET', `/tasks?limit=1&after=${encodeURIComponent(page1.json.next_cursor)}`, owner.key.key);
    assert.deepEqual(page2.json.data.map((t) => t.id), [first.id]);
    assert.equal(page2.json.has_more, false);
    assert.equal((await call('GET', '/tasks?limit=0', owner.key.key)).status, 400);
    assert.equal((await call('GET', '/tasks?after=garbage', owner.key.key)).status, 400);
    for (const t of [first, second]) await waitTask(owner.key.key, t.id);
  });

  test('bad parameters are a 400 naming the parameter; non-media models are refused', async () => {
    const { key } = await createAccountWithKey({ name: 'media-bad', credit: '1.00' });
    const cases = [
      [{ model: VIDEO_MODEL, prompt: 'x', duration: 99 }, 'duration'],
      [{ model: VIDEO_MODEL, prompt: 'x', duration: 2.5 }, 'duration'],
      [{ model: VIDEO_MODEL, prompt: 'x', resolution: '4K' }, 'resolution'],
      [{ model: VIDEO_MODEL, prompt: 'x', n: 2 }, 'n'],
      [{ model: VIDEO_MODEL, prompt: '' }, 'prompt'],
      [{ model: VIDEO_MODEL }, 'prompt'],
      [{ model: IMAGE_MODEL, prompt: 'x', n: 9 }, 'n'],
      [{ model: IMAGE_MODEL, prompt: 'x', size: '100x100' }, 'size'],
      [{ model: IMAGE_MODEL, prompt: 'x', size: 'big' }, 'size'],
      [{ model: IMAGE_MODEL, prompt: 'x', duration: 5 }, 'duration'],
      [{ model: IMAGE_MODEL, prompt: 'x', fps: 30 }, 'fps'],
      [{ prompt: 'x' }, 'model'],
    ];
    for (const [body, param] of cases) {
      const r = await call('POST', '/tasks', key.key, body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status} ${r.text}`);
      assert.equal(r.json.error.param, param, JSON.stringify(body));
    }
    assert.equal((await call('POST', '/tasks', key.key, { model: 'qwen3-max', prompt: 'x' })).status, 400);
    assert.equal((await call('POST', '/tasks', key.key, { model: 'no-such-model', prompt: 'x' })).status, 404);
    const client = openai(key.key);
    await assert.rejects(client.images.generate({ model: IMAGE_MODEL, prompt: 'x', response_format: 'gif' }),
                         (err) => err.status === 400 && err.param === 'response_format');
    await assert.rejects(client.images.generate({ model: VIDEO_MODEL, prompt: 'x' }),
                         (err) => err.status === 400 && err.param === 'model');
    assert.deepEqual((await call('GET', '/tasks', key.key)).json.data, [], 'nothing was created');
  });

  test('a task that costs more than the balance is a 402 and creates nothing', async () => {
    const { key } = await createAccountWithKey({ name: 'media-poor', credit: '0.50' });
    const r = await call('POST', '/tasks', key.key, { model: VIDEO_MODEL, prompt: 'x', duration: 10 });
    assert.equal(r.status, 402, r.text);
    assert.deepEqual((await call('GET', '/tasks', key.key)).json.data, []);
  });
});
