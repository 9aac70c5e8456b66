"""Every exception class, raised by a real failure."""

from __future__ import annotations

import asyncio
import socket
import traceback
from typing import Any, Dict, List, Type

import openai
import pytest
from openai.types.chat import ChatCompletion

import slmkit
from conftest import MODEL, Server, local_slm, user

NO_RETRY = {"llm_attempts": 1, "initial_backoff_ms": 1}


@pytest.mark.parametrize(
    "status, cls",
    [
        (400, slmkit.BadRequestError),
        (401, slmkit.AuthenticationError),
        (403, slmkit.PermissionDeniedError),
        (404, slmkit.NotFoundError),
        (409, slmkit.ConflictError),
        (422, slmkit.UnprocessableEntityError),
        (429, slmkit.RateLimitError),
        (500, slmkit.InternalServerError),
        (503, slmkit.InternalServerError),
        (418, slmkit.APIStatusError),
    ],
)
def test_http_statuses_map_to_openai_classes(server: Server, status: int, cls: Type[slmkit.APIError]) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test", retry=NO_RETRY)
    server.script({"kind": "status", "status": status})
    with pytest.raises(cls) as caught:
        client.chat.completions.create(model="m", messages=user("x"))
    error = caught.value
    # slmkit's class and openai's of the same name at once.
    assert type(error).__name__ == cls.__name__
    assert isinstance(error, getattr(openai, cls.__name__)) and isinstance(error, openai.APIStatusError)
    assert isinstance(error, slmkit.APIStatusError) and isinstance(error, slmkit.APIError)
    assert error.response.status_code == status and error.response.headers["x-should-retry"] == "false"
    assert error.status_code == status
    assert isinstance(error.body, dict) and error.body["message"] == f"scripted error {status}"


def test_rate_limits_are_retried_then_raised_with_retry_after(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=1)
    server.script(*[{"kind": "status", "status": 429, "retry_after": "0"}] * 2)
    with pytest.raises(slmkit.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=user("x"))
    assert caught.value.retry_after == 0.0
    assert [r["outcome"] for r in client.ledger.records()] == ["error", "error"]


def test_unreachable_endpoint_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = slmkit.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
    with pytest.raises(slmkit.APIConnectionError) as caught:
        client.chat.completions.create(model="m", messages=user("x"))
    assert type(caught.value).__name__ == "APIConnectionError"
    assert isinstance(caught.value, openai.APIConnectionError)
    assert caught.value.causes, "the underlying cause is kept"


def test_slow_server_is_a_timeout(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=0.2)
    server.script({"kind": "reply", "delay_ms": 1500})
    with pytest.raises(slmkit.APITimeoutError):
        client.chat.completions.create(model="m", messages=user("x"))
    # A per-call timeout bounds the whole call.
    server.script({"kind": "reply", "delay_ms": 1500})
    relaxed = slmkit.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    with pytest.raises(slmkit.APITimeoutError):
        relaxed.chat.completions.create(model="m", messages=user("x"), timeout=0.2)


