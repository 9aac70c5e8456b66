'use strict';
// slmkitFetch under real agent libraries, pinned in this folder's package-lock.json: the
// Vercel AI SDK (`createOpenAICompatible({ fetch })`) and LangChain.js (`ChatOpenAI({
// configuration: { fetch } })`). Each runs on both tiers in-process: the SLM (the tiny
// random-weight fixture, whose answers are forced into shape by slmkit's grammar) and the LLM
// (the loopback test server, replying as scripted). Each asserts on the structured result
// and on the ledger's record of the call.

const test = require('node:test');
const assert = require('node:assert/strict');
const { createOpenAICompatible } = require('@ai-sdk/openai-compatible');
const { generateText, streamText, generateObject } = require('ai');
const { ChatOpenAI } = require('@langchain/openai');
const { z } = require('zod');
const { slmkitFetch, resolveModel } = require('..');
const { startServer, localSlm } = require('../test/helpers');

// Any host: slmkitFetch answers in-process and never opens a socket.
const BASE_URL = 'http://slmkit.invalid/v1';
const INTENTS = ['refund', 'billing', 'bug', 'other'];
const Ticket = z.object({
  intent: z.enum(INTENTS),
  order_id: z.number().int().min(1).max(99999),
});
const PROMPT = 'Order 1234 arrived broken, I want my money back.';
const REFUND_TOOL = {
  type: 'function',
  function: {
    name: 'refund_order',
    description: 'Refund an order',
    parameters: {
      type: 'object',
      properties: { order_id: { type: 'integer', minimum: 1, maximum: 99999 } },
      required: ['order_id'],
      additionalProperties: false,
    },
  },
};

let server;
test.before(async () => {
  server = await startServer();
});
test.after(() => server?.close());

/** A fetch on one tier: the local fixture model, or the loopback LLM. */
function tierFetch(tier) {
  if (tier === 'slm') return slmkitFetch(localSlm());
  return slmkitFetch({ llm: { backend: 'remote', base_url: server.url, model: 'big', api_key: 'k' } });
}

function assertTicket(ticket) {
  assert.ok(INTENTS.includes(ticket.intent), JSON.stringify(ticket));
  assert.ok(Number.isInteger(ticket.order_id) && ticket.order_id >= 1 && ticket.order_id <= 99999, JSON.stringify(ticket));
}

/**
 * The ledger holds one call, served by `tier`: on the LLM one attempt; on the SLM the random
 * fixture's answer may first be rejected by the default validators (say, an empty answer) and
 * retried. Returns the served attempt's record.
 */
function assertServedBy(fetch, tier) {
  const records = fetch.ledger.records();
  const outcomes = records.map((record) => `${record.tier}:${record.outcome}`);
  assert.equal(outcomes.at(-1), `${tier}:ok`, outcomes.join());
  assert.equal(new Set(records.map((record) => record.call_id)).size, 1, 'one call');
  const rejected = tier === 'llm' ? [] : outcomes.slice(0, -1).filter((outcome) => outcome === 'slm:validation_failed');
  assert.equal(rejected.length, records.length - 1, outcomes.join());
  assert.ok(records.at(-1).served);
  return records.at(-1);
}

