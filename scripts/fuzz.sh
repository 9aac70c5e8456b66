#!/usr/bin/env bash
# `make fuzz`: every fuzz target in fuzz/ (cargo-fuzz, libFuzzer, nightly) for FUZZ_SECONDS each
# (default 600), one after another and niced, starting from fuzz/seeds and the committed corpus
# in fuzz/corpus, which is minimised again afterwards. FUZZ_TARGETS picks targets; FUZZ_JOBS > 1
# runs that many targets at once. Crashes land in fuzz/artifacts/TARGET; each one found so far
# is a regression test in the normal suite (core/tests/fuzz_regressions.rs). Not in `make test`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${FUZZ_SECONDS:-600}"
targets="${FUZZ_TARGETS:-request_json sse config_toml gguf tool_calls}"
jobs="${FUZZ_JOBS:-1}"
log_dir="${FUZZ_LOG_DIR:-$root/fuzz/logs}"

command -v rustup >/dev/null || { echo "rustup is required (https://rustup.rs)" >&2; exit 1; }
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

cd "$root/fuzz"
# Its own target directory: the instrumentation flags would otherwise rebuild the shared one.
unset CARGO_TARGET_DIR
# No sanitizer: the code under test is safe Rust, and without ASan each target runs several
# times more inputs in the same time. Panics, overflows (debug assertions are on) and stack
# overflows are what is being looked for.
nice -n 19 cargo +nightly fuzz build -s none
mkdir -p "$log_dir"

run_one() {
  local target="$1"
  mkdir -p "corpus/$target" "seeds/$target"
  # -timeout: an input that takes over 10 s is a hang, reported like a crash.
  nice -n 19 cargo +nightly fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$log_dir/$target.log" 2>&1
  local status=$?
  nice -n 19 cargo +nightly fuzz cmin -s none "$target" "corpus/$target" >>"$log_dir/$target.log" 2>&1 || true
  local runs
  runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log_dir/$target.log" | grep -o '[0-9]*$' | tail -n1)"
  echo "$target: ${runs:-?} inputs in ${seconds}s, exit $status, corpus $(ls "corpus/$target" | wc -l) files ($(du -sh "corpus/$target" | cut -f1))"
  return "$status"
}

failed=0
running=0
for target in $targets; do
  run_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=1
  running=$((running - 1))
done
if [ "$failed" -ne 0 ]; then
  echo "a fuzz target failed: see $log_dir and fuzz/artifacts" >&2
  exit 1
fi
