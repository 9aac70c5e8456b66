"""slmkit: a drop-in for the OpenAI client that sends routine calls to an in-process small
model, checks its answers, retries or escalates to a large model, and accounts for every
attempt.

    from slmkit import OpenAI            # was: from openai import OpenAI
    client = OpenAI(slm="qwen2.5-1.5b-instruct-q8_0.gguf")
    resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

``OpenAI`` and ``AsyncOpenAI`` are ``openai.OpenAI`` / ``openai.AsyncOpenAI`` instances whose
HTTP layer answers in-process, so any library that takes an openai client takes them.
``client.ledger.report()`` says what it cost, net of retries; ``client.explain(...)`` says
where a call would go. ``slmkit.native.Client`` is the low-level client.

``import slmkit`` does not import ``openai`` or ``httpx``: they load when ``slmkit.OpenAI``,
``slmkit.AsyncOpenAI``, ``slmkit.Stream`` or ``slmkit.AsyncStream`` is first used.
"""

from typing import TYPE_CHECKING, Any

from ._client import EvalResult, Ledger, Report, Validator
from ._exceptions import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    APIUserAbortError,
    AuthenticationError,
    BadRequestError,
    ConfigError,
    ConflictError,
    ContextLengthError,
    InternalServerError,
    ModelFetchError,
    ModelLoadError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    UnprocessableEntityError,
    ValidationError,
    ValidatorError,
)
from ._slmkit import __version__
from .types import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    from openai import AsyncStream, Stream

    from ._dropin import AsyncOpenAI, OpenAI

_LAZY = {
    "OpenAI": ("slmkit._dropin", "OpenAI"),
    "AsyncOpenAI": ("slmkit._dropin", "AsyncOpenAI"),
    "Stream": ("openai", "Stream"),
    "AsyncStream": ("openai", "AsyncStream"),
}


def __getattr__(name: str) -> Any:
    """The drop-in clients (and openai's stream classes), imported on first use."""
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    if name == "native":
        import importlib

        return importlib.import_module("slmkit.native")
    raise AttributeError(f"module 'slmkit' has no attribute {name!r}")

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "APIUserAbortError",
    "AsyncOpenAI",
    "AsyncStream",
    "AuthenticationError",
    "BadRequestError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ConfigError",
    "ConflictError",
    "ContextLengthError",
    "InternalServerError",
    "EvalResult",
    "Ledger",
    "ModelFetchError",
    "ModelLoadError",
    "NotFoundError",
    "OpenAI",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "Report",
    "Stream",
    "UnprocessableEntityError",
    "ValidationError",
    "Validator",
    "ValidatorError",
    "__version__",
]