for (const tier of ['slm', 'llm']) {
  test(`Vercel AI SDK on the ${tier}: generateText`, async () => {
    const fetch = tierFetch(tier);
    const model = createOpenAICompatible({ name: 'slmkit', baseURL: BASE_URL, fetch }).chatModel('any');
    if (tier === 'llm') await server.script([{ kind: 'reply', content: 'Refund issued for order 1234.' }]);
    const result = await generateText({ model, prompt: PROMPT, maxOutputTokens: 8, seed: 4, maxRetries: 0 });
    const record = assertServedBy(fetch, tier);
    if (tier === 'llm') assert.equal(result.text, 'Refund issued for order 1234.');
    else assert.equal(typeof result.text, 'string');
    assert.equal(result.usage.outputTokens, record.completion_tokens);
    assert.equal(result.usage.inputTokens, record.prompt_tokens);
  });

  test(`Vercel AI SDK on the ${tier}: streamText`, async () => {
    const fetch = tierFetch(tier);
    const model = createOpenAICompatible({ name: 'slmkit', baseURL: BASE_URL, fetch }).chatModel('any');
    if (tier === 'llm') await server.script([{ kind: 'reply', content: 'Streaming the refund.' }]);
    const result = streamText({ model, prompt: PROMPT, maxOutputTokens: 8, seed: 5, maxRetries: 0 });
    const parts = [];
    for await (const part of result.textStream) parts.push(part);
    const record = assertServedBy(fetch, tier);
    if (tier === 'llm') assert.equal(parts.join(''), 'Streaming the refund.');
    assert.ok(parts.length >= 1);
    assert.equal(parts.join(''), await result.text);
    assert.equal(await result.finishReason, tier === 'llm' ? 'stop' : record.completion_tokens >= 8 ? 'length' : 'stop');
  });

  test(`Vercel AI SDK on the ${tier}: generateObject with a zod schema`, async () => {
    const fetch = tierFetch(tier);
    const model = createOpenAICompatible({ name: 'slmkit', baseURL: BASE_URL, fetch, supportsStructuredOutputs: true }).chatModel(
      'any',
    );
    if (tier === 'llm') await server.script([{ kind: 'reply', content: '{"intent":"refund","order_id":1234}' }]);
    const { object } = await generateObject({ model, schema: Ticket, prompt: PROMPT, maxOutputTokens: 64, seed: 6, maxRetries: 0 });
    assertTicket(object);
    if (tier === 'llm') assert.deepEqual(object, { intent: 'refund', order_id: 1234 });
    assertServedBy(fetch, tier);
    // The schema reached the core as a JSON-schema response format (the SLM's grammar).
    if (tier === 'llm') assert.equal((await server.requests()).at(-1).body.response_format.type, 'json_schema');
  });

  test(`LangChain.js on the ${tier}: invoke`, async () => {
    const fetch = tierFetch(tier);
    const chat = new ChatOpenAI({ model: 'any', apiKey: 'k', maxRetries: 0, maxTokens: 8, configuration: { fetch, baseURL: BASE_URL } });
    if (tier === 'llm') await server.script([{ kind: 'reply', content: 'Refund issued.' }]);
    const message = await chat.invoke(PROMPT);
    const record = assertServedBy(fetch, tier);
    if (tier === 'llm') assert.equal(message.content, 'Refund issued.');
    else assert.equal(typeof message.content, 'string');
    assert.equal(message.usage_metadata.output_tokens, record.completion_tokens);
  });

  test(`LangChain.js on the ${tier}: invoke on the Responses API (useResponsesApi)`, async () => {
    const fetch = tierFetch(tier);
    const chat = new ChatOpenAI({
      model: 'any',
      apiKey: 'k',
      maxRetries: 0,
      maxTokens: 8,
      useResponsesApi: true,
      configuration: { fetch, baseURL: BASE_URL },
    });
    if (tier === 'llm') await server.script([{ kind: 'reply', content: 'Refund issued, via responses.' }]);
    const message = await chat.invoke(PROMPT);
    const record = assertServedBy(fetch, tier);
    const text = message.content.map((part) => part.text).join('');
    if (tier === 'llm') assert.equal(text, 'Refund issued, via responses.');
    else assert.equal(typeof text, 'string');
    assert.equal(message.usage_metadata.output_tokens, record.completion_tokens);
  });

  test(`LangChain.js on the ${tier}: bindTools`, async () => {
    const fetch = tierFetch(tier);
    const chat = new ChatOpenAI({ model: 'any', apiKey: 'k', maxRetries: 0, maxTokens: 96, configuration: { fetch, baseURL: BASE_URL } });
    if (tier === 'llm') {
      await server.script([
        { kind: 'reply', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'refund_order', arguments: '{"order_id":1234}' } }] },
      ]);
    }
    const message = await chat.bindTools([REFUND_TOOL], { tool_choice: 'refund_order' }).invoke(PROMPT);
    assert.equal(message.tool_calls.length, 1);
    const [call] = message.tool_calls;
    assert.equal(call.name, 'refund_order');
    assert.ok(Number.isInteger(call.args.order_id) && call.args.order_id >= 1 && call.args.order_id <= 99999, JSON.stringify(call.args));
    if (tier === 'llm') assert.deepEqual(call.args, { order_id: 1234 });
    assertServedBy(fetch, tier);
  });

  test(`LangChain.js on the ${tier}: withStructuredOutput with a zod schema`, async () => {
    const fetch = tierFetch(tier);
    const chat = new ChatOpenAI({ model: 'any', apiKey: 'k', maxRetries: 0, maxTokens: 64, configuration: { fetch, baseURL: BASE_URL } });
    if (tier === 'llm') await server.script([{ kind: 'reply', content: '{"intent":"bug","order_id":77}' }]);
    const ticket = await chat.withStructuredOutput(Ticket, { name: 'ticket' }).invoke(PROMPT);
    assertTicket(ticket);
    if (tier === 'llm') assert.deepEqual(ticket, { intent: 'bug', order_id: 77 });
    assertServedBy(fetch, tier);
  });
}

