"""The latency `slmkit serve` adds over the in-process client, next to LiteLLM's proxy.

    .venv/bin/python bench/serve_overhead.py

Four targets, all answering from the same loopback backend (`slmkit-testserver`, which
replies at once with "echo: <last user text>"), all non-streaming chat completions:

  (a) openai client  -> test server                      (the floor: no proxy)
  (b) slmkit.native.Client -> test server                (slmkit in-process, cache off)
  (c) openai client  -> slmkit serve -> test server      (cache off)
  (d) openai client  -> LiteLLM proxy -> test server     (cache off, no database)

(a), (c) and (d) use the same official `openai` client, so (c)-(a) and (d)-(a) are what the
proxy adds; (c)-(b) is what serving over HTTP adds to slmkit's own in-process client.

Load is open-loop: request k is due at start + k/rate whatever happened to earlier ones, a
thread pool sends it, and its latency runs from the time it was *due* to the time the answer
is parsed, so a slow target cannot hide its queueing by delaying the next request. Each
round measures every target for `--requests` requests at `--rate` requests/s (after a
short warm-up at the same rate); rounds rotate the target order, and the table reports the
median over rounds (of p50, of p99, and of the within-round differences). Every request
has unique text, its answer is checked, and the backend's request count is checked after
each block, so no cache anywhere can answer for the backend.

Every server is started here on a free loopback port and stopped on exit. Results go to
stdout and to bench/results/serve_overhead.md. Needs `cargo build -p slmkit-cli -p
slmkit-testserver` (dev profile) and, for (d), bench/.venv-litellm (see bench/README.md).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import shutil
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import openai
import slmkit
import slmkit.native

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
LITELLM_VENV = BENCH / ".venv-litellm"
RESULTS = BENCH / "results" / "serve_overhead.md"

TARGETS = {
    "a": "openai -> test server (floor)",
    "b": "slmkit.native.Client in-process -> test server",
    "c": "openai -> slmkit serve -> test server",
    "d": "openai -> LiteLLM proxy -> test server",
}


# ---------------------------------------------------------------------------------------
# Servers


class Server:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: List[str], workdir: Path, env: Optional[Dict[str, str]] = None):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(workdir),
            env=env,
            start_new_session=True,  # its own group, so stop() also reaches any workers it forks
        )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def first_line(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_text().splitlines():
                if line.startswith(prefix):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not print {prefix!r} within {timeout:.0f} s; log:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=5)
        self._log.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return bytes(response.read())


def start_testserver(workdir: Path) -> Tuple[Server, str]:
    binary = TARGET_DIR / "debug" / "slmkit-testserver"
    if not binary.exists():
        sys.exit(f"{binary} is missing: run `cargo build -p slmkit-cli -p slmkit-testserver` first")
    server = Server("testserver", [str(binary)], workdir)
    return server, server.first_line("http://", 30).strip()


def start_slmkit_serve(workdir: Path, backend_url: str, key: Optional[str]) -> Tuple[Server, str]:
    binary = TARGET_DIR / "debug" / "slmkit"
    if not binary.exists():
        sys.exit(f"{binary} is missing: run `cargo build -p slmkit-cli -p slmkit-testserver` first")
    config = workdir / "slmkit.toml"
    config.write_text(
        "[llm]\n"
        'backend = "remote"\n'
        f'base_url = "{backend_url}"\n'
        'model = "m"\n'
        'api_key = "x"\n'
        "[cache]\n"
        "enabled = false\n"
        + ('[server]\napi_key_env = "SLMKIT_BENCH_SERVER_KEY"\n' if key else "")
    )
    env = dict(os.environ)
    if key:
        env["SLMKIT_BENCH_SERVER_KEY"] = key
    server = Server("slmkit-serve", [str(binary), "serve", "--config", str(config), "--port", "0"], workdir, env=env)
    line = server.first_line("slmkit serve: listening on ", 60)
    return server, line.split("listening on ", 1)[1].strip()


def litellm_version() -> Optional[str]:
    python = LITELLM_VENV / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip() or None


def start_litellm(workdir: Path, backend_url: str, key: Optional[str]) -> Tuple[Server, str]:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        raise RuntimeError(f"{binary} is missing (see bench/README.md to create bench/.venv-litellm)")
    config = workdir / "litellm.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "model_list": [
                    {
                        "model_name": "m",
                        "litellm_params": {"model": "openai/m", "api_base": backend_url, "api_key": "x"},
                    }
                ],
                "litellm_settings": {"cache": False, "set_verbose": False, "telemetry": False},
                "general_settings": {},
            },
            indent=2,
        )
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LITELLM_", "OPENAI_", "DATABASE_URL", "REDIS_")) and key not in ("VIRTUAL_ENV",)
    }
    env.update(
        {
            "PATH": f"{LITELLM_VENV / 'bin'}:{env.get('PATH', '')}",
            "LITELLM_LOG": "ERROR",  # minimal logging
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map at start-up
            "LITELLM_TELEMETRY": "False",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if key:
        env["LITELLM_MASTER_KEY"] = key  # its default: it refuses to start without one
    else:
        env["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"
    port = free_port()
    server = Server(
        "litellm",
        [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        workdir,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"the LiteLLM proxy exited with status {server.proc.returncode}; log:\n{server.log_text()[-3000:]}")
        try:
            http_get(f"{base}/health/liveliness", timeout=2)
            return server, f"{base}/v1"
        except OSError:
            time.sleep(0.25)
    server.stop()
    raise RuntimeError(f"the LiteLLM proxy did not answer /health/liveliness within 180 s; log:\n{server.log_text()[-3000:]}")


# ---------------------------------------------------------------------------------------
# Load


class Counter:
    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> int:
        with self._lock:
            first = self._next
            self._next += n
            return first


def make_call(client: Any) -> Callable[[str], None]:
    def call(text: str) -> None:
        completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": text}])
        got = completion.choices[0].message.content
        if got != f"echo: {text}":
            raise AssertionError(f"unexpected answer {got!r} to {text!r}")

    return call


def open_loop(
    pool: concurrent.futures.ThreadPoolExecutor, call: Callable[[str], None], texts: List[str], rate: float
) -> Tuple[List[float], List[float], List[str]]:
    """Sends texts[k] at start + k/rate. Returns latencies from the due time (s), dispatch lags (s), errors."""
    n = len(texts)
    due = [0.0] * n
    started = [0.0] * n
    finished = [0.0] * n
    errors: List[str] = []

    def job(k: int) -> None:
        started[k] = time.perf_counter()
        try:
            call(texts[k])
        except Exception as err:  # noqa: BLE001 (counted and reported)
            errors.append(f"{type(err).__name__}: {err}")
        finished[k] = time.perf_counter()

    period = 1.0 / rate
    origin = time.perf_counter() + 0.02
    futures = []
    for k in range(n):
        due[k] = origin + k * period
        delay = due[k] - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        futures.append(pool.submit(job, k))
    concurrent.futures.wait(futures)
    latencies = [finished[k] - due[k] for k in range(n)]
    lags = [started[k] - due[k] for k in range(n)]
    return latencies, lags, errors


def pct(samples: List[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between order statistics."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def backend_count(backend_url: str) -> int:
    base = backend_url[: -len("/v1")] if backend_url.endswith("/v1") else backend_url
    return len(json.loads(http_get(f"{base}/_requests", timeout=30)))


# ---------------------------------------------------------------------------------------
# Report


def machine_info() -> Dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        commit = commit + (" (working tree has uncommitted changes)" if dirty else "")
    except OSError:
        commit = "unknown"
    try:
        slmkit_cli = subprocess.run(
            [str(TARGET_DIR / "debug" / "slmkit"), "--version"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        slmkit_cli = "unknown"
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": commit,
        "slmkit_cli": slmkit_cli,
    }


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def fmt_delta(seconds: float) -> str:
    return f"{seconds * 1e6:+,.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second per target (default 50)")
    parser.add_argument("--requests", type=int, default=500, help="measured requests per target per round (default 500)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured requests before each block (default 50)")
    parser.add_argument("--workers", type=int, default=32, help="sender threads (default 32)")
    parser.add_argument(
        "--no-auth",
        action="store_true",
        help="run both proxies without a bearer token (LiteLLM then needs its dangerously_permit override); "
        "by default each gets a random per-run key, LiteLLM's default requirement",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' configs and logs (path printed)")
    parser.add_argument("--no-litellm", action="store_true", help="skip target (d)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"markdown results file (default {RESULTS.relative_to(ROOT)})")
    args = parser.parse_args()

    # SIGTERM -> KeyboardInterrupt, so the finally below stops every server.
    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)

    started_at = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    info = machine_info()
    versions = {
        "slmkit": f"{getattr(slmkit, '__version__', '?')} (Python binding, dev build); {info['slmkit_cli']} (CLI, dev profile)",
        "openai": openai.__version__,
        "litellm": "not used" if args.no_litellm else (litellm_version() or "not installed"),
        "python": info["python"],
    }
    litellm_note: Optional[str] = None
    servers: List[Server] = []
    workdir = Path(tempfile.mkdtemp(prefix="slmkit-bench-"))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.workers, thread_name_prefix="sender")
    try:
        testserver, backend = start_testserver(workdir)
        servers.append(testserver)
        serve_key = None if args.no_auth else "sk-slmkit-" + secrets.token_hex(24)
        litellm_key = None if args.no_auth else "sk-litellm-" + secrets.token_hex(24)
        serve, serve_url = start_slmkit_serve(workdir, backend, serve_key)
        servers.append(serve)
        print(f"test server {backend}; slmkit serve {serve_url}", flush=True)

        def openai_client(base_url: str, key: Optional[str] = None) -> Any:
            return openai.OpenAI(base_url=base_url, api_key=key or "x", max_retries=0, timeout=30.0)

        calls: Dict[str, Callable[[str], None]] = {
            "a": make_call(openai_client(backend)),
            "b": make_call(
                slmkit.native.Client(
                    llm={"backend": "remote", "base_url": backend, "model": "m", "api_key": "x"},
                    cache={"enabled": False},
                )
            ),
            "c": make_call(openai_client(serve_url, serve_key)),
        }
        if not args.no_litellm:
            try:
                t0 = time.monotonic()
                litellm, litellm_url = start_litellm(workdir, backend, litellm_key)
                servers.append(litellm)
                print(f"LiteLLM proxy {litellm_url} (ready after {time.monotonic() - t0:.1f} s)", flush=True)
                calls["d"] = make_call(openai_client(litellm_url, litellm_key))
            except Exception as err:  # noqa: BLE001 (reported; the slmkit part still runs)
                litellm_note = f"(d) skipped: {err}"
                print(litellm_note, file=sys.stderr, flush=True)
        else:
            litellm_note = "(d) skipped: --no-litellm"
        keys = [key for key in "abcd" if key in calls]

        counter = Counter()

        def texts(n: int) -> List[str]:
            first = counter.take(n)
            return [f"bench request {first + i:08d}" for i in range(n)]

        # Warm every path (connection pools, lazy imports, first-call set-up), then check answers.
        for key in keys:
            _, _, errors = open_loop(pool, calls[key], texts(max(100, args.warmup)), args.rate * 2)
            if errors:
                raise RuntimeError(f"target ({key}) fails during warm-up: {errors[0]} ({len(errors)} errors)")

        per_round: List[Dict[str, Dict[str, float]]] = []
        errors_total = {key: 0 for key in keys}
        for rnd in range(args.rounds):
            order = keys[rnd % len(keys) :] + keys[: rnd % len(keys)]
            stats: Dict[str, Dict[str, float]] = {}
            for key in order:
                before = backend_count(backend)
                open_loop(pool, calls[key], texts(args.warmup), args.rate)
                latencies, lags, errors = open_loop(pool, calls[key], texts(args.requests), args.rate)
                reached = backend_count(backend) - before
                expected = args.warmup + args.requests
                if reached != expected:
                    raise RuntimeError(f"target ({key}): the backend saw {reached} requests, not {expected}: something cached")
                errors_total[key] += len(errors)
                ok = latencies  # errors are rare-to-none; they are counted and shown, and still timed
                stats[key] = {
                    "p50": pct(ok, 50),
                    "p90": pct(ok, 90),
                    "p99": pct(ok, 99),
                    "max": max(ok),
                    "lag_p50": pct(lags, 50),
                    "lag_p99": pct(lags, 99),
                    "errors": float(len(errors)),
                }
                print(
                    f"round {rnd + 1}/{args.rounds} ({key}) {TARGETS[key]:<42} p50 {fmt_us(stats[key]['p50']):>7} µs"
                    f"  p99 {fmt_us(stats[key]['p99']):>7} µs  send lag p99 {fmt_us(stats[key]['lag_p99']):>5} µs"
                    f"  errors {len(errors)}",
                    flush=True,
                )
            per_round.append(stats)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        for server in reversed(servers):
            server.stop()
    if args.keep_logs:
        print(f"servers' configs and logs: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)  # kept (with the servers' logs) when the run fails
    load_after = os.getloadavg()
    elapsed = (dt.datetime.now(dt.timezone.utc) - started_at).total_seconds()

    def med(key: str, field: str) -> float:
        return statistics.median(r[key][field] for r in per_round)

    def med_diff(key: str, base: str, field: str) -> float:
        return statistics.median(r[key][field] - r[base][field] for r in per_round)

    lines: List[str] = []
    lines.append("## `slmkit serve` added latency, next to LiteLLM's proxy")
    lines.append("")
    lines.append(
        f"- date: {started_at:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s; machine: {info['cpu']}, {info['os']}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (other work shares the machine)"
    )
    lines.append(
        f"- versions: slmkit {versions['slmkit']}; openai {versions['openai']}; litellm {versions['litellm']}; "
        f"Python {versions['python']}; commit {info['commit']}"
    )
    lines.append(
        f"- load: open-loop, {args.rate:g} requests/s per target, {args.requests} measured requests per target per round "
        f"(after {args.warmup} warm-up), {args.rounds} rounds with the target order rotated; non-streaming; latency from "
        "the time each request was due to its parsed answer; figures are medians over rounds"
    )
    lines.append(
        "- backend: `slmkit-testserver` on loopback (instant echo); slmkit's response cache is off in (b) and (c), "
        "LiteLLM's cache is off and it runs without a database, 1 worker; every request has unique text and the backend's "
        "request count was checked after each block; "
        + (
            "both proxies without auth (`--no-auth`; LiteLLM via its dangerously_permit_weak_or_unset_master_key override)"
            if args.no_auth
            else "both proxies check a bearer token (a random per-run key: LiteLLM's master key, slmkit's `[server] api_key_env`)"
        )
    )
    if litellm_note:
        lines.append(f"- {litellm_note.splitlines()[0]}")
    lines.append("")
    lines.append("| target | p50 µs | p99 µs | p50 added over (a) | p99 added over (a) | errors |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for key in keys:
        added50 = "—" if key == "a" else fmt_delta(med_diff(key, "a", "p50"))
        added99 = "—" if key == "a" else fmt_delta(med_diff(key, "a", "p99"))
        lines.append(
            f"| ({key}) {TARGETS[key]} | {fmt_us(med(key, 'p50'))} | {fmt_us(med(key, 'p99'))} | {added50} | {added99} "
            f"| {errors_total[key]} |"
        )
    lines.append("")
    lines.append(
        "p50 and p99: the median over rounds of each round's percentile. Added: the median over rounds of the "
        "within-round difference (targets measured minutes apart share less of the background load), so it need "
        "not equal the difference of the two columns."
    )
    lines.append("")
    lines.append(
        f"`slmkit serve` over the in-process client, (c) - (b): p50 {fmt_delta(med_diff('c', 'b', 'p50'))} µs, "
        f"p99 {fmt_delta(med_diff('c', 'b', 'p99'))} µs."
    )
    if "d" in keys:
        lines.append(
            f"LiteLLM's proxy over `slmkit serve`, (d) - (c): p50 {fmt_delta(med_diff('d', 'c', 'p50'))} µs, "
            f"p99 {fmt_delta(med_diff('d', 'c', 'p99'))} µs."
        )
    lines.append("")
    lines.append(
        "Per round (µs). Send lag is how late the sender thread started a request after it was due (the load "
        "generator's own delay, included in every target's latency alike):"
    )
    lines.append("")
    lines.append("| round | target | p50 | p90 | p99 | max | send lag p50 | send lag p99 |")
    lines.append("|---:|---|---:|---:|---:|---:|---:|---:|")
    for rnd, stats in enumerate(per_round, 1):
        for key in keys:
            s = stats[key]
            lines.append(
                f"| {rnd} | ({key}) | {fmt_us(s['p50'])} | {fmt_us(s['p90'])} | {fmt_us(s['p99'])} | {fmt_us(s['max'])} "
                f"| {fmt_us(s['lag_p50'])} | {fmt_us(s['lag_p99'])} |"
            )
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "<!-- written by bench/serve_overhead.py; run it again to refresh -->\n\n"
        f"Command: `{' '.join(['.venv/bin/python', 'bench/serve_overhead.py', *sys.argv[1:]])}`\n\n" + report
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
