// The official OpenAI SDK against gantry-adapter (and gantry-server behind
// it), as Dify and other OpenAI clients use it: chat and completions on
// demo, embeddings on demo-embed, rerank (raw HTTP, Jina's and Cohere's
// shape, as Dify posts it) on demo-rerank. Run by adapter_test.cc, which
// starts both binaries and passes:
//   GANTRY_ADAPTER_URL   http://127.0.0.1:PORT/v1
//   GANTRY_API_KEY       the key the adapter requires
//   GANTRY_METRICS_URL   gantry-server's /metrics (to see requests end there)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
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

test('logit_bias steers the choice; out of the vocabulary is a 400 naming it', async () => {
  const ask = (logit_bias) => client.chat.completions.create(
    { model, messages, max_tokens: 5, temperature: 0, logprobs: true, logit_bias });
  const plain = (await ask(undefined)).choices[0].logprobs.content.map((e) => e.token);
  const forced = (await ask({ 300: 100 })).choices[0].logprobs.content.map((e) => e.token);
  assert.equal(forced.length, 5);
  assert.equal(new Set(forced).size, 1, `one token, five times: ${JSON.stringify(forced)}`);
  assert.notDeepEqual(forced, plain);
  await assert.rejects(ask({ 999999: 5 }),
    (e) => e instanceof OpenAI.BadRequestError && /logit_bias: token 999999/.test(e.message));
});

test('models.retrieve: one model by name; an unknown one is a NotFoundError', async () => {
  const one = await client.models.retrieve(model);
  assert.equal(one.id, model);
  assert.equal(one.object, 'model');
  assert.equal(one.task, 'generate');
  await assert.rejects(client.models.retrieve('no-such/model'), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError, String(e));
    assert.match(e.message, /no-such\/model/);
    return true;
  });
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
    [{ model, messages, tools: { type: 'function' } }, 'tools'],
    [{ model, messages, tool_choice: 'always' }, 'tool_choice'],
    [{ model, messages, response_format: { type: 'xml' } }, 'response_format'],
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

test('the first requests to a model that is not loaded start one load, and every one is answered', async () => {
  assert.equal(await metric('gantry_model_loads_total', ['model="demo-lazy"', 'outcome="ok"']), 0);
  const started = Date.now();
  // Six at once for the unloaded model, and one for the resident model beside them.
  const replies = await Promise.all([
    ...Array.from({ length: 6 }, (_, i) => client.chat.completions.create(
      { model: 'demo-lazy', messages: [{ role: 'user', content: `Lazy ${i}` }], max_tokens: 5, temperature: 0 })),
    client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 0 })]);
  for (const reply of replies) assert.equal(reply.choices[0].finish_reason, 'length');
  assert.equal(await metric('gantry_model_loads_total', ['model="demo-lazy"', 'outcome="ok"']), 1);
  assert.ok(Date.now() - started < 60_000, "within Dify's 60 s timeout");
});

// ---- Embeddings (demo-embed) and rerank (demo-rerank) ----

