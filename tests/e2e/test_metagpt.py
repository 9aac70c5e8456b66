"""MetaGPT 0.8.2 itself, end to end through `slmkit serve` (the zero-code `config2.yaml` route).

MetaGPT lives in its own venv (`metagpt/install.sh`, cached); its code runs in one worker
process (`metagpt/drive.py worker`: importing MetaGPT takes 10-25 s, so once per session)
with `METAGPT_PROJECT_ROOT` and `HOME` in a temporary folder and `config/config2.yaml`'s
`base_url` pointing at a transparent loopback proxy in front of `slmkit serve`. The proxy
counts what MetaGPT really sent and keeps each answer's `slmkit` metadata. Behind serve: the
tiny random-weight fixture model as the SLM, and `slmkit-testserver` as the LLM tier, whose
default answer is the prompt's own `## format example` block (what MetaGPT's parser accepts),
so the run is deterministic and takes seconds. serve has the README's `[CONTENT]` validator and
a JSONL ledger, which the tests read back.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set

import pytest
import yaml
from test_serve import MODEL, SLMKIT, TESTSERVER, FakeLlm, Process, _die_with_parent

HERE = Path(__file__).resolve().parent
INSTALL = HERE / "metagpt" / "install.sh"
DRIVE = HERE / "metagpt" / "drive.py"
# MetaGPT asks for 4096 output tokens by default; 128 keeps the fixture model's attempts short
# and lets prompts that fit the SLM's 2048-token window reach it.
MAX_TOKEN = 128
BROKEN = '[CONTENT]{"broken": }[/CONTENT]'  # passes the [CONTENT] validator, fails MetaGPT's parse

# The ActionNode of drive.py's `fill` scenario, answered with its own format example.
FILL_EXAMPLE = {"Project Name": "cli_snake", "Features": ["move", "eat", "grow"], "Team Size": 2}


# --- the proxy ------------------------------------------------------------------------------


@dataclass
class Exchange:
    """One request through the proxy and the `slmkit` metadata of its answer."""

    method: str
    path: str
    request: Any
    status: int
    slmkit: Optional[Dict[str, Any]]


def answer_metadata(content_type: str, body: bytes) -> Optional[Dict[str, Any]]:
    """The answer's `slmkit` field: on the completion, or on the first chunk that has one."""
    try:
        if content_type.startswith("text/event-stream"):
            for line in body.decode().splitlines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    chunk = json.loads(line[len("data: ") :])
                    if isinstance(chunk, dict) and chunk.get("slmkit"):
                        found: Dict[str, Any] = chunk["slmkit"]
                        return found
            return None
        value = json.loads(body)
        return value.get("slmkit") if isinstance(value, dict) else None
    except (ValueError, UnicodeDecodeError):
        return None


class CountingProxy:
    """A transparent loopback HTTP proxy: every request goes on to `upstream` unchanged and its
    answer comes back byte for byte (buffered: a stream arrives whole, its bytes unchanged)."""

    def __init__(self, upstream_base_url: str) -> None:
        upstream = urllib.parse.urlsplit(upstream_base_url)
        self.exchanges: List[Exchange] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base's name
                pass

            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection = http.client.HTTPConnection(upstream.hostname or "127.0.0.1", upstream.port, timeout=300)
                try:
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    answer = response.read()
                    status, reply_headers = response.status, response.getheaders()
                finally:
                    connection.close()
                content_type = response.getheader("content-type") or ""
                try:
                    request = json.loads(body) if body else None
                except ValueError:
                    request = body.decode(errors="replace")
                with lock:
                    proxy.exchanges.append(
                        Exchange(self.command, self.path, request, status, answer_metadata(content_type, answer))
                    )
                self.send_response(status)
                for name, value in reply_headers:
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = forward
            do_POST = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}{upstream.path}"

    def chat_requests(self, since: int = 0) -> List[Exchange]:
        return [e for e in self.exchanges[since:] if e.method == "POST" and e.path.endswith("/chat/completions")]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- MetaGPT in its venv --------------------------------------------------------------------


