// The official OpenAI SDK against gantry-adapter (and gantry-server behind
// it), as Dify and other OpenAI clients use it. Run by adapter_test.cc, which
// starts both binaries and passes:
//   GANTRY_ADAPTER_URL   http://127.0.0.1:PORT/v1
//   GANTRY_API_KEY       the key the adapter requires
//   GANTRY_METRICS_URL   gantry-server's /metrics (to see requests end there)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.GANTRY_ADAPTER_URL;
const apiKey = process.env.GANTRY_API_KEY;
const metricsURL = process.env.GANTRY_METRICS_URL;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const model = 'demo';
const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Say something.' }];

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

function contentOf(chunks) {
  return chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
}

async function metric(name, labels) {
  const text = await (await fetch(metricsURL)).text();
  for (const line of text.split('\n')) {
    if (line.startsWith(name + '{') && labels.every((l) => line.includes(l))) return Number(line.split(' ').pop());
  }
  return undefined;
}

// Waits until the server has no request running and has counted one more
// CANCELLED than `cancelledBefore`.
async function requestCancelledOnServer(cancelledBefore) {
  let running, cancelled;
  for (let i = 0; i < 100; ++i) {
    running = await metric('gantry_requests_running', ['model="demo"']);
    cancelled = await metric('gantry_requests_total', ['model="demo"', 'code="CANCELLED"']);
    if (running === 0 && cancelled === cancelledBefore + 1) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(running, 0);
  assert.equal(cancelled, cancelledBefore + 1);
}

test('lists the catalogue', async () => {
  const models = await client.models.list();
  const ids = models.data.map((m) => m.id);
  assert.ok(ids.includes('demo'), JSON.stringify(ids));
  assert.equal(models.data[0].object, 'model');
});

test('chat, not streamed, with usage', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.model, model);
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.ok(r.usage.prompt_tokens > 0);
  assert.ok(r.usage.completion_tokens > 0 && r.usage.completion_tokens <= 12);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

test('a repeated conversation reports its cached prompt tokens, as OpenAI does', async () => {
  const system = 'You are a careful assistant for the legal team. '.repeat(8);
  const conversation = [{ role: 'system', content: system }, { role: 'user', content: 'Summarise clause 4.' }];
  const hitsBefore = await metric('gantry_prefix_cache_hits_total', ['model="demo"']);
  const first = await client.chat.completions.create({ model, messages: conversation, max_tokens: 4, temperature: 0 });
  const second = await client.chat.completions.create({ model, messages: conversation, max_tokens: 4, temperature: 0 });
  const before = first.usage.prompt_tokens_details.cached_tokens;
  const cached = second.usage.prompt_tokens_details.cached_tokens;
  assert.ok(before < 64, `the first sees at most a shared template header cached (${before})`);
  assert.ok(cached > before && cached < second.usage.prompt_tokens, `cached ${cached} of ${second.usage.prompt_tokens}`);
  assert.equal(cached % 16, 0, 'whole KV blocks');
  assert.equal(second.choices[0].message.content, first.choices[0].message.content);
  assert.equal(await metric('gantry_prefix_cache_hits_total', ['model="demo"']), hitsBefore + before + cached);
});

test('chat streamed equals chat not streamed; role first, finish_reason last, no usage chunk', async () => {
  const whole = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0 });
  const chunks = await collect(
    await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0, stream: true }));
  assert.equal(chunks[0].object, 'chat.completion.chunk');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const withChoices = chunks.filter((c) => c.choices.length > 0);
  assert.equal(withChoices.at(-1).choices[0].finish_reason, whole.choices[0].finish_reason);
  for (const c of withChoices.slice(0, -1)) assert.equal(c.choices[0].finish_reason, null);
  assert.ok(chunks.every((c) => c.id === chunks[0].id && c.model === model));
  assert.ok(chunks.every((c) => c.usage === undefined), 'no usage without stream_options');
  assert.equal(contentOf(chunks), whole.choices[0].message.content);
});

test('stream_options.include_usage adds a final chunk with usage and no choices', async () => {
  const chunks = await collect(await client.chat.completions.create(
    { model, messages, max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } }));
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 8);
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === null));
});

test('completions, streamed and not', async () => {
  const whole = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 10, temperature: 0 });
  assert.equal(whole.object, 'text_completion');
  assert.equal(whole.usage.completion_tokens, 10);
  assert.equal(whole.choices[0].finish_reason, 'length');
  const chunks = await collect(await client.completions.create(
    { model, prompt: 'Once upon a time', max_tokens: 10, temperature: 0, stream: true }));
  assert.equal(chunks.map((c) => c.choices[0]?.text ?? '').join(''), whole.choices[0].text);
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'length');
});

test('stop strings end the text before them', async () => {
  const free = await client.completions.create({ model, prompt: 'abc', max_tokens: 40, temperature: 0 });
  const text = free.choices[0].text;
  const stop = text.slice(8, 11);
  assert.ok(stop.length === 3 && !text.slice(0, 8).includes(stop), `pick another stop from ${JSON.stringify(text)}`);
  const stopped = await client.completions.create({ model, prompt: 'abc', max_tokens: 40, temperature: 0, stop: [stop] });
  assert.equal(stopped.choices[0].text, text.slice(0, 8));
  assert.equal(stopped.choices[0].finish_reason, 'stop');
  const single = await client.chat.completions.create({ model, messages, max_tokens: 40, temperature: 0, stop: 'zzzz' });
  assert.ok(!single.choices[0].message.content.includes('zzzz'));
});