const embedModel = 'demo-embed';
const rerankModel = 'demo-rerank';
const origin = new URL(baseURL).origin;
const auth = { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' };
// The demo embedding model's vocabulary, to send token ids.
const vocab = JSON.parse(readFileSync(new URL('../../models/demo-embed/tokenizer.json', import.meta.url))).model.vocab;

async function post(url, body) {
  const response = await fetch(url, { method: 'POST', headers: auth, body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}

const norm = (v) => Math.sqrt(Array.from(v).reduce((s, x) => s + x * x, 0));
function assertClose(a, b, tolerance, what) {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; ++i) assert.ok(Math.abs(a[i] - b[i]) <= tolerance, `${what}: [${i}] ${a[i]} vs ${b[i]}`);
}
const same = (a, b) => a.length === b.length && Array.from(a).every((x, i) => x === b[i]);

// A base64 embedding as OpenAI writes it: little-endian float32.
function decodeBase64(text) {
  const bytes = Buffer.from(text, 'base64');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Array.from({ length: bytes.byteLength / 4 }, (_, i) => view.getFloat32(i * 4, true));
}

async function embed(input, extra = {}) {
  const r = await client.embeddings.create({ model: embedModel, input, encoding_format: 'float', ...extra });
  return r.data.map((d) => d.embedding);
}

test('the catalogue shows what each model serves', async () => {
  const models = await client.models.list();
  const task = Object.fromEntries(models.data.map((m) => [m.id, m.task]));
  assert.equal(task.demo, 'generate');
  assert.equal(task[embedModel], 'embed');
  assert.equal(task[rerankModel], 'rerank');
  assert.ok(models.data.every((m) => m.object === 'model' && m.owned_by === 'gantry'));
});

test('embeddings of a string: the SDK asks for base64 and decodes it; unit length; usage', async () => {
  const r = await client.embeddings.create({ model: embedModel, input: 'The license grants you the right to copy.' });
  assert.equal(r.object, 'list');
  assert.equal(r.model, embedModel);
  assert.equal(r.data.length, 1);
  assert.equal(r.data[0].object, 'embedding');
  assert.equal(r.data[0].index, 0);
  assert.equal(r.data[0].embedding.length, 64);
  assert.ok(Math.abs(norm(r.data[0].embedding) - 1) < 1e-4, `norm ${norm(r.data[0].embedding)}`);
  // [CLS] the license grants you the right to copy . [SEP]
  assert.equal(r.usage.prompt_tokens, 11);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens);
});

test('float and base64 carry the very same float32 values', async () => {
  const input = 'Redistribution and use in source and binary forms';
  const floats = await client.embeddings.create({ model: embedModel, input, encoding_format: 'float' });
  const base64 = await client.embeddings.create({ model: embedModel, input, encoding_format: 'base64' });
  assert.ok(Array.isArray(floats.data[0].embedding));
  assert.equal(typeof base64.data[0].embedding, 'string', 'the SDK leaves base64 alone when asked for it');
  const decoded = decodeBase64(base64.data[0].embedding);
  assert.deepEqual(decoded, floats.data[0].embedding.map(Math.fround));
  const sdkDecoded = (await client.embeddings.create({ model: embedModel, input })).data[0].embedding;
  assert.deepEqual(Array.from(sdkDecoded), decoded);
  assert.equal(base64.usage.prompt_tokens, floats.usage.prompt_tokens);
});

test('a list: in order, same input same vector, different inputs different vectors', async () => {
  const texts = ['alpha', 'the work', 'alpha', 'copyright holders and contributors'];
  const r = await client.embeddings.create({ model: embedModel, input: texts, encoding_format: 'float' });
  assert.deepEqual(r.data.map((d) => d.index), [0, 1, 2, 3]);
  const v = r.data.map((d) => d.embedding);
  for (const e of v) assert.ok(Math.abs(norm(e) - 1) < 1e-4);
  // Same input, same vector: bit for bit when asked again alone, and within
  // rounding in one batch (rows may meet different GEMM kernels there).
  assertClose(v[0], v[2], 1e-6, 'the same input twice in one batch');
  assert.deepEqual(await embed('alpha'), await embed('alpha'));
  assert.ok(!same(v[0], v[1]) && !same(v[1], v[3]) && !same(v[0], v[3]));
  const distance = (a, b) => Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]) ** 2, 0));
  assert.ok(distance(v[0], v[1]) > 1e-3, `different inputs, distance ${distance(v[0], v[1])}`);
  // Each as it would be alone (batching pads; the mask keeps it out), and
  // the usage is the sum of each input's tokens.
  const [alone] = await embed('the work');
  assertClose(v[1], alone, 1e-5, 'batched vs alone');
  const single = await client.embeddings.create({ model: embedModel, input: 'alpha', encoding_format: 'float' });
  const pair = await client.embeddings.create({ model: embedModel, input: ['alpha', 'alpha'], encoding_format: 'float' });
  assert.equal(pair.usage.prompt_tokens, 2 * single.usage.prompt_tokens);
});

test('token ids in: the same vector as the text they encode', async () => {
  const ids = ['[CLS]', 'the', 'license', '[SEP]'].map((t) => vocab[t]);
  assert.ok(ids.every((id) => Number.isInteger(id)), JSON.stringify(ids));
  const [fromText] = await embed('The License');
  const [fromIds] = await embed(ids);
  const [fromList] = await embed([ids]);
  assertClose(fromIds, fromText, 1e-6, 'ids vs text');
  assert.deepEqual(fromList, fromIds);
});

