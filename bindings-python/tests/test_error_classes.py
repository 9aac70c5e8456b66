"""The cross-language error check: the failures in tests/fixtures/error_classes.json raise the
class the fixture names. The Node suite (test/error_classes.test.js) and slmkit serve's tests
(cli/tests/serve.rs) read the same file, so the three cannot drift apart."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

import slmkit

from conftest import ROOT, Server

CASES = json.loads((ROOT / "tests" / "fixtures" / "error_classes.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_each_failure_raises_the_shared_class(server: Server, case: Dict[str, Any]) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    if case["script"]:
        server.script(*case["script"])
    request: Dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "x"}], **case.get("request", {})}
    with pytest.raises(slmkit.APIError) as caught:
        client.chat.completions.create(**request)
    assert type(caught.value).__name__ == case["class"], caught.value
    assert caught.value.details["openai_class"] == case["class"]
