"""llama-index's ``OpenAI`` LLM on ``openai_client=slmkit.OpenAI(...)``: chat, completion,
streaming, tool calls and ``structured_predict``, on both tiers."""

from __future__ import annotations

import asyncio
import json

from llama_index.core.llms import ChatMessage
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from llama_index.llms.openai import OpenAI as LlamaOpenAI
from pydantic import BaseModel

import slmkit
from conftest import Server, assert_served, llm_async, llm_client, slm_async, slm_client, tool_call


class Person(BaseModel):
    name: str
    age: int


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def llm(sync: slmkit.OpenAI, async_: slmkit.AsyncOpenAI, **options: object) -> LlamaOpenAI:
    return LlamaOpenAI(model="gpt-4o-mini", api_key="unused", openai_client=sync, async_openai_client=async_, **options)


def test_chat_stream_tools_and_structured_on_the_llm(server: Server) -> None:
    sync, async_ = llm_client(server), llm_async(server)
    model = llm(sync, async_)

    server.script({"kind": "reply", "content": "Bonjour"})
    answer = model.chat([ChatMessage(role="user", content="Say hello in French")])
    assert answer.message.content == "Bonjour"
    assert_served(sync, "llm")

    server.script({"kind": "reply", "content": "one two three"})
    assert "".join(part.delta or "" for part in model.stream_complete("Count")) == "one two three"
    assert_served(sync, "llm", calls=2)

    server.script({"kind": "reply", "tool_calls": [tool_call("get_weather", {"city": "Paris"})]})
    response = model.chat_with_tools([FunctionTool.from_defaults(fn=get_weather)], user_msg="Weather in Paris?")
    calls = model.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert_served(sync, "llm", calls=3)

    # llama-index asks gpt-4o-class models for structured output through response_format.
    server.script({"kind": "reply", "content": json.dumps({"name": "Ada", "age": 36})})
    person = model.structured_predict(Person, PromptTemplate("Extract: {text}"), text="Ada is 36")
    assert person == Person(name="Ada", age=36)
    assert server.requests()[-1]["body"]["response_format"]["type"] == "json_schema"
    assert_served(sync, "llm", calls=4)

    server.script({"kind": "reply", "content": "async hi"})
    achat = asyncio.run(model.achat([ChatMessage(role="user", content="hi")]))
    assert achat.message.content == "async hi"
    assert_served(async_, "llm")


def test_chat_and_structured_on_the_slm() -> None:
    sync, async_ = slm_client(), slm_async()
    model = llm(sync, async_, max_tokens=120)

    answer = model.complete("Say hello")
    assert isinstance(answer.text, str)
    assert_served(sync, "slm")

    person = model.structured_predict(Person, PromptTemplate("Extract: {text}"), text="Ada is 36")
    assert isinstance(person, Person) and isinstance(person.age, int)
    assert_served(sync, "slm", calls=2)