test('a batch of many inputs, and concurrent requests batched together', async () => {
  const texts = Array.from({ length: 600 }, (_, i) => `Section ${i}: the licensee may copy the work ${i % 7} times.`);
  const r = await client.embeddings.create({ model: embedModel, input: texts, encoding_format: 'float' });
  assert.equal(r.data.length, texts.length);
  r.data.forEach((d, i) => {
    assert.equal(d.index, i);
    assert.ok(Math.abs(norm(d.embedding) - 1) < 1e-4);
  });
  assert.ok(!same(r.data[1].embedding, r.data[2].embedding));
  assert.ok(r.usage.prompt_tokens > 600 * 10);
  const parts = await Promise.all(Array.from({ length: 8 }, (_, k) =>
    client.embeddings.create({ model: embedModel, input: texts.slice(k * 20, k * 20 + 20), encoding_format: 'float' })));
  parts.forEach((part, k) => part.data.forEach((d, i) =>
    assertClose(d.embedding, r.data[k * 20 + i].embedding, 1e-5, `request ${k} input ${i}`)));
});

test('dimensions, normalize and prompt_name reach the server', async () => {
  const text = 'the program';
  const [full] = await embed(text);
  const [short] = await embed(text, { dimensions: 16 });
  assert.equal(short.length, 16);
  assert.ok(Math.abs(norm(short) - 1) < 1e-4);
  const head = full.slice(0, 16);
  assertClose(short, head.map((x) => x / norm(head)), 1e-5, 'dimensions: the first components, normalized again');
  const [raw] = await embed(text, { normalize: false });
  assert.ok(norm(raw) > 1.5, `unnormalized CLS state, norm ${norm(raw)}`);
  assertClose(raw.map((x) => x / norm(raw)), full, 1e-5, 'normalize: false is the same direction');
  // demo-embed's prompts (config_sentence_transformers.json): "query: ", "passage: ".
  const [query] = await embed(text, { prompt_name: 'query' });
  assertClose(query, (await embed('query: ' + text))[0], 1e-6, 'prompt_name query');
  assert.ok(!same(query, full));
  const unknown = await post(`${baseURL}/embeddings`, { model: embedModel, input: text, prompt_name: 'nope' });
  assert.equal(unknown.status, 400);
  assert.match(unknown.body.error.message, /nope/);
});

test('an input over the context is a 400 naming it; truncate: true cuts it', async () => {
  const long = 'license '.repeat(700);
  const refused = await post(`${baseURL}/embeddings`, { model: embedModel, input: ['short', long] });
  assert.equal(refused.status, 400, JSON.stringify(refused.body));
  assert.equal(refused.body.error.code, 'context_length_exceeded');
  assert.match(refused.body.error.message, /1/);
  assert.match(refused.body.error.message, /702|512/);
  // Cut to the model's context, its [CLS] and [SEP] kept.
  const maxContext = (await client.models.list()).data.find((m) => m.id === embedModel).max_context;
  assert.equal(maxContext, 512);
  const cut = await client.embeddings.create({ model: embedModel, input: ['short', long], truncate: true });
  assert.equal(cut.data.length, 2);
  const short = await client.embeddings.create({ model: embedModel, input: 'short' });
  assert.equal(cut.usage.prompt_tokens, short.usage.prompt_tokens + maxContext);
  const [longCut] = await embed(long, { truncate: true });
  const [exact] = await embed([vocab['[CLS]'], ...Array(maxContext - 2).fill(vocab.license), vocab['[SEP]']]);
  assertClose(longCut, exact, 1e-5, 'truncate keeps [CLS] and [SEP]');
});

