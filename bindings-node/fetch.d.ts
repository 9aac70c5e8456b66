// Types of `slmkitFetch` (also `require('slmkit/fetch')`, which does not load `openai`).
import type { ClientOptions, Ledger } from './index';

/** A WHATWG `fetch` answering the OpenAI API in-process; `ledger` reads the attempts it made. */
export type SlmkitFetch = ((input: string | URL | Request, init?: RequestInit) => Promise<Response>) & {
  readonly ledger: Ledger;
};

/**
 * A `fetch` that serves `POST …/chat/completions` and `POST …/responses` (whole or SSE) and
 * `GET …/models` in-process, for any client that takes a custom fetch: the `openai`
 * package, the Vercel AI SDK's `createOpenAICompatible`, LangChain.js's `ChatOpenAI`.
 */
export declare function slmkitFetch(options?: ClientOptions): SlmkitFetch;
