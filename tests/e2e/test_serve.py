"""`slmkit serve` end to end, driven by real clients: the `openai` Python package, LangChain's
`ChatOpenAI`, and the calls MetaGPT's `OpenAILLM` makes for the `config2.yaml` route.

Each session starts, as subprocesses on port 0: the loopback fake LLM (`slmkit-testserver`,
the LLM tier) and two `slmkit serve` processes whose SLM tier is the tiny local fixture model,
one open and one that requires a bearer token. All are killed when the session ends.
`run.sh` in this folder builds the binaries and runs this file.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import select
import signal
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import openai
import pytest
import yaml
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessageParam,
    ChatCompletionNamedToolChoiceParam,
    ChatCompletionToolParam,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
SLMKIT = TARGET / "debug" / "slmkit"
TESTSERVER = TARGET / "debug" / "slmkit-testserver"
MODEL = ROOT / "core" / "tests" / "fixtures" / "tiny-chatml.gguf"
METAGPT_CONFIG = ROOT / "examples" / "python" / "metagpt" / "config2.yaml"
SECRET = "e2e-serve-secret"

# The tool and JSON schema the Python binding's suite uses too.
ORDER_FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "order.json").read_text())
TOOLS: List[ChatCompletionToolParam] = ORDER_FIXTURE["tools"]
FORCE_GET_ORDER: ChatCompletionNamedToolChoiceParam = {"type": "function", "function": {"name": "get_order"}}


class Order(BaseModel):
    """The JSON-schema answer; `extra="forbid"` makes validation as strict as the schema."""

    model_config = ConfigDict(extra="forbid")
    order_id: int
    urgent: bool


class GetOrderArguments(BaseModel):
    """`get_order`'s parameters, as a validator for the tool call's arguments."""

    model_config = ConfigDict(extra="forbid")
    order_id: int = Field(ge=1, le=99999)


ORDER_SCHEMA = ORDER_FIXTURE["schema"]


# --- processes ------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: SIGTERM it if pytest itself dies (Linux PR_SET_PDEATHSIG), so no server
    outlives a killed run. The fixtures stop the servers in every other case."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Process:
    """A child process that prints its base URL on its first stdout line; stderr goes to a log."""

    def __init__(self, argv: List[str], log: Path) -> None:
        if not Path(argv[0]).exists():
            pytest.fail(f"{argv[0]} is missing: run tests/e2e/run.sh (it builds it)")
        self.log = log
        self._log_file = open(log, "w")
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log_file, text=True, preexec_fn=_die_with_parent
        )
        self.base_url = self._first_line(timeout=60)

    def _first_line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().strip() if ready else ""
        if not line:
            self.stop()
            pytest.fail(f"{self.process.args!r} printed no URL within {timeout}s:\n{self.log.read_text()}")
        # `slmkit serve` says "slmkit serve: listening on http://...": keep the URL.
        return line.split()[-1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log_file.close()


class FakeLlm(Process):
    """`slmkit-testserver`: scripted replies (`POST /_script`), echoes when the script is empty."""

    def _origin(self) -> str:
        return self.base_url[: -len("/v1")]

    def script(self, *behaviours: Dict[str, Any]) -> None:
        request = urllib.request.Request(
            self._origin() + "/_script",
            data=json.dumps(list(behaviours)).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=5).read()

    def requests(self) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(self._origin() + "/_requests", timeout=5) as response:
            received: List[Dict[str, Any]] = json.loads(response.read())
            return received


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="slmkit-e2e-") as directory:
        yield Path(directory)


@pytest.fixture(scope="session")
def llm(workdir: Path) -> Iterator[FakeLlm]:
    server = FakeLlm([str(TESTSERVER)], workdir / "testserver.log")
    try:
        yield server
    finally:
        server.stop()


def start_serve(workdir: Path, llm: FakeLlm, name: str, api_key: Optional[str]) -> Process:
    config = workdir / f"{name}.toml"
    lines = [
        "[slm]",
        'backend = "local"',
        f"model = {json.dumps(str(MODEL))}",
        "context = 2048",
        "",
        "[llm]",
        'backend = "remote"',
        f"base_url = {json.dumps(llm.base_url)}",
        'model = "big"',
        'api_key = "x"',
    ]
    if api_key is not None:
        lines += ["", "[server]", f"api_key = {json.dumps(api_key)}"]
    config.write_text("\n".join(lines) + "\n")
    return Process([str(SLMKIT), "serve", "--config", str(config), "--port", "0"], workdir / f"{name}.log")


@pytest.fixture(scope="session")
def serve(workdir: Path, llm: FakeLlm) -> Iterator[Process]:
    server = start_serve(workdir, llm, "open", api_key=None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def secured(workdir: Path, llm: FakeLlm) -> Iterator[Process]:
    server = start_serve(workdir, llm, "secured", api_key=SECRET)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own OpenAI / LangSmith settings must not leak into the clients under test.
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "LANGSMITH_TRACING"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGCHAIN_TRACING_V2", "false")


@pytest.fixture
def client(serve: Process) -> openai.OpenAI:
    # No client retries: a failure must show as the first answer's error, not a retried one.
    return openai.OpenAI(base_url=serve.base_url, api_key="sk-unused", max_retries=0, timeout=60)


def user(text: str) -> List[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def slmkit_info(response: Any) -> Dict[str, Any]:
    """slmkit's own `slmkit` field, which the openai models keep as an extra."""
    extra = response.model_extra or {}
    info: Dict[str, Any] = extra["slmkit"]
    return info


