'use strict';
// slmkitFetch: a WHATWG `fetch` that answers the OpenAI HTTP API in-process, with no socket.
//
// Any client that takes a custom fetch (the `openai` package, the Vercel AI SDK's
// `createOpenAICompatible`, LangChain.js's `ChatOpenAI`) sends its requests here, and they
// reach the Rust core directly. This file only converts: request bodies to JSON text, core
// errors to OpenAI error responses, AbortSignals to cancel tokens, the native stream to an
// SSE body. It does not load the `openai` package (errors.js does, and only when an error
// object has to be built here), so `require('slmkit/fetch')` stays light.

const native = require('./native.js');

const ERROR_PREFIX = 'SLMKIT_ERROR:';
/** Where a fetch made here keeps its native client, for `OpenAI` and `withOptions` to share. */
const INTERNALS = Symbol.for('slmkit.fetch.internals');
const MAX_KEPT_CAUSES = 1024;
const OK = '{"ok":true}';

// Options of the `openai` package's client. `apiKey`, `baseURL` and `maxRetries` configure
// the LLM tier; the rest are the `openai` client's own business and not slmkit's sections.
const CLIENT_OPTIONS = new Set([
  'apiKey',
  'baseURL',
  'organization',
  'project',
  'webhookSecret',
  'timeout',
  'maxRetries',
  'defaultHeaders',
  'defaultQuery',
  'fetch',
  'fetchOptions',
  'httpAgent',
  'dangerouslyAllowBrowser',
  'logLevel',
  'logger',
]);

// ---------------------------------------------------------------------------------------------
// Native errors: `SLMKIT_ERROR:` followed by the core's `Error::details` JSON.

/** The core's details of a native error, or `undefined` for any other thrown value. */
function nativeDetails(thrown) {
  const message = thrown?.message;
  if (typeof message !== 'string' || !message.startsWith(ERROR_PREFIX)) return undefined;
  try {
    const details = JSON.parse(message.slice(ERROR_PREFIX.length));
    return details && typeof details === 'object' ? details : undefined;
  } catch {
    return undefined;
  }
}

/** slmkit's error classes over the CommonJS build of `openai`, loaded on first use. */
function commonJsErrors() {
  return require('./errors.js')(require('openai'));
}

/** The OpenAI error object's `type`, as `slmkit serve` sets it: what clients' retry logic reads. */
function openaiErrorType(kind, status) {
  if (kind === 'timeout') return 'timeout';
  if (kind === 'rate_limit') return 'rate_limit_exceeded';
  if (kind === 'overloaded' || kind === 'engine_stopped') return 'server_overloaded';
  return status >= 400 && status < 500 ? 'invalid_request_error' : 'server_error';
}

/**
 * An OpenAI error response for the core's `details`: `{error: {message, type, param, code}}`,
 * plus `slmkit` (the details: `kind`, `openai_class`, `reasons`, ...) beside it, as `slmkit
 * serve` answers. A remote LLM's own error object is passed on as it came. Retries already
 * happened in the core, so the response tells clients that honour it not to retry.
 */
function errorResponse(details) {
  const status = Number.isInteger(details.status) && details.status >= 400 && details.status <= 599 ? details.status : 502;
  const error =
    details.error && typeof details.error === 'object'
      ? details.error
      : {
          message: details.message ?? 'slmkit error',
          type: openaiErrorType(details.kind, status),
          param: details.param ?? null,
          code: details.code ?? details.kind ?? null,
        };
  const headers = { 'content-type': 'application/json', 'x-should-retry': 'false' };
  if (typeof details.retry_after_s === 'number') headers['retry-after'] = String(Math.max(1, Math.ceil(details.retry_after_s)));
  return new Response(JSON.stringify({ error, slmkit: details }), { status, headers });
}