test('the real qwen2.5-coder-0.5b (cached by make models) extracts the right ticket through both libraries', async () => {
  // Where the answer must make sense, not only have the shape: a real model, greedy, with the
  // schema as its grammar and a small budget.
  const model = await resolveModel('qwen2.5-coder-0.5b-instruct');
  const fetch = slmkitFetch({ slm: { backend: 'local', model, context: 2048 } });
  const system = 'Classify the support ticket.';
  const vercel = createOpenAICompatible({ name: 'slmkit', baseURL: BASE_URL, fetch, supportsStructuredOutputs: true }).chatModel('any');
  const { object } = await generateObject({
    model: vercel,
    schema: Ticket,
    system,
    prompt: 'Order 1234 arrived broken, I want my money back.',
    maxOutputTokens: 32,
    temperature: 0,
    maxRetries: 0,
  });
  assert.deepEqual(object, { intent: 'refund', order_id: 1234 });
  const chat = new ChatOpenAI({ model: 'any', apiKey: 'k', maxRetries: 0, maxTokens: 32, temperature: 0, configuration: { fetch, baseURL: BASE_URL } });
  const ticket = await chat
    .withStructuredOutput(Ticket, { name: 'ticket' })
    .invoke([
      ['system', system],
      ['user', 'I was charged twice on my invoice for order 5521.'],
    ]);
  assert.deepEqual(ticket, { intent: 'billing', order_id: 5521 });
  const records = fetch.ledger.records();
  assert.deepEqual(records.map((record) => `${record.tier}:${record.outcome}`), ['slm:ok', 'slm:ok']);
  assert.match(records[0].model, /qwen2\.5 coder 0\.5b/i);
});

test('an slmkit error reaches the libraries as the HTTP error they expect', async () => {
  const fetch = tierFetch('slm');
  const model = createOpenAICompatible({ name: 'slmkit', baseURL: BASE_URL, fetch }).chatModel('any');
  // More output than the fixture's 1024-token context: a 400 the core raises before generating.
  const err = await generateText({ model, prompt: PROMPT, maxOutputTokens: 5000, maxRetries: 0 }).catch((e) => e);
  assert.equal(err.statusCode, 400, String(err));
  assert.match(err.message, /context/i);
  const chat = new ChatOpenAI({ model: 'any', apiKey: 'k', maxRetries: 0, maxTokens: 5000, configuration: { fetch, baseURL: BASE_URL } });
  const langchainErr = await chat.invoke(PROMPT).catch((e) => e);
  assert.equal(langchainErr.status, 400, String(langchainErr));
  // One failed attempt per library call, none served, nothing generated.
  const records = fetch.ledger.records();
  assert.deepEqual(
    records.map((record) => `${record.tier}:${record.outcome}:${record.error_kind}:${record.completion_tokens}`),
    ['slm:error:context_length_exceeded:0', 'slm:error:context_length_exceeded:0'],
  );
});
