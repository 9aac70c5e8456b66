"""The Python drop-in's costs beside the native client: import time and per-call overhead.

    .venv/bin/python bench/dropin_python.py [--rounds 5] [--calls 200]

1. Import: fresh interpreters, ``import slmkit`` vs ``import openai``, and ``import slmkit`` +
   the first ``slmkit.OpenAI(...)`` (which imports openai and httpx) vs ``import slmkit`` + the
   first ``slmkit.native.Client(...)``; median and spread over ``--rounds * 4`` processes, and
   ``python -X importtime``'s cumulative figure for the top-level modules.
2. Per call, sequential, one thread: ``slmkit.OpenAI`` (openai's client over the in-process
   transport) beside ``slmkit.native.Client`` (no openai), on
   * a cache hit (the same deterministic request, answered from slmkit's cache), and
   * a loopback LLM call (``slmkit-testserver`` answers at once; cache off, unique text).
   Each round measures both clients (order alternating) for ``--calls`` calls after a warm-up;
   the table gives the median over rounds of each round's p50, and the spread (min-max of the
   rounds' p50s).

Writes bench/results/dropin-python-DATE.md. Needs the binding built into .venv (``bash
bindings-python/test.sh`` does) and ``cargo build -p slmkit-testserver``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# The same request again and again from one caller would otherwise be a re-ask (a rejection
# of the cached answer), which is not what a cache hit measures.
NO_REASK = {"reask_window_s": 0}


def in_fresh_process(code: str) -> float:
    """Seconds ``code`` takes in a new interpreter (timed inside it, so start-up is excluded)."""
    script = f"import time\nstart = time.perf_counter()\n{code}\nprint(time.perf_counter() - start)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def importtime_us(module: str) -> int:
    """``-X importtime``'s cumulative microseconds for ``module`` itself."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True, check=True)
    for line in out.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if match and match.group(2).strip() == module:
            return int(match.group(1))
    raise RuntimeError(f"no importtime line for {module}")


def spread(values: List[float]) -> Tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def ms(triple: Tuple[float, float, float], scale: float = 1000.0, digits: int = 1) -> str:
    median, low, high = (value * scale for value in triple)
    return f"{median:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def measure_imports(samples: int, base_url: str) -> List[Tuple[str, Tuple[float, float, float], str]]:
    check = "import sys, slmkit\nassert 'openai' not in sys.modules and 'httpx' not in sys.modules and 'httpx2' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)
    cases = {
        "import slmkit": "import slmkit",
        "import openai": "import openai",
        "import slmkit + first slmkit.native.Client(...)": f"import slmkit.native\nslmkit.native.Client(base_url={base_url!r}, api_key='k')",
        "import slmkit + first slmkit.OpenAI(...)": f"import slmkit\nslmkit.OpenAI(base_url={base_url!r}, api_key='k')",
        "import openai + first openai.OpenAI(...)": f"import openai\nopenai.OpenAI(base_url={base_url!r}, api_key='k')",
    }
    rows = []
    for name, code in cases.items():
        times = [in_fresh_process(code) for _ in range(samples)]
        module = name.split()[1] if name.startswith("import ") and "+" not in name else ""
        cumulative = f"{importtime_us(module) / 1000:.1f}" if module else ""
        rows.append((name, spread(times), cumulative))
    return rows


def p50_of(call: Callable[[int], Any], calls: int, offset: int) -> float:
    latencies = []
    for i in range(calls):
        start = time.perf_counter()
        call(offset + i)
        latencies.append(time.perf_counter() - start)
    return statistics.median(latencies)


def measure_calls(rounds: int, calls: int, base_url: str) -> Dict[str, Dict[str, Tuple[float, float, float]]]:
    import slmkit
    import slmkit.native

    def hit(client: Any) -> Callable[[int], Any]:
        request = {"model": "m", "messages": [{"role": "user", "content": "cached"}], "temperature": 0}

        def call(_: int) -> Any:
            answer = client.chat.completions.create(**request)
            assert answer.slmkit["cache"] == "hit", answer.slmkit
            return answer

        client.chat.completions.create(**request)  # fills the cache
        return call

    def loopback(client: Any) -> Callable[[int], Any]:
        def call(i: int) -> Any:
            answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"n{i}"}])
            assert answer.choices[0].message.content == f"echo: n{i}"
            return answer

        return call

    clients = {
        "native": {
            "cache hit": hit(slmkit.native.Client(base_url=base_url, api_key="k", retry=NO_REASK)),
            "loopback LLM call": loopback(slmkit.native.Client(base_url=base_url, api_key="k", cache={"enabled": False})),
        },
        "drop-in": {
            "cache hit": hit(slmkit.OpenAI(base_url=base_url, api_key="k", retry=NO_REASK)),
            "loopback LLM call": loopback(slmkit.OpenAI(base_url=base_url, api_key="k", cache={"enabled": False})),
        },
    }
    p50s: Dict[str, Dict[str, List[float]]] = {name: {case: [] for case in cases} for name, cases in clients.items()}
    offset = 0
    for round_index in range(rounds):
        order = list(clients) if round_index % 2 == 0 else list(reversed(list(clients)))
        for name in order:
            for case, call in clients[name].items():
                p50_of(call, max(10, calls // 10), offset)  # warm-up
                offset += calls
                p50s[name][case].append(p50_of(call, calls, offset))
                offset += calls
    return {name: {case: spread(values) for case, values in cases.items()} for name, cases in p50s.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    binary = TARGET / "debug" / "slmkit-testserver"
    server = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        imports = measure_imports(args.rounds * 4, base_url)
        calls = measure_calls(args.rounds, args.calls, base_url)
    finally:
        server.terminate()
        server.wait(timeout=10)

    import openai

    lines = [
        f"# The Python drop-in beside the native client ({dt.date.today().isoformat()})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end); Python "
        f"{platform.python_version()}, openai {openai.__version__}; the binding in the dev profile "
        "(as test.sh builds it). Made by `bench/dropin_python.py "
        f"--rounds {args.rounds} --calls {args.calls}` (`make bench`).",
        "",
        "## Import and first client",
        "",
        f"Fresh interpreters, {args.rounds * 4} each: milliseconds, median (min–max); "
        "`-X importtime` is the module's cumulative import time in one run.",
        "",
        "| what | ms | -X importtime ms |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {ms(triple)} | {cumulative} |" for name, triple, cumulative in imports]
    lines += [
        "",
        "`import slmkit` imports neither openai nor httpx (checked): they load with the first `slmkit.OpenAI`.",
        "",
        "## Per call",
        "",
        f"Sequential calls, one thread; each round {args.calls} calls per client and case, "
        f"{args.rounds} rounds: the median of the rounds' p50 in microseconds, (min–max of the rounds' p50).",
        "",
        "| case | slmkit.native.Client | slmkit.OpenAI (drop-in) | drop-in minus native |",
        "|---|---|---|---|",
    ]
    for case in calls["native"]:
        native, dropin = calls["native"][case], calls["drop-in"][case]
        lines.append(
            f"| {case} | {ms(native, 1e6, 0)} | {ms(dropin, 1e6, 0)} | {(dropin[0] - native[0]) * 1e6:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results" / f"dropin-python-{dt.date.today().isoformat()}.md"
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