def metagpt_python() -> Path:
    """The MetaGPT venv's Python (run.sh exports it; otherwise install.sh, cached, finds it)."""
    given = os.environ.get("SLMKIT_METAGPT_PYTHON_BIN")
    if given:
        return Path(given)
    done = subprocess.run(["bash", str(INSTALL)], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        pytest.fail(f"{INSTALL} failed (exit {done.returncode})")
    return Path(done.stdout.strip().splitlines()[-1]) / "bin" / "python"


class Worker:
    """`drive.py worker`: MetaGPT imported once; one scenario per command."""

    def __init__(self, python: Path, project_root: Path, home: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "METAGPT_"))}
        env.update(METAGPT_PROJECT_ROOT=str(project_root), HOME=str(home), PYTHONUNBUFFERED="1")
        self.log = log
        self._log_file = open(log, "w")
        self.process = subprocess.Popen(
            [str(python), str(DRIVE), "worker", "--no-retry-wait"],
            cwd=project_root,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
            preexec_fn=_die_with_parent,
        )
        ready = self._answer(timeout=300)
        assert ready == {"ready": True}, ready

    def _answer(self, timeout: float) -> Dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            tail = self.log.read_text()[-4000:]
            pytest.fail(f"the MetaGPT worker gave no answer within {timeout}s:\n{tail}")
        answer: Dict[str, Any] = json.loads(line)
        return answer

    def run(self, scenario: str, text: str = "", timeout: float = 240) -> Dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"scenario": scenario, "text": text}) + "\n")
        self.process.stdin.flush()
        return self._answer(timeout)

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log_file.close()


# --- the ledger -----------------------------------------------------------------------------


def read_ledger(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ledger_records(path: Path, since: int, call_ids: Set[str], timeout: float = 10) -> List[Dict[str, Any]]:
    """The records after the first `since`, once every call in `call_ids` has settled in the
    file (the writer thread appends shortly after each answer) and nothing more arrives."""
    deadline = time.monotonic() + timeout
    previous = -1
    while True:
        records = read_ledger(path)[since:]
        settled = call_ids <= {record["call_id"] for record in records}
        if (settled and len(records) == previous) or time.monotonic() > deadline:
            return records
        previous = len(records) if settled else -1
        time.sleep(0.2)


# --- fixtures -------------------------------------------------------------------------------


@dataclass
class Stack:
    llm: FakeLlm
    serve: Process
    proxy: CountingProxy
    ledger: Path
    worker: Worker
    project_root: Path
    # Where the current test started: proxy exchanges, ledger lines, LLM-tier requests.
    marks: Dict[str, int] = field(default_factory=dict)

    def mark(self) -> None:
        self.marks = {
            "exchanges": len(self.proxy.exchanges),
            "ledger": len(read_ledger(self.ledger)),
            "llm": len(self.llm.requests()),
        }

    def sent(self) -> List[Exchange]:
        """The chat-completions requests MetaGPT sent since the mark."""
        return self.proxy.chat_requests(self.marks["exchanges"])

    def records(self) -> List[Dict[str, Any]]:
        """The ledger records since the mark, once every answered call is in."""
        ids = {e.slmkit["call_id"] for e in self.sent() if e.slmkit and e.slmkit.get("call_id")}
        return ledger_records(self.ledger, self.marks["ledger"], ids)

    def llm_requests(self) -> List[Dict[str, Any]]:
        return self.llm.requests()[self.marks["llm"] :]


def set_default(llm: FakeLlm, behaviour: Dict[str, Any]) -> None:
    request = urllib.request.Request(
        llm.base_url[: -len("/v1")] + "/_default",
        data=json.dumps(behaviour).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=5).read()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="slmkit-e2e-metagpt-") as directory:
        workdir = Path(directory)
        python = metagpt_python()
        started: List[Any] = []
        try:
            llm = FakeLlm([str(TESTSERVER)], workdir / "testserver.log")
            started.append(llm)
            set_default(llm, {"kind": "format_example"})

            ledger = workdir / "ledger.jsonl"
            config = workdir / "slmkit.toml"
            config.write_text(
                "\n".join(
                    [
                        "[slm]",
                        'backend = "local"',
                        f"model = {json.dumps(str(MODEL))}",
                        "context = 2048",
                        "",
                        "[llm]",
                        'backend = "remote"',
                        f"base_url = {json.dumps(llm.base_url)}",
                        'model = "big"',
                        'api_key = "x"',
                        "",
                        "[ledger]",
                        f"path = {json.dumps(str(ledger))}",
                        "",
                        "# The README's validator for MetaGPT's ActionNode format.",
                        "[[validators]]",
                        'kind = "regex"',
                        "pattern = '^\\s*\\[CONTENT\\]'",
                        "when = '\\[CONTENT\\]'",
                    ]
                )
                + "\n"
            )
            serve = Process([str(SLMKIT), "serve", "--config", str(config), "--port", "0"], workdir / "serve.log")
            started.append(serve)
            proxy = CountingProxy(serve.base_url)
            started.append(proxy)

            project_root = workdir / "project"
            (project_root / "config").mkdir(parents=True)
            (workdir / "home").mkdir()
            (project_root / "config" / "config2.yaml").write_text(
                yaml.safe_dump(
                    {
                        "llm": {
                            "api_type": "open_llm",
                            "base_url": proxy.base_url,
                            "api_key": "sk-unused-by-slmkit-serve",
                            "model": "gpt-4o",
                            "max_token": MAX_TOKEN,
                            "temperature": 0,
                            "stream": True,
                            # Streamed answers carry no usage (MetaGPT sets no include_usage), and
                            # counting it needs tiktoken's encodings from the network.
                            "calc_usage": False,
                        }
                    }
                )
            )
            worker = Worker(python, project_root, workdir / "home", workdir / "metagpt.log")
            started.append(worker)
            yield Stack(llm, serve, proxy, ledger, worker, project_root)
        finally:
            for thing in reversed(started):
                thing.stop()