ROUTE_LLM = {"X-Slmkit-Route": "llm"}


# --- the openai package ---------------------------------------------------------------------


def test_plain_request_served_by_the_slm(client: openai.OpenAI, llm: FakeLlm) -> None:
    before = len(llm.requests())
    completion = client.chat.completions.create(
        model="gpt-4o", messages=user("Say hi to the plain e2e test"), max_tokens=16, seed=1
    )
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    # The tiny model's text is random (it may even stop at once); its shape is what counts.
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and 0 <= completion.usage.completion_tokens <= 16
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert slmkit_info(completion)["tier"] == "slm"
    assert len(llm.requests()) == before, "the SLM answered; the LLM tier saw nothing"


def test_route_header_reaches_the_llm_tier(client: openai.OpenAI, llm: FakeLlm) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=user("plain question for the big model"), extra_headers=ROUTE_LLM
    )
    assert completion.choices[0].message.content == "echo: plain question for the big model"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "big"
    info = slmkit_info(completion)
    assert info["tier"] == "llm"
    assert [attempt["tier"] for attempt in info["attempts"]] == ["llm"]
    last = llm.requests()[-1]["body"]
    assert last["model"] == "big"
    assert last["messages"][-1]["content"] == "plain question for the big model"


def test_route_hint_in_extra_body_reaches_the_llm_tier(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=user("routed by the body"), extra_body={"slmkit": {"route": "llm"}}
    )
    assert completion.choices[0].message.content == "echo: routed by the body"
    assert slmkit_info(completion)["tier"] == "llm"


def test_stream_with_usage_on_the_last_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=user("stream me a long enough answer please"),
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=ROUTE_LLM,
    )
    chunks = list(stream)
    assert len(chunks) >= 4, "role, several content pieces, finish, usage"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "echo: stream me a long enough answer please"
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 0
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_slm_stream_with_usage_matches_the_whole_answer(client: openai.OpenAI) -> None:
    params: Dict[str, Any] = dict(model="gpt-4o", messages=user("hi from the stream"), max_tokens=24, seed=5, temperature=0)
    whole = client.chat.completions.create(**params)
    # Asked as another caller (`user`): the same caller re-sending the request right after its
    # answer would be a re-ask, retried with a new seed, and would not match.
    chunks = list(
        client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}, user="streamer")
    )
    assert slmkit_info(chunks[0])["tier"] == "slm"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == (whole.usage.completion_tokens if whole.usage else None)


def test_stream_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="gpt-4o", messages=user("no usage"), stream=True, extra_headers=ROUTE_LLM)
    )
    assert chunks and all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_json_schema_answer_from_the_slm_parses_and_matches(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=user("Extract: order 1234 is urgent"),
        response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": ORDER_SCHEMA, "strict": True}},
        max_tokens=80,
        seed=3,
    )
    assert slmkit_info(completion)["tier"] == "slm"
    content = completion.choices[0].message.content
    assert content is not None
    order = Order.model_validate(json.loads(content))
    assert isinstance(order.order_id, int) and isinstance(order.urgent, bool)


def test_openai_parse_helper_gets_a_typed_object(client: openai.OpenAI) -> None:
    # `parse` builds the strict json_schema from the pydantic model and parses the answer.
    completion = client.chat.completions.parse(
        model="gpt-4o", messages=user("Extract: order 12 is not urgent"), response_format=Order, max_tokens=80, seed=1
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Order)
    assert slmkit_info(completion)["tier"] == "slm"


