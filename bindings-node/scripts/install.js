#!/usr/bin/env node
// `npm install` hook: use a prebuilt addon when the package ships one (a packed tarball made
// after `npm run build`), else build it from source with cargo (scripts/build.js). Building needs the
// slmkit repository (the Rust core sits next to this folder) and a Rust toolchain; the build
// uses Cargo's dev profile, whose dependencies (llama.cpp) are optimised, so it is fit for use
// and shares its compiled llama.cpp with `cargo test` through CARGO_TARGET_DIR.
'use strict';

const { existsSync } = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const addon = path.join(root, `slmkit.${process.platform}-${process.arch}${process.platform === 'linux' ? '-gnu' : ''}.node`);

if (existsSync(addon) && !process.env.SLMKIT_FORCE_BUILD) {
  process.exit(0);
}
if (!existsSync(path.join(root, '..', 'core', 'Cargo.toml'))) {
  console.error(
    `slmkit: no prebuilt addon (${path.basename(addon)}) and no Rust sources to build one from.\n` +
      'Install from the slmkit repository (npm install ./bindings-node), or from a tarball packed after `npm run build`.',
  );
  process.exit(1);
}
if (!process.env.CARGO_TARGET_DIR) {
  // Share the workspace's target directory, where llama.cpp may already be compiled.
  process.env.CARGO_TARGET_DIR = path.join(root, '..', 'target');
}
// Plain cargo, sharing target/debug with the rest of the workspace (see build.js).
const result = spawnSync(process.execPath, [path.join(__dirname, 'build.js')], { cwd: root, stdio: 'inherit', env: process.env });
process.exit(result.status ?? 1);
