'use strict';
// `new OpenAI()` from slmkit is the `openai` package's client, on slmkitFetch: openai's own
// helpers (parse, withResponse, models.list, withOptions), its error classes, and the fetch
// itself (routes, SSE framing, error bodies, abort).

const test = require('node:test');
const assert = require('node:assert/strict');
const RealOpenAI = require('openai');
const OpenAI = require('..');
const { slmkitFetch } = require('..');
const { startServer, localSlm, LONG, MODEL } = require('./helpers');

let server;
test.before(async () => {
  server = await startServer();
});
test.after(() => server?.close());

const messages = [{ role: 'user', content: 'order 1234 is late, refund it' }];
const TICKET = {
  type: 'object',
  properties: {
    intent: { enum: ['refund', 'billing', 'bug', 'other'] },
    order_id: { type: 'integer', minimum: 1, maximum: 99999 },
  },
  required: ['intent', 'order_id'],
  additionalProperties: false,
};
const TICKET_FORMAT = { type: 'json_schema', json_schema: { name: 'ticket', schema: TICKET, strict: true } };

function bothTiers() {
  return new OpenAI({ ...localSlm(), llm: { backend: 'remote', base_url: server.url, model: 'big', api_key: 'k' } });
}

test('the client is an instance of the openai package\'s OpenAI, with its resources', () => {
  const client = new OpenAI(localSlm());
  // `require('openai')` is a callable wrapper; its classes are `.OpenAI` and `.default`.
  assert.ok(client instanceof RealOpenAI.OpenAI);
  assert.ok(client instanceof RealOpenAI.default);
  assert.equal(typeof client.chat.completions.parse, 'function');
  assert.equal(typeof client.beta, 'object');
  assert.equal(client.maxRetries, 0, 'the core retries; the openai client must not retry on top');
  assert.ok(client.fetch.ledger === client.ledger, 'the client\'s fetch is its slmkitFetch');
});

test('the ES module entry builds on openai\'s ES module build: instanceof holds for `import` users', async () => {
  const { default: SlmkitOpenAI, BadRequestError, slmkitFetch: esmFetch } = await import('../index.mjs');
  const { default: ImportedOpenAI, BadRequestError: ImportedBadRequest } = await import('openai');
  const client = new SlmkitOpenAI(localSlm());
  assert.ok(client instanceof ImportedOpenAI);
  assert.equal(BadRequestError, ImportedBadRequest);
  const err = await client.chat.completions.create({ model: '', messages, n: 2 }).catch((e) => e);
  assert.ok(err instanceof ImportedBadRequest, String(err));
  assert.equal(typeof esmFetch, 'function');
});

test('chat.completions.parse with a strict JSON-schema format, on the SLM', async () => {
  const client = new OpenAI(localSlm());
  const completion = await client.chat.completions.parse({
    model: '',
    messages,
    response_format: TICKET_FORMAT,
    max_tokens: 64,
    seed: 3,
  });
  const { parsed } = completion.choices[0].message;
  assert.ok(['refund', 'billing', 'bug', 'other'].includes(parsed.intent), JSON.stringify(parsed));
  assert.ok(Number.isInteger(parsed.order_id) && parsed.order_id >= 1 && parsed.order_id <= 99999);
  const [record] = client.ledger.records();
  assert.equal(record.tier, 'slm');
  assert.equal(record.outcome, 'ok');
});

test('chat.completions.parse parses strict tool arguments, on the LLM', async () => {
  const client = bothTiers();
  await server.script([
    { kind: 'reply', tool_calls: [{ id: 'c1', type: 'function', function: { name: 'refund', arguments: '{"order_id":1234}' } }] },
  ]);
  const tool = {
    type: 'function',
    function: {
      name: 'refund',
      strict: true,
      parameters: { type: 'object', properties: { order_id: { type: 'integer' } }, required: ['order_id'], additionalProperties: false },
    },
  };
  const completion = await client.chat.completions.parse({ model: '', messages, tools: [tool], slmkit: { route: 'llm' } });
  assert.deepEqual(completion.choices[0].message.tool_calls[0].function.parsed_arguments, { order_id: 1234 });
  assert.deepEqual(client.ledger.records().map((r) => `${r.tier}:${r.outcome}`), ['llm:ok']);
});