@pytest.fixture
def mg(stack: Stack) -> Stack:
    stack.mark()
    return stack


def by_call(records: List[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
    calls: Dict[str, List[Dict[str, Any]]] = {}
    for record in records:
        calls.setdefault(record["call_id"], []).append(record)
    return calls


def assert_ledger_counts_what_was_sent(mg: Stack) -> Dict[str, List[Dict[str, Any]]]:
    """Every request MetaGPT sent is one ledger call, and every LLM-tier attempt one request
    the LLM received."""
    sent = mg.sent()
    calls = by_call(mg.records())
    assert all(e.status == 200 for e in sent), [(e.status, e.slmkit) for e in sent]
    answered = [e.slmkit["call_id"] for e in sent if e.slmkit]
    assert len(answered) == len(sent), "every answer carries its slmkit metadata"
    assert len(set(answered)) == len(sent), "one call id per request"
    assert set(calls) == set(answered), "the ledger's calls are exactly the requests sent"
    # Records that are no request to a backend: a cache hit, and the record of an answer the
    # caller rejected by asking again (its attempt has its own record already).
    not_sent = ("cache_hit", "rejected_by_caller")
    llm_attempts = [r for rs in calls.values() for r in rs if r["tier"] == "llm" and r["outcome"] not in not_sent]
    assert len(llm_attempts) == len(mg.llm_requests())
    return calls


# --- the tests ------------------------------------------------------------------------------


def test_action_aask(mg: Stack) -> None:
    result = mg.worker.run("aask")
    assert result["ok"], result
    assert isinstance(result["answer"], str)
    sent = mg.sent()
    assert len(sent) == 1
    request = sent[0].request
    # What MetaGPT's OpenAILLM sends, as CONTEXT.md observed it.
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["max_tokens"] == MAX_TOKEN and request["temperature"] == 0 and request["stream"] is True
    assert "metadata" not in request and "tools" not in request
    calls = assert_ledger_counts_what_was_sent(mg)
    # A short free-text prompt: the SLM answers (no validator applies), the LLM is not asked.
    (records,) = calls.values()
    assert [(r["tier"], r["outcome"], r["served"]) for r in records] == [("slm", "ok", True)]
    assert mg.llm_requests() == []


def test_action_node_fill(mg: Stack) -> None:
    result = mg.worker.run("fill", "A command-line snake game for two developers.")
    assert result["ok"], result
    assert result["fields"] == FILL_EXAMPLE
    sent = mg.sent()
    assert len(sent) == 1, "parsed first time: no re-ask"
    calls = assert_ledger_counts_what_was_sent(mg)
    (records,) = calls.values()
    # The fixture model's gibberish fails the [CONTENT] validator, so the LLM tier answers.
    served = [r for r in records if r["served"]]
    assert [(r["tier"], r["outcome"]) for r in served] == [("llm", "ok")]
    assert all(r["tier"] == "slm" and r["outcome"] != "ok" for r in records if not r["served"])
    assert sent[0].slmkit and sent[0].slmkit["tier"] == "llm"


def test_generate_repo_prd_design_tasks(mg: Stack) -> None:
    result = mg.worker.run("repo", "A command-line snake game")
    assert result["ok"], result
    for kind in ("prd", "system_design", "task"):
        files = result["docs"][kind]
        assert files, f"no docs/{kind}/*.json: {result}"
        for file in files:
            assert Path(file).is_relative_to(mg.project_root / "workspace")
            assert isinstance(json.loads(Path(file).read_text()), dict)
    sent = mg.sent()
    # WritePRD, WriteDesign, WriteTasks: one ActionNode each, each parsed first time.
    assert len(sent) == 3, [e.slmkit for e in sent]
    assert_ledger_counts_what_was_sent(mg)


def test_reask_after_an_unparseable_answer(mg: Stack) -> None:
    # The LLM tier's first answer passes slmkit's [CONTENT] validator but not MetaGPT's parse,
    # so MetaGPT (tenacity in ActionNode._aask_v1) sends the identical request again.
    mg.llm.script({"kind": "reply", "content": BROKEN})
    result = mg.worker.run("fill", "A command-line snake game, asked twice.")
    assert result["ok"], result
    assert result["fields"] == FILL_EXAMPLE, "MetaGPT got a parseable answer in the end"

    sent = mg.sent()
    assert len(sent) == 2, [e.slmkit for e in sent]
    assert sent[1].request == sent[0].request, "a re-ask is the identical request"
    calls = assert_ledger_counts_what_was_sent(mg)
    first, second = (e.slmkit["call_id"] for e in sent if e.slmkit)
    # Each request is its own call; the re-ask's records name the first call of the chain.
    assert all("reask_of" not in r for r in calls[first])
    assert [r.get("reask_of") for r in calls[second]] == [first] * len(calls[second])
    reasks = {call for call, records in calls.items() if any(r.get("reask_of") for r in records)}
    assert len(reasks) == len(sent) - 1, "one re-ask call per re-send"
    # The rejected answer: an extra record of the served attempt, not served.
    served = [r for r in calls[first] if r["served"]]
    rejected = [r for r in calls[first] if r["outcome"] == "rejected_by_caller"]
    assert len(served) == 1 and len(rejected) == 1
    assert rejected[0]["attempt"] == served[0]["attempt"] and rejected[0]["served"] is False
    assert not any(r["outcome"] == "rejected_by_caller" for r in calls[second])
    # The answer's metadata numbers the re-ask.
    assert sent[1].slmkit and sent[1].slmkit.get("reask") == {"of": first, "number": 1}
    assert sent[0].slmkit and "reask" not in sent[0].slmkit
    # The re-ask really asked again (not the cached broken answer): the LLM tier got both.
    assert len(mg.llm_requests()) == 2
