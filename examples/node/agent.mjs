// A small tool-using agent loop, written for the `openai` package, running on slmkit.
// The only change from the OpenAI version is the import line:
//
//   import OpenAI from "openai";
import OpenAI from "slmkit";
//
// Run (the first `npm install` builds the addon unless bindings-node/test.sh already did):
//   cd examples/node && npm install && node agent.mjs [model.gguf]
// With no argument it uses the tiny random-weight test model: its text is gibberish, but its
// tool calls are valid, because slmkit enforces the tool schema with a grammar. Set
// OPENAI_API_KEY (and OPENAI_BASE_URL) to give it an LLM tier to escalate to.

import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const model = process.argv[2] ?? path.join(here, "..", "..", "core", "tests", "fixtures", "tiny-chatml.gguf");

const client = new OpenAI({ slm: { backend: "local", model, context: 2048 } });

const orders = { 1234: { status: "late", total: 42.5 }, 5678: { status: "delivered", total: 10 } };
const tools = {
  lookup_order: ({ order_id }) => orders[order_id] ?? { error: `no order ${order_id}` },
  refund_order: ({ order_id }) => ({ refunded: orders[order_id]?.total ?? 0 }),
};
const orderId = { type: "object", properties: { order_id: { type: "integer", enum: [1234, 5678] } }, required: ["order_id"] };

const messages = [
  { role: "system", content: "You are a support agent. Use the tools, then answer briefly." },
  { role: "user", content: "Order 1234 is late. Look it up and refund it." },
];

for (let turn = 0; turn < 4; turn++) {
  const completion = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages,
    tools: [
      { type: "function", function: { name: "lookup_order", description: "Look up an order", parameters: orderId } },
      { type: "function", function: { name: "refund_order", description: "Refund an order", parameters: orderId } },
    ],
    // The tiny test model would rarely choose a tool itself; a real model can use "auto".
    tool_choice: turn < 2 ? "required" : "none",
    max_tokens: 96,
    seed: turn,
  });
  const message = completion.choices[0].message;
  messages.push(message);
  if (!message.tool_calls?.length) {
    console.log(`assistant: ${message.content}`);
    break;
  }
  for (const call of message.tool_calls) {
    const args = JSON.parse(call.function.arguments);
    const result = tools[call.function.name](args);
    console.log(`tool ${call.function.name}(${JSON.stringify(args)}) -> ${JSON.stringify(result)}`);
    messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify(result) });
  }
}

console.log(client.ledger.table());
