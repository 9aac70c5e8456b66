"""slmkit.models.resolve and model references in OpenAI(slm=...), against a loopback file server."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

import slmkit
from slmkit.models import resolve

from conftest import MODEL

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Files(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path != "/files/model.gguf":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def files() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/files"
    server.shutdown()


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("SLMKIT_OFFLINE", raising=False)
    return tmp_path


def test_a_url_is_downloaded_into_the_cache_with_progress(files: str, cache: Path) -> None:
    seen: List[Tuple[str, int, Optional[int]]] = []
    path = resolve(f"{files}/model.gguf", progress=lambda *args: seen.append(args))
    assert Path(path).read_bytes() == PAYLOAD
    assert Path(path).is_relative_to(cache) and path.endswith("snapshots/main/model.gguf")
    assert seen[-1] == ("model.gguf", len(PAYLOAD), len(PAYLOAD))
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == hashlib.sha256(PAYLOAD).hexdigest()
    assert resolve(f"{files}/model.gguf") == path


def test_failures_are_model_fetch_errors(files: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(slmkit.ModelFetchError) as missing:
        resolve(f"{files}/nothing.gguf")
    assert "not found at" in str(missing.value) and missing.value.kind == "model_fetch"
    assert missing.value.reference == f"{files}/nothing.gguf"
    monkeypatch.setenv("SLMKIT_OFFLINE", "1")
    with pytest.raises(slmkit.ModelFetchError, match="run: slmkit pull hf:org/repo/m.gguf"):
        resolve("hf:org/repo/m.gguf")
    with pytest.raises(slmkit.ModelLoadError, match="smollm2-135m-instruct"):
        resolve("no-such-model")


def test_a_path_resolves_to_itself_and_slm_takes_references(files: str, cache: Path) -> None:
    assert resolve(str(MODEL)) == str(MODEL)
    # A URL to a .gguf file is a model to download, not an endpoint; it is not a real model,
    # so loading fails after the download, which shows the reference was resolved.
    with pytest.raises(slmkit.ModelLoadError) as failed:
        slmkit.OpenAI(slm=f"{files}/model.gguf")
    assert str(cache) in str(failed.value)
