"""Median latencies from Python, through `client.chat.completions.create`.

    .venv/bin/python bindings-python/bench.py [--calls N]

1. A response-cache hit (the whole Python -> Rust -> Python round trip). Target: < 30 µs.
2. One call to a loopback OpenAI-compatible server (slmkit's test server), with slmkit's
   cache off, next to the official `openai` client making the same call.

Needs the test server (`cargo build -p slmkit-testserver`) and, for the comparison, the
`openai` package (test.sh installs both).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, List

import slmkit

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def median_us(call: Callable[[], Any], calls: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        call()
    samples: List[int] = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2000)")
    args = parser.parse_args()

    server = subprocess.Popen([str(TARGET / "debug" / "slmkit-testserver")], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()

        cached = slmkit.OpenAI(base_url=base_url, api_key="sk-bench")
        first = cached.chat.completions.create(model="m", messages=MESSAGES, temperature=0)
        hit = cached.chat.completions.create(model="m", messages=MESSAGES, temperature=0)
        cache_status = (hit.slmkit or {}).get("cache")
        hit_us = median_us(
            lambda: cached.chat.completions.create(model="m", messages=MESSAGES, temperature=0), args.calls
        )
        print(f"cache hit through chat.completions.create: median {hit_us:8.1f} µs  (cache status: {cache_status}; target < 30 µs)")
        assert first.choices[0].message.content == hit.choices[0].message.content

        loopback_calls = max(200, args.calls // 5)
        uncached = slmkit.OpenAI(base_url=base_url, api_key="sk-bench", cache={"enabled": False})
        ours = median_us(lambda: uncached.chat.completions.create(model="m", messages=MESSAGES), loopback_calls)
        print(f"loopback server call, slmkit.OpenAI:       median {ours:8.1f} µs")
        try:
            import openai
        except ImportError:
            print("loopback server call, openai.OpenAI:       (the openai package is not installed)")
            return
        official = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        theirs = median_us(lambda: official.chat.completions.create(model="m", messages=MESSAGES), loopback_calls)  # type: ignore[arg-type]
        print(f"loopback server call, openai.OpenAI:       median {theirs:8.1f} µs  (openai {openai.__version__})")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
