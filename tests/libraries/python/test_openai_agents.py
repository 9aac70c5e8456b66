"""openai-agents ``Runner.run`` with ``OpenAIChatCompletionsModel`` on both tiers, and with the
Responses model."""

from __future__ import annotations

from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner, function_tool
from pydantic import BaseModel

import slmkit
from conftest import Server, assert_served, llm_async, slm_async, tool_call


class Forecast(BaseModel):
    city: str
    sunny: bool


class Verdict(BaseModel):
    sunny: bool


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def chat_model(client: slmkit.AsyncOpenAI) -> OpenAIChatCompletionsModel:
    return OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)


def test_runner_with_a_tool_on_the_llm(server: Server) -> None:
    client = llm_async(server)
    agent = Agent(name="weather", instructions="Answer about weather.", model=chat_model(client), tools=[get_weather])
    server.script(
        {"kind": "reply", "tool_calls": [tool_call("get_weather", {"city": "Paris"})]},
        {"kind": "reply", "content": "It is sunny in Paris."},
    )
    result = Runner.run_sync(agent, "Weather in Paris?")
    assert result.final_output == "It is sunny in Paris."
    second = server.requests()[-1]["body"]["messages"]
    assert any(m["role"] == "tool" and m["content"] == "sunny in Paris" for m in second)
    assert_served(client, "llm", calls=2)


def test_runner_with_output_type_on_the_slm() -> None:
    client = slm_async()
    agent = Agent(name="forecast", instructions="Give the forecast.", model=chat_model(client), output_type=Forecast)
    result = Runner.run_sync(agent, "Paris: sunny", max_turns=2)
    assert isinstance(result.final_output, Forecast) and isinstance(result.final_output.sunny, bool)
    assert_served(client, "slm")


def test_runner_with_the_responses_model_on_both_tiers(server: Server) -> None:
    client = llm_async(server)
    agent = Agent(
        name="weather",
        instructions="Answer about weather.",
        model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client),
        tools=[get_weather],
    )
    server.script(
        {"kind": "reply", "tool_calls": [tool_call("get_weather", {"city": "Paris"})]},
        {"kind": "reply", "content": "It is sunny in Paris."},
    )
    result = Runner.run_sync(agent, "Weather in Paris?")
    assert result.final_output == "It is sunny in Paris."
    # The Responses input was mapped onto the chat call: the tool's output reached the LLM.
    second = server.requests()[-1]["body"]["messages"]
    assert any(m["role"] == "tool" and m["content"] == "sunny in Paris" for m in second)
    assert_served(client, "llm", calls=2)

    # On the SLM, a structured output (text.format json_schema, held by the grammar): free
    # text from the random fixture model can run into max_tokens, which the SDK refuses.
    slm = slm_async()
    judge = Agent(
        name="judge",
        model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=slm),
        output_type=Verdict,
        model_settings=ModelSettings(max_tokens=200),
    )
    verdict = Runner.run_sync(judge, "Is it sunny in Paris?")
    assert isinstance(verdict.final_output, Verdict)
    assert_served(slm, "slm")
