#!/usr/bin/env bash
# `make eval-metagpt`: a real MetaGPT 0.8.2 `generate_repo` (PRD, design, tasks; no code) through
# `slmkit serve`, with real models on both tiers: Qwen2.5-Coder-0.5B-Instruct as the SLM and
# Qwen2.5-Coder-1.5B-Instruct as a local stand-in for the LLM (priced at gpt-4o's list price,
# as in `slmkit demo`). Two runs, each with a fresh server, cache and ledger:
#   plain  the zero-code route (config2.yaml only): slmkit's router sees only the prompts;
#   hints  MetaGPT's OpenAILLM also sends the calling action as metadata.slmkit_task (what
#          examples/python/metagpt/slmkit_provider.py does in-process).
# Runs named code-plain and code-hints do the same with MetaGPT's Engineer writing the code too
# (implement=True, n_round=5: WriteCode per file; MetaGPT's default max_auto_summarize_code of
# 0 skips SummarizeCode), with 8192-token contexts. Then bench/metagpt_report.py writes
# bench/results/metagpt-DATE.md from the ledgers and MetaGPT's own request logs (every run of
# the day found there). CPU heavy: niced, one run at a time; 7-21 minutes a run on 2 idle
# cores (the 1.5B stand-in's looping designs and MetaGPT's re-sends of them are most of it).
# Not part of `make test`.
#
# Environment: METAGPT_MAX_TOKEN (default 1800: enough for a design; MetaGPT's 4096 would let a
# looping answer run twice as long),
# SLMKIT_EVAL_THREADS (default: all cores), SLMKIT_EVAL_IDEA, SLMKIT_EVAL_RUNS ("plain hints";
# also code-plain, code-hints).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
max_token="${METAGPT_MAX_TOKEN:-1800}"
threads="${SLMKIT_EVAL_THREADS:-$(nproc)}"
idea="${SLMKIT_EVAL_IDEA:-A command-line snake game in Python}"
runs="${SLMKIT_EVAL_RUNS:-plain hints}"
date="$(date -u +%Y-%m-%d)"
out="$root/bench/results"
mkdir -p "$out"

cargo build --quiet -p slmkit-cli
work="$(mktemp -d -t slmkit-eval-metagpt-XXXXXX)"
# A copy: every run uses the binary built here, even if the target directory changes meanwhile.
slmkit="$work/slmkit"
cp "$CARGO_TARGET_DIR/debug/slmkit" "$slmkit"
"$slmkit" pull qwen2.5-coder-0.5b-instruct qwen2.5-coder-1.5b-instruct >/dev/null
venv="$(bash "$root/tests/e2e/metagpt/install.sh")"
serve_pid=""
cleanup() {
  [ -z "$serve_pid" ] || kill "$serve_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for run in $runs; do
  case "$run" in
    plain | hints | code-plain | code-hints) ;;
    *) echo "metagpt_eval: unknown run '$run' (plain, hints, code-plain, code-hints)" >&2; exit 2 ;;
  esac
  context=4096
  implement=()
  if [[ "$run" == code-* ]]; then
    context=8192
    implement=(--implement)
  fi
  dir="$work/$run"
  mkdir -p "$dir/project/config" "$dir/home"
  ledger="$out/metagpt-$date-$run.ledger.jsonl"
  requests="$out/metagpt-$date-$run.requests.jsonl"
  rm -f "$ledger" "$requests"
  cat >"$dir/slmkit.toml" <<EOF
[slm]
backend = "local"
model = "qwen2.5-coder-0.5b-instruct"
context = $context
slots = 1
threads = $threads

[llm]
backend = "local"
model = "qwen2.5-coder-1.5b-instruct"
context = $context
slots = 1
threads = $threads

# A local stand-in for a hosted LLM, priced like one (gpt-4o's list price), as in slmkit demo.
[llm.pricing]
kind = "per_token"
input_usd_per_million = 2.5
output_usd_per_million = 10.0

[ledger]
path = "$ledger"

# The README's validator for MetaGPT's ActionNode format.
[[validators]]
kind = "regex"
pattern = '^\\s*\\[CONTENT\\]'
when = '\\[CONTENT\\]'
EOF
  nice -n 10 "$slmkit" serve --config "$dir/slmkit.toml" --port 0 >"$dir/serve.out" 2>"$dir/serve.log" &
  serve_pid=$!
  for _ in $(seq 1 600); do
    grep -q "llm tier" "$dir/serve.log" 2>/dev/null && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$dir/serve.log" >&2; exit 1; }
    sleep 0.5
  done
  base_url="$(head -n1 "$dir/serve.out" | awk '{print $NF}')"
  cat >"$dir/project/config/config2.yaml" <<EOF
llm:
  api_type: open_llm
  base_url: $base_url
  api_key: sk-unused-by-slmkit-serve
  model: gpt-4o
  max_token: $max_token
  temperature: 0
  stream: true
  calc_usage: false
EOF
  hints=()
  [[ "$run" == *hints ]] && hints=(--task-hints)
  echo "metagpt_eval: run '$run' (max_token $max_token, $threads threads) ..." >&2
  start=$SECONDS
  (cd "$dir/project" && METAGPT_PROJECT_ROOT="$dir/project" HOME="$dir/home" \
    nice -n 10 "$venv/bin/python" "$root/tests/e2e/metagpt/drive.py" repo "$idea" \
    --no-retry-wait --request-log "$requests" "${hints[@]}" "${implement[@]}" >"$dir/result.out" 2>"$dir/metagpt.log") || true
  seconds=$((SECONDS - start))
  kill "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
  serve_pid=""
  result="$(tail -n1 "$dir/result.out")"
  # What MetaGPT wrote, kept beside the ledger (PRD, design and tasks as JSON).
  docs="$out/metagpt-$date-$run.docs"
  rm -rf "$docs"
  mkdir -p "$docs"
  for kind in prd system_design task; do
    for file in "$dir"/project/workspace/*/docs/"$kind"/*.json; do
      [ -f "$file" ] && cp "$file" "$docs/$kind.json"
    done
  done
  for file in "$dir"/project/workspace/*/*/*.py; do
    [ -f "$file" ] && mkdir -p "$docs/code" && cp "$file" "$docs/code/"
  done
  # drive.py's last line is its JSON result; a run stopped early has none.
  printf '%s\n' "$result" | python3 -c '
import json, sys
try:
    r = json.loads(sys.stdin.read())
except ValueError:
    r = {"ok": False, "error": "stopped before drive.py printed its result"}
r["wall_s"] = int(sys.argv[1])
print(json.dumps(r))' "$seconds" >"$out/metagpt-$date-$run.result.json"
  grep -E "ERROR|RetryError" "$dir/metagpt.log" | cut -c1-400 >"$out/metagpt-$date-$run.errors.txt" || true
  # MetaGPT prints each answer as it streams in: what the models wrote, re-sends included.
  cp "$dir/result.out" "$out/metagpt-$date-$run.answers.txt" 2>/dev/null || true
  echo "metagpt_eval: run '$run' took ${seconds}s: $result" >&2
done

python3 "$here/metagpt_report.py" --date "$date" --max-token "$max_token" --threads "$threads" --idea "$idea" \
  --slmkit "$slmkit" $runs
