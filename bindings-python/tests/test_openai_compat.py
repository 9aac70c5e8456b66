"""Answers parse with the real openai package's models, for every kind of answer."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

import slmkit
from conftest import SCHEMA, TOOLS, Server, local_slm, remote_llm, user


def check_chunks(chunks: "list[slmkit.ChatCompletionChunk]") -> "list[ChatCompletionChunk]":
    parsed = [ChatCompletionChunk.model_validate(chunk.model_dump()) for chunk in chunks]
    for chunk in chunks:
        ChatCompletionChunk.model_validate_json(chunk.model_dump_json())
    return parsed


def test_plain_remote_answer_parses(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test")
    server.script({"kind": "reply", "content": "hello back", "prompt_tokens": 7, "completion_tokens": 2})
    resp = client.chat.completions.create(model="gpt-4o-mini", messages=user("hello"), temperature=0)
    assert resp.choices[0].message.content == "hello back"
    assert resp.usage is not None and resp.usage.prompt_tokens == 7
    assert resp.slmkit is not None and resp.slmkit["tier"] == "llm"
    parsed = ChatCompletion.model_validate(resp.model_dump())
    assert parsed.choices[0].message.content == "hello back"
    assert ChatCompletion.model_validate_json(resp.model_dump_json()).usage.total_tokens == 9  # type: ignore[union-attr]
    # The request reached the server as the openai client would send it, model included.
    assert server.requests()[-1]["body"]["model"] == "gpt-4o-mini"


def test_streamed_remote_answer_parses_with_usage(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test")
    server.script({"kind": "reply", "content": "one two three", "prompt_tokens": 5, "completion_tokens": 3})
    chunks = list(
        client.chat.completions.create(
            model="m", messages=user("count"), stream=True, stream_options={"include_usage": True}
        )
    )
    parsed = check_chunks(chunks)
    text = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
    assert text == "one two three"
    assert parsed[-1].choices == [] and parsed[-1].usage is not None and parsed[-1].usage.completion_tokens == 3
    # Without include_usage there is no usage chunk.
    chunks = list(client.chat.completions.create(model="m", messages=user("count"), stream=True))
    assert all(chunk.usage is None for chunk in chunks)


def test_remote_tool_call_parses(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test")
    call = {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": 12}'}}
    server.script({"kind": "reply", "tool_calls": [call]})
    resp = client.chat.completions.create(model="m", messages=user("where is 12"), tools=TOOLS)
    assert resp.choices[0].message.tool_calls is not None
    assert resp.choices[0].message.tool_calls[0].function.arguments == '{"order_id": 12}'
    assert ChatCompletion.model_validate(resp.model_dump()).choices[0].finish_reason == "tool_calls"


@pytest.fixture(scope="module")
def local() -> slmkit.OpenAI:
    return slmkit.OpenAI(slm=local_slm())


def test_local_json_schema_answer_parses(local: slmkit.OpenAI) -> None:
    resp = local.chat.completions.create(
        model="any",
        messages=user("Order 1234 is late"),
        response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": SCHEMA, "strict": True}},
        max_tokens=80,
        seed=3,
    )
    parsed = ChatCompletion.model_validate(resp.model_dump())
    content = json.loads(parsed.choices[0].message.content or "")
    assert set(content) == {"order_id", "urgent"}
    assert resp.slmkit is not None and resp.slmkit["tier"] == "slm"


def test_local_forced_tool_call_parses(local: slmkit.OpenAI) -> None:
    for tool_choice in ("required", {"type": "function", "function": {"name": "get_order"}}):
        resp = local.chat.completions.create(
            model="slm",
            messages=user("Where is order 1234?"), tools=TOOLS, tool_choice=tool_choice, max_tokens=120, seed=1
        )
        parsed = ChatCompletion.model_validate(resp.model_dump())
        calls = parsed.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_order"  # type: ignore[union-attr]
        assert "order_id" in json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
        assert parsed.choices[0].finish_reason == "tool_calls"


def test_local_stream_parses_and_matches(local: slmkit.OpenAI) -> None:
    whole = local.chat.completions.create(model="slm", messages=user("hi"), max_tokens=24, seed=5, temperature=0)
    chunks = list(
        local.chat.completions.create(
            model="slm",
            # Another caller (`user`): the same caller re-sending the request at once would be a
            # re-ask, retried with a new seed, so it would not match.
            messages=user("hi"),
            max_tokens=24,
            seed=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
            user="stream-check",
        )
    )
    parsed = check_chunks(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == whole.choices[0].message.content
    assert parsed[-1].usage is not None
    assert chunks[0].slmkit is not None and chunks[0].slmkit["tier"] == "slm"

    streamed_call = list(
        local.chat.completions.create(
            model="slm",
            messages=user("Where is order 1234?"), tools=TOOLS, tool_choice="required", max_tokens=120, seed=2, stream=True
        )
    )
    deltas = [d for c in check_chunks(streamed_call) for ch in c.choices for d in (ch.delta.tool_calls or [])]
    assert deltas and deltas[0].function is not None and deltas[0].function.name == "get_order"


def test_the_official_client_and_slmkit_agree_on_the_same_server(server: Server) -> None:
    official = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    ours = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    a = official.chat.completions.create(model="m", messages=[{"role": "user", "content": "same"}])
    b = ours.chat.completions.create(model="m", messages=[{"role": "user", "content": "same"}])
    assert a.choices[0].message.content == b.choices[0].message.content == "echo: same"
    assert a.model_dump(exclude_none=True)["choices"] == b.model_dump(exclude_none=True)["choices"]


def test_openai_message_objects_and_sentinels_are_accepted(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test")
    first = client.chat.completions.create(model="m", messages=user("one"), temperature=openai.NOT_GIVEN)
    # Appending the returned message, as agent loops do, works like with openai.
    history = [*user("one"), first.choices[0].message, *user("two")]
    second = client.chat.completions.create(model="m", messages=history, top_p=openai.omit)
    assert second.choices[0].message.content == "echo: two"
    sent = server.requests()[-1]["body"]["messages"][1]
    # openai sends the message object as it dumps it (unset fields as null).
    assert {key: value for key, value in sent.items() if value is not None} == {"role": "assistant", "content": "echo: one"}
