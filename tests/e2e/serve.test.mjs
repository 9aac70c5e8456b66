// `slmkit serve` end to end, driven by the real `openai` npm package (the copy bindings-node
// installs). Starts, as child processes on port 0: the loopback fake LLM (`slmkit-testserver`,
// the LLM tier) and two `slmkit serve` processes whose SLM tier is the tiny local fixture model,
// one open and one that requires a bearer token; all are killed when the tests end.
// Run with `node --test tests/e2e/serve.test.mjs` after tests/e2e/run.sh has built the binaries.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(repo, 'target');
const SLMKIT = path.join(targetDir, 'debug', 'slmkit');
const TESTSERVER = path.join(targetDir, 'debug', 'slmkit-testserver');
const MODEL = path.join(repo, 'core', 'tests', 'fixtures', 'tiny-chatml.gguf');
const SECRET = 'e2e-serve-secret';
const ROUTE_LLM = { headers: { 'X-Slmkit-Route': 'llm' } };

// The openai package as bindings-node/package-lock.json pins it.
const require = createRequire(path.join(repo, 'bindings-node', 'package.json'));
const OpenAI = require('openai');

// The tool and JSON schema the Python suites use too.
const ORDER_FIXTURE = JSON.parse(readFileSync(path.join(repo, 'tests', 'fixtures', 'order.json'), 'utf8'));
const TOOLS = ORDER_FIXTURE.tools;
const FORCE_GET_ORDER = { type: 'function', function: { name: 'get_order' } };
const ORDER_SCHEMA = ORDER_FIXTURE.schema;

const user = (text) => [{ role: 'user', content: text }];

/** Starts a binary that prints its base URL on its first stdout line; stderr passes through. */
async function start(binary, args) {
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run tests/e2e/run.sh (it builds it)`);
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${binary} printed no URL within 60 s`)), 60_000);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`${binary} exited with ${code} before printing its URL`)));
    readline.createInterface({ input: child.stdout }).once('line', (first) => {
      clearTimeout(timer);
      resolve(first.trim());
    });
  });
  child.removeAllListeners('exit');
  // `slmkit serve` says "slmkit serve: listening on http://...": keep the URL.
  const url = line.split(/\s+/).pop();
  return {
    url,
    /** SIGTERM, then SIGKILL if it has not exited within 10 s. */
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

let workdir;
let llm;
let serve;
let secured;
let client;

function serveConfig(name, apiKey) {
  const lines = [
    '[slm]',
    'backend = "local"',
    `model = ${JSON.stringify(MODEL)}`,
    'context = 2048',
    '',
    '[llm]',
    'backend = "remote"',
    `base_url = ${JSON.stringify(llm.url)}`,
    'model = "big"',
    'api_key = "x"',
  ];
  if (apiKey) lines.push('', '[server]', `api_key = ${JSON.stringify(apiKey)}`);
  const file = path.join(workdir, `${name}.toml`);
  writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

async function llmRequests() {
  return (await fetch(llm.url.replace(/\/v1$/, '/_requests'))).json();
}

async function script(...behaviours) {
  const response = await fetch(llm.url.replace(/\/v1$/, '/_script'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(behaviours),
  });
  assert.equal(response.status, 204);
}

before(async () => {
  workdir = mkdtempSync(path.join(tmpdir(), 'slmkit-e2e-node-'));
  llm = await start(TESTSERVER, []);
  serve = await start(SLMKIT, ['serve', '--config', serveConfig('open'), '--port', '0']);
  secured = await start(SLMKIT, ['serve', '--config', serveConfig('secured', SECRET), '--port', '0']);
  // No client retries: a failure must show as the first answer's error, not a retried one.
  client = new OpenAI({ baseURL: serve.url, apiKey: 'sk-unused', maxRetries: 0, timeout: 60_000 });
});

after(async () => {
  await Promise.all([secured, serve, llm].map((server) => server?.stop()));
  if (workdir) rmSync(workdir, { recursive: true, force: true });
});

test('plain request served by the SLM', async () => {
  const before = (await llmRequests()).length;
  const completion = await client.chat.completions.create({
    model: 'gpt-4o',
    messages: user('Say hi to the node e2e test'),
    max_tokens: 16,
    seed: 1,
  });
  assert.equal(completion.object, 'chat.completion');
  const [choice] = completion.choices;
  assert.equal(choice.message.role, 'assistant');
  assert.equal(typeof choice.message.content, 'string'); // random text from the tiny model
  assert.ok(['stop', 'length'].includes(choice.finish_reason));
  assert.ok(completion.usage.completion_tokens <= 16);
  assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
  assert.equal(completion.slmkit.tier, 'slm');
  assert.equal((await llmRequests()).length, before, 'the LLM tier saw nothing');
});

test('X-Slmkit-Route: llm reaches the LLM tier', async () => {
  const completion = await client.chat.completions.create(
    { model: 'gpt-4o', messages: user('plain node question for the big model') },
    ROUTE_LLM,
  );
  assert.equal(completion.choices[0].message.content, 'echo: plain node question for the big model');
  assert.equal(completion.model, 'big');
  assert.equal(completion.slmkit.tier, 'llm');
  const last = (await llmRequests()).at(-1).body;
  assert.equal(last.model, 'big');
  assert.equal(last.messages.at(-1).content, 'plain node question for the big model');
});

test('streamed, usage on the last chunk with include_usage', async () => {
  const stream = await client.chat.completions.create(
    {
      model: 'gpt-4o',
      messages: user('stream me a long enough node answer'),
      stream: true,
      stream_options: { include_usage: true },
    },
    ROUTE_LLM,
  );
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 4);
  assert.ok(chunks.every((chunk) => chunk.object === 'chat.completion.chunk'));
  const text = chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, 'echo: stream me a long enough node answer');
  const finishes = chunks.map((chunk) => chunk.choices[0]?.finish_reason).filter(Boolean);
  assert.deepEqual(finishes, ['stop']);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.ok(last.usage.prompt_tokens > 0 && last.usage.completion_tokens > 0);
  assert.ok(chunks.slice(0, -1).every((chunk) => chunk.usage == null));
});

