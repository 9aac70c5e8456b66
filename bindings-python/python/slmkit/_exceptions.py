"""Exceptions, named and nested like the ``openai`` package's, plus slmkit's own.

Every error a client raises is an :class:`APIError` with ``status_code`` (the HTTP status an
OpenAI-compatible server would answer with), ``kind`` (slmkit's stable error kind, e.g.
``rate_limit``), ``message`` and ``details`` (the error's fields). An exception raised by a
validator callback is re-raised as itself, with its traceback.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Type

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "APIUserAbortError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigError",
    "ConflictError",
    "ContextLengthError",
    "InternalServerError",
    "ModelFetchError",
    "ModelLoadError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "UnprocessableEntityError",
    "ValidationError",
    "ValidatorError",
]


class APIError(Exception):
    """Base class of every error a slmkit client raises."""

    message: str
    #: The HTTP status an OpenAI-compatible server would answer this error with.
    status_code: Optional[int]
    #: slmkit's stable name for the kind of error (``rate_limit``, ``context_length_exceeded``…).
    kind: str
    #: The error's fields: e.g. ``url``, ``body``, ``reasons``, ``prompt_tokens``.
    details: Dict[str, Any]
    #: For errors from a remote endpoint: its error object (parsed JSON) or text; else None.
    body: Optional[object]
    #: As openai: the error ``code`` / ``param`` / ``type`` from the server, when it sent them.
    code: Optional[str]
    param: Optional[str]
    type: Optional[str]

    def __init__(
        self,
        message: str,
        *,
        status_code: Optional[int] = None,
        kind: str = "api",
        details: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.kind = kind
        self.details = dict(details or {})
        self.body = None
        self.code = kind
        self.param = self.details.get("param")
        self.type = None
        raw = self.details.get("body")
        if isinstance(raw, str) and raw:
            try:
                parsed = json.loads(raw)
            except ValueError:
                self.body = raw
            else:
                error = parsed.get("error") if isinstance(parsed, dict) else None
                self.body = error if isinstance(error, dict) else parsed
                if isinstance(error, dict):
                    self.code = error.get("code") or kind
                    self.param = error.get("param", self.param)
                    self.type = error.get("type")

    @property
    def causes(self) -> List[str]:
        """The chain of underlying causes, outermost first, as text."""
        causes = self.details.get("causes")
        return list(causes) if isinstance(causes, list) else []


class APIStatusError(APIError):
    """An error with an HTTP status (the openai package's name for it)."""


class BadRequestError(APIStatusError):
    """400: the request is invalid (a bad parameter, an invalid schema, …)."""


class AuthenticationError(APIStatusError):
    """401 from the remote endpoint."""


class PermissionDeniedError(APIStatusError):
    """403 from the remote endpoint."""


class NotFoundError(APIStatusError):
    """404 from the remote endpoint."""


class ConflictError(APIStatusError):
    """409 from the remote endpoint."""


class UnprocessableEntityError(APIStatusError):
    """422 from the remote endpoint."""


class RateLimitError(APIStatusError):
    """429 from the remote endpoint, after the retries the retry policy allows."""

    @property
    def retry_after(self) -> Optional[float]:
        """Seconds the server asked to wait, if it said."""
        value = self.details.get("retry_after_s")
        return float(value) if value is not None else None


class InternalServerError(APIStatusError):
    """5xx: a remote server error, or slmkit's own engine failing."""


class APIConnectionError(APIError):
    """The remote endpoint could not be reached, or the connection broke."""


class APITimeoutError(APIConnectionError):
    """A remote call (or the whole call, with ``timeout=``) took too long."""


class APIResponseValidationError(APIError):
    """The remote endpoint answered 2xx with something that is not an OpenAI response."""


class APIUserAbortError(APIError):
    """The call was cancelled by its caller."""


class ContextLengthError(BadRequestError):
    """The prompt plus ``max_tokens`` does not fit the local model's context window.

    ``details`` has ``prompt_tokens``, ``max_tokens`` and ``context_window``.
    """

    @property
    def prompt_tokens(self) -> Optional[int]:
        return self.details.get("prompt_tokens")

    @property
    def context_window(self) -> Optional[int]:
        return self.details.get("context_window")


class ModelLoadError(APIError):
    """A local model file is missing, not GGUF, truncated or corrupt (``details["path"]``)."""

    @property
    def path(self) -> Optional[str]:
        return self.details.get("path")


class ModelFetchError(ModelLoadError):
    """A model reference could not be fetched: not found, access denied (set ``HF_TOKEN``), a
    network error, a sha256 mismatch, or offline and not cached (``details["reference"]``)."""

    @property
    def reference(self) -> Optional[str]:
        return self.details.get("reference")


class ValidationError(UnprocessableEntityError):
    """No answer passed the validators and there was no LLM tier to escalate to."""

    @property
    def reasons(self) -> List[str]:
        """One reason per rejected attempt, in order."""
        reasons = self.details.get("reasons")
        return list(reasons) if isinstance(reasons, list) else []


class OverloadedError(InternalServerError):
    """503: the local engine's queue is full. Retry later, or raise ``slm.queue``."""


class ConfigError(APIError, ValueError):
    """The client's configuration is invalid (a bad file, section, key or value)."""


class ValidatorError(APIError):
    """A validator failed without a Python exception to show for it."""


def _class_named(name: object) -> Type[APIError]:
    """The exception class the core named (``Error::openai_class``): the one table is there."""
    found = globals().get(name) if isinstance(name, str) else None
    if isinstance(found, type) and issubclass(found, APIError):
        return found
    return APIError


def _from_native(
    kind: str, status: int, message: str, details_json: str, cause: Optional[BaseException]
) -> APIError:
    """Called by the native module to turn a core error into the exception to raise."""
    details: Dict[str, Any] = json.loads(details_json) if details_json else {}
    cls = _class_named(details.get("openai_class"))
    if kind == "stream_interrupted" and isinstance(cause, APIError):
        # The stream broke after chunks reached the caller: the class (the core's) says why
        # it broke, and the cause's fields come along.
        details = {**cause.details, **details}
    error = cls(message, status_code=status, kind=kind, details=details)
    if cause is not None:
        error.__cause__ = cause
    return error
