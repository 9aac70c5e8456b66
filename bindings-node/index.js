'use strict';
// slmkit for Node: the `openai` package's client surface over the Rust core.
//
// This layer only converts: params objects to JSON text and back, AbortSignals to cancel
// tokens, native errors to `openai`-style error classes, JS validator functions to the
// dispatcher the core calls. Routing, validation, retries and accounting live in the core.

const native = require('./native.js');

const ERROR_PREFIX = 'SLMKIT_ERROR:';

// ---------------------------------------------------------------------------------------------
// Errors: the `openai` package's hierarchy, plus slmkit's own.

class OpenAIError extends Error {}

class APIError extends OpenAIError {
  /**
   * @param {number | undefined} status
   * @param {object | undefined} error the `error` object of an OpenAI error body, if any
   * @param {string | undefined} message
   * @param {object | undefined} headers
   */
  constructor(status, error, message, headers) {
    super(APIError.makeMessage(status, error, message));
    this.status = status;
    this.headers = headers;
    this.requestID = undefined;
    this.error = error;
    const data = error && typeof error === 'object' ? error : undefined;
    this.code = data?.code;
    this.param = data?.param;
    this.type = data?.type;
    /** slmkit's machine-readable kind (`rate_limit`, `context_length_exceeded`, ...). */
    this.kind = undefined;
  }

  static makeMessage(status, error, message) {
    const text = error?.message
      ? typeof error.message === 'string'
        ? error.message
        : JSON.stringify(error.message)
      : message;
    if (status && text) return `${status} ${text}`;
    if (status) return `${status} status code (no body)`;
    return text || '(no status code or body)';
  }
}

class APIUserAbortError extends APIError {
  constructor({ message } = {}) {
    super(undefined, undefined, message || 'Request was aborted.', undefined);
  }
}

class APIConnectionError extends APIError {
  constructor({ message, cause } = {}) {
    super(undefined, undefined, message || 'Connection error.', undefined);
    if (cause) this.cause = cause;
  }
}

class APITimeoutError extends APIConnectionError {
  constructor({ message } = {}) {
    super({ message: message ?? 'Request timed out.' });
  }
}

/** An HTTP error status without a class of its own. */
class APIStatusError extends APIError {}
/** The remote endpoint answered 2xx with something that is not an OpenAI response. */
class APIResponseValidationError extends APIError {}
class BadRequestError extends APIError {}
class AuthenticationError extends APIError {}
class PermissionDeniedError extends APIError {}
class NotFoundError extends APIError {}
class ConflictError extends APIError {}
class UnprocessableEntityError extends APIError {}
class RateLimitError extends APIError {}
class InternalServerError extends APIError {}

/** The prompt plus the requested output does not fit the local model's context window. */
class ContextLengthError extends BadRequestError {}
/** A local model file could not be loaded (missing, not GGUF, truncated or corrupt). */
class ModelLoadError extends APIError {}
/** A model reference could not be pulled (network, 404/401, sha256 mismatch, offline cache miss). */
class ModelFetchError extends ModelLoadError {}
/** The local engine's queue is full; retry later. */
class OverloadedError extends InternalServerError {}
/** No answer passed validation and there was no LLM tier to escalate to. `reasons` has one per attempt. */
class ValidationError extends UnprocessableEntityError {}
/** A validator itself failed (a JS validator threw); `cause` is what it threw. */
class ValidatorError extends APIError {}
/** The configuration (options object, config file or environment) is invalid. */
class ConfigError extends OpenAIError {}

// The core names the class (`openai_class` in the details, from `Error::openai_class`): the
// one table is there, and this only looks the name up.
const BY_NAME = {
  APIError,
  APIStatusError,
  APIResponseValidationError,
  BadRequestError,
  AuthenticationError,
  PermissionDeniedError,
  NotFoundError,
  ConflictError,
  UnprocessableEntityError,
  RateLimitError,
  InternalServerError,
  ContextLengthError,
  ModelLoadError,
  ModelFetchError,
  OverloadedError,
  ValidationError,
  ValidatorError,
};

