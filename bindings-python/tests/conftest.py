"""Fixtures: the loopback OpenAI test server (a Rust binary) and the tiny fixture model."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
MODEL = ROOT / "core" / "tests" / "fixtures" / "tiny-chatml.gguf"

# The tool and JSON schema the e2e suites use too (`tests/e2e`).
ORDER_FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "order.json").read_text())
TOOLS: List[Dict[str, Any]] = ORDER_FIXTURE["tools"]
SCHEMA: Dict[str, Any] = ORDER_FIXTURE["schema"]


class Server:
    """The slmkit test server: scripted replies and faults, one behaviour per request."""

    def __init__(self, process: "subprocess.Popen[str]", base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    def _post(self, path: str, body: Any) -> None:
        request = urllib.request.Request(
            self.base_url.replace("/v1", path),
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=5).read()

    def script(self, *behaviours: Dict[str, Any]) -> None:
        self._post("/_script", list(behaviours))

    def requests(self) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(self.base_url.replace("/v1", "/_requests"), timeout=5) as response:
            received: List[Dict[str, Any]] = json.loads(response.read())
            return received


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    binary = TARGET / "debug" / "slmkit-testserver"
    if not binary.exists():
        pytest.fail(f"{binary} is missing: run `cargo build -p slmkit-testserver` (test.sh does)")
    process = subprocess.Popen([str(binary)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    yield Server(process, base_url)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own OpenAI settings must not add an LLM tier to the clients under test.
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "SLMKIT_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def local_slm(**overrides: Any) -> Dict[str, Any]:
    section: Dict[str, Any] = {"backend": "local", "model": str(MODEL), "context": 2048}
    section.update(overrides)
    return section


def remote_llm(server: Server) -> Dict[str, Any]:
    return {"backend": "remote", "base_url": server.base_url, "model": "test-model", "api_key": "sk-test"}


def user(text: str) -> List[Dict[str, Any]]:
    return [{"role": "user", "content": text}]
