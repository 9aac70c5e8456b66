#!/usr/bin/env bash
# Installs MetaGPT 0.8.2 into its own virtual environment, once, and prints the venv's path on
# stdout (everything else goes to stderr):
#
#   venv="$(bash tests/e2e/metagpt/install.sh)"
#
# `pip install metagpt==0.8.2` cannot work anywhere: it pins lancedb==0.4.0, and every lancedb
# release before 0.14 is gone from the package index (lancedb is only imported by
# metagpt/document_store/lancedb_store.py, which no action touches). So the venv gets the
# committed lock (MetaGPT 0.8.2's own requirements minus lancedb, resolved by `uv pip compile`
# for Python 3.11 or 3.10, x86_64 manylinux), installed by uv (pip's resolver backtracks for
# minutes on these pins), and then metagpt itself with --no-deps.
#
# Where: $SLMKIT_METAGPT_VENV, else ${XDG_CACHE_HOME:-~/.cache}/slmkit/metagpt-0.8.2-py3XX, so
# every clone and worktree shares one copy and CI can cache that folder. A stamp (MetaGPT's
# version, the Python, uv's version and the lock's sha256) makes a warm run return at once; any
# change rebuilds the venv from scratch. Python: $SLMKIT_METAGPT_PYTHON, else python3.11, else
# python3.10; without either, uv installs a managed CPython 3.11. Cold, on 2 cores: about
# 2-4 minutes and 1 GB.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
METAGPT_VERSION=0.8.2
UV_VERSION=0.13.9

log() { echo "metagpt/install.sh: $*" >&2; }

# The interpreter: one the locks were compiled for.
python=""
for candidate in "${SLMKIT_METAGPT_PYTHON:-}" python3.11 python3.10; do
  [ -n "$candidate" ] || continue
  command -v "$candidate" >/dev/null 2>&1 || continue
  case "$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" in
  3.11 | 3.10)
    python="$(command -v "$candidate")"
    break
    ;;
  esac
done
if [ -n "$python" ]; then
  pyver="$("$python" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
else
  pyver=311 # uv installs it below
fi

cache="${XDG_CACHE_HOME:-$HOME/.cache}/slmkit"
venv="${SLMKIT_METAGPT_VENV:-$cache/metagpt-$METAGPT_VERSION-py$pyver}"
lock="$here/lock-py$pyver.txt"
[ -f "$lock" ] || { log "no lock for Python $pyver ($lock)"; exit 1; }

stamp_file="$venv/.slmkit-metagpt-stamp"
stamp="metagpt=$METAGPT_VERSION uv=$UV_VERSION python=$pyver lock=$(sha256sum "$lock" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
  echo "$venv"
  exit 0
fi

log "installing MetaGPT $METAGPT_VERSION into $venv (cold: a few minutes, about 1 GB)"
start=$SECONDS
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
if [ -n "$python" ]; then
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  uv="$venv/bin/uv"
else
  # No Python 3.11 or 3.10 on this machine: uv from a bootstrap venv fetches a managed one.
  log "no python3.11 or python3.10 found: uv installs a managed CPython 3.11"
  bootstrap="$cache/uv-$UV_VERSION"
  [ -x "$bootstrap/bin/uv" ] || {
    python3 -m venv "$bootstrap"
    "$bootstrap/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
  }
  uv="$bootstrap/bin/uv"
  "$uv" venv --quiet --python 3.11 "$venv"
fi
"$uv" pip install --quiet --python "$venv/bin/python" -r "$lock"
"$uv" pip install --quiet --python "$venv/bin/python" --no-deps "metagpt==$METAGPT_VERSION"

# The smoke check: MetaGPT's package and the parts the tests drive import (config2 needs an
# llm section to import, so give it one in a throwaway project root and home).
check="$(mktemp -d)"
trap 'rm -rf "$check"' EXIT
mkdir -p "$check/config" "$check/home"
printf 'llm:\n  api_type: open_llm\n  base_url: http://127.0.0.1:9/v1\n  api_key: x\n  model: x\n' >"$check/config/config2.yaml"
(cd "$check" && METAGPT_PROJECT_ROOT="$check" HOME="$check/home" "$venv/bin/python" -c \
  'import metagpt, metagpt.software_company, metagpt.actions.action_node; print("metagpt", metagpt.__file__)' >&2)

echo "$stamp" >"$stamp_file"
log "done in $((SECONDS - start)) s, $(du -sh "$venv" | cut -f1)"
echo "$venv"
