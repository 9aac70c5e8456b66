#!/usr/bin/env bash
# `make test-stress`: the Python and the Node suites STRESS_RUNS times each (default 5) while
# every core is kept busy (stress-ng --cpu, installed through apt if missing, else one busy
# shell loop per core), as a shared CI runner or a busy laptop would. Prints a pass count per
# suite and fails unless every run passed. The loaders run at STRESS_NICE (default 10): real
# load that still leaves the suites the lion's share of each core they get.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs="${STRESS_RUNS:-5}"
niceness="${STRESS_NICE:-10}"
cpus="$(nproc)"
log_dir="${STRESS_LOG_DIR:-$root/target/test-stress}"
mkdir -p "$log_dir"

if ! command -v stress-ng >/dev/null; then
  SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq stress-ng >/dev/null; } \
    || echo "stress-ng could not be installed; loading the cores with shell loops"
fi

loaders=()
stop_load() {
  for pid in "${loaders[@]}"; do kill "$pid" 2>/dev/null; done
  wait "${loaders[@]}" 2>/dev/null
}
trap stop_load EXIT
if command -v stress-ng >/dev/null; then
  nice -n "$niceness" stress-ng --cpu "$cpus" --quiet &
  loaders+=("$!")
  load="stress-ng --cpu $cpus at nice $niceness"
else
  for _ in $(seq "$cpus"); do
    nice -n "$niceness" bash -c 'while :; do :; done' &
    loaders+=("$!")
  done
  load="$cpus busy loops at nice $niceness"
fi

# Warm builds first, so every counted run is a test run, not a compile.
bash bindings-python/test.sh --co -q >"$log_dir/warm-python.log" 2>&1 || true
(cd bindings-node && npm install --ignore-scripts --no-audit --no-fund && npm run --silent build) \
  >"$log_dir/warm-node.log" 2>&1 || true
lock_was_clean=$(git diff --quiet -- bindings-node/package-lock.json && echo yes || echo no)

echo "load: $load; $(uptime | sed 's/.*load average/load average/')"
summary=()
failed=0
for suite in python node; do
  passed=0
  for run in $(seq "$runs"); do
    started=$SECONDS
    if bash "bindings-$suite/test.sh" >"$log_dir/$suite-$run.log" 2>&1; then
      passed=$((passed + 1))
      verdict=pass
    else
      verdict="FAIL (log: $log_dir/$suite-$run.log)"
      grep -E '^(FAILED|not ok)|Error' "$log_dir/$suite-$run.log" | head -n 5
    fi
    echo "$suite run $run/$runs: $verdict in $((SECONDS - started))s; $(uptime | sed 's/.*load average/load average/')"
  done
  summary+=("$suite: $passed/$runs passed")
  [ "$passed" -eq "$runs" ] || failed=1
done
[ "$lock_was_clean" = yes ] && git checkout -q -- bindings-node/package-lock.json
printf '%s\n' "${summary[@]}"
exit "$failed"