/** The error class and fields for a native error's details. */
function errorFromDetails(details, causes) {
  const { kind, openai_class: name } = details;
  let err;
  if (name === 'APIUserAbortError') {
    err = new APIUserAbortError();
  } else if (name === 'ConfigError') {
    err = new ConfigError(details.message);
  } else if (name === 'APITimeoutError') {
    err = new APITimeoutError({ message: details.message });
  } else if (name === 'APIConnectionError') {
    err = new APIConnectionError({ message: details.message });
  } else {
    const Class = BY_NAME[name] ?? APIError;
    // A remote error keeps the server's `error` object, as the `openai` package does.
    const body = details.error && typeof details.error === 'object' ? details.error : undefined;
    err = new Class(details.status, body, body ? undefined : details.message, undefined);
    if (!body) {
      err.error = { message: details.message, type: kind, param: details.param ?? null, code: details.code ?? kind };
      err.code = details.code ?? kind;
      err.param = details.param ?? null;
      err.type = kind;
    }
  }
  err.kind = kind;
  if (details.retry_after_s !== undefined) err.retryAfter = details.retry_after_s;
  if (details.reasons) err.reasons = details.reasons;
  if (details.validator) err.validator = details.validator;
  if (kind === 'stream_interrupted') err.chunksDelivered = details.chunks_delivered;
  if (details.cause_id != null && causes?.has(details.cause_id)) {
    err.cause = causes.get(details.cause_id);
    causes.delete(details.cause_id);
  }
  return err;
}

/** Turns whatever the native module threw into an slmkit error. */
function convertError(thrown, causes) {
  const message = thrown?.message;
  if (typeof message === 'string' && message.startsWith(ERROR_PREFIX)) {
    try {
      return errorFromDetails(JSON.parse(message.slice(ERROR_PREFIX.length)), causes);
    } catch {
      // fall through: report it as it came
    }
  }
  if (thrown instanceof OpenAIError) return thrown;
  const err = new APIError(undefined, undefined, String(message ?? thrown), undefined);
  err.cause = thrown;
  return err;
}

// ---------------------------------------------------------------------------------------------
// Responses: plain objects, as JSON.parse makes them (which is what the `openai` package
// returns). The routing metadata (`slmkit`) is kept but not enumerable, so key sets, deep
// equality and JSON.stringify see exactly OpenAI's object.