test('withResponse and asResponse give the HTTP Response slmkitFetch made; the metadata stays off the keys', async () => {
  const client = new OpenAI(localSlm());
  const { data, response, request_id } = await client.chat.completions
    .create({ model: '', messages, max_tokens: 4, seed: 1 })
    .withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.equal(data.slmkit.tier, 'slm');
  assert.ok(!Object.keys(data).includes('slmkit'));
  assert.ok(response instanceof Response);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get('content-type'), 'application/json');
  assert.equal(request_id, null);
  const raw = await client.chat.completions.create({ model: '', messages, max_tokens: 4, seed: 2 }).asResponse();
  const body = await raw.json();
  assert.equal(body.object, 'chat.completion');
  assert.equal(body.slmkit.tier, 'slm', 'on the wire the metadata is a plain field, as slmkit serve sends it');
});

test('models.list and models.retrieve list the configured tiers', async () => {
  const client = bothTiers();
  const ids = [];
  for await (const model of client.models.list()) ids.push([model.id, model.tier, model.owned_by]);
  assert.deepEqual(ids.map(([, tier, owner]) => [tier, owner]), [
    ['slm', 'slmkit-slm'],
    ['llm', 'slmkit-llm'],
  ]);
  assert.equal(ids[1][0], 'big');
  const local = await client.models.retrieve(ids[0][0]);
  assert.equal(local.tier, 'slm');
  assert.equal(typeof local.context_window, 'number');
  const missing = await client.models.retrieve('no-such-model').catch((e) => e);
  assert.ok(missing instanceof RealOpenAI.NotFoundError, String(missing));
  assert.equal(missing.code, 'model_not_found');
});

test('streaming through openai\'s Stream: chunks, metadata on the first, and the chat.completions.stream helper', async () => {
  const client = bothTiers();
  const stream = await client.chat.completions.create({ model: '', messages, max_tokens: 8, seed: 5, stream: true });
  assert.ok(stream instanceof OpenAI.Stream);
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 2);
  assert.ok(chunks.every((chunk) => chunk.object === 'chat.completion.chunk'));
  assert.equal(chunks[0].slmkit.tier, 'slm');
  assert.ok(!Object.keys(chunks[0]).includes('slmkit'));

  await server.script([{ kind: 'reply', content: 'streamed from the LLM' }]);
  const runner = client.chat.completions.stream({ model: '', messages, slmkit: { route: 'llm' } });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, 'streamed from the LLM');
  assert.deepEqual(client.ledger.records().map((r) => `${r.tier}:${r.outcome}`), ['slm:ok', 'llm:ok']);
});

test('errors are the openai package\'s classes, with slmkit\'s details', async () => {
  const client = new OpenAI(localSlm());
  const bad = await client.chat.completions.create({ model: '', messages, n: 2 }).catch((e) => e);
  assert.ok(bad instanceof RealOpenAI.BadRequestError, String(bad));
  assert.ok(bad instanceof OpenAI.BadRequestError);
  assert.equal(bad.status, 400);
  assert.equal(bad.param, 'n');
  assert.equal(bad.kind, 'invalid_request');
  assert.ok(bad.headers.get('content-type').startsWith('application/json'));
  const penalty = await client.chat.completions.create({ model: '', messages, presence_penalty: -3 }).catch((e) => e);
  assert.ok(penalty instanceof RealOpenAI.BadRequestError, String(penalty));
  assert.equal(penalty.param, 'presence_penalty');

  const tooLong = await client.chat.completions.create({ model: '', messages, max_tokens: 5000 }).catch((e) => e);
  assert.ok(tooLong instanceof OpenAI.ContextLengthError);
  assert.ok(tooLong instanceof RealOpenAI.BadRequestError);

  // A plain openai client on slmkitFetch gets the same statuses and bodies, as from slmkit serve.
  const plain = new RealOpenAI({ apiKey: 'k', baseURL: 'http://in-process.invalid/v1', fetch: slmkitFetch(localSlm()), maxRetries: 0 });
  const plainBad = await plain.chat.completions.create({ model: '', messages, n: 2 }).catch((e) => e);
  assert.ok(plainBad instanceof RealOpenAI.BadRequestError, String(plainBad));
  assert.equal(plainBad.param, 'n');
  assert.equal(plainBad.error.type, 'invalid_request_error');
});