test('each bad embeddings input is its own 400 naming the field', async () => {
  const cases = [
    [{ input: 'x' }, 'model'],
    [{ model: embedModel }, 'input'],
    [{ model: embedModel, input: '' }, 'input'],
    [{ model: embedModel, input: [] }, 'input'],
    [{ model: embedModel, input: 5 }, 'input'],
    [{ model: embedModel, input: ['a', '', 'b'] }, 'input[1]'],
    [{ model: embedModel, input: ['a', 'b', 7] }, 'input[2]'],
    [{ model: embedModel, input: ['a', null] }, 'input[1]'],
    [{ model: embedModel, input: [[1, 2], []] }, 'input[1]'],
    [{ model: embedModel, input: [[1, -2]] }, 'input[0]'],
    [{ model: embedModel, input: [1, 2.5] }, 'input[1]'],
    [{ model: embedModel, input: Array(2049).fill('x') }, 'input'],
    [{ model: embedModel, input: 'x', encoding_format: 'int8' }, 'encoding_format'],
    [{ model: embedModel, input: 'x', dimensions: 0 }, 'dimensions'],
    [{ model: embedModel, input: 'x', dimensions: 'all' }, 'dimensions'],
    [{ model: embedModel, input: 'x', truncate: 'yes' }, 'truncate'],
    [{ model: embedModel, input: 'x', normalize: 1 }, 'normalize'],
    [{ model: embedModel, input: 'x', user: 5 }, 'user'],
  ];
  for (const [body, param] of cases) {
    const r = await post(`${baseURL}/embeddings`, body);
    assert.equal(r.status, 400, `${param}: ${JSON.stringify(r.body)}`);
    assert.deepEqual(Object.keys(r.body.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(r.body.error.type, 'invalid_request_error');
    assert.equal(r.body.error.param, param, JSON.stringify(r.body));
    assert.ok(r.body.error.message.includes(param.replace(/\[.*/, '')), r.body.error.message);
  }
  // Through the SDK: a BadRequestError with the parameter.
  await assert.rejects(client.embeddings.create({ model: embedModel, input: ['ok', ''] }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, 'input[1]');
    return true;
  });
  // A token id past the vocabulary: the server's check, still a 400.
  const beyond = await post(`${baseURL}/embeddings`, { model: embedModel, input: [[2, 999999, 3]] });
  assert.equal(beyond.status, 400, JSON.stringify(beyond.body));
});

const query = 'Who may copy and distribute the program?';
const documents = [
  'You may copy and distribute verbatim copies of the Program as you receive it.',
  'This License applies to any program or other work which contains a notice.',
  'The licensee may not sublicense the work.',
  'Redistribution and use in source and binary forms are permitted.',
  'THERE IS NO WARRANTY FOR THE PROGRAM.',
];

function checkRanking(body, { count, withDocuments }) {
  assert.match(body.id, /^rerank-[0-9a-f]{24}$/);
  assert.equal(body.model, rerankModel);
  assert.equal(body.results.length, count);
  const indices = body.results.map((r) => r.index);
  assert.equal(new Set(indices).size, count, 'no index twice');
  for (const r of body.results) {
    assert.ok(Number.isInteger(r.index) && r.index >= 0 && r.index < documents.length, JSON.stringify(r));
    assert.ok(r.relevance_score >= 0 && r.relevance_score <= 1, JSON.stringify(r));
    if (withDocuments) assert.deepEqual(r.document, { text: documents[r.index] });
    else assert.equal(r.document, undefined);
  }
  for (let i = 1; i < count; ++i) assert.ok(body.results[i - 1].relevance_score >= body.results[i].relevance_score);
  assert.ok(body.usage.prompt_tokens > 0);
  assert.equal(body.usage.total_tokens, body.usage.prompt_tokens);
}

test('rerank at /v1/rerank and /rerank: sorted by score, top_n, return_documents', async () => {
  const all = await post(`${baseURL}/rerank`, { model: rerankModel, query, documents });
  assert.equal(all.status, 200, JSON.stringify(all.body));
  checkRanking(all.body, { count: documents.length, withDocuments: false });
  assert.ok(all.body.results[0].relevance_score > all.body.results.at(-1).relevance_score, 'scores differ');
  const top = await post(`${baseURL}/rerank`, { model: rerankModel, query, documents, top_n: 3, return_documents: true });
  assert.equal(top.status, 200, JSON.stringify(top.body));
  checkRanking(top.body, { count: 3, withDocuments: true });
  assert.deepEqual(top.body.results.map((r) => [r.index, r.relevance_score]),
    all.body.results.slice(0, 3).map((r) => [r.index, r.relevance_score]));
  // Dify's exact body (top_n: the number of documents), at /rerank: for clients whose base has no /v1.
  const dify = await post(`${origin}/rerank`, { model: rerankModel, query, documents, top_n: documents.length });
  assert.equal(dify.status, 200, JSON.stringify(dify.body));
  checkRanking(dify.body, { count: documents.length, withDocuments: false });
  assert.deepEqual(dify.body.results.map((r) => r.index), all.body.results.map((r) => r.index));
  // Cohere's and Jina's structured documents rank the same.
  const objects = await post(`${baseURL}/rerank`,
    { model: rerankModel, query, documents: documents.map((text) => ({ text })), return_documents: true });
  checkRanking(objects.body, { count: documents.length, withDocuments: true });
  assert.deepEqual(objects.body.results.map((r) => r.relevance_score), all.body.results.map((r) => r.relevance_score));
  // Usage counts every (query, document) pair: one document's pair alone is fewer tokens.
  const one = await post(`${baseURL}/rerank`, { model: rerankModel, query, documents: documents.slice(0, 1) });
  assert.ok(one.body.usage.prompt_tokens < all.body.usage.prompt_tokens);
});

test('each bad rerank input is its own 400 naming the field', async () => {
  const cases = [
    [{ query, documents }, 'model'],
    [{ model: rerankModel, documents }, 'query'],
    [{ model: rerankModel, query: '', documents }, 'query'],
    [{ model: rerankModel, query: 5, documents }, 'query'],
    [{ model: rerankModel, query }, 'documents'],
    [{ model: rerankModel, query, documents: [] }, 'documents'],
    [{ model: rerankModel, query, documents: 'one' }, 'documents'],
    [{ model: rerankModel, query, documents: ['a', 2] }, 'documents[1]'],
    [{ model: rerankModel, query, documents: ['a', 'b', { title: 'c' }] }, 'documents[2]'],
    [{ model: rerankModel, query, documents, top_n: -1 }, 'top_n'],
    [{ model: rerankModel, query, documents, top_n: 'two' }, 'top_n'],
    [{ model: rerankModel, query, documents, return_documents: 'yes' }, 'return_documents'],
  ];
  for (const url of [`${baseURL}/rerank`, `${origin}/rerank`]) {
    for (const [body, param] of cases) {
      const r = await post(url, body);
      assert.equal(r.status, 400, `${param}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.type, 'invalid_request_error');
      assert.equal(r.body.error.param, param, JSON.stringify(r.body));
      assert.ok(r.body.error.message.includes(param.replace(/\[.*/, '')), r.body.error.message);
    }
  }
  const unknown = await post(`${baseURL}/rerank`, { model: 'no-such-model', query, documents });
  assert.equal(unknown.status, 404);
  const noKey = await fetch(`${origin}/rerank`, { method: 'POST', body: JSON.stringify({ model: rerankModel, query, documents }) });
  assert.equal(noKey.status, 401);
  const noKeyEmbed = await fetch(`${baseURL}/embeddings`, { method: 'POST', body: '{}' });
  assert.equal(noKeyEmbed.status, 401);
});

test('the adapter counts and times the new routes', async () => {
  const text = await (await fetch(`${origin}/metrics`)).text();
  for (const route of ['/v1/embeddings', '/v1/rerank', '/rerank']) {
    assert.match(text, new RegExp(`gantry_adapter_requests_total\\{route="${route}",status="200"\\} [1-9]`), route);
    assert.match(text, new RegExp(`gantry_adapter_requests_total\\{route="${route}",status="400"\\} [1-9]`), route);
    assert.match(text, new RegExp(`gantry_adapter_request_duration_seconds_count\\{route="${route}"\\} [1-9]`), route);
  }
});

// Last, so that a server taken down by one of these fails this test alone.
test('a model asked for what it does not serve is a 400 naming it and its task', async () => {
  await assert.rejects(client.chat.completions.create({ model: embedModel, messages, max_tokens: 4 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.status, 400);
    assert.match(e.message, /demo-embed/);
    assert.match(e.message, /embed/);
    return true;
  });
  await assert.rejects(client.completions.create({ model: rerankModel, prompt: 'x', max_tokens: 4 }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.match(e.message, /demo-rerank/);
    return true;
  });
  await assert.rejects(client.embeddings.create({ model, input: 'x' }), (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.match(e.message, /\bdemo\b/);
    assert.match(e.message, /generate/);
    assert.equal(e.code, 'unsupported');
    return true;
  });
  const rerankOnEmbed = await post(`${baseURL}/rerank`, { model: embedModel, query: 'q', documents: ['d'] });
  assert.equal(rerankOnEmbed.status, 400);
  assert.match(rerankOnEmbed.body.error.message, /demo-embed/);
  const embedOnRerank = await post(`${baseURL}/embeddings`, { model: rerankModel, input: 'x' });
  assert.equal(embedOnRerank.status, 400);
  assert.match(embedOnRerank.body.error.message, /demo-rerank/);
  await assert.rejects(client.embeddings.create({ model: 'no-such-model', input: 'x' }),
    (e) => e instanceof OpenAI.NotFoundError && /no-such-model/.test(e.message));
  // And every model still serves what it does.
  assert.equal((await embed('still serving')).length, 1);
  const ranked = await post(`${baseURL}/rerank`, { model: rerankModel, query: 'q', documents: ['d'] });
  assert.equal(ranked.status, 200);
  const chat = await client.chat.completions.create({ model, messages, max_tokens: 2 });
  assert.equal(chat.choices.length, 1);
});

// Tool calling, structured output and reasoning (issue 17). The demo model
// has random weights: only guided decoding makes its output follow a schema,
// so every valid result below is the grammar's doing. Its config sets
// tool_parser hermes and reasoning_parser qwen3 (adapter_test.cc).
const weatherTool = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather in a city',
    parameters: {
      type: 'object',
      properties: {
        city: { type: 'string', maxLength: 12 },
        unit: { enum: ['celsius', 'fahrenheit'] },
        days: { type: 'integer', minimum: 1, maximum: 7 },
      },
      required: ['city', 'unit'],
    },
  },
};
const timeTool = {
  type: 'function',
  function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string', maxLength: 8 } }, required: ['zone'] } },
};

function checkWeatherArguments(text) {
  const args = JSON.parse(text);
  assert.equal(typeof args.city, 'string');
  assert.ok([...args.city].length <= 12, text);
  assert.ok(['celsius', 'fahrenheit'].includes(args.unit), text);
  if ('days' in args) assert.ok(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7, text);
  assert.deepEqual(Object.keys(args).filter((k) => !['city', 'unit', 'days'].includes(k)), []);
}

// Tool-call deltas merged as OpenAI clients (and Dify) merge them: by index,
// the first carrying id and name.
function mergeToolCalls(chunks) {
  const calls = [];
  for (const chunk of chunks) {
    for (const d of chunk.choices[0]?.delta?.tool_calls ?? []) {
      if (!calls[d.index]) calls[d.index] = { id: d.id, name: d.function?.name, arguments: '' };
      assert.ok(d.id === undefined || calls[d.index].id === d.id);
      calls[d.index].arguments += d.function?.arguments ?? '';
    }
  }
  return calls;
}

test('a named tool_choice gives a schema-valid call, whole and streamed alike', async () => {
  const request = {
    model, messages: [{ role: 'user', content: 'Weather in Oslo?' }], tools: [weatherTool, timeTool],
    tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 200, temperature: 0,
  };
  const whole = await client.chat.completions.create(request);
  const message = whole.choices[0].message;
  assert.equal(whole.choices[0].finish_reason, 'tool_calls');
  assert.equal(message.content, null);
  assert.equal(message.tool_calls.length, 1);
  assert.match(message.tool_calls[0].id, /^call_[A-Za-z0-9]{24}$/);
  assert.equal(message.tool_calls[0].type, 'function');
  assert.equal(message.tool_calls[0].function.name, 'get_weather');
  checkWeatherArguments(message.tool_calls[0].function.arguments);

  const chunks = await collect(await client.chat.completions.create({ ...request, stream: true }));
  const calls = mergeToolCalls(chunks);
  assert.equal(calls.length, 1);
  assert.equal(calls[0].name, 'get_weather');
  assert.equal(calls[0].arguments, message.tool_calls[0].function.arguments);
  assert.ok(chunks.filter((c) => c.choices[0]?.delta?.tool_calls).length > 1, 'arguments arrive in pieces');
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'tool_calls');
});

test('tool_choice required calls given tools only, and the history goes back to the model', async () => {
  const request = {
    model, messages: [{ role: 'user', content: 'Weather and time?' }], tools: [weatherTool, timeTool],
    tool_choice: 'required', max_tokens: 300, temperature: 0.8, seed: 7,
  };
  const whole = await client.chat.completions.create(request);
  const calls = whole.choices[0].message.tool_calls;
  assert.ok(calls.length >= 1);
  for (const call of calls) {
    assert.ok(['get_weather', 'get_time'].includes(call.function.name));
    if (call.function.name === 'get_weather') checkWeatherArguments(call.function.arguments);
    else assert.equal(typeof JSON.parse(call.function.arguments).zone, 'string');
  }
  const streamed = mergeToolCalls(await collect(await client.chat.completions.create({ ...request, stream: true })));
  assert.deepEqual(streamed.map((c) => [c.name, c.arguments]), calls.map((c) => [c.function.name, c.function.arguments]));

  // The calls and their results as the next turn's history.
  const next = await client.chat.completions.create({
    model, max_tokens: 8, temperature: 0, tools: [weatherTool, timeTool],
    messages: [
      { role: 'user', content: 'Weather and time?' },
      { role: 'assistant', content: null, tool_calls: calls },
      ...calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: '5 C' })),
    ],
  });
  assert.ok(['stop', 'length', 'tool_calls'].includes(next.choices[0].finish_reason));
});

test('response_format json_schema and json_object give valid JSON', async () => {
  const schema = {
    type: 'object',
    properties: {
      name: { type: 'string', maxLength: 10 },
      tags: { type: 'array', items: { enum: ['a', 'b', 'c'] }, maxItems: 3 },
      score: { type: 'number' },
      ok: { type: 'boolean' },
    },
    required: ['name', 'tags', 'score', 'ok'],
  };
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 200, temperature: 0,
    response_format: { type: 'json_schema', json_schema: { name: 'thing', schema, strict: true } },
  });
  assert.equal(r.choices[0].finish_reason, 'stop');
  const value = JSON.parse(r.choices[0].message.content);
  assert.deepEqual(Object.keys(value), ['name', 'tags', 'score', 'ok']);
  assert.ok(value.tags.every((t) => ['a', 'b', 'c'].includes(t)) && value.tags.length <= 3);
  assert.equal(typeof value.score, 'number');
  assert.equal(typeof value.ok, 'boolean');

  const any = await client.chat.completions.create({
    model, messages, max_tokens: 200, temperature: 0.7, seed: 3, response_format: { type: 'json_object' },
  });
  if (any.choices[0].finish_reason === 'stop') {
    assert.equal(typeof JSON.parse(any.choices[0].message.content), 'object');
  } else {
    assert.equal(any.choices[0].finish_reason, 'length');  // cut short: an unfinished object, and said so
  }
});

test('an unsupported schema keyword is a 400 naming it', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model, messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', patternProperties: { a: {} } } } },
    }),
    (e) => e instanceof OpenAI.BadRequestError && /patternProperties/.test(e.message));
});

test('reasoning goes to reasoning_content, never into content', async () => {
  // The regex makes the random model think first (the parser comes from the model's config).
  const request = {
    model, messages, max_tokens: 60, temperature: 0, guided_regex: '<think>[a-z ]{3,16}</think>[a-z]{2,10}',
  };
  const whole = await client.chat.completions.create(request);
  const message = whole.choices[0].message;
  assert.match(message.reasoning_content, /^[a-z ]{3,16}$/);
  assert.match(message.content, /^[a-z]{2,10}$/);
  const chunks = await collect(await client.chat.completions.create({ ...request, stream: true }));
  assert.equal(chunks.map((c) => c.choices[0]?.delta?.reasoning_content ?? '').join(''), message.reasoning_content);
  assert.equal(contentOf(chunks), message.content);
});

test('tools with tool_choice auto, none, and a tool the request does not offer', async () => {
  const auto = await client.chat.completions.create({
    model, messages, tools: [weatherTool], max_tokens: 10, temperature: 0,
  });
  assert.ok(['stop', 'length', 'tool_calls'].includes(auto.choices[0].finish_reason));
  const none = await client.chat.completions.create({
    model, messages, tools: [weatherTool], tool_choice: 'none', max_tokens: 10, temperature: 0,
  });
  assert.equal(none.choices[0].message.tool_calls, undefined);
  await assert.rejects(
    client.chat.completions.create({
      model, messages, tools: [weatherTool], tool_choice: { type: 'function', function: { name: 'send_email' } },
    }),
    (e) => e instanceof OpenAI.BadRequestError && /send_email/.test(e.message));
});
