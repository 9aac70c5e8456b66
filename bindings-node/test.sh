#!/usr/bin/env bash
# The Node binding's whole check, run from anywhere (the Makefile calls it from the repo root):
# install the npm dependencies, build the addon (Cargo's dev profile, in the shared target
# directory), build the loopback test server, type-check the drop-in contract, run node --test.
# Idempotent; warm, it takes well under a minute.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
cd "$here"

command -v node >/dev/null || { echo "node (>= 18) is required" >&2; exit 1; }
# Dependencies as locked in package-lock.json (npm install, not npm ci: npm ci rejects this
# lock because of @napi-rs/cli's optional per-platform packages). The build runs below.
npm install --ignore-scripts --no-audit --no-fund
npm run --silent build
cargo build -p slmkit-testserver
npx tsc -p test/types
node --test test/*.test.js
