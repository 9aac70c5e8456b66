"""instructor ``from_openai``: TOOLS, JSON_SCHEMA and ``create_iterable``, on both tiers."""

from __future__ import annotations

import json
from typing import List

import instructor
import pytest
from pydantic import BaseModel

from conftest import Server, assert_served, llm_client, slm_client, tool_call

MESSAGES = [{"role": "user", "content": "Extract: Ada is 36 years old."}]


class Person(BaseModel):
    name: str
    age: int


def test_from_openai_takes_the_drop_in() -> None:
    client = slm_client()
    patched = instructor.from_openai(client)
    assert patched.client is client


@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA], ids=["tools", "json_schema"])
def test_structured_output_on_the_slm(mode: instructor.Mode) -> None:
    client = slm_client()
    person = instructor.from_openai(client, mode=mode).chat.completions.create(
        model="gpt-4o-mini", response_model=Person, messages=MESSAGES, max_tokens=120, max_retries=2
    )
    assert isinstance(person, Person) and isinstance(person.age, int)
    assert_served(client, "slm")


def test_structured_output_on_the_llm_tools(server: Server) -> None:
    client = llm_client(server)
    server.script({"kind": "reply", "tool_calls": [tool_call("Person", {"name": "Ada", "age": 36})]})
    person = instructor.from_openai(client, mode=instructor.Mode.TOOLS).chat.completions.create(
        model="gpt-4o-mini", response_model=Person, messages=MESSAGES
    )
    assert person.model_dump() == {"name": "Ada", "age": 36}
    assert_served(client, "llm")
    sent = server.requests()[-1]["body"]
    assert sent["tool_choice"]["function"]["name"] == "Person"


def test_structured_output_on_the_llm_json_schema(server: Server) -> None:
    client = llm_client(server)
    server.script({"kind": "reply", "content": json.dumps({"name": "Ada", "age": 36})})
    person = instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA).chat.completions.create(
        model="gpt-4o-mini", response_model=Person, messages=MESSAGES
    )
    assert person.model_dump() == {"name": "Ada", "age": 36}
    assert_served(client, "llm")


def test_create_iterable_on_the_llm(server: Server) -> None:
    # On the LLM only. The SLM's tool grammar resolves the iterable's `$defs` (core tests cover
    # instructor's nested schema), but instructor's iterable schema does not require `tasks`,
    # so the random-weight fixture may legally answer `{}`, which instructor then rejects.
    llm = llm_client(server)
    people = [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]
    server.script({"kind": "reply", "tool_calls": [tool_call("IterablePerson", {"tasks": people})]})
    found: List[Person] = list(
        instructor.from_openai(llm).chat.completions.create_iterable(
            model="gpt-4o-mini", response_model=Person, messages=MESSAGES
        )
    )
    assert [person.model_dump() for person in found] == people
    assert_served(llm, "llm")
