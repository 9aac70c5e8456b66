"""Fixtures for the library tests: slmkit's drop-in clients on each tier, in-process.

* ``slm`` tier: the tiny random-weight fixture model (``core/tests/fixtures``). Its words are
  noise, but grammar-constrained answers (tool calls, JSON schema) have the requested shape,
  which is what the libraries parse.
* ``llm`` tier: the loopback test server (``slmkit-testserver``), with scripted replies.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

import slmkit

ROOT = Path(__file__).resolve().parents[3]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MODEL = ROOT / "core" / "tests" / "fixtures" / "tiny-chatml.gguf"


class Server:
    """The test server: one scripted behaviour per request, then echoes."""

    def __init__(self, process: "subprocess.Popen[str]", base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    def script(self, *behaviours: Dict[str, Any]) -> None:
        request = urllib.request.Request(
            self.base_url.replace("/v1", "/_script"),
            data=json.dumps(list(behaviours)).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=5).read()

    def requests(self) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(self.base_url.replace("/v1", "/_requests"), timeout=5) as response:
            received: List[Dict[str, Any]] = json.loads(response.read())
            return received


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = TARGET / "debug" / "slmkit-testserver"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build -p slmkit-testserver` (run.sh does)")
    process = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    yield Server(process, process.stdout.readline().strip())
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "SLMKIT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    # Libraries that would phone home (telemetry, tracing exports) stay in-process.
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")


SLM_SECTION: Dict[str, Any] = {"backend": "local", "model": str(MODEL), "context": 2048}


def slm_client() -> slmkit.OpenAI:
    """A drop-in on the small model only (no LLM tier: every call is the SLM's)."""
    return slmkit.OpenAI(slm=SLM_SECTION, cache={"enabled": False})


def slm_async() -> slmkit.AsyncOpenAI:
    return slmkit.AsyncOpenAI(slm=SLM_SECTION, cache={"enabled": False})


def llm_client(server: Server) -> slmkit.OpenAI:
    """A drop-in on the loopback server only (every call is the LLM's)."""
    return slmkit.OpenAI(base_url=server.base_url, api_key="sk-test", cache={"enabled": False})


def llm_async(server: Server) -> slmkit.AsyncOpenAI:
    return slmkit.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", cache={"enabled": False})


def tool_call(name: str, arguments: Dict[str, Any], call_id: str = "call_1") -> Dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def last_record(client: Any) -> Dict[str, Any]:
    records: List[Dict[str, Any]] = client.ledger.records()
    assert records, "the call left no ledger record"
    return records[-1]


def assert_served(client: Any, tier: str, calls: int = 1) -> None:
    """The client's ledger: at least ``calls`` answered calls, the last on ``tier``."""
    records = client.ledger.records()
    answered = [r for r in records if r["outcome"] == "ok"]
    assert len(answered) >= calls, records
    assert answered[-1]["tier"] == tier, records
