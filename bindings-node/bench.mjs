// Median latency, from Node, of a slmkit response-cache hit next to one loopback call with the
// `openai` package to the test server. Run after ./test.sh (which builds both):
//   node bindings-node/bench.mjs [iterations]
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

const require = createRequire(import.meta.url);
const OpenAI = require('./index.js');
const RealOpenAI = require('openai');
const { startServer } = require('./test/helpers.js');

const iterations = Number(process.argv[2] ?? 2000);
const params = { model: 'm', messages: [{ role: 'user', content: 'What is the capital of France?' }], temperature: 0 };

function median(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function time(call, n) {
  for (let i = 0; i < Math.min(50, n); i++) await call(); // warm up
  const samples = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    await call();
    samples.push(performance.now() - start);
  }
  return median(samples);
}

const server = await startServer();
try {
  const slmkit = new OpenAI({ baseURL: server.url, apiKey: 'k' });
  const first = await slmkit.chat.completions.create(params);
  const second = await slmkit.chat.completions.create(params);
  const cacheStatus = second.slmkit?.cache;
  const slmkitMs = await time(() => slmkit.chat.completions.create(params), iterations);

  const real = new RealOpenAI({ baseURL: server.url, apiKey: 'k', maxRetries: 0 });
  const openaiMs = await time(() => real.chat.completions.create(params), Math.min(iterations, 500));

  const what = cacheStatus === 'hit' ? 'slmkit cache hit' : `slmkit loopback call (cache: ${cacheStatus ?? first.slmkit?.cache})`;
  console.log(`${what.padEnd(40)} median ${(slmkitMs * 1000).toFixed(1)} us`);
  console.log(`${'openai package, loopback call'.padEnd(40)} median ${(openaiMs * 1000).toFixed(1)} us`);
} finally {
  server.close();
}
