"""slmkit: a drop-in for the OpenAI client that sends routine calls to an in-process small
model, checks its answers, retries or escalates to a large model, and accounts for every
attempt.

    from slmkit import OpenAI            # was: from openai import OpenAI
    client = OpenAI(slm="qwen2.5-1.5b-instruct-q8_0.gguf")
    resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

``client.ledger.report()`` says what it cost, net of retries; ``client.explain(...)`` says
where a call would go.
"""

from ._client import AsyncOpenAI, AsyncStream, EvalResult, Ledger, OpenAI, Report, Stream, Validator
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