test('the same seed gives the same sample', async () => {
  const ask = (seed) => client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 1.0, seed });
  const [a, b, c] = await Promise.all([ask(42), ask(42), ask(43)]);
  assert.equal(a.choices[0].message.content, b.choices[0].message.content);
  assert.notEqual(a.choices[0].message.content, c.choices[0].message.content);
});

test('logprobs and top_logprobs', async () => {
  const r = await client.chat.completions.create(
    { model, messages, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, 5);
  for (const entry of content) {
    assert.equal(typeof entry.token, 'string');
    assert.ok(entry.logprob <= 0);
    assert.equal(entry.top_logprobs.length, 3);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-4);
  }
});

test('an unknown model is a NotFoundError', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages }), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.equal(e.status, 404);
    assert.match(e.message, /no-such-model/);
    return true;
  });
});

test('a model that fails to load is a 503 with a request id, not the server\'s paths', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'broken', messages }), (e) => {
    assert.equal(e.status, 503, String(e));
    assert.match(e.message, /the model failed to load \(request id req-[0-9a-f]{16}/);
    assert.doesNotMatch(e.message, /\/|does-not-exist/, 'no filesystem paths (issue 13)');
    assert.equal(e.code, 'model_load_failed');
    return true;
  });
});

test('bad requests are BadRequestErrors naming the parameter', async () => {
  const cases = [
    [{ model, messages, n: 2 }, 'n'],
    [{ model, messages, tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }, 'tools'],
    [{ model, messages, response_format: { type: 'json_object' } }, 'response_format'],
    [{ model, messages: [] }, 'messages'],
    [{ model, messages, temperature: 'hot' }, 'temperature'],
  ];
  for (const [body, param] of cases) {
    await assert.rejects(client.chat.completions.create(body), (e) => {
      assert.ok(e instanceof OpenAI.BadRequestError, `${param}: ${e}`);
      assert.equal(e.param, param);
      return true;
    });
  }
  // Out of range: the server's own check, still a 400.
  await assert.rejects(client.chat.completions.create({ model, messages, temperature: -1 }),
    (e) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message));
  // Malformed JSON never crashes the adapter.
  const raw = await fetch(`${baseURL}/chat/completions`,
    { method: 'POST', headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' }, body: '{"model": ' });
  assert.equal(raw.status, 400);
  assert.equal((await raw.json()).error.type, 'invalid_request_error');
});

test('a body nested 100,000 deep is a 400, and the adapter and server keep serving', async () => {
  // Before the nesting limit this took gantry-adapter down (stack overflow).
  const deep = '['.repeat(100000) + ']'.repeat(100000);
  const response = await fetch(`${baseURL}/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
    body: `{"model": "demo", "messages": [{"role": "user", "content": ${deep}}]}`,
  });
  assert.equal(response.status, 400);
  const body = await response.json();
  assert.match(body.error.message, /the request body is nested deeper than 100 levels/);
  const reply = await client.chat.completions.create({ model, messages, max_tokens: 4 });
  assert.equal(reply.choices.length, 1);
});

test('a wrong or missing API key is an AuthenticationError', async () => {
  const wrong = new OpenAI({ baseURL, apiKey: 'not-the-key', maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  const none = await fetch(`${baseURL}/models`);
  assert.equal(none.status, 401);
});

test('aborting mid-stream frees the request on the server', async () => {
  const cancelledBefore = (await metric('gantry_requests_total', ['model="demo"', 'code="CANCELLED"'])) ?? 0;
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model, messages, max_tokens: 1500, temperature: 0, stream: true }, { signal: controller.signal });
  let received = 0;
  try {
    for await (const chunk of stream) {
      if (++received === 3) controller.abort();  // the SDK ends the stream (or throws an abort error)
    }
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', String(e));
  }
  assert.ok(received >= 3 && received < 100, `received ${received} chunks`);
  // The server sees the cancellation and the request leaves the batch.
  await requestCancelledOnServer(cancelledBefore);
  const usage = await metric('gantry_model_kv_cache_usage_ratio', ['model="demo"']);
  assert.equal(usage, 0, 'every KV block back in the pool');
});

test('hanging up on a reply that is not streamed frees the request on the server too', async () => {
  // cpp-httplib noticed a gone client only when a stream's write failed; the
  // event-driven adapter sees the connection close and cancels the call.
  const cancelledBefore = (await metric('gantry_requests_total', ['model="demo"', 'code="CANCELLED"'])) ?? 0;
  const controller = new AbortController();
  const pending = client.chat.completions.create(
    { model, messages, max_tokens: 1500, temperature: 0 }, { signal: controller.signal });
  let running;
  for (let i = 0; i < 100; ++i) {
    running = await metric('gantry_requests_running', ['model="demo"']);
    if (running === 1) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  controller.abort();
  await assert.rejects(pending);
  await requestCancelledOnServer(cancelledBefore);
});

test('20 concurrent streams all complete', async () => {
  const runs = await Promise.all(Array.from({ length: 20 }, (_, i) => client.chat.completions.create(
    { model, messages: [{ role: 'user', content: `Request ${i}` }], max_tokens: 30, temperature: 0, stream: true })
    .then(collect)));
  for (const chunks of runs) {
    assert.equal(chunks.filter((c) => c.choices.length).at(-1).choices[0].finish_reason, 'length');
    assert.ok(contentOf(chunks).length > 0);
  }
});
