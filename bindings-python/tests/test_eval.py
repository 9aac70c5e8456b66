"""``client.evaluate``: checkable tasks run through the client, judged and added up (the
core's ``slmkit eval``), on the tiny fixture model and the loopback server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest

import slmkit
from conftest import Server, local_slm, remote_llm

CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 6}},
    "required": ["city"],
    "additionalProperties": False,
}


def tasks() -> List[Dict[str, Any]]:
    def to_llm(text: str) -> Dict[str, Any]:
        return {
            "messages": [{"role": "user", "content": text}],
            "max_tokens": 16,
            "slmkit": {"route": "llm"},
        }

    labels = {"type": "label", "labels": ["alpha", "omega"], "expected": "alpha"}
    tool_request = {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 160,
        "temperature": 0,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    return [
        # First, so the scripted 400 is its answer.
        {"id": "fails", "kind": "classify", "request": to_llm("alpha?"), "check": labels},
        {"id": "right", "kind": "classify", "request": to_llm("say alpha"), "check": labels},
        {"id": "wrong", "kind": "classify", "request": to_llm("say omega"), "check": labels},
        {"id": "tool", "kind": "tool", "request": tool_request, "check": {"type": "tool_call", "name": "get_weather"}},
    ]


@pytest.fixture()
def client(server: Server) -> slmkit.OpenAI:
    return slmkit.OpenAI(
        slm=local_slm(slots=1), llm=remote_llm(server), retry={"llm_attempts": 1}, routing={"default": "slm"}
    )


def test_a_run_adds_up_per_kind_and_counts_a_failed_call_wrong(server: Server, client: slmkit.OpenAI) -> None:
    server.script({"kind": "status", "status": 400})
    result = client.evaluate(tasks())
    assert isinstance(result, slmkit.EvalResult)
    assert result["mode"] == "pipeline"
    by_id = {task["id"]: task for task in result["tasks"]}
    assert not by_id["fails"]["correct"]
    assert "400" in by_id["fails"]["error"] and by_id["fails"]["reason"].startswith("the call failed")
    assert by_id["right"]["correct"] and by_id["right"]["served_by"] == "llm"
    assert "none of the labels" in by_id["wrong"]["reason"] or "omega" in by_id["wrong"]["reason"]
    assert by_id["tool"]["correct"] and by_id["tool"]["slm_first_try"] and by_id["tool"]["attempts"] == 1
    classify = result["kinds"]["classify"]
    assert (classify["tasks"], classify["correct"], classify["errors"]) == (3, 1, 1)
    assert result["overall"]["correct"] == 2 and result["overall"]["accuracy"] == pytest.approx(0.5)
    assert result["overall"]["cost_usd"] > 0
    table = str(result)
    assert "classify" in table and "overall" in table and "fails [classify] line 1" in table


def test_bare_runs_the_slm_alone_once(server: Server, client: slmkit.OpenAI, tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(json.dumps(task) for task in tasks()) + "\n")
    before = len(server.requests())
    result = client.evaluate(path, bare=True)
    assert result["mode"] == "bare"
    assert all(task["attempts"] == 1 and task["served_by"] == "slm" for task in result["tasks"])
    assert result["overall"]["escalations"] == 0
    assert len(server.requests()) == before, "a bare run never reaches the LLM"


def test_bad_task_lines_name_the_line(client: slmkit.OpenAI, tmp_path: Path) -> None:
    bad = tasks()[:2]
    bad[1] = {**bad[1], "check": {"type": "fuzzy"}}
    with pytest.raises(slmkit.BadRequestError, match=r"line 2.*unknown check type \"fuzzy\""):
        client.evaluate(bad)
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(tasks()[0]) + "\n{not json\n")
    with pytest.raises(slmkit.BadRequestError, match=r"broken.jsonl line 2: not JSON"):
        client.evaluate(path)


def test_an_unreachable_endpoint_is_a_connection_error_before_the_run() -> None:
    client = slmkit.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test")
    with pytest.raises(slmkit.APIConnectionError, match="127.0.0.1:9"):
        client.evaluate(tasks()[1:2])


def test_async_client_evaluates_off_the_event_loop(server: Server) -> None:
    async def run() -> slmkit.EvalResult:
        client = slmkit.AsyncOpenAI(slm=local_slm(slots=1), llm=remote_llm(server), routing={"default": "slm"})
        return await client.evaluate(tasks()[3:])

    result = asyncio.run(run())
    assert result["overall"]["tasks"] == 1 and result["overall"]["correct"] == 1