def test_forced_tool_call_from_the_slm_parses_and_validates(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o",
        messages=user("Where is order 1234?"),
        tools=TOOLS,
        tool_choice=FORCE_GET_ORDER,
        max_tokens=120,
        seed=1,
    )
    assert slmkit_info(completion)["tier"] == "slm"
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) >= 1
    call = calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_order"
    GetOrderArguments.model_validate(json.loads(call.function.arguments))


def test_streamed_tool_call_assembles_into_valid_arguments(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=user("Where is order 77?"),
        tools=TOOLS,
        tool_choice=FORCE_GET_ORDER,
        max_tokens=120,
        seed=1,
        stream=True,
        stream_options={"include_usage": True},
    )
    name, arguments, finish = "", "", None
    chunks = list(stream)
    for chunk in chunks:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.index == 0
            if delta.function is not None:
                name += delta.function.name or ""
                arguments += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_order" and finish == "tool_calls"
    GetOrderArguments.model_validate(json.loads(arguments))
    assert chunks[-1].usage is not None


def test_models_lists_both_tiers(client: openai.OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert set(models) == {"tiny-chatml", "big"}
    assert models["big"].owned_by == "slmkit-llm"


def test_errors_surface_as_openai_exceptions(client: openai.OpenAI, llm: FakeLlm) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="gpt-4o", messages=user("x"), temperature=9)
    assert bad.value.status_code == 400
    assert bad.value.param == "temperature"
    assert bad.value.type == "invalid_request_error"

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=user("x"), temperature=9, stream=True)

    # The LLM tier's final status passes through as the matching class.
    llm.script({"kind": "status", "status": 404})
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=user("to a missing model"), extra_headers=ROUTE_LLM)
    assert missing.value.status_code == 404

    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-route")


def test_server_api_key(secured: Process) -> None:
    wrong = openai.OpenAI(base_url=secured.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as denied:
        wrong.chat.completions.create(model="gpt-4o", messages=user("let me in"), extra_headers=ROUTE_LLM)
    assert denied.value.status_code == 401
    assert denied.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()

    right = openai.OpenAI(base_url=secured.base_url, api_key=SECRET, max_retries=0)
    completion = right.chat.completions.create(model="gpt-4o", messages=user("let me in"), extra_headers=ROUTE_LLM)
    assert completion.choices[0].message.content == "echo: let me in"


# --- LangChain ------------------------------------------------------------------------------


def test_langchain_chat_openai_one_call(serve: Process) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=serve.base_url,
        api_key=SecretStr("sk-unused"),
        model="gpt-4o",
        max_retries=0,
        default_headers=ROUTE_LLM,
    )
    answer = chat.invoke("hello from langchain")
    assert answer.content == "echo: hello from langchain"
    assert answer.usage_metadata is not None and answer.usage_metadata["total_tokens"] > 0


def test_langchain_structured_output_from_the_slm(serve: Process) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        base_url=serve.base_url,
        api_key=SecretStr("sk-unused"),
        model="gpt-4o",
        max_retries=0,
        max_tokens=80,  # type: ignore[call-arg]
        seed=2,
    )
    order = chat.with_structured_output(Order, method="json_schema").invoke("Extract: order 55 is urgent")
    assert isinstance(order, Order)


# --- MetaGPT's config2.yaml route -------------------------------------------------------------
# metagpt itself does not install here (see README.md in this folder), so these tests make the
# calls its `OpenAILLM` (metagpt/provider/openai_api.py, `api_type: open_llm`) makes, with the
# values from examples/python/metagpt/config2.yaml: AsyncOpenAI(api_key, base_url), then
# chat.completions.create(messages, max_tokens=4096, temperature, model, timeout[, stream=True]).

METAGPT_MAX_TOKEN = 4096  # LLMConfig.max_token's default


def metagpt_llm_config(serve: Process) -> Dict[str, Any]:
    config: Dict[str, Any] = yaml.safe_load(METAGPT_CONFIG.read_text())["llm"]
    assert config["api_type"] == "open_llm"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", config["base_url"]), config["base_url"]
    # Same host and path; the port is the one this test's server got.
    config["base_url"] = re.sub(r":\d+/v1$", ":" + serve.base_url.rsplit(":", 1)[1], config["base_url"])
    assert config["base_url"] == serve.base_url
    return config


