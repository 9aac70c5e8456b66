#!/usr/bin/env bash
# The Node binding's whole check, run from anywhere (the Makefile calls it from the repo root):
# install the npm dependencies, build the addon (Cargo's dev profile, in the shared target
# directory), build the loopback test server, type-check the drop-in contract, run node --test.
# Then the library tests (libtests/): slmkitFetch under the Vercel AI SDK and LangChain.js,
# installed with `npm ci` from libtests/package-lock.json (skipped while the lock is unchanged).
# Idempotent; warm, it takes about a minute.
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

lock_sum="$(sha256sum libtests/package-lock.json | cut -d' ' -f1)"
stamp=libtests/node_modules/.slmkit-lock-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]; then
  (cd libtests && npm ci --no-audit --no-fund)
  echo "$lock_sum" >"$stamp"
fi
node --test libtests/*.test.js
