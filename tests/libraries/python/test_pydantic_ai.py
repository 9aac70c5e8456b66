"""pydantic-ai ``Agent`` on ``OpenAIProvider(openai_client=slmkit.AsyncOpenAI(...))``: ``run``
with tools and ``output_type``, and ``run_stream``, on both tiers."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

import slmkit
from conftest import Server, assert_served, llm_async, slm_async, tool_call


class City(BaseModel):
    name: str
    population_millions: float


def model(client: slmkit.AsyncOpenAI) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(openai_client=client))


def test_run_with_tools_and_output_type_on_the_llm(server: Server) -> None:
    client = llm_async(server)
    looked_up = []
    agent = Agent(model(client), output_type=City)

    @agent.tool_plain
    def population(city: str) -> float:
        """The population of a city, in millions."""
        looked_up.append(city)
        return 2.1

    server.script(
        {"kind": "reply", "tool_calls": [tool_call("population", {"city": "Paris"})]},
        {"kind": "reply", "tool_calls": [tool_call("final_result", {"name": "Paris", "population_millions": 2.1}, "call_2")]},
    )
    result = agent.run_sync("How many people live in Paris?")
    assert result.output == City(name="Paris", population_millions=2.1)
    assert looked_up == ["Paris"]
    # The tool's answer went back to the model in the second request.
    second = server.requests()[-1]["body"]["messages"]
    assert any(m["role"] == "tool" and "2.1" in str(m["content"]) for m in second)
    assert_served(client, "llm", calls=2)


def test_run_stream_on_the_llm(server: Server) -> None:
    client = llm_async(server)
    agent = Agent(model(client))
    server.script({"kind": "reply", "content": "one two three"})

    async def run() -> str:
        async with agent.run_stream("Count to three") as result:
            return "".join([part async for part in result.stream_text(delta=True)])

    assert asyncio.run(run()) == "one two three"
    assert server.requests()[-1]["body"]["stream"] is True
    assert_served(client, "llm")


def test_run_with_output_type_and_run_stream_on_the_slm() -> None:
    client = slm_async()
    agent = Agent(model(client), output_type=City, model_settings={"max_tokens": 200})
    result = agent.run_sync("Paris has 2.1 million people.")
    assert isinstance(result.output, City) and isinstance(result.output.population_millions, float)
    assert_served(client, "slm")

    text_agent = Agent(model(client), model_settings={"max_tokens": 24})

    async def run() -> str:
        async with text_agent.run_stream("Say hi") as streamed:
            return await streamed.get_output()

    assert isinstance(asyncio.run(run()), str)
    assert_served(client, "slm", calls=2)
