#!/usr/bin/env bash
# The library tests: slmkit.OpenAI inside instructor, LangChain, pydantic-ai, the Agents SDK
# and llama-index (see README.md here). Makes (once) a venv from requirements.lock under
# ~/.cache/slmkit/, keyed by the lock's hash, so a rerun skips pip and a changed lock gets a
# fresh venv; builds the binding into it (maturin develop, the shared target dir) and the
# loopback test server; runs pytest. Arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
lock="$here/requirements.lock"
key="$(sha256sum "$lock" | cut -c1-16)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/slmkit"
venv="$cache/libtests-$key"
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$cache"
  rm -rf "$venv"
  python3 -m venv "$venv" || {
    echo "cannot create $venv: on Debian/Ubuntu install python3-venv (apt-get install python3-venv)" >&2
    exit 1
  }
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$lock"
  touch "$venv/.complete"
fi
(cd "$root/bindings-python" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" maturin develop --quiet)
(cd "$root" && cargo build --quiet -p slmkit-testserver)
cd "$here"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
