'use strict';
// The native client's Responses API methods: `respond` (the Response's JSON) and
// `respondStream` (a stream whose `next()` gives each event's JSON, then null).

const test = require('node:test');
const assert = require('node:assert/strict');
const OpenAI = require('..');
const { startServer, localSlm } = require('./helpers');

let server;
test.before(async () => {
  server = await startServer();
});
test.after(() => server?.close());

async function events(native, body) {
  const stream = await native.respondStream(JSON.stringify(body));
  const seen = [];
  for (let json = await stream.next(); json !== null; json = await stream.next()) seen.push(JSON.parse(json));
  return seen;
}

test('respond answers on the LLM tier and is recorded', async () => {
  const client = new OpenAI({ baseURL: server.url, apiKey: 'k' });
  const response = JSON.parse(await client._native.respond(JSON.stringify({ input: 'hello responses', instructions: 'be kind' })));
  assert.equal(response.object, 'response');
  assert.equal(response.status, 'completed');
  assert.equal(response.output[0].type, 'message');
  assert.equal(response.output[0].content[0].text, 'echo: hello responses');
  assert.ok(response.usage.total_tokens > 0);
  assert.equal(response.slmkit.tier, 'llm');
  assert.equal(client.ledger.records().length, 1);
});

test('respondStream yields the events in order, ending in response.completed', async () => {
  const client = new OpenAI({ baseURL: server.url, apiKey: 'k' });
  const seen = await events(client._native, { input: 'stream responses', stream: true });
  assert.deepEqual(seen.map((event) => event.sequence_number), seen.map((_, index) => index));
  const types = seen.map((event) => event.type);
  assert.deepEqual(types.slice(0, 4), [
    'response.created',
    'response.in_progress',
    'response.output_item.added',
    'response.content_part.added',
  ]);
  assert.deepEqual(types.slice(-4), [
    'response.output_text.done',
    'response.content_part.done',
    'response.output_item.done',
    'response.completed',
  ]);
  const text = seen.filter((event) => event.type === 'response.output_text.delta').map((event) => event.delta).join('');
  assert.equal(text, 'echo: stream responses');
  assert.equal(seen.at(-1).response.output[0].content[0].text, text);
});

test('a forced function call on the fixture SLM, and a refused feature', async () => {
  const client = new OpenAI(localSlm());
  const tool = {
    type: 'function',
    name: 'get_order',
    description: 'Look up an order',
    parameters: {
      type: 'object',
      properties: { order_id: { type: 'integer' } },
      required: ['order_id'],
      additionalProperties: false,
    },
  };
  const body = { input: 'Where is order 12?', tools: [tool], tool_choice: { type: 'function', name: 'get_order' } };
  const response = JSON.parse(await client._native.respond(JSON.stringify({ ...body, max_output_tokens: 80 })));
  const call = response.output.find((item) => item.type === 'function_call');
  assert.equal(call.name, 'get_order');
  assert.equal(typeof JSON.parse(call.arguments).order_id, 'number');
  assert.equal(response.slmkit.tier, 'slm');

  const streamed = await events(client._native, { ...body, max_output_tokens: 80, stream: true });
  const done = streamed.find((event) => event.type === 'response.function_call_arguments.done');
  assert.equal(typeof JSON.parse(done.arguments).order_id, 'number');

  await assert.rejects(
    client._native.respond(JSON.stringify({ input: 'hi', previous_response_id: 'resp_1' })),
    (err) => err.message.includes('previous_response_id'),
  );
});
