'use strict';
// Shared test helpers: the loopback OpenAI server, the fixture model, and a structural
// "shape" of a value (key sets and value types) to compare slmkit's objects with openai's.

const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');

const repo = path.resolve(__dirname, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || path.join(repo, 'target');
const MODEL = path.join(repo, 'core', 'tests', 'fixtures', 'tiny-chatml.gguf');

/** Starts `slmkit-testserver` on a free port. */
async function startServer() {
  const binary = path.join(targetDir, 'debug', 'slmkit-testserver');
  const child = spawn(binary, [], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`slmkit-testserver exited with ${code}`)));
    readline.createInterface({ input: child.stdout }).once('line', (line) => resolve(line.trim()));
  });
  const origin = url.replace(/\/v1\/?$/, '');
  return {
    url,
    /** Queues behaviours, one per request. */
    async script(behaviours) {
      const response = await fetch(`${origin}/_script`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(behaviours),
      });
      if (!response.ok) throw new Error(`script failed: ${response.status} ${await response.text()}`);
    },
    async requests() {
      return (await fetch(`${origin}/_requests`)).json();
    },
    close() {
      child.removeAllListeners('exit');
      child.kill();
    },
  };
}

/** Key sets and value types, recursively: `{a: 'number', b: {c: 'string'}}`, arrays as their items' shapes. */
function shape(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) {
    const items = [...new Set(value.map((item) => JSON.stringify(shape(item))))].map((s) => JSON.parse(s));
    return { array: items };
  }
  if (typeof value === 'object') {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key] = shape(value[key]);
    return out;
  }
  return typeof value;
}

function localSlm(extra = {}) {
  return { slm: { backend: 'local', model: MODEL, context: 1024, ...extra } };
}

// A request the tiny random model must answer at length: the grammar forces 300 digits.
const LONG = {
  model: '',
  messages: [{ role: 'user', content: 'Count.' }],
  response_format: {
    type: 'json_schema',
    json_schema: {
      name: 'digits',
      schema: {
        type: 'object',
        properties: {
          digits: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 9 }, minItems: 300, maxItems: 300 },
        },
        required: ['digits'],
        additionalProperties: false,
      },
    },
  },
  max_tokens: 960,
  seed: 7,
};

module.exports = { startServer, shape, MODEL, localSlm, repo, targetDir, LONG };
