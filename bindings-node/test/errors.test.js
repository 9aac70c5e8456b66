'use strict';
// Every error class, raised by a real failure.

const test = require('node:test');
const assert = require('node:assert/strict');
const OpenAI = require('..');
const { startServer, localSlm } = require('./helpers');

let server;
test.before(async () => {
  server = await startServer();
});
test.after(() => server?.close());

const messages = [{ role: 'user', content: 'hello' }];
const { LONG } = require('./helpers');

function remote(extra = {}) {
  return new OpenAI({
    llm: { backend: 'remote', base_url: server.url, model: 'm', api_key: 'k', ...extra },
    retry: { llm_attempts: 1 },
  });
}

const STATUSES = [
  [400, 'BadRequestError'],
  [401, 'AuthenticationError'],
  [403, 'PermissionDeniedError'],
  [404, 'NotFoundError'],
  [409, 'ConflictError'],
  [422, 'UnprocessableEntityError'],
  [429, 'RateLimitError'],
  [500, 'InternalServerError'],
  [503, 'InternalServerError'],
];

for (const [status, name] of STATUSES) {
  test(`HTTP ${status} from the LLM is ${name}`, async () => {
    const body = JSON.stringify({ error: { message: `failed with ${status}`, type: 'test_error', code: `code_${status}`, param: null } });
    await server.script([{ kind: 'status', status, body, retry_after: '1' }]);
    const err = await remote().chat.completions.create({ model: 'm', messages }).then(
      () => assert.fail('should have failed'),
      (e) => e,
    );
    assert.ok(err instanceof OpenAI[name], `${err.constructor.name}: ${err.message}`);
    assert.ok(err instanceof OpenAI.APIError);
    assert.equal(err.status, status);
    assert.equal(err.code, `code_${status}`);
    assert.equal(err.type, 'test_error');
    assert.match(err.message, new RegExp(`^${status} failed with ${status}`));
    if (status === 429) assert.equal(err.retryAfter, 1);
  });
}

test('a slow LLM is APITimeoutError', async () => {
  await server.script([{ kind: 'reply', content: 'late', delay_ms: 3000 }]);
  const client = remote({ request_timeout_s: 0.3 });
  await assert.rejects(client.chat.completions.create({ model: 'm', messages }), OpenAI.APITimeoutError);
  // The per-call `timeout` option (ms) too.
  await server.script([{ kind: 'reply', content: 'late', delay_ms: 3000 }]);
  await assert.rejects(remote().chat.completions.create({ model: 'm', messages }, { timeout: 200 }), OpenAI.APITimeoutError);
});

test('an unreachable LLM is APIConnectionError', async () => {
  const client = new OpenAI({ llm: { backend: 'remote', base_url: 'http://127.0.0.1:9/v1', model: 'm', api_key: 'k' }, retry: { llm_attempts: 1 } });
  const err = await client.chat.completions.create({ model: 'm', messages }).catch((e) => e);
  assert.ok(err instanceof OpenAI.APIConnectionError, err.message);
  assert.ok(!(err instanceof OpenAI.APITimeoutError));
});

test('a malformed request is BadRequestError', async () => {
  const client = new OpenAI(localSlm());
  const err = await client.chat.completions.create({ model: '', messages, n: 2 }).catch((e) => e);
  assert.ok(err instanceof OpenAI.BadRequestError, err.message);
  assert.equal(err.status, 400);
  assert.equal(err.param, 'n');
});

test('a prompt beyond the context window is ContextLengthError', async () => {
  const client = new OpenAI(localSlm());
  const err = await client.chat.completions.create({ model: '', messages, max_tokens: 5000 }).catch((e) => e);
  assert.ok(err instanceof OpenAI.ContextLengthError, err.message);
  assert.ok(err instanceof OpenAI.BadRequestError);
  assert.equal(err.code, 'context_length_exceeded');
});