test('SLM stream matches the whole answer, usage on the last chunk', async () => {
  const params = { model: 'gpt-4o', messages: user('hi from the node stream'), max_tokens: 24, seed: 5, temperature: 0 };
  const whole = await client.chat.completions.create(params);
  const chunks = [];
  // Asked as another caller (`user`): the same caller re-sending the request right after its
  // answer would be a re-ask, retried with a new seed, and would not match.
  for await (const chunk of await client.chat.completions.create({
    ...params,
    stream: true,
    stream_options: { include_usage: true },
    user: 'streamer',
  })) {
    chunks.push(chunk);
  }
  assert.equal(chunks[0].slmkit.tier, 'slm');
  const text = chunks.map((chunk) => chunk.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(chunks.at(-1).usage.completion_tokens, whole.usage.completion_tokens);
});

test('JSON-schema answer from the SLM parses and matches', async () => {
  const completion = await client.chat.completions.create({
    model: 'gpt-4o',
    messages: user('Extract: order 4321 is urgent'),
    response_format: { type: 'json_schema', json_schema: { name: 'order', schema: ORDER_SCHEMA, strict: true } },
    max_tokens: 80,
    seed: 3,
  });
  assert.equal(completion.slmkit.tier, 'slm');
  const order = JSON.parse(completion.choices[0].message.content);
  assert.deepEqual(Object.keys(order).sort(), ['order_id', 'urgent']);
  assert.ok(Number.isInteger(order.order_id));
  assert.equal(typeof order.urgent, 'boolean');
});

function assertGetOrderArguments(text) {
  const args = JSON.parse(text);
  assert.deepEqual(Object.keys(args), ['order_id']);
  assert.ok(Number.isInteger(args.order_id) && args.order_id >= 1 && args.order_id <= 99999, text);
}

test('forced tool call from the SLM parses and validates', async () => {
  const completion = await client.chat.completions.create({
    model: 'gpt-4o',
    messages: user('Where is order 1234?'),
    tools: TOOLS,
    tool_choice: FORCE_GET_ORDER,
    max_tokens: 120,
    seed: 1,
  });
  assert.equal(completion.slmkit.tier, 'slm');
  const [choice] = completion.choices;
  assert.equal(choice.finish_reason, 'tool_calls');
  const [call] = choice.message.tool_calls;
  assert.equal(call.type, 'function');
  assert.ok(call.id);
  assert.equal(call.function.name, 'get_order');
  assertGetOrderArguments(call.function.arguments);
});

test('streamed tool call assembles into valid arguments', async () => {
  const stream = await client.chat.completions.create({
    model: 'gpt-4o',
    messages: user('Where is order 77?'),
    tools: TOOLS,
    tool_choice: FORCE_GET_ORDER,
    max_tokens: 120,
    seed: 1,
    stream: true,
  });
  let name = '';
  let args = '';
  let finish = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (!choice) continue;
    for (const delta of choice.delta.tool_calls ?? []) {
      assert.equal(delta.index, 0);
      name += delta.function?.name ?? '';
      args += delta.function?.arguments ?? '';
    }
    finish = choice.finish_reason ?? finish;
  }
  assert.equal(name, 'get_order');
  assert.equal(finish, 'tool_calls');
  assertGetOrderArguments(args);
});

test('errors surface as the openai error classes', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: user('x'), temperature: 9 }),
    (err) => {
      assert.ok(err instanceof OpenAI.BadRequestError, String(err));
      assert.equal(err.status, 400);
      assert.equal(err.param, 'temperature');
      return true;
    },
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: user('x'), temperature: 9, stream: true }),
    OpenAI.BadRequestError,
  );
  // The LLM tier's final status passes through as the matching class.
  await script({ kind: 'status', status: 404 });
  await assert.rejects(
    client.chat.completions.create({ model: 'gpt-4o', messages: user('to a missing model') }, ROUTE_LLM),
    OpenAI.NotFoundError,
  );
});

test('the server api_key: 401 AuthenticationError with a wrong key', async () => {
  const wrong = new OpenAI({ baseURL: secured.url, apiKey: 'sk-wrong', maxRetries: 0 });
  await assert.rejects(
    wrong.chat.completions.create({ model: 'gpt-4o', messages: user('let me in') }, ROUTE_LLM),
    (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, String(err));
      assert.equal(err.status, 401);
      assert.equal(err.code, 'invalid_api_key');
      return true;
    },
  );
  const right = new OpenAI({ baseURL: secured.url, apiKey: SECRET, maxRetries: 0 });
  const completion = await right.chat.completions.create({ model: 'gpt-4o', messages: user('let me in') }, ROUTE_LLM);
  assert.equal(completion.choices[0].message.content, 'echo: let me in');
});

test('models lists both tiers', async () => {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  assert.deepEqual(ids.sort(), ['big', 'tiny-chatml']);
});
