#!/usr/bin/env bash
# `slmkit serve` end to end with real clients, as the Makefile runs it from the repository root:
# builds `slmkit` and `slmkit-testserver` (dev profile, the shared target directory), adds the
# pinned packages of tests/e2e/requirements.txt (LangChain, PyYAML) to the repository's .venv,
# installs MetaGPT 0.8.2 into its own cached venv (metagpt/install.sh: cold about a minute and
# 1 GB, warm instant), then runs pytest on test_serve.py (openai, LangChain, MetaGPT's
# config2.yaml calls) and test_metagpt.py (MetaGPT itself: an Action, an ActionNode,
# generate_repo), and node --test on serve.test.mjs (the openai npm package). Every server
# starts on port 0 and is killed by the tests' fixtures. Safe to run again; warm, it takes
# about a minute.
#
# It reuses what the bindings' suites set up, and runs after them:
#   bash bindings-python/test.sh   -> .venv with pytest and openai
#   bash bindings-node/test.sh     -> bindings-node/node_modules/openai
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
venv="$root/.venv"

fail() {
  echo "tests/e2e/run.sh: $*" >&2
  exit 1
}

[ -x "$venv/bin/python" ] ||
  fail "$venv is missing: run 'bash bindings-python/test.sh' (or 'make test-python') first"
"$venv/bin/python" -c 'import openai, pytest' 2>/dev/null ||
  fail "$venv lacks openai or pytest: run 'bash bindings-python/test.sh' first"
[ -f "$root/bindings-node/node_modules/openai/package.json" ] ||
  fail "bindings-node/node_modules/openai is missing: run 'bash bindings-node/test.sh' (or 'cd bindings-node && npm install --ignore-scripts') first"
command -v node >/dev/null || fail "node (>= 18) is required"

cargo build --quiet -p slmkit-cli -p slmkit-testserver

# The extra pins; the stamp (the requirements file's content) makes a warm run skip pip.
requirements="$here/requirements.txt"
stamp="$venv/.slmkit-e2e-requirements"
if [ ! -f "$stamp" ] || ! cmp -s "$requirements" "$stamp"; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
fi

# MetaGPT in its own venv (its pins clash with the repository's .venv); the path goes to
# test_metagpt.py, which drives MetaGPT there.
metagpt_venv="$(bash "$here/metagpt/install.sh")"
export SLMKIT_METAGPT_PYTHON_BIN="$metagpt_venv/bin/python"

status=0
# -p no:cacheprovider: no .pytest_cache in the tree.
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$here/test_serve.py" "$here/test_responses.py" "$here/test_metagpt.py" "$@" || status=$?
node --test "$here/serve.test.mjs" || status=$?
exit "$status"