test('a missing model file is ModelLoadError, thrown by the constructor', () => {
  assert.throws(() => new OpenAI({ slm: { backend: 'local', model: '/nonexistent/model.gguf' } }), OpenAI.ModelLoadError);
});

test('an invalid option is ConfigError', () => {
  assert.throws(() => new OpenAI({ slm: { backend: 'quantum' } }), OpenAI.ConfigError);
  assert.throws(() => new OpenAI({ retry: { slm_atempts: 2 }, ...localSlm() }), /slm_atempts/);
});

test('answers that never pass validation are ValidationError, with every reason', async () => {
  const client = new OpenAI({ ...localSlm(), validators: [function mustSayYes() { return 'the answer must say yes'; }] });
  const err = await client.chat.completions.create({ model: '', messages, max_tokens: 4 }).catch((e) => e);
  assert.ok(err instanceof OpenAI.ValidationError, err.message);
  assert.equal(err.status, 422);
  assert.match(err.reasons[0], /mustSayYes: the answer must say yes/);
  // A rejected answer cut off by max_tokens would fail again: with no LLM, the call ends at
  // once. (The random model rarely ends before max_tokens; then it is retried.)
  if (/cut off by max_tokens/.test(err.reasons[0])) assert.equal(err.reasons.length, 1, err.reasons.join('; '));
  else assert.ok(err.reasons.length > 1, err.reasons.join('; '));
});

test('a full engine queue is OverloadedError', async () => {
  const client = new OpenAI(localSlm({ slots: 1, queue: 1 }));
  const calls = Array.from({ length: 12 }, () => client.chat.completions.create({ model: '', messages, max_tokens: 8 }));
  const results = await Promise.allSettled(calls);
  const overloaded = results.filter((r) => r.status === 'rejected' && r.reason instanceof OpenAI.OverloadedError);
  assert.ok(overloaded.length > 0, JSON.stringify(results.map((r) => r.status)));
  assert.equal(overloaded[0].reason.status, 503);
  assert.ok(results.some((r) => r.status === 'fulfilled'));
});

test('an aborted call is APIUserAbortError', async () => {
  const client = new OpenAI(localSlm());
  const controller = new AbortController();
  const pending = client.chat.completions.create({ ...LONG, max_tokens: 900 }, { signal: controller.signal });
  setImmediate(() => controller.abort());
  await assert.rejects(pending, OpenAI.APIUserAbortError);
  await assert.rejects(
    client.chat.completions.create({ model: '', messages }, { signal: AbortSignal.abort() }),
    OpenAI.APIUserAbortError,
  );
});

test('a validator that throws rejects the call with the thrown error as cause (sync and async)', async () => {
  const boom = new Error('validator exploded');
  const syncClient = new OpenAI({ ...localSlm(), validators: [() => { throw boom; }] });
  const err = await syncClient.chat.completions.create({ model: '', messages, max_tokens: 4 }).catch((e) => e);
  assert.ok(err instanceof OpenAI.ValidatorError, err.message);
  assert.equal(err.cause, boom);

  const reason = { not: 'an Error' };
  const asyncClient = new OpenAI({
    ...localSlm(),
    validators: [{ name: 'remote_check', check: async () => { await new Promise((r) => setTimeout(r, 5)); throw reason; } }],
  });
  const err2 = await asyncClient.chat.completions.create({ model: '', messages, max_tokens: 4 }).catch((e) => e);
  assert.ok(err2 instanceof OpenAI.ValidatorError);
  assert.equal(err2.cause, reason);
  assert.equal(err2.validator, 'remote_check');
  // The process is fine, and the client keeps working.
  const ok = new OpenAI({ ...localSlm(), validators: [async (request, c) => c.choices.length === 1 && request.messages.length === 1] });
  assert.equal((await ok.chat.completions.create({ model: '', messages, max_tokens: 4 })).object, 'chat.completion');
});
