'use strict';
// slmkit's errors are the `openai` package's own classes, so `instanceof OpenAI.BadRequestError`
// (imported from `openai` or from `slmkit`) catches them; slmkit adds subclasses for what
// only it can fail with. The core names the class (`openai_class` in its error details, from
// `Error::openai_class`): the one table is there, and this only looks the name up.
//
// `openai` ships a CommonJS and an ES module build with distinct classes, so the classes here
// are made for the build the caller uses (index.js: CommonJS; index.mjs: ESM), once each.

const { nativeDetails } = require('./fetch.js');

const BUILT = new WeakMap();

/** slmkit's error classes and converters over `openai` (the package's module namespace). */
function makeErrors(openai) {
  const built = BUILT.get(openai.OpenAIError);
  if (built) return built;

  /** An HTTP error status without a class of its own in the `openai` package. */
  class APIStatusError extends openai.APIError {}
  /** The remote endpoint answered 2xx with something that is not an OpenAI response. */
  class APIResponseValidationError extends openai.APIError {}
  /** A deadline slmkit gave up on (the upstream's or the call's). `instanceof APIConnectionTimeoutError`. */
  class APITimeoutError extends openai.APIConnectionTimeoutError {}
  /** The prompt plus the requested output does not fit the local model's context window. */
  class ContextLengthError extends openai.BadRequestError {}
  /** A local model file could not be loaded (missing, not GGUF, truncated or corrupt). */
  class ModelLoadError extends openai.APIError {}
  /** A model reference could not be pulled (network, 404/401, sha256 mismatch, offline cache miss). */
  class ModelFetchError extends ModelLoadError {}
  /** The local engine's queue is full; retry later. */
  class OverloadedError extends openai.InternalServerError {}
  /** No answer passed validation and there was no LLM tier to escalate to. `reasons` has one per attempt. */
  class ValidationError extends openai.UnprocessableEntityError {}
  /** A validator itself failed (a JS validator threw); `cause` is what it threw. */
  class ValidatorError extends openai.APIError {}
  /** The configuration (options object, config file or environment) is invalid. */
  class ConfigError extends openai.OpenAIError {}

  const BY_NAME = {
    APIError: openai.APIError,
    APIStatusError,
    APIResponseValidationError,
    BadRequestError: openai.BadRequestError,
    AuthenticationError: openai.AuthenticationError,
    PermissionDeniedError: openai.PermissionDeniedError,
    NotFoundError: openai.NotFoundError,
    ConflictError: openai.ConflictError,
    UnprocessableEntityError: openai.UnprocessableEntityError,
    RateLimitError: openai.RateLimitError,
    InternalServerError: openai.InternalServerError,
    ContextLengthError,
    ModelLoadError,
    ModelFetchError,
    OverloadedError,
    ValidationError,
    ValidatorError,
  };

  /**
   * The error for the core's `details`. `error` is the OpenAI error object the response carried
   * (a remote LLM's own, or slmkit's), `headers` the response's, `causes` what JS validators
   * threw, by id.
   */
  function errorFromDetails(details, { error, headers, causes } = {}) {
    const { kind, openai_class: name } = details;
    let err;
    if (name === 'APIUserAbortError') {
      err = new openai.APIUserAbortError();
    } else if (name === 'ConfigError') {
      err = new ConfigError(details.message);
    } else if (name === 'APITimeoutError') {
      err = new APITimeoutError({ message: details.message });
    } else if (name === 'APIConnectionError') {
      err = new openai.APIConnectionError({ message: details.message });
    } else {
      const Class = BY_NAME[name] ?? openai.APIError;
      const body =
        error && typeof error === 'object'
          ? error
          : details.error && typeof details.error === 'object'
            ? details.error
            : { message: details.message, type: kind, param: details.param ?? null, code: details.code ?? kind };
      err = new Class(details.status, body, undefined, headers ?? new Headers());
    }
    /** slmkit's machine-readable kind (`rate_limit`, `context_length_exceeded`, ...). */
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
    const details = nativeDetails(thrown);
    if (details) return errorFromDetails(details, { causes });
    if (thrown instanceof openai.OpenAIError) return thrown;
    const err = new openai.APIError(undefined, undefined, String(thrown?.message ?? thrown), undefined);
    err.cause = thrown;
    return err;
  }

  const errors = {
    errorFromDetails,
    convertError,
    APIStatusError,
    APIResponseValidationError,
    APITimeoutError,
    ContextLengthError,
    ModelLoadError,
    ModelFetchError,
    OverloadedError,
    ValidationError,
    ValidatorError,
    ConfigError,
  };
  BUILT.set(openai.OpenAIError, errors);
  return errors;
}

module.exports = makeErrors;
