'use strict';
// The cross-language error check: the failures in tests/fixtures/error_classes.json reject with
// the class the fixture names. The Python suite and slmkit serve's tests read the same file.

const test = require('node:test');
const assert = require('node:assert');
const fs = require('node:fs');
const path = require('node:path');

const OpenAI = require('..');
const { startServer } = require('./helpers');

const fixture = path.resolve(__dirname, '..', '..', 'tests', 'fixtures', 'error_classes.json');
const { cases } = JSON.parse(fs.readFileSync(fixture, 'utf8'));

test('each failure rejects with the shared class', async (t) => {
  const server = await startServer();
  t.after(() => server.close());
  const client = new OpenAI({ baseURL: server.url, apiKey: 'k', maxRetries: 0 });
  for (const failure of cases) {
    if (failure.script.length) await server.script(failure.script);
    const request = { model: 'm', messages: [{ role: 'user', content: 'x' }], ...(failure.request ?? {}) };
    const err = await client.chat.completions.create(request).then(
      () => assert.fail(`${failure.name}: no error`),
      (thrown) => thrown,
    );
    assert.strictEqual(err.constructor.name, failure.class, `${failure.name}: ${err.message}`);
  }
});