test('withOptions shares the native client and the ledger', async () => {
  const client = new OpenAI(localSlm());
  const copy = client.withOptions({ timeout: 60_000 });
  assert.ok(copy instanceof OpenAI);
  assert.equal(copy.timeout, 60_000);
  await copy.chat.completions.create({ model: '', messages, max_tokens: 4, seed: 9 });
  assert.equal(client.ledger.records().length, 1);
  assert.equal(copy.ledger, client.ledger);
});

test('slmkitFetch: chat completions whole and as SSE, models, and clear errors for the rest', async () => {
  const fetch = slmkitFetch({ slm: { backend: 'local', model: MODEL, context: 1024 } });
  const post = (path, body) =>
    fetch(`http://anything.invalid/v1${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

  const whole = await post('/chat/completions', JSON.stringify({ model: '', messages, max_tokens: 4, seed: 11 }));
  assert.equal(whole.status, 200);
  assert.equal((await whole.json()).object, 'chat.completion');

  const sse = await post('/chat/completions', JSON.stringify({ model: '', messages, max_tokens: 6, seed: 12, stream: true }));
  assert.equal(sse.headers.get('content-type'), 'text/event-stream');
  const frames = (await sse.text()).split('\n\n').filter(Boolean);
  assert.equal(frames.at(-1), 'data: [DONE]');
  for (const frame of frames.slice(0, -1)) {
    assert.match(frame, /^data: \{/);
    assert.equal(JSON.parse(frame.slice(6)).object, 'chat.completion.chunk');
  }

  // A Request object, as some clients pass.
  const models = await fetch(new Request('http://x.invalid/v1/models'));
  const list = await models.json();
  assert.equal(list.object, 'list');
  assert.equal(list.data[0].tier, 'slm');

  const notJson = await post('/chat/completions', '{"model":');
  assert.equal(notJson.status, 400);
  assert.equal((await notJson.json()).error.type, 'invalid_request_error');
  const response = await post('/responses', JSON.stringify({ model: '', input: 'hi', max_output_tokens: 4 }));
  assert.equal(response.status, 200);
  assert.equal((await response.json()).object, 'response');
  const events = await post('/responses', JSON.stringify({ model: '', input: 'hi', max_output_tokens: 4, stream: true }));
  const eventFrames = (await events.text()).split('\n\n').filter(Boolean);
  for (const frame of eventFrames) {
    const [eventLine, dataLine] = frame.split('\n');
    assert.equal(eventLine, `event: ${JSON.parse(dataLine.slice(6)).type}`);
  }
  // The terminal event last (`incomplete` when max_output_tokens cut it), and no [DONE] after it.
  assert.match(eventFrames.at(-1).split('\n')[0], /^event: response\.(completed|incomplete)$/);
  const unknown = await fetch('http://x.invalid/v1/embeddings', { method: 'POST', body: '{}' });
  assert.equal(unknown.status, 404);
  assert.match((await unknown.json()).error.message, /chat\/completions/);
  const wrongMethod = await fetch('http://x.invalid/v1/chat/completions');
  assert.equal(wrongMethod.status, 405);
  // Four calls served (a random answer the default validators reject is retried first).
  assert.equal(fetch.ledger.records().filter((r) => r.served).length, 4);
});

test('an abort signal cancels the native call: whole, before the stream, and mid-stream', async () => {
  const fetch = slmkitFetch({ ...localSlm({ slots: 1, queue: 1 }), default_validators: false, cache: { enabled: false } });
  const request = (extra, signal) =>
    fetch('http://x.invalid/v1/chat/completions', { method: 'POST', body: JSON.stringify({ ...LONG, ...extra }), signal });

  const whole = new AbortController();
  const pending = request({ seed: 21 }, whole.signal);
  setImmediate(() => whole.abort());
  await assert.rejects(pending, { name: 'AbortError' });

  const live = new AbortController();
  const response = await request({ seed: 22, stream: true }, live.signal);
  const reader = response.body.getReader();
  for (let i = 0; i < 3; i++) assert.equal((await reader.read()).done, false);
  live.abort();
  await assert.rejects(reader.read(), { name: 'AbortError' });
  // The stream's attempt had started, so it is on the ledger; the whole call's too, unless the
  // abort came before its attempt began. Nothing ran to the end.
  const outcomes = fetch.ledger.records().map((r) => r.outcome);
  assert.ok(outcomes.length >= 1 && outcomes.every((outcome) => outcome === 'cancelled'), outcomes.join());
  // The only slot is free again.
  const next = await request({ seed: 23, max_tokens: 4, response_format: undefined });
  assert.equal((await next.json()).object, 'chat.completion');
});

test('a stream that breaks after its first chunks throws slmkit\'s error from the iteration', async () => {
  const client = new OpenAI({
    llm: { backend: 'remote', base_url: server.url, model: 'big', api_key: 'k' },
    retry: { llm_attempts: 1 },
  });
  await server.script([{ kind: 'reply', content: 'one two three four five six seven eight', cut_after_chunks: 2 }]);
  const stream = await client.chat.completions.create({ model: '', messages, stream: true });
  const seen = [];
  const err = await (async () => {
    for await (const chunk of stream) seen.push(chunk);
  })().catch((e) => e);
  assert.ok(err instanceof RealOpenAI.APIError, String(err));
  assert.equal(err.kind, 'stream_interrupted');
  assert.equal(err.chunksDelivered, seen.length);
  assert.ok(seen.length >= 1);
  assert.deepEqual(client.ledger.records().map((r) => `${r.tier}:${r.outcome}`), ['llm:error']);
});

test('responses.create, responses.parse and a streamed response, on both tiers', async () => {
  const client = bothTiers();
  const whole = await client.responses.create({ model: '', input: 'hello', max_output_tokens: 6 });
  assert.equal(whole.object, 'response');
  if (whole.status !== 'completed') {
    assert.equal(whole.status, 'incomplete');
    assert.equal(whole.incomplete_details.reason, 'max_output_tokens');
  }
  assert.equal(typeof whole.output_text, 'string');
  assert.ok(!Object.keys(whole).includes('slmkit'));

  const parsed = await client.responses.parse({
    model: '',
    instructions: 'Classify the ticket.',
    input: [{ role: 'user', content: 'order 1234 is late, refund it' }],
    text: { format: { type: 'json_schema', name: 'ticket', schema: TICKET, strict: true } },
    max_output_tokens: 64,
  });
  assert.ok(['refund', 'billing', 'bug', 'other'].includes(parsed.output_parsed.intent), parsed.output_text);
  assert.ok(Number.isInteger(parsed.output_parsed.order_id));

  await server.script([{ kind: 'reply', content: 'From the LLM, streamed.' }]);
  const stream = await client.responses.create({ model: '', input: 'hello', stream: true, metadata: { slmkit_route: 'llm' } });
  const types = [];
  let text = '';
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === 'response.output_text.delta') text += event.delta;
  }
  assert.equal(types[0], 'response.created');
  assert.equal(types.at(-1), 'response.completed');
  assert.equal(text, 'From the LLM, streamed.');
  const served = client.ledger.records().filter((r) => r.served);
  assert.deepEqual(served.map((r) => `${r.tier}:${r.outcome}`), ['slm:ok', 'slm:ok', 'llm:ok']);

  const refused = await client.responses.create({ model: '', input: 'hi', previous_response_id: 'resp_1' }).catch((e) => e);
  assert.ok(refused instanceof RealOpenAI.BadRequestError, String(refused));
  assert.equal(refused.param, 'previous_response_id');
});
