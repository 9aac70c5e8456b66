"""Soak and load: `slmkit serve` under open-loop load, with and without hostile clients.

    python3 bench/soak.py [--rate 200] [--seconds 60] [--hostile-every 10]

`slmkit serve` runs with `slmkit-testserver` (loopback, instant echo) as its LLM tier and the
response cache off. Request k is due at start + k/rate whatever happened to earlier ones
(open loop), and a good request's latency runs from the time it was due to the time its answer
was read and checked, so a server that falls behind cannot hide it.

Two runs on the same schedule, each against a freshly started server:
  clean    only the good requests: every slot but each `--hostile-every`-th
  hostile  the same good requests, plus in each `--hostile-every`-th slot one of
             - a huge schema: a json_schema whose enum has 20,000 entries (~300 KB body)
             - malformed JSON: a body cut off in the middle
             - a slow client: headers sent one line per second for ten seconds, then a
               good body (how long the server holds such a connection is the finding)

Reported per run: p50/p99 of the good requests, good requests that failed (status, wrong
answer, or no answer within 30 s), what the hostile requests got, and the server's RSS and
open file descriptors after a warm-up and again after the run has drained.

Standard library only. Needs `cargo build -p slmkit-cli -p slmkit-testserver` (dev profile);
SLMKIT_SOAK_BIN_DIR points at other copies of the two binaries (default: the dev build's).
Writes bench/results/soak-DATE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
GOOD_TIMEOUT_S = 30.0
HOSTILE_KINDS = ("huge_schema", "malformed", "slow_client")
SLOW_HEADER_LINES = 10


class Child:
    """A server process in its own session; its output in a log file."""

    def __init__(self, name: str, argv: List[str], workdir: Path) -> None:
        self.name = name
        self.port = 0
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
            start_new_session=True,
        )

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not print {prefix!r}: {self.log_path.read_text(errors='replace')[-2000:]}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def sockets_to(self, port: int) -> int:
        """Open TCP connections whose remote end is `port` on loopback (the upstream pool)."""
        inodes = set()
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                target = os.readlink(f"/proc/{self.proc.pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                rows = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                fields = row.split()
                if len(fields) > 9 and fields[9] in inodes and int(fields[2].rsplit(":", 1)[1], 16) == port:
                    count += 1
        return count

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


BIN_DIR = Path(os.environ.get("SLMKIT_SOAK_BIN_DIR", TARGET_DIR / "debug"))


def binary(name: str) -> str:
    path = BIN_DIR / name
    if not path.exists():
        sys.exit(f"{path} is missing: run `cargo build -p slmkit-cli -p slmkit-testserver` first")
    return str(path)


def start_servers(workdir: Path) -> Tuple[Child, Child, int]:
    backend = Child("testserver", [binary("slmkit-testserver")], workdir)
    backend_url = backend.wait_for_line("http://", 30).strip()
    backend.port = int(backend_url.rsplit(":", 1)[1].split("/", 1)[0])
    config = workdir / "slmkit.toml"
    config.write_text(
        f'[llm]\nbackend = "remote"\nbase_url = "{backend_url}"\nmodel = "m"\napi_key = "x"\n'
        "[cache]\nenabled = false\n"
        f'[ledger]\npath = "{workdir / "ledger.jsonl"}"\n'
    )
    serve = Child("serve", [binary("slmkit"), "serve", "--config", str(config), "--port", "0"], workdir)
    line = serve.wait_for_line("slmkit serve: listening on ", 60)
    port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
    return backend, serve, port


def http_request(port: int, body: bytes) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def good_body(k: int) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": f"soak {k}"}]}).encode()


def huge_schema_body(k: int) -> bytes:
    schema = {"type": "object", "properties": {"pick": {"enum": [f"option-{i}" for i in range(20_000)]}}}
    return json.dumps({
        "model": "m",
        "messages": [{"role": "user", "content": f"hostile {k}"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "huge", "schema": schema}},
    }).encode()


async def read_response(reader: asyncio.StreamReader) -> Tuple[int, bytes]:
    data = await reader.read()  # Connection: close, so the response ends at EOF
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    return (int(status_line[1]) if len(status_line) > 1 else 0), body


async def send(port: int, payload: bytes) -> Tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def slow_client(port: int, k: int) -> Tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        body = good_body(k)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\n")
        await writer.drain()
        for i in range(SLOW_HEADER_LINES):
            await asyncio.sleep(1.0)
            writer.write(f"X-Slow-{i}: {'a' * 8}\r\n".encode())
            await writer.drain()
        writer.write(http_request(port, body).split(b"\r\n", 1)[1])
        await writer.drain()
        return await read_response(reader)
    except (ConnectionError, OSError) as err:
        return -1, str(err).encode()
    finally:
        writer.close()


@dataclass
class RunResult:
    name: str
    good_latencies_ms: List[float] = field(default_factory=list)
    good_errors: Dict[str, int] = field(default_factory=dict)
    hostile: Dict[str, Dict[str, int]] = field(default_factory=dict)
    rss_kib: Tuple[int, int] = (0, 0)
    fds: Tuple[int, int] = (0, 0)
    # RSS sampled once a second through the run: a leak keeps growing, an allocator that has
    # reached its high-water mark levels off.
    rss_samples_kib: List[int] = field(default_factory=list)
    upstream_sockets: int = 0
    late_starts: int = 0
    wall_s: float = 0.0

    def error(self, what: str) -> None:
        self.good_errors[what] = self.good_errors.get(what, 0) + 1

    def outcome(self, kind: str, what: str) -> None:
        counts = self.hostile.setdefault(kind, {})
        counts[what] = counts.get(what, 0) + 1


async def good_call(port: int, k: int, due: float, result: RunResult) -> None:
    try:
        status, body = await asyncio.wait_for(send(port, http_request(port, good_body(k))), GOOD_TIMEOUT_S)
    except asyncio.TimeoutError:
        result.error("no answer in 30 s")
        return
    except (ConnectionError, OSError) as err:
        result.error(type(err).__name__)
        return
    if status != 200:
        result.error(f"HTTP {status}")
        return
    if f"echo: soak {k}".encode() not in body:
        result.error("wrong answer")
        return
    result.good_latencies_ms.append((time.perf_counter() - due) * 1000)


async def hostile_call(port: int, k: int, kind: str, result: RunResult) -> None:
    started = time.perf_counter()
    try:
        if kind == "huge_schema":
            status, _ = await send(port, http_request(port, huge_schema_body(k)))
        elif kind == "malformed":
            status, _ = await send(port, http_request(port, b'{"model": "m", "messages": [{"role": "user", "con'))
        else:
            status, _ = await slow_client(port, k)
        held = time.perf_counter() - started
        result.outcome(kind, f"HTTP {status}" if status > 0 else "connection closed")
        if kind == "slow_client":
            result.outcome(kind, f"held {int(held)} s")
    except (ConnectionError, OSError) as err:
        result.outcome(kind, type(err).__name__)


async def load(port: int, rate: float, seconds: float, hostile_every: int, with_hostile: bool,
               result: RunResult, first_k: int = 0) -> None:
    tasks = []
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    for i in range(total):
        k = first_k + i
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.05:
            result.late_starts += 1
        if hostile_every and i % hostile_every == hostile_every - 1:
            if with_hostile:
                kind = HOSTILE_KINDS[(i // hostile_every) % len(HOSTILE_KINDS)]
                tasks.append(asyncio.ensure_future(hostile_call(port, k, kind, result)))
            continue
        tasks.append(asyncio.ensure_future(good_call(port, k, due, result)))
    await asyncio.gather(*tasks)


def run(name: str, args: argparse.Namespace, with_hostile: bool) -> RunResult:
    result = RunResult(name)
    with tempfile.TemporaryDirectory(prefix=f"slmkit-soak-{name}-") as tmp:
        backend, serve, port = start_servers(Path(tmp))
        try:
            # Warm-up at the same rate, good requests only, so the start figures are a warm server's.
            warm = RunResult("warm-up")
            asyncio.run(load(port, args.rate, args.warmup, 0, False, warm, first_k=10_000_000))
            time.sleep(1.0)
            rss_start, fds_start = serve.rss_kib(), serve.open_fds()
            sampling = threading.Event()

            def sample() -> None:
                while not sampling.wait(1.0):
                    result.rss_samples_kib.append(serve.rss_kib())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            asyncio.run(load(port, args.rate, args.seconds, args.hostile_every, with_hostile, result))
            result.wall_s = time.perf_counter() - started
            sampling.set()
            sampler.join()
            time.sleep(2.0)
            result.rss_kib = (rss_start, serve.rss_kib())
            result.fds = (fds_start, serve.open_fds())
            result.upstream_sockets = serve.sockets_to(backend.port)
        finally:
            serve.stop()
            backend.stop()
    return result


def percentile(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def growth(pair: Tuple[int, int]) -> str:
    start, end = pair
    return f"{start} → {end} ({(end - start) / start * 100:+.1f}%)" if start else f"{start} → {end}"


def quarters(samples: List[int]) -> List[int]:
    if not samples:
        return []
    return [samples[min(len(samples) - 1, max(0, round(len(samples) * q) - 1))] for q in (0.25, 0.5, 0.75, 1.0)]


def second_half_growth(samples: List[int]) -> str:
    if len(samples) < 4:
        return "n/a"
    middle, end = samples[len(samples) // 2 - 1], samples[-1]
    return f"{(end - middle) / middle * 100:+.1f}%"


def report(results: List[RunResult], args: argparse.Namespace) -> str:
    clean, hostile = results
    lines = [
        f"# Soak: `slmkit serve` at {args.rate:.0f} req/s for {args.seconds:.0f} s, with and without hostile clients",
        "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores, "
        f"load average before the runs {os.getloadavg()[0]:.1f}. `python3 bench/soak.py` (see its docstring).",
        "",
        f"Open loop, {args.rate:.0f} request slots/s; every {args.hostile_every}th slot is hostile in the hostile run "
        "and left empty in the clean run, so both runs send the same good requests at the same times. "
        "Backend: `slmkit-testserver` (instant echo) as the LLM tier; cache off; a fresh server per run after "
        f"a {args.warmup:.0f} s warm-up.",
        "",
        "| | clean | hostile |",
        "|---|---|---|",
    ]
    def row(label: str, value) -> None:
        lines.append(f"| {label} | {value(clean)} | {value(hostile)} |")
    row("good requests answered", lambda r: len(r.good_latencies_ms))
    row("good p50 (ms)", lambda r: f"{percentile(r.good_latencies_ms, 0.50):.1f}")
    row("good p99 (ms)", lambda r: f"{percentile(r.good_latencies_ms, 0.99):.1f}")
    row("good max (ms)", lambda r: f"{max(r.good_latencies_ms, default=float('nan')):.1f}")
    row("good requests failed", lambda r: sum(r.good_errors.values()) and ", ".join(f"{k}: {v}" for k, v in r.good_errors.items()) or "0")
    row("RSS KiB (warm start → end)", lambda r: growth(r.rss_kib))
    row("RSS KiB at 25% / 50% / 75% / 100% of the run", lambda r: " / ".join(str(v) for v in quarters(r.rss_samples_kib)))
    row("RSS growth over the run's second half", lambda r: second_half_growth(r.rss_samples_kib))
    row("open FDs (warm start → end)", lambda r: growth(r.fds))
    row("of the end FDs: pooled connections to the LLM backend", lambda r: r.upstream_sockets)
    row("slots sent over 50 ms late (load generator)", lambda r: r.late_starts)
    row("run wall time incl. drain (s)", lambda r: f"{r.wall_s:.1f}")
    lines += ["", "What the hostile requests got:", ""]
    for kind in HOSTILE_KINDS:
        outcomes = hostile.hostile.get(kind, {})
        lines.append(f"- {kind}: " + (", ".join(f"{k} ×{v}" for k, v in sorted(outcomes.items())) or "none sent"))
    p99_ratio = percentile(hostile.good_latencies_ms, 0.99) / percentile(clean.good_latencies_ms, 0.99)
    rss_growth = (hostile.rss_kib[1] - hostile.rss_kib[0]) / max(hostile.rss_kib[0], 1) * 100
    fd_growth = (hostile.fds[1] - hostile.fds[0]) / max(hostile.fds[0], 1) * 100
    lines += [
        "",
        "Goal (issue 18): good p99 within 2x of the clean run, no errors, FD and RSS growth under 5%.",
        "",
        f"- good p99, hostile / clean: **{p99_ratio:.2f}x** ({'met' if p99_ratio <= 2 else 'NOT met'})",
        f"- good requests failed: clean {sum(clean.good_errors.values())}, hostile {sum(hostile.good_errors.values())}",
        f"- hostile run RSS growth {rss_growth:+.1f}% from the warm start ({second_half_growth(hostile.rss_samples_kib)} over the "
        f"run's second half), FD growth {fd_growth:+.1f}% ({hostile.upstream_sockets} of the end FDs are pooled "
        "connections to the LLM backend)",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--hostile-every", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = [run("clean", args, with_hostile=False), run("hostile", args, with_hostile=True)]
    text = report(results, args)
    print(text)
    out = args.out or ROOT / "bench" / "results" / f"soak-{dt.date.today():%Y-%m-%d}.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
