// ESM entry: `import OpenAI from "slmkit"`, as `import OpenAI from "openai"`. Built over
// openai's ES module build, so `instanceof` holds against what `import ... from "openai"` gives.
import { createRequire } from 'node:module';
import * as openai from 'openai';
import { Stream as OpenAIStream } from 'openai/streaming';

const buildClient = createRequire(import.meta.url)('./client.js');
const OpenAI = buildClient(openai, OpenAIStream);

export default OpenAI;
export const {
  slmkitFetch,
  resolveModel,
  Stream,
  APIPromise,
  OpenAIError,
  APIError,
  APIUserAbortError,
  APIConnectionError,
  APITimeoutError,
  APIConnectionTimeoutError,
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