/** A request slmkit refuses before it reaches the core (not JSON, unknown route, ...). */
function requestError(status, message, code, param = null) {
  const type = status === 404 || status === 405 ? 'invalid_request_error' : openaiErrorType(code, status);
  return errorResponse({ kind: code, openai_class: undefined, status, message, code, param, error: { message, type, param, code } });
}

/** Any failure of a native call: the core's details, or an internal error naming what was thrown. */
function failureResponse(thrown) {
  const details = nativeDetails(thrown);
  if (details) return errorResponse(details);
  const message = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : String(thrown);
  return errorResponse({ kind: 'internal', openai_class: 'InternalServerError', status: 500, message });
}

/** What a fetch rejects with when its signal aborts: the signal's reason, as WHATWG fetch does. */
function abortReason(signal) {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError');
}

// ---------------------------------------------------------------------------------------------
// Validators: the core calls one dispatcher with (index, requestJson, completionJson).

function normaliseValidators(list) {
  const js = [];
  const config = [];
  for (const [i, entry] of (list ?? []).entries()) {
    if (typeof entry === 'function') {
      js.push({ name: entry.name || `validator_${i}`, check: entry });
    } else if (entry && typeof entry.check === 'function') {
      js.push({ name: entry.name || entry.check.name || `validator_${i}`, check: entry.check.bind(entry) });
    } else if (entry && typeof entry === 'object' && typeof entry.kind === 'string') {
      config.push(entry);
    } else {
      return {
        error: `validators[${i}] must be a function, an object with a check() method, or a config validator ({kind: ...})`,
      };
    }
  }
  return { js, config };
}

function makeDispatcher(validators, causes) {
  let nextId = 1;
  return async (index, requestJson, completionJson) => {
    const validator = validators[index];
    try {
      const verdict = await validator.check(JSON.parse(requestJson), JSON.parse(completionJson));
      if (verdict === undefined || verdict === null || verdict === true) return OK;
      if (verdict === false) return JSON.stringify({ ok: false, reason: 'rejected' });
      if (typeof verdict === 'string') return JSON.stringify({ ok: false, reason: verdict || 'rejected' });
      if (typeof verdict === 'object' && typeof verdict.ok === 'boolean') {
        return JSON.stringify({ ok: verdict.ok, reason: String(verdict.reason ?? 'rejected') });
      }
      throw new TypeError(
        `validator ${validator.name} returned ${typeof verdict}; expected true/undefined (accept), false or a reason string (reject)`,
      );
    } catch (thrown) {
      // Keep what was thrown so the call's rejection can carry it as `cause`.
      const id = nextId++;
      causes.set(id, thrown);
      if (causes.size > MAX_KEPT_CAUSES) causes.delete(causes.keys().next().value);
      const message = thrown instanceof Error ? `${thrown.name}: ${thrown.message}` : String(thrown);
      return JSON.stringify({ error: { id, message } });
    }
  };
}

// ---------------------------------------------------------------------------------------------
// The ledger, read from the native client.

class Ledger {
  #native;

  /** @internal */
  constructor(nativeClient) {
    this.#native = nativeClient;
  }