async def metagpt_stream(
    config: Dict[str, Any], messages: List[ChatCompletionMessageParam], **extra: Any
) -> "tuple[str, Optional[CompletionUsage]]":
    """OpenAILLM._achat_completion_stream (MetaGPT 0.8.2), minus logging and cost tracking."""
    aclient = openai.AsyncOpenAI(api_key=config["api_key"], base_url=config["base_url"])
    try:
        response = await aclient.chat.completions.create(
            messages=messages,
            max_tokens=config.get("max_token", METAGPT_MAX_TOKEN),
            temperature=config["temperature"],
            model=config["model"],
            timeout=60,
            stream=True,
            **extra,
        )
        usage: Optional[CompletionUsage] = None
        collected: List[str] = []
        has_finished = False
        async for chunk in response:
            # A chunk without choices (the include_usage one) adds no text and no finish.
            chunk_message = (chunk.choices[0].delta.content or "") if chunk.choices else ""
            finish_reason = chunk.choices[0].finish_reason if chunk.choices else None
            collected.append(chunk_message)
            chunk_has_usage = chunk.usage
            if has_finished and chunk_has_usage:
                # "for oneapi, there has a usage chunk after finish_reason not none chunk"
                usage = chunk.usage
            if finish_reason:
                if chunk_has_usage:
                    usage = chunk.usage
                has_finished = True
        return "".join(collected), usage
    finally:
        await aclient.close()


MG_MESSAGES: List[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a Product Manager."},
    {"role": "user", "content": "Write a PRD for a snake game"},
]


def test_metagpt_config2_yaml_stream(serve: Process, llm: FakeLlm) -> None:
    config = metagpt_llm_config(serve)
    before = len(llm.requests())
    text, usage = asyncio.run(metagpt_stream(config, MG_MESSAGES))
    # The example's max_token (1024) fits the SLM's 2048-token window, and nothing in the call
    # asks for the LLM, so the local model answers (gibberish: random weights) and the LLM tier
    # is not asked at all.
    assert text and not text.startswith("echo:")
    assert len(llm.requests()) == before
    # Like OpenAI, the server sends usage only with stream_options.include_usage, which MetaGPT
    # does not set: MetaGPT then counts the tokens itself (its _calc_usage).
    assert usage is None


def test_metagpt_default_max_tokens_overflow_the_slm_window(serve: Process, llm: FakeLlm) -> None:
    # MetaGPT's own default (4096 output tokens) cannot fit the SLM's window: the router sends
    # the call to the LLM tier, which gets the conversation unchanged (and its own model name).
    config = {**metagpt_llm_config(serve), "max_token": METAGPT_MAX_TOKEN}
    text, _ = asyncio.run(metagpt_stream(config, MG_MESSAGES))
    assert text == "echo: Write a PRD for a snake game"
    received = llm.requests()[-1]["body"]
    assert received["messages"] == MG_MESSAGES and received["model"] == "big"


def test_metagpt_stream_loop_takes_usage_from_the_final_chunk(serve: Process) -> None:
    # Were include_usage set, MetaGPT's loop would find the usage after the finish chunk.
    config = metagpt_llm_config(serve)
    text, usage = asyncio.run(metagpt_stream(config, MG_MESSAGES, stream_options={"include_usage": True}))
    assert text
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_metagpt_config2_yaml_non_streamed(serve: Process) -> None:
    config = metagpt_llm_config(serve)

    async def acompletion() -> ChatCompletion:
        aclient = openai.AsyncOpenAI(api_key=config["api_key"], base_url=config["base_url"])
        try:
            return await aclient.chat.completions.create(
                messages=user("Summarize the code"),
                max_tokens=METAGPT_MAX_TOKEN,
                temperature=config["temperature"],
                model=config["model"],
                timeout=60,
            )
        finally:
            await aclient.close()

    rsp = asyncio.run(acompletion())
    # BaseLLM.get_choice_text and _update_costs read exactly these.
    assert rsp.choices[0].message.content == "echo: Summarize the code"
    assert rsp.usage is not None and rsp.usage.prompt_tokens > 0 and rsp.usage.completion_tokens > 0


def test_report_and_metrics_count_the_calls(serve: Process, client: openai.OpenAI) -> None:
    def report() -> Dict[str, Any]:
        with urllib.request.urlopen(serve.base_url + "/slmkit/report", timeout=5) as response:
            value: Dict[str, Any] = json.loads(response.read())
            return value

    before = report()
    client.chat.completions.create(model="gpt-4o", messages=user("counted on the slm"), max_tokens=8, seed=9)
    client.chat.completions.create(model="gpt-4o", messages=user("counted on the llm"), extra_headers=ROUTE_LLM)
    after = report()
    assert after["calls"] - before["calls"] == 2
    assert after["served_by_slm"] - before["served_by_slm"] == 1
    assert after["served_by_llm"] - before["served_by_llm"] == 1
    with urllib.request.urlopen(serve.base_url[: -len("/v1")] + "/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert f'slmkit_calls_total{{route="llm"}} {after["served_by_llm"]}' in metrics