def test_malformed_answer_is_a_response_validation_error(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    server.script({"kind": "malformed_json"})
    with pytest.raises(slmkit.APIResponseValidationError):
        client.chat.completions.create(model="m", messages=user("x"))


def test_stream_cut_after_content_raises_mid_iteration(server: Server) -> None:
    client = slmkit.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
    server.script({"kind": "reply", "content": "a b c d e f", "cut_after_chunks": 3})
    received: List[Any] = []
    with pytest.raises(slmkit.APIError) as caught:
        for chunk in client.chat.completions.create(model="m", messages=user("x"), stream=True):
            received.append(chunk)
    assert received, "chunks before the break were delivered"
    assert caught.value.kind == "stream_interrupted"
    assert caught.value.__cause__ is not None


def test_missing_model_file_is_a_model_load_error(tmp_path: Any) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(slmkit.ModelLoadError) as caught:
        slmkit.OpenAI(slm=str(missing))
    assert caught.value.path == str(missing)
    not_gguf = tmp_path / "text.gguf"
    not_gguf.write_text("hello")
    with pytest.raises(slmkit.ModelLoadError):
        slmkit.OpenAI(slm={"backend": "local", "model": str(not_gguf)})


def test_oversize_prompt_is_a_context_length_error() -> None:
    client = slmkit.OpenAI(slm={"backend": "local", "model": str(MODEL), "context": 256})
    with pytest.raises(slmkit.ContextLengthError) as caught:
        client.chat.completions.create(model="slm", messages=user("word " * 400), max_tokens=16)
    error = caught.value
    assert isinstance(error, slmkit.BadRequestError) and error.status_code == 400
    assert error.context_window == 256 and (error.prompt_tokens or 0) > 256


def test_rejecting_validator_without_llm_is_a_validation_error() -> None:
    def never(request: Dict[str, Any], answer: slmkit.ChatCompletion) -> str:
        assert request["messages"][0]["content"] == "hi"
        return f"not good enough: {answer.choices[0].finish_reason}"

    client = slmkit.OpenAI(slm=local_slm(), validators=[never], retry={"slm_attempts": 3})
    with pytest.raises(slmkit.ValidationError) as caught:
        client.chat.completions.create(model="slm", messages=user("hi"), max_tokens=8, response_format={"type": "json_object"})
    error = caught.value
    assert error.status_code == 422
    # Every rejected answer is retried, up to slm_attempts (one cut off mid-JSON with a larger
    # budget); the Python validator judges the ones that parse.
    assert len(error.reasons) == 3
    assert all(r.startswith(("never: not good enough", "json: ")) for r in error.reasons)
    outcomes = [r["outcome"] for r in client.ledger.records()]
    assert outcomes == ["validation_failed"] * 3

    # Free text cut off by max_tokens that fails a check would fail it again at any length:
    # it is not retried unchanged, and with no LLM to escalate to the call ends at once.
    client = slmkit.OpenAI(slm=local_slm(), validators=[never], retry={"slm_attempts": 3})
    with pytest.raises(slmkit.ValidationError) as caught:
        client.chat.completions.create(model="slm", messages=user("hi"), max_tokens=8)
    reasons = caught.value.reasons
    assert reasons[0].startswith("never: not good enough")
    if "cut off by max_tokens" in reasons[0]:
        assert len(reasons) == 1, reasons
    else:  # the random model ended before max_tokens (rare): an ordinary retry follows
        assert len(reasons) > 1, reasons


def test_tiny_queue_is_an_overloaded_error() -> None:
    client = slmkit.AsyncOpenAI(slm=local_slm(slots=1, queue=1, context=512))

    async def burst() -> List[Any]:
        calls = [client.chat.completions.create(model="slm", messages=user(f"q{i}"), max_tokens=64) for i in range(12)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    overloaded = [r for r in results if isinstance(r, slmkit.OverloadedError)]
    assert overloaded, results
    assert overloaded[0].status_code == 503 and isinstance(overloaded[0], slmkit.InternalServerError)
    assert any(isinstance(r, ChatCompletion) for r in results)


class Boom(RuntimeError):
    pass


def test_a_raising_validator_surfaces_as_itself_with_traceback() -> None:
    def explode(request: Dict[str, Any], answer: slmkit.ChatCompletion) -> None:
        raise Boom("validator bug")

    client = slmkit.OpenAI(slm=local_slm(), validators=[explode])
    with pytest.raises(Boom, match="validator bug") as caught:
        client.chat.completions.create(model="slm", messages=user("hi"), max_tokens=4)
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert any(frame.name == "explode" for frame in frames)

    async_client = slmkit.AsyncOpenAI(slm=local_slm(), validators=[explode])
    with pytest.raises(Boom):
        asyncio.run(async_client.chat.completions.create(model="slm", messages=user("hi"), max_tokens=4))


def test_a_validator_returning_nonsense_is_a_type_error() -> None:
    client = slmkit.OpenAI(slm=local_slm(), validators=[lambda request, answer: 42])
    with pytest.raises(TypeError, match="returned 42"):
        client.chat.completions.create(model="slm", messages=user("hi"), max_tokens=4)


def test_wrong_keywords_and_values_are_clear() -> None:
    client = slmkit.OpenAI(slm=local_slm())
    # openai's own create() signature rejects an unknown keyword.
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_token'"):
        client.chat.completions.create(model="slm", messages=user("hi"), max_token=4)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="messages"):
        client.chat.completions.create(model="m")  # type: ignore[call-overload]
    with pytest.raises(slmkit.BadRequestError, match="temperature") as caught:
        client.chat.completions.create(model="slm", messages=user("hi"), temperature=5)
    assert caught.value.param == "temperature"
    with pytest.raises(TypeError, match="'retires'"):
        slmkit.OpenAI(slm=local_slm(), retires={})  # type: ignore[call-arg]
    with pytest.raises(slmkit.ConfigError, match="slm_atempts"):
        slmkit.OpenAI(slm=local_slm(), retry={"slm_atempts": 2})
    with pytest.raises(slmkit.ConfigError):
        slmkit.OpenAI()
