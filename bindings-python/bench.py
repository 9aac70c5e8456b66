"""Median latencies from Python through the low-level client, `slmkit.native.Client` (the
drop-in `slmkit.OpenAI` beside it: bench/dropin_python.py).

    .venv/bin/python bindings-python/bench.py [--calls N]

1. A response-cache hit (the whole Python -> Rust -> Python round trip). Target: < 30 µs.
2. One call to a loopback OpenAI-compatible server (slmkit's test server), with slmkit's
   cache off, next to the official `openai` client making the same call.
3. When `litellm` is importable (bench/.venv-litellm, with the slmkit wheel installed into
   it): slmkit next to `litellm.completion`, in interleaved rounds so drift hits both alike:
   a response-cache hit (LiteLLM's in-memory cache) and a loopback server call.

Needs the test server (`cargo build -p slmkit-testserver`) and, for the comparisons, the
`openai` package (test.sh installs both) and `litellm`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import slmkit
import slmkit.native

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
ROUNDS = 5  # interleaved rounds of the side-by-side comparison
WARMUP = 20


def median_us(call: Callable[[], Any], calls: int, warmup: int = WARMUP) -> float:
    for _ in range(warmup):
        call()
    samples: List[int] = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        call()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


class Measure(NamedTuple):
    name: str
    call: Callable[[], Any]
    calls: int
    before: Optional[Callable[[], None]] = None  # run before each of this measure's blocks


def interleaved_us(
    measures: Sequence[Measure], rounds: int = ROUNDS, warmup: int = WARMUP
) -> Dict[str, Tuple[float, float]]:
    """Median and p90 in µs of each measure, sampled in `rounds` rounds that take each in turn."""
    samples: Dict[str, List[int]] = {measure.name: [] for measure in measures}
    for measure in measures:
        if measure.before is not None:
            measure.before()
        for _ in range(warmup):
            measure.call()
    for _ in range(rounds):
        for measure in measures:
            if measure.before is not None:
                measure.before()
            for _ in range(max(1, measure.calls // rounds)):
                started = time.perf_counter_ns()
                measure.call()
                samples[measure.name].append(time.perf_counter_ns() - started)
    result: Dict[str, Tuple[float, float]] = {}
    for name, values in samples.items():
        values.sort()
        result[name] = (statistics.median(values) / 1000, values[int((len(values) - 1) * 0.9)] / 1000)
    return result


def backend_requests(base_url: str) -> int:
    """How many chat completions the test server has answered (its `/_requests` list)."""
    root = base_url.rsplit("/v1", 1)[0]
    with urllib.request.urlopen(f"{root}/_requests", timeout=10) as response:
        return len(json.load(response))


def compare_litellm(base_url: str, calls: int, loopback_calls: int) -> None:
    """slmkit next to `litellm.completion`, same process, same server, interleaved rounds."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of the cost map on import
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    try:
        import litellm
        from litellm.caching.caching import Cache
    except ImportError:
        print("litellm comparison:                        (litellm is not installed; see bench/.venv-litellm)")
        return
    litellm.suppress_debug_info = True
    litellm_cache = Cache(type="local")  # in memory

    def no_litellm_cache() -> None:
        litellm.cache = None

    def with_litellm_cache() -> None:
        litellm.cache = litellm_cache

    def litellm_call(**extra: Any) -> Any:
        return litellm.completion(model="openai/m", api_base=base_url, api_key="sk-bench", messages=MESSAGES, **extra)

    cached = slmkit.native.Client(base_url=base_url, api_key="sk-bench")
    uncached = slmkit.native.Client(base_url=base_url, api_key="sk-bench", cache={"enabled": False})

    def slmkit_hit() -> Any:
        return cached.chat.completions.create(model="m", messages=MESSAGES, temperature=0)

    def slmkit_call() -> Any:
        return uncached.chat.completions.create(model="m", messages=MESSAGES)

    def litellm_hit() -> Any:
        return litellm_call(caching=True, temperature=0)

    def litellm_plain() -> Any:
        return litellm_call()

    # Fill both caches, then check that a hit really is one (the server sees no request).
    with_litellm_cache()
    litellm_hit()
    slmkit_hit()
    before = backend_requests(base_url)
    litellm_hit()
    slmkit_hit()
    assert backend_requests(base_url) == before, "a cache hit reached the server"
    no_litellm_cache()
    assert litellm_plain().choices[0].message.content == slmkit_call().choices[0].message.content

    measures = [
        Measure("cache hit, slmkit chat.completions.create", slmkit_hit, calls),
        Measure("cache hit, litellm.completion (local cache)", litellm_hit, calls, with_litellm_cache),
        Measure("loopback call, slmkit (cache off)", slmkit_call, loopback_calls),
        Measure("loopback call, litellm.completion (no cache)", litellm_plain, loopback_calls, no_litellm_cache),
    ]
    requests_before = backend_requests(base_url)
    results = interleaved_us(measures)
    served = backend_requests(base_url) - requests_before
    no_litellm_cache()
    expected = 2 * (WARMUP + ROUNDS * (loopback_calls // ROUNDS))  # the two loopback measures only
    assert served == expected, f"the server answered {served} requests, expected {expected}: a hit missed"

    version = getattr(litellm, "__version__", None)
    if version is None:
        import importlib.metadata

        version = importlib.metadata.version("litellm")
    print(f"side by side with litellm {version} ({ROUNDS} interleaved rounds, same process and server):")
    print(f"  {'measure':<46} {'median µs':>10} {'p90 µs':>10}")
    for name, (median, p90) in results.items():
        print(f"  {name:<46} {median:>10.1f} {p90:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (default 2000)")
    args = parser.parse_args()

    server = subprocess.Popen([str(TARGET / "debug" / "slmkit-testserver")], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()

        cached = slmkit.native.Client(base_url=base_url, api_key="sk-bench")
        first = cached.chat.completions.create(model="m", messages=MESSAGES, temperature=0)
        hit = cached.chat.completions.create(model="m", messages=MESSAGES, temperature=0)
        cache_status = (hit.slmkit or {}).get("cache")
        hit_us = median_us(
            lambda: cached.chat.completions.create(model="m", messages=MESSAGES, temperature=0), args.calls
        )
        print(f"cache hit through chat.completions.create: median {hit_us:8.1f} µs  (cache status: {cache_status}; target < 30 µs)")
        assert first.choices[0].message.content == hit.choices[0].message.content

        loopback_calls = max(200, args.calls // 5)
        uncached = slmkit.native.Client(base_url=base_url, api_key="sk-bench", cache={"enabled": False})
        ours = median_us(lambda: uncached.chat.completions.create(model="m", messages=MESSAGES), loopback_calls)
        print(f"loopback server call, slmkit.native:       median {ours:8.1f} µs")
        try:
            import openai
        except ImportError:
            print("loopback server call, openai.OpenAI:       (the openai package is not installed)")
        else:
            official = openai.OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
            theirs = median_us(lambda: official.chat.completions.create(model="m", messages=MESSAGES), loopback_calls)  # type: ignore[arg-type]
            print(f"loopback server call, openai.OpenAI:       median {theirs:8.1f} µs  (openai {openai.__version__})")

        compare_litellm(base_url, args.calls, loopback_calls)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
