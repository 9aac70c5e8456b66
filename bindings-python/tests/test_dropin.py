"""``slmkit.OpenAI`` *is* an ``openai.OpenAI``: what openai's client does works over the
in-process transport, and slmkit's errors arrive as openai's classes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any, List

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

import slmkit
import slmkit.native
from conftest import MODEL, Server, local_slm, user


class Order(BaseModel):
    order_id: int
    urgent: bool


def test_import_slmkit_does_not_import_openai_or_httpx() -> None:
    code = "import sys, slmkit; print(sorted(m for m in ('openai', 'httpx', 'httpx2') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    code = "import sys, slmkit; slmkit.OpenAI; print('openai' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_the_clients_are_openais_with_its_attributes(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test", timeout=30)
    assert isinstance(client, openai.OpenAI)
    assert isinstance(slmkit.AsyncOpenAI(base_url=server.base_url, api_key="sk-test"), openai.AsyncOpenAI)
    assert client.api_key == "sk-test" and str(client.base_url) == server.base_url + "/"
    assert client.max_retries == 0 and client.timeout == 30
    # Without a key anywhere openai's constructor would refuse; the transport needs none.
    assert slmkit.OpenAI(slm=local_slm()).api_key == "slmkit-in-process"
    answer = client.chat.completions.create(model="m", messages=user("hi"))
    assert isinstance(answer, ChatCompletion) and answer.choices[0].message.content == "echo: hi"
    assert answer.slmkit["tier"] == "llm"  # type: ignore[attr-defined]
    assert client.ledger.records()[-1]["outcome"] == "ok"
    assert client.explain(messages=user("hi"))["tier"] == "llm"


def test_copy_and_with_options_share_the_engine_and_ledger(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test", retry={"llm_attempts": 1})
    copied = client.with_options(timeout=5, max_retries=3)
    assert isinstance(copied, slmkit.OpenAI) and copied.timeout == 5 and copied.max_retries == 3
    assert client.copy().ledger is not None
    # A 500 is not re-sent by openai even with max_retries=3: slmkit already retried it.
    server.script({"kind": "status", "status": 500})
    with pytest.raises(openai.InternalServerError):
        copied.chat.completions.create(model="m", messages=user("once"))
    assert sum(1 for r in server.requests() if r["body"]["messages"] == user("once")) == 1
    copied.chat.completions.create(model="m", messages=user("shared"))
    assert [r["outcome"] for r in client.ledger.records()][-2:] == ["error", "ok"]


def test_raw_and_streaming_responses(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test")
    raw = client.chat.completions.with_raw_response.create(model="m", messages=user("raw"))
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    assert raw.parse().choices[0].message.content == "echo: raw"
    with client.chat.completions.with_streaming_response.create(model="m", messages=user("s")) as response:
        assert json.loads(response.read())["choices"][0]["message"]["content"] == "echo: s"
    with client.chat.completions.with_streaming_response.create(model="m", messages=user("a b"), stream=True) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    chunks = [ChatCompletionChunk.model_validate_json(line[6:]) for line in lines[:-1]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b"


def test_models_list_names_the_tiers(server: Server) -> None:
    client = slmkit.OpenAI(slm=local_slm(), llm={"backend": "remote", "base_url": server.base_url, "model": "big-model"})
    models = {model.id: model.owned_by for model in client.models.list()}
    assert models == {MODEL.stem: "slmkit-slm", "big-model": "slmkit-llm"}
    assert client.models.retrieve("big-model").owned_by == "slmkit-llm"
    with pytest.raises(openai.NotFoundError, match="no configured tier"):
        client.models.retrieve("nope")


def test_parse_and_structured_streams_on_the_slm() -> None:
    client = slmkit.OpenAI(slm=local_slm())
    parsed = client.chat.completions.parse(model="slm", messages=user("Order 12 is late"), response_format=Order, max_tokens=80)
    order = parsed.choices[0].message.parsed
    assert isinstance(order, Order) and isinstance(order.order_id, int)
    with client.chat.completions.stream(model="slm", messages=user("Order 12"), response_format=Order, max_tokens=80) as stream:
        final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Order)
    if hasattr(client.beta, "chat"):
        again = client.beta.chat.completions.parse(model="slm", messages=user("Order 7"), response_format=Order, max_tokens=80)
        assert isinstance(again.choices[0].message.parsed, Order)
    # create() with a pydantic class is openai's own TypeError, pointing at parse().
    with pytest.raises(TypeError, match="parse"):
        client.chat.completions.create(model="slm", messages=user("x"), response_format=Order)  # type: ignore[arg-type]
    assert [r["tier"] for r in client.ledger.records()].count("slm") >= 2


def test_errors_are_openais_classes_with_slmkit_details(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=user("x"), temperature=9)
    error = caught.value
    assert isinstance(error, slmkit.BadRequestError) and isinstance(error, openai.APIStatusError)
    assert error.status_code == 400 and error.response.status_code == 400
    assert isinstance(error.body, dict) and error.body["param"] == "temperature"
    assert error.body["slmkit"]["openai_class"] == "BadRequestError"
    assert error.kind == "invalid_request" and error.details["param"] == "temperature"  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=user("x"), frequency_penalty=3)
    assert caught.value.body["param"] == "frequency_penalty"  # type: ignore[index]
    # The async client raises the same classes.
    aclient = slmkit.AsyncOpenAI(base_url=server.base_url, api_key="sk-test")
    with pytest.raises(openai.BadRequestError):
        asyncio.run(aclient.chat.completions.create(model="m", messages=user("x"), top_p=5))


def test_a_stream_broken_midway_raises_an_openai_class(server: Server) -> None:
    client = slmkit.AsyncOpenAI(base_url=server.base_url, api_key="k")
    server.script({"kind": "reply", "content": "a b c d e f", "cut_after_chunks": 3})

    async def run() -> List[Any]:
        received: List[Any] = []
        stream = await client.chat.completions.create(model="m", messages=user("x"), stream=True)
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                received.append(chunk)
        assert isinstance(caught.value, slmkit.APIError) and caught.value.kind == "stream_interrupted"
        return received

    assert asyncio.run(run())


def test_responses_whole_and_streamed_and_unknown_routes(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="k")
    server.script({"kind": "reply", "content": "hello from the LLM"})
    response = client.responses.create(model="m", input="hi", instructions="be brief")
    assert response.output_text == "hello from the LLM"
    assert client.ledger.records()[-1]["tier"] == "llm"
    server.script({"kind": "reply", "content": "one two"})
    with client.responses.stream(model="m", input="count") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "one two" and final.output_text == "one two"
    with pytest.raises(openai.NotFoundError, match="embeddings"):
        client.embeddings.create(model="m", input="hi")


def test_the_native_client_stays_available(server: Server) -> None:
    native = slmkit.native.Client(base_url=server.base_url, api_key="k")
    answer = native.chat.completions.create(model="m", messages=user("low level"))
    assert isinstance(answer, slmkit.ChatCompletion) and answer.choices[0].message.content == "echo: low level"
    with pytest.raises(slmkit.BadRequestError) as caught:
        native.chat.completions.create(model="m", messages=user("x"), temperature=9)
    assert not isinstance(caught.value, openai.APIError)
