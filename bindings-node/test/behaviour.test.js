'use strict';
// Concurrency, cancellation, streaming usage, validators, extras, and the event loop.

const test = require('node:test');
const assert = require('node:assert/strict');
const { setTimeout: sleep } = require('node:timers/promises');
const OpenAI = require('..');
const { startServer, localSlm, LONG } = require('./helpers');

let server;
test.before(async () => {
  server = await startServer();
});
test.after(() => server?.close());

const messages = [{ role: 'user', content: 'hello' }];

test('200 concurrent calls complete (LLM over loopback, and the local engine)', async () => {
  const remote = new OpenAI({ baseURL: server.url, apiKey: 'k' });
  const answers = await Promise.all(
    Array.from({ length: 200 }, (_, i) =>
      remote.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: `call ${i}` }] }),
    ),
  );
  answers.forEach((answer, i) => assert.equal(answer.choices[0].message.content, `echo: call ${i}`));

  const local = new OpenAI(localSlm({ slots: 4, queue: 256 }));
  const localAnswers = await Promise.all(
    Array.from({ length: 200 }, (_, i) => local.chat.completions.create({ model: '', messages, max_tokens: 8, seed: i })),
  );
  assert.equal(localAnswers.length, 200);
  assert.ok(localAnswers.every((answer) => answer.slmkit.tier === 'slm'));
  assert.equal(local.ledger.report().calls ?? local.ledger.records().length, 200);
});

test('aborting mid-stream stops the stream and frees the engine slot', async () => {
  // Without validators, so the stream is live rather than buffered for validation.
  // The response cache is off: every call here must reach the engine.
  const client = new OpenAI({ ...localSlm({ slots: 1, queue: 1 }), default_validators: false, cache: { enabled: false } });
  const controller = new AbortController();
  const stream = await client.chat.completions.create({ ...LONG, stream: true }, { signal: controller.signal });
  let chunks = 0;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (++chunks === 5) controller.abort();
  }
  assert.ok(chunks >= 5 && chunks < 50, `stopped after ${chunks} chunks`);
  const cancelled = client.ledger.records().filter((record) => record.outcome === 'cancelled');
  assert.equal(cancelled.length, 1);
  // The only slot is free again: a new call is served at once.
  const next = await client.chat.completions.create({ model: '', messages, max_tokens: 4 });
  assert.equal(next.object, 'chat.completion');

  // Breaking out of `for await`, and the stream's own controller, stop it too.
  for await (const _ of await client.chat.completions.create({ ...LONG, stream: true })) break;
  const second = await client.chat.completions.create({ ...LONG, stream: true });
  let seen = 0;
  for await (const _ of second) if (++seen === 3) second.controller.abort();
  assert.ok(seen < 50);
  assert.equal((await client.chat.completions.create({ model: '', messages, max_tokens: 4 })).object, 'chat.completion');
});

test('stream_options.include_usage is honoured on the local engine', async () => {
  const client = new OpenAI(localSlm());
  const collect = async (params) => {
    const chunks = [];
    for await (const chunk of await client.chat.completions.create(params)) chunks.push(chunk);
    return chunks;
  };
  const withUsage = await collect({ model: '', messages, max_tokens: 16, seed: 42, stream: true, stream_options: { include_usage: true } });
  const last = withUsage.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(typeof last.usage.completion_tokens, 'number');
  const without = await collect({ model: '', messages, max_tokens: 16, seed: 42, stream: true });
  assert.ok(without.every((chunk) => !chunk.usage));
  assert.equal(withUsage[0].slmkit.tier, 'slm');
});

test('validators: sync and async; a rejected SLM answer escalates to the LLM', async () => {
  const seen = [];
  const client = new OpenAI({
    ...localSlm(),
    llm: { backend: 'remote', base_url: server.url, model: 'big', api_key: 'k' },
    retry: { slm_attempts: 2 },
    validators: [
      (request, completion) => {
        seen.push(['sync', completion.object, request.messages.length]);
        return true;
      },
      async function neverGoodEnough() {
        await sleep(1);
        return 'not good enough';
      },
    ],
  });
  const answer = await client.chat.completions.create({ model: '', messages, max_tokens: 4 });
  assert.equal(answer.slmkit.tier, 'llm');
  assert.equal(answer.choices[0].message.content, 'echo: hello');
  assert.deepEqual(seen[0], ['sync', 'chat.completion', 1]);
  const records = client.ledger.records();
  const outcomes = records.map((record) => `${record.tier}:${record.outcome}`);
  assert.match(records[0].reason, /neverGoodEnough: not good enough/);
  // A rejected answer cut off by max_tokens is not retried unchanged: it escalates at once.
  // (The random model rarely ends before max_tokens; then the SLM gets its second try.)
  const expected = /cut off by max_tokens/.test(records[0].reason)
    ? ['slm:validation_failed', 'llm:ok']
    : ['slm:validation_failed', 'slm:validation_failed', 'llm:ok'];
  assert.deepEqual(outcomes, expected);
});

