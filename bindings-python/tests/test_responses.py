"""The native client's Responses API methods (`respond`, `respond_async`, `respond_stream`,
`respond_stream_async`): JSON text in, the Response (or its events) as JSON out, checked by
the `openai` package's own Responses models."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

import slmkit
from slmkit import _slmkit
from conftest import TOOLS, Server, local_slm, remote_llm

EVENTS: TypeAdapter[ResponseStreamEvent] = TypeAdapter(ResponseStreamEvent)


def native(**sections: Any) -> _slmkit.NativeClient:
    return _slmkit.NativeClient(sections=json.dumps(sections))


def body(**fields: Any) -> str:
    return json.dumps(fields)


def check_events(texts: List[str]) -> Response:
    """Every event parses as openai's event type; sequence numbers count up from 0; the deltas
    add up to the final text. Returns the final response."""
    events = [EVENTS.validate_json(text) for text in texts]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[1].type == "response.in_progress"
    last = events[-1]
    assert last.type in ("response.completed", "response.incomplete")
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == last.response.output_text
    return last.response


def test_respond_on_the_llm_tier(server: Server) -> None:
    client = native(llm=remote_llm(server))
    response = Response.model_validate_json(client.respond(body(input="hello natively", instructions="be kind")))
    assert response.output_text == "echo: hello natively"
    assert response.status == "completed"
    assert response.usage is not None and response.usage.total_tokens > 0
    assert (response.model_extra or {})["slmkit"]["tier"] == "llm"
    records = json.loads(client.ledger_records())
    assert [record["tier"] for record in records] == ["llm"]


def test_respond_stream_yields_event_json(server: Server) -> None:
    client = native(llm=remote_llm(server))
    texts = list(client.respond_stream(body(input="stream natively", stream=True)))
    final = check_events(texts)
    assert final.output_text == "echo: stream natively"


def test_async_respond_and_stream(server: Server) -> None:
    client = native(llm=remote_llm(server))

    async def run() -> tuple[str, List[str]]:
        whole = await client.respond_async(body(input="async whole"))
        stream = await client.respond_stream_async(body(input="async stream", stream=True))
        return whole, [text async for text in stream]

    whole, texts = asyncio.run(run())
    assert Response.model_validate_json(whole).output_text == "echo: async whole"
    assert check_events(texts).output_text == "echo: async stream"


def test_forced_function_call_on_the_fixture_slm() -> None:
    client = native(slm=local_slm())
    function = TOOLS[0]["function"]
    tool: Dict[str, Any] = {"type": "function", **function}
    response = Response.model_validate_json(
        client.respond(
            body(
                input="Where is order 1234?",
                tools=[tool],
                tool_choice={"type": "function", "name": function["name"]},
                max_output_tokens=120,
            )
        )
    )
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) >= 1 and calls[0].name == function["name"]
    assert isinstance(json.loads(calls[0].arguments), dict)
    assert (response.model_extra or {})["slmkit"]["tier"] == "slm"


def test_refused_feature_is_a_bad_request() -> None:
    client = native(slm=local_slm())
    with pytest.raises(slmkit.BadRequestError) as raised:
        client.respond(body(input="hi", previous_response_id="resp_1"))
    assert "previous_response_id" in str(raised.value)
    with pytest.raises(slmkit.BadRequestError):
        client.respond_stream(body(input="hi", stream=True, tools=[{"type": "web_search"}]))
