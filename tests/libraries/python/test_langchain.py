"""langchain-openai ``ChatOpenAI`` on the drop-in clients: ``invoke``, ``bind_tools().invoke``,
``with_structured_output``, on both tiers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

import slmkit
from conftest import SLM_SECTION, Server, assert_served, llm_async, llm_client, slm_async, slm_client, tool_call


class Person(BaseModel):
    name: str
    age: int


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def chat(sync: slmkit.OpenAI, async_: slmkit.AsyncOpenAI, **options: Any) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini",
        api_key="unused",
        client=sync.chat.completions,
        root_client=sync,
        async_client=async_.chat.completions,
        root_async_client=async_,
        **options,
    )


def test_invoke_tools_and_structured_output_on_the_llm(server: Server) -> None:
    sync, async_ = llm_client(server), llm_async(server)
    llm = chat(sync, async_)

    server.script({"kind": "reply", "content": "Hello from the LLM"})
    answer = llm.invoke("Say hello")
    assert isinstance(answer, AIMessage) and answer.content == "Hello from the LLM"
    assert answer.response_metadata["model_name"] is not None
    assert_served(sync, "llm")

    server.script({"kind": "reply", "tool_calls": [tool_call("get_weather", {"city": "Paris"})]})
    called = llm.bind_tools([get_weather]).invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in called.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert_served(sync, "llm", calls=2)

    server.script({"kind": "reply", "content": json.dumps({"name": "Ada", "age": 36})})
    person = llm.with_structured_output(Person).invoke("Ada is 36")
    assert person == Person(name="Ada", age=36)
    assert server.requests()[-1]["body"]["response_format"]["type"] == "json_schema"
    assert_served(sync, "llm", calls=3)

    server.script({"kind": "reply", "content": "async hello"})
    answer = asyncio.run(llm.ainvoke("Say hello"))
    assert answer.content == "async hello"
    assert_served(async_, "llm")


def test_invoke_tools_and_structured_output_on_the_slm() -> None:
    sync, async_ = slm_client(), slm_async()
    llm = chat(sync, async_, max_tokens=120)

    answer = llm.invoke("Say hello")
    assert isinstance(answer, AIMessage) and isinstance(answer.content, str)
    assert_served(sync, "slm")

    called = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert [c["name"] for c in called.tool_calls] == ["get_weather"]
    assert isinstance(called.tool_calls[0]["args"]["city"], str)
    assert_served(sync, "slm", calls=2)

    person = llm.with_structured_output(Person).invoke("Ada is 36")
    assert isinstance(person, Person) and isinstance(person.age, int)
    assert_served(sync, "slm", calls=3)

    streamed = "".join(str(chunk.content) for chunk in llm.stream("Count to three"))
    assert isinstance(streamed, str)
    assert_served(sync, "slm", calls=4)
    assert SLM_SECTION["backend"] == "local"
