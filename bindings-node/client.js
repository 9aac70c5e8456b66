'use strict';
// slmkit for Node: `new OpenAI()` is the `openai` package's client (a subclass), whose HTTP
// layer is `slmkitFetch`: requests reach the Rust core in the same process, with no socket.
// Everything the `openai` client does (parse, withResponse, streams, models.list, its error
// classes) then works as it does against OpenAI; slmkit adds `explain`, `ledger` and
// `evaluate`. Routing, validation, retries and accounting live in the core.
//
// `openai` ships a CommonJS and an ES module build whose classes differ, so the client is
// built over the build the caller loads: index.js (require) and index.mjs (import) each call
// `buildClient` with theirs, and `instanceof` holds against the caller's own `openai`.

const native = require('./native.js');
const makeErrors = require('./errors.js');
const { makeFetch, INTERNALS } = require('./fetch.js');

/** Requests go to this base URL's paths; `slmkitFetch` answers them in-process, whatever the host. */
const IN_PROCESS_BASE_URL = 'http://slmkit.invalid/v1';

/**
 * The `slmkit` package's exports over one build of `openai`: `openai` is its module namespace
 * (or CommonJS exports), `Stream` its `openai/streaming` class.
 */
function buildClient(openai, Stream) {
  const errors = makeErrors(openai);
  const { convertError } = errors;
  const errorsOfThisBuild = () => errors;
  /** `slmkitFetch` (see fetch.js), throwing this build's error classes. */
  const slmkitFetch = (options = {}) => makeFetch(options, errorsOfThisBuild);

  // The `openai` client's own options that slmkit passes through to it. `apiKey`, `baseURL`
  // and `maxRetries` also configure the LLM tier (in the core); `fetch` may be a `slmkitFetch`
  // to share (its native client, model and ledger).
  const PASSED_TO_OPENAI = [
    'organization',
    'project',
    'webhookSecret',
    'timeout',
    'defaultHeaders',
    'defaultQuery',
    'fetchOptions',
    'dangerouslyAllowBrowser',
    'logLevel',
    'logger',
  ];

  function jsonBody(params) {
    if (params === null || typeof params !== 'object') {
      throw new openai.BadRequestError(400, undefined, 'the request params must be an object', new Headers());
    }
    return JSON.stringify(params);
  }

  /**
   * Moves the routing metadata (`slmkit`: tier, cache, attempts) out of the enumerable keys, so
   * key sets, deep equality and JSON.stringify see exactly OpenAI's object (as `openai` does
   * with `_request_id`).
   */
  function hideMetadata(value) {
    if (value !== null && typeof value === 'object' && Object.prototype.hasOwnProperty.call(value, 'slmkit')) {
      const metadata = value.slmkit;
      delete value.slmkit;
      Object.defineProperty(value, 'slmkit', { value: metadata, enumerable: false, writable: true, configurable: true });
    }
    return value;
  }

  /** Makes `resource.create` hide the metadata of what it returns: an answer, or each streamed item. */
  function hideMetadataOf(resource, client) {
    const create = resource.create;
    resource.create = (body, requestOptions) =>
      create.call(resource, body, requestOptions)._thenUnwrap((data) => {
        if (!(data instanceof Stream)) return hideMetadata(data);
        return new Stream(
          async function* hidden() {
            for await (const item of data) {
              // A Responses event carries its response (`response.completed`, ...).
              if (item?.response) hideMetadata(item.response);
              yield hideMetadata(item);
            }
          },
          data.controller,
          client,
        );
      });
  }

  class OpenAI extends openai.OpenAI {
    /**
     * @param {object} [options] the `openai` client's options (`apiKey`, `baseURL`, `timeout`,
     *   ...), and slmkit's: `config` (a TOML file), the configuration sections (`slm`, `llm`,
     *   `retry`, `routing`, `ledger`, ...) and `validators` (JS functions, sync or async).
     *   Without sections or `config`: `$SLMKIT_CONFIG`, then `OPENAI_BASE_URL` /
     *   `OPENAI_API_KEY` / `OPENAI_MODEL`. `apiKey`, `baseURL` and `maxRetries` set the LLM
     *   tier; the `openai` client itself makes no retries (the core does).
     */
    constructor(options = {}) {
      const given = options ?? {};
      // `withOptions()` passes the fetch back: the copy shares the native client and ledger.
      const fetch = given.fetch?.[INTERNALS] ? given.fetch : slmkitFetch(given);
      const passed = {};
      for (const key of PASSED_TO_OPENAI) if (given[key] !== undefined) passed[key] = given[key];
      super({
        ...passed,
        apiKey: given.apiKey ?? process.env.OPENAI_API_KEY ?? 'slmkit-in-process',
        baseURL: given.baseURL ?? process.env.OPENAI_BASE_URL ?? IN_PROCESS_BASE_URL,
        maxRetries: 0,
        fetch,
      });
      const internals = fetch[INTERNALS];
      Object.defineProperty(this, '_slmkit', { value: internals, enumerable: false });
      this._native = internals.native;
      this.ledger = internals.ledger;
      // `parse`, `stream` and `runTools` call `create`, so they see the metadata hidden too.
      hideMetadataOf(this.chat.completions, this);
      hideMetadataOf(this.responses, this);
    }

    /**
     * slmkit's error responses carry the core's details (`slmkit`): they become slmkit's classes
     * (`ContextLengthError`, `ValidationError`, ...: subclasses of `openai`'s), with `kind`,
     * `reasons`, `retryAfter`, and a throwing validator's exception as `cause`.
     * @internal
     */
    makeStatusError(status, body, message, headers) {
      const details = body?.slmkit;
      if (details && typeof details === 'object' && typeof details.openai_class === 'string') {
        return errors.errorFromDetails(details, { error: body.error, headers, causes: this._slmkit.causes });
      }
      const err = super.makeStatusError(status, body, message, headers);
      if (details?.kind) err.kind = details.kind;
      return err;
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
    slmkitFetch,
    resolveModel,
    default: OpenAI,
    Stream,
    APIPromise: openai.APIPromise,
    OpenAIError: openai.OpenAIError,
    APIError: openai.APIError,
    APIUserAbortError: openai.APIUserAbortError,
    APIConnectionError: openai.APIConnectionError,
    // openai's name for it; slmkit's own timeouts are a subclass, named APITimeoutError.
    APITimeoutError: openai.APIConnectionTimeoutError,
    APIConnectionTimeoutError: openai.APIConnectionTimeoutError,
    APIStatusError: errors.APIStatusError,
    APIResponseValidationError: errors.APIResponseValidationError,
    BadRequestError: openai.BadRequestError,
    AuthenticationError: openai.AuthenticationError,
    PermissionDeniedError: openai.PermissionDeniedError,
    NotFoundError: openai.NotFoundError,
    ConflictError: openai.ConflictError,
    UnprocessableEntityError: openai.UnprocessableEntityError,
    RateLimitError: openai.RateLimitError,
    InternalServerError: openai.InternalServerError,
    ContextLengthError: errors.ContextLengthError,
    ModelLoadError: errors.ModelLoadError,
    ModelFetchError: errors.ModelFetchError,
    OverloadedError: errors.OverloadedError,
    ValidationError: errors.ValidationError,
    ValidatorError: errors.ValidatorError,
    ConfigError: errors.ConfigError,
  });

  return OpenAI;
}

module.exports = buildClient;
