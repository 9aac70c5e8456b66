// Compile-time drop-in check (tsc --noEmit, run by test.sh): code typed against the `openai`
// package compiles against slmkit.
import OpenAIReal from 'openai';
import type {
  ChatCompletion as RealCompletion,
  ChatCompletionChunk as RealChunk,
  ChatCompletionCreateParams,
  ChatCompletionCreateParamsNonStreaming,
  ChatCompletionCreateParamsStreaming,
  ChatCompletionMessageParam,
  ChatCompletionTool,
} from 'openai/resources/chat/completions';
import OpenAI, { APIError, ContextLengthError, RateLimitError, ValidatorError, slmkitFetch } from 'slmkit';
import { slmkitFetch as lightFetch } from 'slmkit/fetch';

declare const nonStreaming: ChatCompletionCreateParamsNonStreaming;
declare const streaming: ChatCompletionCreateParamsStreaming;
declare const either: ChatCompletionCreateParams;

async function check(): Promise<void> {
  const client = new OpenAI({ apiKey: 'k', baseURL: 'http://127.0.0.1:1/v1' });

  // openai's params types pass unchanged, and the results have openai's types.
  const completion: RealCompletion = await client.chat.completions.create(nonStreaming);
  const stream = await client.chat.completions.create(streaming);
  for await (const chunk of stream) {
    const real: RealChunk = chunk;
    void real;
  }
  const { data, response } = await client.chat.completions.create(nonStreaming).withResponse();
  const real2: RealCompletion = data;
  void real2;
  void response.status;
  const any = await client.chat.completions.create(either);
  void any;
  void completion;

  // Object literals written for openai compile as well.
  const tools: ChatCompletionTool[] = [
    {
      type: 'function',
      function: { name: 'add', parameters: { type: 'object', properties: { a: { type: 'number' } } } },
    },
  ];
  const messages: ChatCompletionMessageParam[] = [
    { role: 'system', content: 'be brief' },
    { role: 'user', content: [{ type: 'text', text: 'hi' }] },
  ];
  const answer = await client.chat.completions.create(
    {
      model: 'gpt-4o',
      messages,
      tools,
      tool_choice: 'auto',
      temperature: 0,
      max_completion_tokens: 32,
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' } } },
      reasoning_effort: 'low',
      stream_options: null,
    },
    { signal: AbortSignal.timeout(1000) },
  );
  // The answer's message goes back into the conversation, typed as openai's message param.
  messages.push(answer.choices[0].message);
  for (const call of answer.choices[0].message.tool_calls ?? []) {
    if (call.type === 'function') {
      messages.push({ role: 'tool', tool_call_id: call.id, content: call.function.arguments });
    }
  }

  // The same params object goes to either client.
  const real = new OpenAIReal({ apiKey: 'k' });
  const params = { model: 'm', messages } satisfies ChatCompletionCreateParamsNonStreaming;
  await real.chat.completions.create(params);
  await client.chat.completions.create(params);

  try {
    await client.chat.completions.create({ model: '', messages, stream: true });
  } catch (err) {
    if (err instanceof RateLimitError) console.log(err.status, err.retryAfter);
    if (err instanceof ValidatorError) console.log(err.cause);
    if (err instanceof APIError) console.log(err.kind);
  }
  console.log(client.explain(params).tier, client.ledger.report(), client.ledger.records()[0]?.outcome);
  const evaluated = await client.evaluate(
    [{ id: 'a', kind: 'k', request: { messages: [] }, check: { type: 'regex', pattern: 'x' } }],
    { bare: true },
  );
  const accuracy: number = evaluated.overall.accuracy + (evaluated.kinds['k']?.accuracy ?? 0);
  const firstTry: boolean | undefined = evaluated.tasks[0]?.slm_first_try;
  console.log(accuracy, firstTry, evaluated.table(), (await client.evaluate('tasks.jsonl')).mode);
}

// slmkit's client is an `openai` client: it goes wherever one is expected, and slmkitFetch
// goes wherever a fetch is.
async function dropIn(): Promise<void> {
  const client: OpenAIReal = new OpenAI({ slm: { backend: 'local', model: 'm.gguf' } });
  const parsed = await client.chat.completions.parse({
    model: '',
    messages: [{ role: 'user', content: 'hi' }],
    response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object' }, strict: true } },
  });
  console.log(parsed.choices[0]?.message.parsed, (await client.models.list()).data[0]?.id);
  const fetch = slmkitFetch({ llm: { backend: 'remote', base_url: 'http://127.0.0.1:1/v1' } });
  const plain = new OpenAIReal({ apiKey: 'k', fetch });
  console.log(plain.baseURL, fetch.ledger.records().length, lightFetch().ledger.table());
  const response: Response = await fetch('http://x/v1/models');
  console.log(response.status, new ContextLengthError(400, undefined, 'too long', new Headers()).kind);
}
void check;
void dropIn;