test('explain, ledger report and records, routing hints', async () => {
  const client = new OpenAI({ ...localSlm(), llm: { backend: 'remote', base_url: server.url, model: 'big', api_key: 'k' } });
  const hinted = { model: '', messages, slmkit: { route: 'llm' } };
  assert.equal(client.explain(hinted).tier, 'llm');
  assert.ok(Array.isArray(client.explain({ model: '', messages }).reasons));
  const answer = await client.chat.completions.create(hinted);
  assert.equal(answer.slmkit.tier, 'llm');
  const sent = (await server.requests()).at(-1);
  assert.equal(sent.body.model, 'big');
  await client.chat.completions.create({ model: '', messages, max_tokens: 4, metadata: { slmkit_route: 'slm' } });
  const records = client.ledger.records();
  assert.deepEqual(records.map((record) => record.tier), ['llm', 'slm']);
  const report = client.ledger.report();
  assert.equal(typeof report, 'object');
  assert.match(client.ledger.table(), /ledger report/);
  assert.throws(() => client.explain({ model: '', messages, slmkit: { route: 'moon' } }), OpenAI.BadRequestError);

  // Feedback on an answered call is a ledger record; an unknown call is a BadRequestError.
  client.feedback(answer.slmkit.call_id, false, 'wrong answer');
  const verdict = client.ledger.records().find((record) => record.outcome === 'feedback');
  assert.deepEqual([verdict.call_id, verdict.feedback, verdict.reason], [answer.slmkit.call_id, { correct: false, source: 'caller' }, 'wrong answer']);
  assert.throws(() => client.feedback('call-nope', true), OpenAI.BadRequestError);

  // openai's APIPromise helpers.
  const { data, response } = await client.chat.completions.create({ model: '', messages, max_tokens: 4 }).withResponse();
  assert.equal(data.object, 'chat.completion');
  assert.equal(response.status, 200);
  // As against OpenAI, openai read this Response's body to make `data`; asResponse() leaves
  // it unread, and the body is the same completion (with the metadata as a plain field).
  assert.ok(response.bodyUsed);
  const raw = await client.chat.completions.create({ model: '', messages, max_tokens: 4, seed: 77 }).asResponse();
  const body = await raw.json();
  assert.equal(body.slmkit.tier, 'slm');
  delete body.slmkit;
  assert.deepEqual(Object.keys(body).sort(), Object.keys(data).sort());
});

test('configuration from a TOML file, and from the environment', async (t) => {
  const fs = require('node:fs');
  const os = require('node:os');
  const path = require('node:path');
  const { MODEL } = require('./helpers');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slmkit-node-'));
  const file = path.join(dir, 'slmkit.toml');
  fs.writeFileSync(file, `[slm]\nbackend = "local"\nmodel = ${JSON.stringify(MODEL)}\ncontext = 1024\n`);
  const fromFile = new OpenAI({ config: file });
  assert.equal((await fromFile.chat.completions.create({ model: '', messages, max_tokens: 4 })).slmkit.tier, 'slm');

  const saved = { ...process.env };
  t.after(() => {
    for (const key of ['SLMKIT_CONFIG', 'OPENAI_BASE_URL', 'OPENAI_API_KEY', 'OPENAI_MODEL']) {
      if (saved[key] === undefined) delete process.env[key];
      else process.env[key] = saved[key];
    }
  });
  delete process.env.SLMKIT_CONFIG;
  process.env.OPENAI_BASE_URL = server.url;
  process.env.OPENAI_API_KEY = 'env-key';
  process.env.OPENAI_MODEL = 'env-model';
  const fromEnv = new OpenAI();
  const answer = await fromEnv.chat.completions.create({ model: 'x', messages });
  assert.equal(answer.slmkit.tier, 'llm');
  const sent = (await server.requests()).at(-1);
  assert.equal(sent.body.model, 'env-model');
  assert.equal(sent.authorization, 'Bearer env-key');
  process.env.SLMKIT_CONFIG = file;
  assert.equal(new OpenAI().explain({ model: '', messages }).tier, 'slm');
});

test('the event loop stays responsive while the engine generates', async () => {
  const client = new OpenAI({ ...localSlm({ slots: 2 }), cache: { enabled: false } });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 5);
  const started = performance.now();
  // A new seed each round: the same request re-sent after its answer would be a re-ask.
  for (let round = 0; round < 4; round++) {
    await Promise.all([
      client.chat.completions.create({ ...LONG, seed: 10 + round }),
      client.chat.completions.create({ ...LONG, seed: 20 + round }),
    ]);
  }
  const elapsed = performance.now() - started;
  clearInterval(timer);
  // A blocked loop would fire the timer about once; a free one about elapsed/5 times. The
  // margin allows for a busy CI machine.
  assert.ok(elapsed > 100, `generation took ${elapsed.toFixed(0)} ms`);
  assert.ok(ticks >= Math.max(5, (elapsed / 5) * 0.2), `${ticks} ticks in ${elapsed.toFixed(0)} ms`);
});

test('a response-cache hit is answered without reaching the server, and accounted like a miss would be', async () => {
  const client = new OpenAI({ baseURL: server.url, apiKey: 'k' });
  const params = { model: 'm', messages: [{ role: 'user', content: 'cache me' }], temperature: 0 };
  const before = (await server.requests()).length;
  const first = await client.chat.completions.create(params);
  // Other agents' identical requests are hits; the same caller re-sending one at once would be
  // a re-ask (a rejection of the first answer), which never reads the cache.
  const hits = await Promise.all(
    ['architect', 'engineer'].map((user) => client.chat.completions.create({ ...params, user })),
  );
  assert.equal((await server.requests()).length, before + 1, 'only the first call reached the server');
  assert.equal(first.slmkit.cache, 'miss');
  for (const hit of hits) {
    assert.equal(hit.slmkit.cache, 'hit');
    assert.equal(hit.choices[0].message.content, first.choices[0].message.content);
    assert.equal(hit.id, first.id);
  }
  const outcomes = client.ledger.records().map((record) => record.outcome);
  assert.deepEqual(outcomes, ['ok', 'cache_hit', 'cache_hit']);
  // An aborted signal still rejects, hit or not: the caller asked for no answer.
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(client.chat.completions.create(params, { signal: controller.signal }));
});