  /** Totals, savings net of retries, per-tier figures: the core's `Report`. */
  report() {
    return JSON.parse(this.#native.ledgerReport());
  }

  /** Every attempt recorded so far, oldest first. */
  records() {
    return JSON.parse(this.#native.ledgerRecords());
  }

  /** The report as a text table, for people. */
  table() {
    return this.#native.ledgerTable();
  }
}

/**
 * The native client for `options` (slmkit's and the `openai` client's), and what goes with
 * it. `errors()` gives the error classes to throw (those of the caller's `openai` build).
 */
function createInternals(options, errors) {
  const sections = {};
  let configPath;
  let validatorList;
  for (const [key, value] of Object.entries(options ?? {})) {
    if (value === undefined) continue;
    if (key === 'config') configPath = String(value);
    else if (key === 'validators') validatorList = value;
    else if (!CLIENT_OPTIONS.has(key)) sections[key] = value;
  }
  const validators = normaliseValidators(validatorList);
  if (validators.error) throw new (errors().ConfigError)(validators.error);
  const { js, config } = validators;
  if (config.length) sections.validators = config;
  const causes = new Map();
  let client;
  try {
    client = new native.NativeClient(
      Object.keys(sections).length ? JSON.stringify(sections) : null,
      configPath ?? null,
      options?.baseURL ?? null,
      options?.apiKey ?? null,
      typeof options?.maxRetries === 'number' ? options.maxRetries : null,
      js.map((validator) => validator.name),
      js.length ? makeDispatcher(js, causes) : null,
    );
  } catch (thrown) {
    throw errors().convertError(thrown);
  }
  return { native: client, causes, ledger: new Ledger(client), errors };
}

// ---------------------------------------------------------------------------------------------
// Routes.

const JSON_HEADERS = { 'content-type': 'application/json' };
const SSE_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' };

/** Cancels `token` when `signal` aborts; returns a function that stops listening. */
function linkSignal(signal, token) {
  if (!signal) return () => {};
  const onAbort = () => token.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

/** The body as a JSON object, or the 400 response saying why it is not one. */
function parseBody(text) {
  let params;
  try {
    params = JSON.parse(text);
  } catch (err) {
    return { refused: requestError(400, `the request body is not JSON: ${err.message}`, 'invalid_request') };
  }
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    return { refused: requestError(400, 'the request body must be a JSON object', 'invalid_request') };
  }
  return { params };
}

// The two APIs on one path: the native calls that answer them, and how a stream is framed.
// Chat chunks as `data: {chunk}` then `data: [DONE]`; Responses events as `event: {type}`
// then `data: {event}`, with no `[DONE]` (as OpenAI and `slmkit serve` frame them).
const CHAT = {
  whole: (client, text, token) => client.create(text, token, null),
  stream: (client, text, token) => client.createStream(text, token, null),
  frame: (json) => `data: ${json}\n\n`,
  end: 'data: [DONE]\n\n',
};
const RESPONSES = {
  whole: (client, text, token) => client.respond(text, token, null),
  stream: (client, text, token) => client.respondStream(text, token, null),
  frame: (json) => `event: ${JSON.parse(json).type}\ndata: ${json}\n\n`,
  end: '',
};

async function answer(internals, api, text, signal) {
  const { params, refused } = parseBody(text);
  if (refused) return refused;
  const token = new native.CancelToken();
  if (params.stream === true) return streamed(internals, api, text, signal, token);
  const unlink = linkSignal(signal, token);
  try {
    const json = await api.whole(internals.native, text, token);
    return new Response(json, { status: 200, headers: JSON_HEADERS });
  } catch (thrown) {
    if (signal?.aborted) throw abortReason(signal);
    return failureResponse(thrown);
  } finally {
    unlink();
  }
}

/** A stream as server-sent events, framed by `api`. */
async function streamed(internals, api, text, signal, token) {
  let nativeStream;
  // Cancelling the token drops the pending start or the live stream; closing the stream drops
  // it at once, which stops generation and frees the engine slot. Both are idempotent.
  const onAbort = () => {
    token.cancel();
    nativeStream?.close();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const finish = () => {
    signal?.removeEventListener('abort', onAbort);
    nativeStream?.close();
  };
  try {
    nativeStream = await api.stream(internals.native, text, token);
  } catch (thrown) {
    finish();
    if (signal?.aborted) throw abortReason(signal);
    return failureResponse(thrown);
  }
  if (signal?.aborted) {
    finish();
    throw abortReason(signal);
  }
  const encoder = new TextEncoder();
  const body = new ReadableStream({
    async pull(controller) {
      let item;
      try {
        item = await nativeStream.next();
      } catch (thrown) {
        finish();
        // An abort errors the body with the signal's reason, as a network fetch does. Any
        // other failure after the first item (the status is sent) errors the body with
        // slmkit's error object: in-process there is no need to flatten it to an SSE event.
        controller.error(signal?.aborted ? abortReason(signal) : internals.errors().convertError(thrown, internals.causes));
        return;
      }
      if (item === null) {
        finish();
        if (api.end) controller.enqueue(encoder.encode(api.end));
        controller.close();
        return;
      }
      controller.enqueue(encoder.encode(api.frame(item)));
    },
    cancel() {
      finish();
    },
  });
  return new Response(body, { status: 200, headers: SSE_HEADERS });
}

function models(internals, id) {
  let list;
  try {
    list = JSON.parse(internals.native.models());
  } catch (thrown) {
    return failureResponse(thrown);
  }
  if (id === undefined) return new Response(JSON.stringify(list), { status: 200, headers: JSON_HEADERS });
  const model = list.data.find((entry) => entry.id === id);
  if (!model) return requestError(404, `The model '${id}' is not one of this client's tiers`, 'model_not_found', 'model');
  return new Response(JSON.stringify(model), { status: 200, headers: JSON_HEADERS });
}

/** The request's URL, method, signal and body text, for any of fetch's argument forms. */
async function readRequest(input, init) {
  const request = typeof Request !== 'undefined' && input instanceof Request ? input : undefined;
  const href = request ? request.url : input instanceof URL ? input.href : String(input);
  const method = String(init?.method ?? request?.method ?? 'GET').toUpperCase();
  const signal = init?.signal ?? request?.signal ?? undefined;
  let text = '';
  if (init?.body !== undefined && init?.body !== null) {
    text = typeof init.body === 'string' ? init.body : await new Response(init.body).text();
  } else if (request) {
    text = await request.text();
  }
  return { url: new URL(href, 'http://slmkit.invalid/'), method, signal, text };
}

async function route(internals, input, init) {
  const { url, method, signal, text } = await readRequest(input, init);
  if (signal?.aborted) throw abortReason(signal);
  const path = url.pathname.replace(/\/+$/, '');
  const allowed = (expected) =>
    method === expected ? undefined : requestError(405, `${method} ${path} is not allowed; use ${expected}`, 'method_not_allowed');
  if (path.endsWith('/chat/completions')) return allowed('POST') ?? answer(internals, CHAT, text, signal);
  if (path.endsWith('/responses')) return allowed('POST') ?? answer(internals, RESPONSES, text, signal);
  if (path.endsWith('/models')) return allowed('GET') ?? models(internals);
  const model = /\/models\/([^/]+)$/.exec(path);
  if (model) return allowed('GET') ?? models(internals, decodeURIComponent(model[1]));
  return requestError(
    404,
    `slmkit answers POST /v1/chat/completions, GET /v1/models and POST /v1/responses in-process; not ${method} ${path}`,
    'not_found',
  );
}

/**
 * A WHATWG `fetch` that answers the OpenAI API in-process: `POST …/chat/completions` and
 * `POST …/responses` (the core's Responses API subset), whole or streamed as SSE, and
 * `GET …/models` (the configured tiers' models).
 * The host of the URL is ignored. `options`: slmkit's client options (the configuration
 * sections, `config`, `validators`, and `baseURL` / `apiKey` / `maxRetries` for the LLM
 * tier), as `new OpenAI(options)` takes them. Failures become OpenAI error responses; an
 * aborted signal cancels the native call and rejects, as `fetch` does. The function's
 * `ledger` reads the attempts it made.
 */
function slmkitFetch(options = {}) {
  return makeFetch(options, commonJsErrors);
}

/** `slmkitFetch` whose thrown errors are `errors()`'s classes. @internal */
function makeFetch(options, errors) {
  const internals = createInternals(options, errors);
  const fetch = (input, init) => route(internals, input, init);
  Object.defineProperty(fetch, INTERNALS, { value: internals, enumerable: false });
  Object.defineProperty(fetch, 'ledger', { value: internals.ledger, enumerable: true });
  return fetch;
}

module.exports = { slmkitFetch, makeFetch, INTERNALS, nativeDetails };
