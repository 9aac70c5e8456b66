// ESM entry: `import OpenAI from "slmkit"`, as `import OpenAI from "openai"`.
import OpenAI from './index.js';

export default OpenAI;
export const {
  resolveModel,
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
} = OpenAI;
export { OpenAI };
