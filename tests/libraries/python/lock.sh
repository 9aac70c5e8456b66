#!/usr/bin/env bash
# Resolves requirements.in into requirements.lock, in a throwaway venv. Run it by hand after
# changing requirements.in; commit the lock. llama-index-llms-openai goes in without its
# declared deps (see requirements.in), its real dependency llama-index-core with them.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
pip=("$work/venv/bin/pip" install --quiet --disable-pip-version-check)
"${pip[@]}" -r "$here/requirements.in"
"${pip[@]}" "llama-index-core>=0.14.5,<0.15"
"${pip[@]}" --no-deps "llama-index-llms-openai==0.8.3"
{
  echo "# Made by lock.sh from requirements.in; installed with --no-deps by run.sh."
  "$work/venv/bin/pip" freeze --disable-pip-version-check
} > "$here/requirements.lock"
echo "wrote $here/requirements.lock"
