'use strict';
// slmkit's response objects have the same key sets and value types as what the `openai`
// package parses from the same JSON.

const test = require('node:test');
const assert = require('node:assert/strict');
const RealOpenAI = require('openai');
const OpenAI = require('..');
const { startServer, shape, localSlm } = require('./helpers');

// Two fields legitimately differ between a local answer and the test server's JSON for it: the
// server adds its own `system_fingerprint`, and the local engine reports
// `usage.prompt_tokens_details` (as OpenAI's API does; the test server does not). `lenient`
// removes just those before comparing; the strict comparisons of same-JSON answers, where
// they must agree exactly (a missing fingerprint omitted, never `null`), run as their own test.
function lenient(value, { keepFingerprint = false } = {}) {
  const copy = structuredClone(value);
  for (const item of Array.isArray(copy) ? copy : [copy]) {
    if (!keepFingerprint) delete item.system_fingerprint;
    if (item.usage) delete item.usage.prompt_tokens_details;
  }
  return copy;
}
const strictGaps = [];
function sameShape(ours, theirs, what, { sameJson = true } = {}) {
  if (!sameJson) {
    // A local answer against the server's JSON for it: the server adds its own fingerprint.
    assert.deepEqual(shape(lenient(ours)), shape(lenient(theirs)), what);
    return;
  }
  const strict = () =>
    assert.deepEqual(shape(lenient(ours, { keepFingerprint: true })), shape(lenient(theirs, { keepFingerprint: true })), what);
  try {
    strict();
  } catch {
    strictGaps.push({ what, check: strict });
  }
  assert.deepEqual(shape(lenient(ours)), shape(lenient(theirs)));
}

