'use strict';
// `client.evaluate`: checkable tasks run through the client, judged and added up (the core's
// `slmkit eval`), on the tiny fixture model and the loopback server.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const OpenAI = require('..');
const { startServer, localSlm } = require('./helpers');

let server;
test.before(async () => {
  server = await startServer();
});
test.after(() => server?.close());

const CITY = {
  type: 'object',
  properties: { city: { type: 'string', maxLength: 6 } },
  required: ['city'],
  additionalProperties: false,
};
const labels = { type: 'label', labels: ['alpha', 'omega'], expected: 'alpha' };
const toLlm = (text) => ({ messages: [{ role: 'user', content: text }], max_tokens: 16, slmkit: { route: 'llm' } });

function tasks() {
  return [
    // First, so the scripted 400 is its answer.
    { id: 'fails', kind: 'classify', request: toLlm('alpha?'), check: labels },
    { id: 'right', kind: 'classify', request: toLlm('say alpha'), check: labels },
    { id: 'wrong', kind: 'classify', request: toLlm('say omega'), check: labels },
    {
      id: 'tool',
      kind: 'tool',
      request: {
        messages: [{ role: 'user', content: 'Weather in Paris?' }],
        max_tokens: 160,
        temperature: 0,
        tools: [{ type: 'function', function: { name: 'get_weather', parameters: CITY } }],
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
      },
      check: { type: 'tool_call', name: 'get_weather' },
    },
  ];
}

function client() {
  return new OpenAI({
    ...localSlm({ slots: 1 }),
    llm: { backend: 'remote', base_url: server.url, model: 'test-model', api_key: 'k' },
    retry: { llm_attempts: 1 },
    routing: { default: 'slm' },
  });
}

test('a run adds up per kind and counts a failed call wrong, with its reason', async () => {
  await server.script([{ kind: 'status', status: 400 }]);
  const result = await client().evaluate(tasks());
  assert.equal(result.mode, 'pipeline');
  const byId = Object.fromEntries(result.tasks.map((task) => [task.id, task]));
  assert.equal(byId.fails.correct, false);
  assert.match(byId.fails.error, /400/);
  assert.match(byId.fails.reason, /^the call failed/);
  assert.equal(byId.right.correct, true);
  assert.equal(byId.right.served_by, 'llm');
  assert.equal(byId.wrong.correct, false);
  assert.equal(byId.tool.correct, true);
  assert.equal(byId.tool.slm_first_try, true);
  const classify = result.kinds.classify;
  assert.deepEqual([classify.tasks, classify.correct, classify.errors], [3, 1, 1]);
  assert.equal(result.overall.correct, 2);
  assert.equal(result.overall.accuracy, 0.5);
  assert.match(result.table(), /fails \[classify\] line 1/);
  assert.ok(!Object.keys(result).includes('table'), 'the table is a method, not data');
});

test('bare runs the SLM alone, once, from a task file', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slmkit-eval-'));
  const file = path.join(dir, 'tasks.jsonl');
  fs.writeFileSync(file, tasks().map((task) => JSON.stringify(task)).join('\n') + '\n');
  const before = (await server.requests()).length;
  const result = await client().evaluate(file, { bare: true });
  assert.equal(result.mode, 'bare');
  assert.ok(result.tasks.every((task) => task.attempts === 1 && task.served_by === 'slm'));
  assert.equal(result.overall.escalations, 0);
  assert.equal((await server.requests()).length, before, 'a bare run never reaches the LLM');
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a bad task line or an unknown check type is a BadRequestError naming the line', async () => {
  const bad = tasks().slice(0, 2);
  bad[1] = { ...bad[1], check: { type: 'fuzzy' } };
  await assert.rejects(client().evaluate(bad), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError, String(err));
    assert.match(err.message, /line 2.*unknown check type "fuzzy"/);
    return true;
  });
  await assert.rejects(client().evaluate({}), TypeError);
});

test('an unreachable endpoint is a connection error before the run', async () => {
  const remoteOnly = new OpenAI({ baseURL: 'http://127.0.0.1:9/v1', apiKey: 'k' });
  await assert.rejects(remoteOnly.evaluate(tasks().slice(1, 2)), (err) => {
    assert.ok(err instanceof OpenAI.APIConnectionError, String(err));
    assert.match(err.message, /127\.0\.0\.1:9/);
    return true;
  });
});
