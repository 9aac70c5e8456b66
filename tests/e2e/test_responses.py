"""`POST /v1/responses` on `slmkit serve`, driven by the `openai` package's own Responses
client (`responses.create`, `responses.parse`, `responses.stream`, `create(stream=True)`).
The processes are test_serve.py's: the fake LLM and an open `slmkit serve` whose SLM tier is
the tiny fixture model."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import openai
import pytest

# The session's processes and helpers, shared with test_serve.py.
from test_serve import (  # noqa: F401  (fixtures are used by name)
    ORDER_FIXTURE,
    ROUTE_LLM,
    FakeLlm,
    GetOrderArguments,
    Order,
    Process,
    clean_environment,
    client,
    llm,
    serve,
    slmkit_info,
    workdir,
)

GET_ORDER = ORDER_FIXTURE["tools"][0]["function"]
# The Responses API's flat function tool.
TOOLS: List[Dict[str, Any]] = [{"type": "function", **GET_ORDER}]


def test_create_on_both_tiers(client: openai.OpenAI) -> None:
    routed = client.responses.create(model="gpt-4o", input="Say hi to the responses test", extra_headers=ROUTE_LLM)
    assert routed.output_text == "echo: Say hi to the responses test"
    assert routed.status == "completed" and routed.id.startswith("resp_")
    assert routed.usage is not None and routed.usage.total_tokens > 0
    assert slmkit_info(routed)["tier"] == "llm"

    local = client.responses.create(model="gpt-4o", input="Say hi", instructions="Be brief.", max_output_tokens=16)
    assert slmkit_info(local)["tier"] == "slm"
    assert local.status in ("completed", "incomplete")
    assert isinstance(local.output_text, str)


def test_function_call_and_its_output_sent_back(client: openai.OpenAI, llm: FakeLlm) -> None:
    first = client.responses.create(
        model="gpt-4o",
        input="Where is order 1234?",
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "name": "get_order"},
        max_output_tokens=120,
    )
    assert slmkit_info(first)["tier"] == "slm"
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) >= 1 and calls[0].name == "get_order" and calls[0].call_id
    GetOrderArguments.model_validate(json.loads(calls[0].arguments))

    before = len(llm.requests())
    second = client.responses.create(
        model="gpt-4o",
        input=[
            {"role": "user", "content": "Where is order 1234?"},
            *[item.model_dump(exclude_none=True) for item in first.output],  # type: ignore[misc]
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "shipped on Monday"},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
        extra_headers=ROUTE_LLM,
    )
    assert second.output_text.startswith("echo:")
    sent = llm.requests()[before]["body"]["messages"]
    assert sent[1]["role"] == "assistant" and sent[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert sent[2] == {"role": "tool", "content": "shipped on Monday", "tool_call_id": calls[0].call_id}


def test_parse_gets_a_typed_object_from_a_json_schema(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(
        model="gpt-4o", input="Extract: order 12 is not urgent", text_format=Order, max_output_tokens=80
    )
    assert isinstance(parsed.output_parsed, Order)
    assert slmkit_info(parsed)["tier"] == "slm"


def test_streams_through_both_helpers(client: openai.OpenAI) -> None:
    with client.responses.stream(model="gpt-4o", input="stream through the helper", extra_headers=ROUTE_LLM) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "echo: stream through the helper"
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.completed"

    events = list(client.responses.create(model="gpt-4o", input="stream raw", stream=True, extra_headers=ROUTE_LLM))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == "echo: stream raw"
    completed = events[-1]
    assert completed.type == "response.completed" and completed.response.output_text == text
    assert completed.response.usage is not None

    tool_events = list(
        client.responses.create(
            model="gpt-4o",
            input="Where is order 77?",
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice="required",
            max_output_tokens=120,
            stream=True,
        )
    )
    done = [event for event in tool_events if event.type == "response.function_call_arguments.done"]
    assert done, [event.type for event in tool_events]
    GetOrderArguments.model_validate(json.loads(done[0].arguments))


def test_unsupported_features_are_bad_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="gpt-4o", input="hi", previous_response_id="resp_123")
    assert "previous_response_id" in raised.value.message
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="gpt-4o", input="hi", tools=[{"type": "web_search"}])
    body = raised.value.body
    assert isinstance(body, dict) and body["param"] == "tools[0].type"
