'use strict';
// resolveModel and model references in `slm`, against a loopback file server.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');

const OpenAI = require('..');
const { MODEL } = require('./helpers');

const PAYLOAD = Buffer.alloc(1 << 20, 7);

async function fileServer() {
  const server = http.createServer((req, res) => {
    if (req.url !== '/files/model.gguf') {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-length': PAYLOAD.length }).end(PAYLOAD);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${server.address().port}/files`, close: () => server.close() };
}

function withCache(t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'slmkit-node-models-'));
  const saved = { HF_HUB_CACHE: process.env.HF_HUB_CACHE, SLMKIT_OFFLINE: process.env.SLMKIT_OFFLINE };
  process.env.HF_HUB_CACHE = dir;
  delete process.env.SLMKIT_OFFLINE;
  t.after(() => {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

test('resolveModel downloads a URL into the cache, with progress, then finds it there', async (t) => {
  const cache = withCache(t);
  const files = await fileServer();
  t.after(files.close);
  const seen = [];
  const file = await OpenAI.resolveModel(`${files.url}/model.gguf`, { onProgress: (p) => seen.push(p) });
  assert.ok(file.startsWith(cache) && file.endsWith(path.join('snapshots', 'main', 'model.gguf')), file);
  assert.deepEqual(fs.readFileSync(file), PAYLOAD);
  // Progress arrives through threadsafe calls, which may run after the promise settles.
  for (let i = 0; i < 100 && seen.at(-1)?.done !== PAYLOAD.length; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.deepEqual(seen.at(-1), { file: 'model.gguf', done: PAYLOAD.length, total: PAYLOAD.length });
  assert.equal(await OpenAI.resolveModel(`${files.url}/model.gguf`), file);
  assert.equal(await OpenAI.resolveModel(MODEL), MODEL);
});

test('resolveModel failures are ModelLoadErrors with their kind', async (t) => {
  withCache(t);
  const files = await fileServer();
  t.after(files.close);
  await assert.rejects(OpenAI.resolveModel(`${files.url}/nothing.gguf`), (err) => {
    assert.ok(err instanceof OpenAI.ModelFetchError);
    assert.ok(err instanceof OpenAI.ModelLoadError);
    assert.equal(err.kind, 'model_fetch');
    assert.match(err.message, /not found at/);
    return true;
  });
  process.env.SLMKIT_OFFLINE = '1';
  await assert.rejects(OpenAI.resolveModel('hf:org/repo/m.gguf'), /run: slmkit pull hf:org\/repo\/m\.gguf/);
  await assert.rejects(OpenAI.resolveModel('no-such-model'), (err) => {
    assert.equal(err.kind, 'model_load');
    assert.match(err.message, /smollm2-135m-instruct/);
    return true;
  });
});

test('slm.model takes a reference, resolved before the model loads', async (t) => {
  const cache = withCache(t);
  const files = await fileServer();
  t.after(files.close);
  // The constructor blocks this thread, which also serves the file: pull first, so the
  // constructor finds it in the cache. It is not a GGUF, so loading fails after resolving.
  await OpenAI.resolveModel(`${files.url}/model.gguf`);
  assert.throws(
    () => new OpenAI({ slm: { backend: 'local', model: `${files.url}/model.gguf` } }),
    (err) => err instanceof OpenAI.ModelLoadError && err.message.includes(cache),
  );
});
