#!/usr/bin/env python3
"""1,000 concurrent calls through `slmkit serve`, cached and uncached, with the ledger file on.

    python3 bench/serve_concurrency.py --slmkit target/debug/slmkit \
        --testserver target/debug/slmkit-testserver [--calls 1000] [--rounds 3]

The LLM tier is the loopback test server (answers at once), so the figures are slmkit's own
cost under load: the server, the client's call path, the cache, and the ledger. Each round
fires `--calls` requests at once on fresh connections and times each from connect to the last
byte: uncached (distinct prompts, no temperature: the cache does not take them) and cached
(one deterministic prompt, answered once before the round). Prints p50 / p99 / max per round
and the median over rounds. Standard library only, so it runs with any Python 3.8+.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List, Tuple


def start(command: List[str]) -> Tuple["subprocess.Popen[str]", str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    return process, line.rsplit(" ", 1)[-1]


async def call(host: str, port: int, body: bytes) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head + body)
    await writer.drain()
    response = await reader.read()
    writer.close()
    elapsed = time.perf_counter() - started
    status = response.split(b" ", 2)[1] if response else b"?"
    if status != b"200":
        raise RuntimeError(f"HTTP {status!r}: {response[:300]!r}")
    return elapsed


def request(content: str, deterministic: bool) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    if deterministic:
        body["temperature"] = 0
    return json.dumps(body).encode()


async def round_of(host: str, port: int, calls: int, cached: bool, round_index: int) -> List[float]:
    if cached:
        prompt = f"the cached question, round {round_index}"
        await call(host, port, request(prompt, True))  # stored once; the round is all hits
        bodies = [request(prompt, True)] * calls
    else:
        bodies = [request(f"question {round_index}-{index}", False) for index in range(calls)]
    return list(await asyncio.gather(*(call(host, port, body) for body in bodies)))


def percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slmkit", required=True)
    parser.add_argument("--testserver", required=True)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    llm, llm_url = start([args.testserver])
    workdir = Path(tempfile.mkdtemp(prefix="slmkit-bench-"))
    config = workdir / "slmkit.toml"
    config.write_text(
        f'[llm]\nbackend = "remote"\nbase_url = "{llm_url}"\nmodel = "big"\napi_key = "k"\n\n'
        '[ledger]\npath = "ledger.jsonl"\n'
    )
    serve, serve_url = start([args.slmkit, "serve", "--port", "0", "--config", str(config)])
    try:
        host, port = serve_url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        results = {"uncached": [], "cached": []}
        for round_index in range(args.rounds):
            for kind in ("uncached", "cached"):
                latencies = asyncio.run(round_of(host, int(port), args.calls, kind == "cached", round_index))
                ms = [value * 1000 for value in latencies]
                p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
                results[kind].append((p50, p99))
                print(f"{args.label} round {round_index + 1} {kind:>8}: p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {max(ms):7.1f} ms")
        for kind, rows in results.items():
            p50 = statistics.median(row[0] for row in rows)
            p99 = statistics.median(row[1] for row in rows)
            print(f"{args.label} median of {args.rounds} rounds, {args.calls} concurrent {kind}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        llm.terminate()
        llm.wait(timeout=10)
        lines = (workdir / "ledger.jsonl").read_text().count("\n") if (workdir / "ledger.jsonl").exists() else 0
        print(f"{args.label} ledger lines written: {lines}")


if __name__ == "__main__":
    main()