function parseAnswer(text) {
  const value = JSON.parse(text);
  if (value !== null && typeof value === 'object' && Object.prototype.hasOwnProperty.call(value, 'slmkit')) {
    const metadata = value.slmkit;
    delete value.slmkit;
    Object.defineProperty(value, 'slmkit', { value: metadata, enumerable: false, writable: true, configurable: true });
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Validators: the core calls one dispatcher with (index, requestJson, completionJson).

const OK = '{"ok":true}';
const MAX_KEPT_CAUSES = 1024;

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
      throw new ConfigError(
        `validators[${i}] must be a function, an object with a check() method, or a config validator ({kind: ...})`,
      );
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
// Streams: an async iterable of chunks, as the `openai` package's `Stream`.

class Stream {
  #stream;
  #done;
  #consumed = false;

  /** @internal */
  constructor(nativeStream, controller, done) {
    this.#stream = nativeStream;
    this.#done = done;
    /** Aborting it stops the stream and frees the local engine's slot. */
    this.controller = controller;
  }

  async *[Symbol.asyncIterator]() {
    if (this.#consumed) {
      throw new OpenAIError('Cannot iterate over a consumed stream, use `.tee()` to split the stream.');
    }
    this.#consumed = true;
    try {
      for (;;) {
        let text;
        try {
          text = await this.#stream.next();
        } catch (thrown) {
          const err = convertError(thrown);
          // As in the `openai` package: an abort mid-stream ends the iteration quietly.
          if (err instanceof APIUserAbortError) return;
          throw err;
        }
        if (text === null) return;
        yield parseAnswer(text);
      }
    } finally {
      // Idempotent; after an abort it drops the core stream at once, freeing the engine slot.
      this.#stream.close();
      this.#done();
    }
  }

  /** A ReadableStream of newline-delimited chunk JSON, like the `openai` package's. */
  toReadableStream() {
    const iterator = this[Symbol.asyncIterator]();
    const encoder = new TextEncoder();
    return new ReadableStream({
      async pull(ctrl) {
        try {
          const { value, done } = await iterator.next();
          if (done) return ctrl.close();
          ctrl.enqueue(encoder.encode(JSON.stringify(value) + '\n'));
        } catch (err) {
          ctrl.error(err);
        }
      },
      async cancel() {
        await iterator.return?.();
      },
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The client.

// Options of the `openai` package's client. `apiKey` and `baseURL` set the LLM tier; the
// others are accepted so existing code runs, and have no effect.
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

function jsonBody(params) {
  if (params === null || typeof params !== 'object') {
    throw new BadRequestError(400, undefined, 'the request params must be an object', undefined);
  }
  return JSON.stringify(params);
}

/** Cancels `token` when `signal` aborts; returns a function that stops listening. */
function linkSignal(signal, token) {
  if (!signal) return () => {};
  const onAbort = () => token.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

/**
 * The Promise `create` returns, with the `openai` package's `withResponse()` and
 * `asResponse()`. There is no HTTP exchange with an in-process model, so the Response is the
 * answer's JSON with status 200 (for a stream: an empty body).
 */
class APIPromise extends Promise {
  static get [Symbol.species]() {
    return Promise;
  }

  static #response(data) {
    const isStream = data instanceof Stream;
    return new Response(isStream ? null : JSON.stringify(data), {
      status: 200,
      headers: { 'content-type': isStream ? 'text/event-stream' : 'application/json' },
    });
  }

  /** Resolves to `{ data, response, request_id }`. */
  withResponse() {
    return this.then((data) => ({ data, response: APIPromise.#response(data), request_id: null }));
  }

  /** Resolves to a `Response` of the answer. */
  asResponse() {
    return this.then((data) => APIPromise.#response(data));
  }
}

class Completions {
  #client;
  #causes;

  /** @internal */
  constructor(client, causes) {
    this.#client = client;
    this.#causes = causes;
  }

  /**
   * Creates a chat completion, as `openai`'s `client.chat.completions.create`.
   * With `stream: true`, resolves to an async iterable of chunks.
   * `options.signal` (an AbortSignal) cancels the call, freeing the local engine's slot.
   */
  create(params, options = {}) {
    const pending = this.#create(params, options);
    return new APIPromise((resolve, reject) => pending.then(resolve, reject));
  }

  async #create(params, options) {
    const body = jsonBody(params);
    const signal = options?.signal;
    if (signal?.aborted) throw new APIUserAbortError();
    const token = new native.CancelToken();
    // The core keeps the deadline (milliseconds here, as the `openai` package takes them).
    const timeout = options?.timeout ?? this.#client.timeout;
    const timeoutMs = typeof timeout === 'number' ? timeout : null;
    const unlink = linkSignal(signal, token);
    const fail = (thrown) => {
      unlink();
      return convertError(thrown, this.#causes);
    };
    if (params.stream) {
      let nativeStream;
      try {
        // The timeout covers the wait for the stream to start, as in the `openai` package.
        nativeStream = await this.#client._native.createStream(body, token, timeoutMs);
      } catch (thrown) {
        throw fail(thrown);
      }
      const controller = new AbortController();
      const unlinkController = linkSignal(controller.signal, token);
      return new Stream(nativeStream, controller, () => {
        unlinkController();
        unlink();
      });
    }
    let text;
    try {
      text = await this.#client._native.create(body, token, timeoutMs);
    } catch (thrown) {
      throw fail(thrown);
    }
    unlink();
    return parseAnswer(text);
  }
}

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

class OpenAI {
  /**
   * @param {object} [options] the `openai` client's options (`apiKey`, `baseURL`, ...), and
   *   slmkit's: `config` (a TOML file), the configuration sections (`slm`, `llm`, `retry`,
   *   `routing`, `ledger`, ...) and `validators` (JS functions, sync or async).
   *   Without sections or `config`: `$SLMKIT_CONFIG`, then `OPENAI_BASE_URL` /
   *   `OPENAI_API_KEY` / `OPENAI_MODEL`.
   */
  constructor(options = {}) {
    const sections = {};
    let configPath;
    let validatorList;
    for (const [key, value] of Object.entries(options ?? {})) {
      if (value === undefined) continue;
      if (key === 'config') configPath = String(value);
      else if (key === 'validators') validatorList = value;
      else if (!CLIENT_OPTIONS.has(key)) sections[key] = value;
    }
    const { js, config } = normaliseValidators(validatorList);
    if (config.length) sections.validators = config;
    const causes = new Map();
    this.apiKey = options?.apiKey ?? null;
    this.baseURL = options?.baseURL ?? null;
    this.timeout = options?.timeout;
    this.maxRetries = options?.maxRetries;
    try {
      this._native = new native.NativeClient(
        Object.keys(sections).length ? JSON.stringify(sections) : null,
        configPath ?? null,
        options?.baseURL ?? null,
        options?.apiKey ?? null,
        typeof options?.maxRetries === 'number' ? options.maxRetries : null,
        js.map((validator) => validator.name),
        js.length ? makeDispatcher(js, causes) : null,
      );
    } catch (thrown) {
      throw convertError(thrown);
    }
    this.chat = { completions: new Completions(this, causes) };
    this.ledger = new Ledger(this._native);
  }

  /** Where `params` would be sent (`tier`) and why (`reasons`), without sending it. */
  explain(params) {
    try {
      return JSON.parse(this._native.explain(jsonBody(params)));
    } catch (thrown) {
      throw convertError(thrown);
    }
  }

  /**
   * Tells slmkit whether call `callId`'s answer (its `slmkit.call_id`) was right: a ledger
   * record of its own, weighed above the validators' verdict by the adaptive router.
   */
  feedback(callId, correct, reason) {
    try {
      this._native.feedback(callId, correct, reason ?? null);
    } catch (thrown) {
      throw convertError(thrown);
    }
  }

  /**
   * Runs checkable agent tasks through this client, one at a time, and adds up the results
   * per task kind and overall (what `slmkit eval` prints). `tasks`: a JSONL file's path, or
   * an array of task objects (`{id, kind, request, check}`; tests/eval/FORMAT.md).
   * `options.bare`: the bare model (the SLM alone, one attempt, no validators, no grammar).
   * Resolves to the result (`slmkit eval --out`'s JSON), whose `table()` gives the table.
   * Rejects with a `BadRequestError` naming the line of a bad task, or an
   * `APIConnectionError` when a remote endpoint that answers first cannot be reached; a call
   * that fails during the run counts as a wrong task instead.
   */
  async evaluate(tasks, options = {}) {
    const isPath = typeof tasks === 'string';
    if (!isPath && !Array.isArray(tasks)) {
      throw new TypeError('tasks must be a JSONL file path or an array of task objects');
    }
    const text = isPath ? tasks : tasks.map((task) => JSON.stringify(task)).join('\n');
    let answer;
    try {
      answer = JSON.parse(await this._native.evaluate(text, isPath, Boolean(options?.bare)));
    } catch (thrown) {
      throw convertError(thrown);
    }
    const { result, table } = answer;
    Object.defineProperty(result, 'table', { value: () => table, enumerable: false });
    return result;
  }
}

// ---------------------------------------------------------------------------------------------
// Models: references resolved to local files (the core's `models::resolve`).

/**
 * Resolves a model reference (a catalog name such as `qwen2.5-coder-0.5b-instruct`,
 * `hf:ORG/REPO/FILE.gguf[@rev]`, an `https://` URL, or a path) to a local GGUF file,
 * downloading it into the Hugging Face cache when needed. `onProgress({file, done, total})`
 * is called as bytes arrive. Rejects with a `ModelFetchError` (a `ModelLoadError`, `kind`
 * `model_fetch`), or a `ModelLoadError` for a local file that is not a model.
 */
function resolveModel(reference, options = {}) {
  const onProgress = options?.onProgress;
  if (onProgress !== undefined && onProgress !== null && typeof onProgress !== 'function') {
    return Promise.reject(new TypeError('onProgress must be a function'));
  }
  const callback = onProgress
    ? (file, done, total) => {
        try {
          onProgress({ file, done, total: total ?? null });
        } catch {
          // A failing progress callback does not abort the download.
        }
      }
    : null;
  let pending;
  try {
    pending = native.resolveModel(String(reference), callback);
  } catch (thrown) {
    return Promise.reject(convertError(thrown));
  }
  return pending.catch((thrown) => {
    throw convertError(thrown);
  });
}

Object.assign(OpenAI, {
  OpenAI,
  resolveModel,
  default: OpenAI,
  Stream,
  APIPromise,
  OpenAIError,
  APIError,
  APIUserAbortError,
  APIConnectionError,
  APITimeoutError,
  APIStatusError,
  APIResponseValidationError,
  BadRequestError,
  AuthenticationError,
  PermissionDeniedError,
  NotFoundError,
  ConflictError,
  UnprocessableEntityError,
  RateLimitError,
  InternalServerError,
  ContextLengthError,
  ModelLoadError,
  ModelFetchError,
  OverloadedError,
  ValidationError,
  ValidatorError,
  ConfigError,
});

module.exports = OpenAI;