const WEATHER = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
      additionalProperties: false,
    },
  },
};
const SCHEMA = {
  type: 'object',
  properties: { order_id: { type: 'integer' }, late: { type: 'boolean' } },
  required: ['order_id', 'late'],
  additionalProperties: false,
};
const TOOL_CALLS = [
  { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
];

let server;
let real;
let slmkit;

test.before(async () => {
  server = await startServer();
  real = new RealOpenAI({ baseURL: server.url, apiKey: 'test-key', maxRetries: 0 });
  slmkit = new OpenAI({ baseURL: server.url, apiKey: 'test-key' });
});
test.after(() => server?.close());

/** The same request through both clients, the server answering each with `behaviour`. */
async function both(params, behaviour) {
  await server.script([behaviour, behaviour]);
  const ours = await slmkit.chat.completions.create(params);
  const theirs = await real.chat.completions.create(params);
  return { ours, theirs };
}

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

const messages = [{ role: 'user', content: 'Weather in Paris?' }];

test('plain completion: same shape as openai', async () => {
  const { ours, theirs } = await both({ model: 'm', messages }, { kind: 'reply', content: 'Sunny.' });
  sameShape(ours, theirs, 'plain');
  assert.equal(ours.choices[0].message.content, theirs.choices[0].message.content);
  assert.equal(ours.slmkit.tier, 'llm');
  assert.ok(!Object.keys(ours).includes('slmkit'), 'the metadata is not enumerable');
});

test('JSON-schema completion: same shape as openai', async () => {
  const params = {
    model: 'm',
    messages,
    response_format: { type: 'json_schema', json_schema: { name: 'order', schema: SCHEMA, strict: true } },
  };
  const { ours, theirs } = await both(params, { kind: 'reply', content: '{"order_id": 7, "late": true}' });
  sameShape(ours, theirs, 'json_schema');
});

test('tool-call completion: same shape as openai', async () => {
  const params = { model: 'm', messages, tools: [WEATHER], tool_choice: 'required' };
  const { ours, theirs } = await both(params, { kind: 'reply', tool_calls: TOOL_CALLS });
  sameShape(ours, theirs, 'tool call');
  assert.equal(ours.choices[0].finish_reason, 'tool_calls');
});

test('streamed completion with include_usage: same chunks as openai', async () => {
  const params = { model: 'm', messages, stream: true, stream_options: { include_usage: true } };
  const behaviour = { kind: 'reply', content: 'Sunny and mild.' };
  await server.script([behaviour, behaviour]);
  const ours = await collect(await slmkit.chat.completions.create(params));
  const theirs = await collect(await real.chat.completions.create(params));
  sameShape(ours, theirs, 'stream with usage');
  assert.ok(ours.at(-1).usage, 'the last chunk carries usage');
  assert.equal(ours[0].slmkit.tier, 'llm');
});

test('streamed tool call: same chunks as openai; without include_usage no usage chunk', async () => {
  const params = { model: 'm', messages, tools: [WEATHER], stream: true };
  const behaviour = { kind: 'reply', tool_calls: TOOL_CALLS };
  await server.script([behaviour, behaviour]);
  const ours = await collect(await slmkit.chat.completions.create(params));
  const theirs = await collect(await real.chat.completions.create(params));
  sameShape(ours, theirs, 'streamed tool call');
  assert.ok(ours.every((chunk) => chunk.choices.length > 0), 'no usage-only chunk');
});

const TICKET = {
  type: 'object',
  properties: {
    intent: { enum: ['refund', 'billing', 'bug', 'other'] },
    order_id: { type: 'integer', minimum: 1, maximum: 99999 },
  },
  required: ['intent', 'order_id'],
  additionalProperties: false,
};
const REFUND = {
  type: 'function',
  function: {
    name: 'refund_order',
    description: 'Refund an order',
    parameters: {
      type: 'object',
      properties: { order_id: { type: 'integer', minimum: 1, maximum: 99999 } },
      required: ['order_id'],
    },
  },
};

test('local model: JSON-schema and tool-call answers have the shapes openai parses', async () => {
  const local = new OpenAI(localSlm());
  const base = { model: '', messages: [{ role: 'user', content: 'order 1234 is late, refund it' }], seed: 42 };
  const schemaParams = {
    ...base,
    response_format: { type: 'json_schema', json_schema: { name: 'ticket', schema: TICKET } },
    max_tokens: 64,
  };
  const ours = await local.chat.completions.create(schemaParams);
  assert.equal(ours.slmkit.tier, 'slm');
  assert.equal(typeof JSON.parse(ours.choices[0].message.content).order_id, 'number');
  await server.script([{ kind: 'reply', content: ours.choices[0].message.content }]);
  sameShape(ours, await real.chat.completions.create(schemaParams), 'local json_schema', { sameJson: false });

  const toolParams = {
    ...base,
    tools: [REFUND],
    tool_choice: { type: 'function', function: { name: 'refund_order' } },
    max_tokens: 160,
  };
  const call = await local.chat.completions.create(toolParams);
  const calls = call.choices[0].message.tool_calls;
  assert.equal(calls[0].function.name, 'refund_order');
  assert.equal(typeof JSON.parse(calls[0].function.arguments).order_id, 'number');
  await server.script([{ kind: 'reply', tool_calls: calls }]);
  sameShape(call, await real.chat.completions.create(toolParams), 'local tool call', { sameJson: false });

  const streamed = await collect(await local.chat.completions.create({ ...toolParams, stream: true }));
  await server.script([{ kind: 'reply', tool_calls: calls }]);
  const theirStream = await collect(await real.chat.completions.create({ ...toolParams, stream: true }));
  // The chunking may differ (the engine streams as it decodes); each chunk's shape is one openai produces.
  const kinds = (chunks) => [...new Set(lenient(chunks).map((c) => JSON.stringify(shape(c))))].sort();
  assert.deepEqual(kinds(streamed), kinds(theirStream));
});

test('strict shapes: system_fingerprint is omitted when unknown, as openai types expect', () => {
  for (const gap of strictGaps) gap.check();
});
