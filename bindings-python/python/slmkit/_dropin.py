"""``slmkit.OpenAI`` and ``slmkit.AsyncOpenAI``: the ``openai`` package's own clients, whose HTTP
layer is an in-process transport that hands each request to slmkit's native client.

Imported on first use of ``slmkit.OpenAI`` (``slmkit/__init__.py``), so ``import slmkit`` does
not import ``openai``.

What the transport serves (any base URL; the path's end decides):

* ``POST …/chat/completions``: whole, or ``text/event-stream`` (``data: {chunk}`` lines,
  ending with ``data: [DONE]``) when the body says ``"stream": true``;
* ``GET …/models`` and ``GET …/models/{id}``: the configured tiers' models;
* ``POST …/responses``: the Responses API subset (the native ``respond*`` methods), whole or
  as named server-sent events (``event: response.output_text.delta`` …);
* anything else: a 404 with an OpenAI error body naming the path.

A slmkit error becomes an HTTP response with its status and an OpenAI error body
(``{"error": {"message", "type", "code", "param", "slmkit": details}}``). The client then
raises a class that is both openai's (``openai.BadRequestError``…, with ``.response``,
``.status_code`` and ``.body``) and slmkit's of the same name (``slmkit.BadRequestError``…,
with ``.kind`` and ``.details``). A Python exception raised by a validator still arrives as
itself.

Retries: every error response carries ``x-should-retry: false``, so openai's client never
re-sends a call that slmkit's retry policy has already retried and escalated (a re-send would
be a second call in the ledger). ``max_retries`` (default 0 here) configures the remote LLM
tier's retries, as before.
"""

from __future__ import annotations

import json
import os
from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, Union

import openai

try:  # openai 3.x is built on httpx2 (a fork of httpx with the same API); older ones on httpx.
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx  # type: ignore[no-redef,import-not-found,unused-ignore]

from . import _exceptions
from ._client import EvalResult, EvalTasks, Ledger, Validator, _evaluate, _native_client
from ._slmkit import NativeClient

__all__ = ["AsyncInProcessTransport", "AsyncOpenAI", "InProcessTransport", "OpenAI"]

#: What openai's clients are given as ``api_key`` when neither the caller nor ``OPENAI_API_KEY``
#: names one: the in-process transport needs none, openai's constructor insists on one.
IN_PROCESS_API_KEY = "slmkit-in-process"

_JSON = {"content-type": "application/json", "x-should-retry": "false"}
_SSE = {"content-type": "text/event-stream", "x-should-retry": "false"}
_DONE = b"data: [DONE]\n\n"
#: The response extension that carries the native error to ``_make_status_error``.
_NATIVE_ERROR = "slmkit_error"


def _openai_class(native_class: Type[_exceptions.APIError]) -> Type[openai.APIError]:
    """openai's class for slmkit's: the same name, or the nearest ancestor's that openai has
    (``ContextLengthError`` -> ``BadRequestError``, ``ModelLoadError`` -> ``APIError``)."""
    for ancestor in native_class.__mro__:
        found = getattr(openai, ancestor.__name__, None)
        if isinstance(found, type) and issubclass(found, openai.APIError):
            return found
    return openai.APIError


_BOTH: Dict[Type[_exceptions.APIError], Type[Any]] = {}


def _both(native_class: Type[_exceptions.APIError]) -> Type[Any]:
    """The class that is openai's and slmkit's at once, named as slmkit's."""
    both = _BOTH.get(native_class)
    if both is None:
        both = type(
            native_class.__name__,
            (_openai_class(native_class), native_class),
            {"__module__": "slmkit", "__doc__": native_class.__doc__, "__qualname__": native_class.__name__},
        )
        _BOTH[native_class] = both
    return both


def _error_object(error: _exceptions.APIError) -> Dict[str, Any]:
    """The OpenAI error body's ``error`` object. A remote endpoint's own error object is kept
    as it sent it (message, type, code, param), as a proxy passes it on; slmkit's details are
    added under ``slmkit``."""
    upstream = error.body if isinstance(error.body, dict) and "message" in error.body else None
    if upstream is not None:
        body = dict(upstream)
    else:
        body = {"message": error.message, "type": error.type or error.kind, "code": error.code, "param": error.param}
    body["slmkit"] = error.details
    return body


def _error_response(error: _exceptions.APIError, request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        error.status_code or 500,
        headers=_JSON,
        content=json.dumps({"error": _error_object(error)}, default=str).encode(),
        request=request,
        extensions={_NATIVE_ERROR: error},
    )


def _to_openai(error: _exceptions.APIError, response: httpx.Response) -> Exception:
    """The native error as the class that is both openai's and slmkit's."""
    cls = _both(type(error))
    raised: Any = BaseException.__new__(cls)
    if issubclass(cls, openai.APIStatusError):
        openai.APIStatusError.__init__(raised, error.message, response=response, body=_error_object(error))
    elif issubclass(cls, openai.APIConnectionError):
        openai.APIConnectionError.__init__(raised, message=error.message, request=response.request)
    else:
        openai.APIError.__init__(raised, error.message, response.request, body=_error_object(error))
    raised.status_code = error.status_code
    raised.kind = error.kind
    raised.details = error.details  # its ``causes`` too: openai raises status errors ``from None``
    return raised  # type: ignore[no-any-return]


def _not_found(request: httpx.Request, message: str) -> httpx.Response:
    error = _exceptions.NotFoundError(message, status_code=404, kind="not_found", details={"openai_class": "NotFoundError"})
    return _error_response(error, request)


def _models(native: NativeClient) -> List[Dict[str, Any]]:
    data: List[Dict[str, Any]] = json.loads(native.models())["data"]
    return data


def _serve_models(native: NativeClient, request: httpx.Request) -> httpx.Response:
    models = _models(native)
    path = request.url.path.rstrip("/")
    if path.endswith("/models"):
        return httpx.Response(200, headers=_JSON, json={"object": "list", "data": models}, request=request)
    wanted = path.rsplit("/", 1)[-1]
    for model in models:
        if model["id"] == wanted:
            return httpx.Response(200, headers=_JSON, json=model, request=request)
    return _not_found(request, f"no configured tier serves the model {wanted!r}")


class _Route:
    """What a request asks for: ``chat``, ``responses``, ``models`` or None, and for a POST its
    body, whether it streams and its per-call timeout."""

    def __init__(self, request: httpx.Request, default_read_s: Optional[float]) -> None:
        path = request.url.path.rstrip("/")
        self.kind: Optional[str] = None
        if request.method == "POST" and path.endswith("/chat/completions"):
            self.kind = "chat"
        elif request.method == "POST" and path.endswith("/responses"):
            self.kind = "responses"
        elif request.method == "GET" and "models" in path.split("/")[-2:]:
            self.kind = "models"
        self.body = ""
        self.stream = False
        self.timeout: Optional[float] = None
        if self.kind in ("chat", "responses"):
            self.body = request.content.decode()
            try:
                parsed = json.loads(self.body)
            except ValueError:
                parsed = None
            self.stream = isinstance(parsed, dict) and parsed.get("stream") is True
            # openai sends its timeout with every request; only one that differs from the
            # client's own (a per-call ``timeout=``, or ``with_options``) bounds the call.
            read = (request.extensions.get("timeout") or {}).get("read")
            if isinstance(read, (int, float)) and read != default_read_s:
                self.timeout = float(read)


def _sse(chunk: str) -> bytes:
    return b"data: " + chunk.encode() + b"\n\n"


def _named_sse(event: str) -> bytes:
    """A Responses API event, framed as OpenAI frames it: ``event: {type}`` then its data."""
    try:
        kind = json.loads(event).get("type")
    except (ValueError, AttributeError):
        kind = None
    name = b"event: " + str(kind).encode() + b"\n" if isinstance(kind, str) else b""
    return name + _sse(event)


def _stub_response(error: _exceptions.APIError, request: httpx.Request) -> httpx.Response:
    return httpx.Response(error.status_code or 500, headers=_JSON, request=request)


class _SyncEvents(httpx.SyncByteStream):
    """A native stream as server-sent events; a failure mid-stream raises the openai class."""

    def __init__(self, first: str, rest: Iterator[str], close: Any, request: httpx.Request, chat: bool) -> None:
        # chat: a chat-completions stream (data lines, then ``data: [DONE]``); else Responses
        # API events (named, no terminator).
        self._first = first
        self._rest = rest
        self._close = close
        self._request = request
        self._chat = chat

    def __iter__(self) -> Iterator[bytes]:
        frame = _sse if self._chat else _named_sse
        yield frame(self._first)
        try:
            for chunk in self._rest:
                yield frame(chunk)
        except _exceptions.APIError as error:
            raise _to_openai(error, _stub_response(error, self._request)) from error.__cause__
        if self._chat:
            yield _DONE

    def close(self) -> None:
        self._close()


class _AsyncEvents(httpx.AsyncByteStream):
    def __init__(self, first: str, rest: Any, request: httpx.Request, chat: bool) -> None:
        self._first = first
        self._rest = rest
        self._request = request
        self._chat = chat

    async def __aiter__(self) -> AsyncIterator[bytes]:
        frame = _sse if self._chat else _named_sse
        yield frame(self._first)
        try:
            async for chunk in self._rest:
                yield frame(chunk)
        except _exceptions.APIError as error:
            raise _to_openai(error, _stub_response(error, self._request)) from error.__cause__
        if self._chat:
            yield _DONE

    async def aclose(self) -> None:
        self._rest.close()


def _unknown(request: httpx.Request) -> httpx.Response:
    return _not_found(request, f"slmkit serves /chat/completions, /models and /responses in-process, not {request.method} {request.url.path}")


class InProcessTransport(httpx.BaseTransport):
    """An ``httpx`` transport that answers openai's requests with slmkit's native client, in
    this process, with no socket."""

    def __init__(self, native: NativeClient) -> None:
        self.native = native
        self.default_read_s: Optional[float] = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        route = _Route(request, self.default_read_s)
        try:
            if route.kind == "chat":
                if route.stream:
                    return self._stream(self.native.stream(route.body, route.timeout), request, chat=True)
                return httpx.Response(200, headers=_JSON, content=self.native.create(route.body, route.timeout).encode(), request=request)
            if route.kind == "responses":
                if route.stream:
                    return self._stream(self.native.respond_stream(route.body, route.timeout), request, chat=False)
                answer = self.native.respond(route.body, route.timeout)
                return httpx.Response(200, headers=_JSON, content=answer.encode(), request=request)
            if route.kind == "models":
                return _serve_models(self.native, request)
        except _exceptions.APIError as error:
            return _error_response(error, request)
        return _unknown(request)

    def _stream(self, native_stream: Any, request: httpx.Request, *, chat: bool) -> httpx.Response:
        # The first event is awaited here, so a call that fails before any output is an HTTP
        # error, raised by ``create`` as with a server; a later failure raises mid-iteration.
        try:
            first = next(native_stream)
        except StopIteration:
            return httpx.Response(200, headers=_SSE, content=_DONE if chat else b"", request=request)
        except BaseException:
            native_stream.close()
            raise
        events = _SyncEvents(first, native_stream, native_stream.close, request, chat)
        return httpx.Response(200, headers=_SSE, stream=events, request=request)


class AsyncInProcessTransport(httpx.AsyncBaseTransport):
    """As :class:`InProcessTransport`, for ``openai.AsyncOpenAI``: calls run off the event loop
    (and without the GIL), and cancelling the task cancels the call."""

    def __init__(self, native: NativeClient) -> None:
        self.native = native
        self.default_read_s: Optional[float] = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        route = _Route(request, self.default_read_s)
        try:
            if route.kind == "chat":
                if route.stream:
                    return await self._stream(await self.native.stream_async(route.body, route.timeout), request, chat=True)
                answer = await self.native.create_async(route.body, route.timeout)
                return httpx.Response(200, headers=_JSON, content=answer.encode(), request=request)
            if route.kind == "responses":
                if route.stream:
                    native_stream = await self.native.respond_stream_async(route.body, route.timeout)
                    return await self._stream(native_stream, request, chat=False)
                answer = await self.native.respond_async(route.body, route.timeout)
                return httpx.Response(200, headers=_JSON, content=answer.encode(), request=request)
            if route.kind == "models":
                return _serve_models(self.native, request)
        except _exceptions.APIError as error:
            return _error_response(error, request)
        return _unknown(request)

    async def _stream(self, native_stream: Any, request: httpx.Request, *, chat: bool) -> httpx.Response:
        try:
            first = await native_stream.__anext__()
        except StopAsyncIteration:
            return httpx.Response(200, headers=_SSE, content=_DONE if chat else b"", request=request)
        except BaseException:
            native_stream.close()
            raise
        return httpx.Response(200, headers=_SSE, stream=_AsyncEvents(first, native_stream, request, chat), request=request)


def _shared_native(http_client: object) -> Optional[NativeClient]:
    """The native client behind an http client this module built (``copy`` and
    ``with_options`` pass the original's): the copy shares its engine and ledger."""
    transport = getattr(http_client, "_transport", None)
    if isinstance(transport, (InProcessTransport, AsyncInProcessTransport)):
        return transport.native
    return None


def _default_read_s(timeout: object) -> Optional[float]:
    read = getattr(timeout, "read", timeout)
    return float(read) if isinstance(read, (int, float)) else None


_SECTION_NAMES = ("slm", "llm", "routing", "retry", "cache", "ledger", "default_validators", "counterfactual_pricing")


class _Setup:
    """What both clients do with the constructor's arguments."""

    def __init__(
        self,
        *,
        api_key: Optional[str],
        base_url: Any,
        timeout: Any,
        max_retries: Optional[int],
        config: Union[str, "os.PathLike[str]", None],
        validators: Optional[Sequence[Any]],
        sections: Dict[str, Any],
        http_client: object,
    ) -> None:
        given_timeout = timeout if _given(timeout) else None
        shared = _shared_native(http_client)
        self.native = shared or _native_client(
            api_key=api_key,
            base_url=base_url,
            timeout=given_timeout,
            max_retries=max_retries,
            config=config,
            validators=validators,
            sections={name: os.fspath(v) if isinstance(v, os.PathLike) else v for name, v in sections.items()},
        )
        self.reused = shared is not None
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or IN_PROCESS_API_KEY
        self.openai_options: Dict[str, Any] = {"api_key": self.api_key, "max_retries": max_retries or 0}
        if _given(base_url):
            self.openai_options["base_url"] = base_url
        if given_timeout is not None:
            self.openai_options["timeout"] = given_timeout


def _given(value: object) -> bool:
    return value is not None and type(value).__name__ not in ("NotGiven", "Omit")


class OpenAI(openai.OpenAI):
    """``openai.OpenAI``, answered in-process by slmkit: routed to the small or the large
    model, validated, retried, escalated and recorded in ``client.ledger``.

    Everything openai's client does works (``chat.completions.create``/``parse``/``stream``,
    ``with_raw_response``, ``with_streaming_response``, ``with_options``, ``copy``,
    ``models.list()``); ``explain``, ``ledger`` and ``evaluate`` are slmkit's. See
    ``slmkit.native.Client`` for the documented low-level client.
    """

    ledger: Ledger

    def __init__(
        self,
        *,
        api_key: Optional[str] = None,
        base_url: Any = None,
        timeout: Any = None,
        max_retries: Optional[int] = None,
        config: Union[str, "os.PathLike[str]", None] = None,
        slm: Union[str, "os.PathLike[str]", Mapping[str, Any], None] = None,
        llm: Union[str, Mapping[str, Any], None] = None,
        routing: Optional[Mapping[str, Any]] = None,
        retry: Optional[Mapping[str, Any]] = None,
        cache: Optional[Mapping[str, Any]] = None,
        ledger: Union[str, "os.PathLike[str]", Mapping[str, Any], None] = None,
        validators: Optional[Sequence[Union[Validator, Tuple[str, Validator], Mapping[str, Any]]]] = None,
        default_validators: Optional[bool] = None,
        counterfactual_pricing: Optional[Mapping[str, Any]] = None,
        http_client: Any = None,
        **openai_options: Any,
    ) -> None:
        """As ``slmkit.native.Client`` (``config=``, the sections ``slm=``, ``llm=``, …,
        ``validators=``; ``api_key``/``base_url``/``timeout``/``max_retries`` configure the
        remote LLM tier), plus openai's own options (``organization``, ``default_headers``…),
        which are passed to ``openai.OpenAI``. An ``http_client`` of one's own is not used: the
        transport is slmkit's.

        Raises:
            ModelLoadError: a local model file is missing or broken.
            ConfigError: the configuration is invalid.
            TypeError: an unknown keyword argument.
        """
        setup = _Setup(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            config=config,
            validators=validators,
            sections=dict(zip(_SECTION_NAMES, (slm, llm, routing, retry, cache, ledger, default_validators, counterfactual_pricing))),
            http_client=http_client,
        )
        transport = InProcessTransport(setup.native)
        client = http_client if setup.reused else httpx.Client(transport=transport, timeout=openai.DEFAULT_TIMEOUT)
        super().__init__(**{**openai_options, **setup.openai_options, "http_client": client})
        if not setup.reused:
            transport.default_read_s = _default_read_s(self.timeout)
        self._native = setup.native
        self.ledger = Ledger(setup.native)

    def explain(self, **params: Any) -> Dict[str, Any]:
        """Where a call with these ``create`` arguments would go, and why (``tier``,
        ``reasons``), without making it."""
        return _explain(self._native, params)

    def feedback(self, call_id: str, correct: bool, reason: Optional[str] = None) -> None:
        """Tells slmkit whether call ``call_id``'s answer (its ``slmkit.call_id``) was right: a
        ledger record of its own, which the adaptive router weighs above the validators'
        verdict. An unknown call is a ``BadRequestError``."""
        self._native.feedback(call_id, correct, reason)

    def evaluate(self, tasks: EvalTasks, *, bare: bool = False) -> EvalResult:
        """Runs checkable agent tasks through this client (see ``slmkit.native.Client.evaluate``)."""
        return _evaluate(self._native, tasks, bare)

    def _make_status_error(self, err_msg: str, *, body: object, response: Any) -> openai.APIStatusError:
        native = response.extensions.get(_NATIVE_ERROR)
        if isinstance(native, _exceptions.APIError):
            return _to_openai(native, response)  # type: ignore[return-value]
        return super()._make_status_error(err_msg, body=body, response=response)

    def __repr__(self) -> str:
        return f"<slmkit.OpenAI {self._native!r}>"


class AsyncOpenAI(openai.AsyncOpenAI):
    """``openai.AsyncOpenAI``, answered in-process by slmkit (see :class:`OpenAI`). Calls run
    without the GIL off the event loop; cancelling the task cancels the call."""

    ledger: Ledger

    def __init__(
        self,
        *,
        api_key: Optional[str] = None,
        base_url: Any = None,
        timeout: Any = None,
        max_retries: Optional[int] = None,
        config: Union[str, "os.PathLike[str]", None] = None,
        slm: Union[str, "os.PathLike[str]", Mapping[str, Any], None] = None,
        llm: Union[str, Mapping[str, Any], None] = None,
        routing: Optional[Mapping[str, Any]] = None,
        retry: Optional[Mapping[str, Any]] = None,
        cache: Optional[Mapping[str, Any]] = None,
        ledger: Union[str, "os.PathLike[str]", Mapping[str, Any], None] = None,
        validators: Optional[Sequence[Union[Validator, Tuple[str, Validator], Mapping[str, Any]]]] = None,
        default_validators: Optional[bool] = None,
        counterfactual_pricing: Optional[Mapping[str, Any]] = None,
        http_client: Any = None,
        **openai_options: Any,
    ) -> None:
        """As :class:`OpenAI`."""
        setup = _Setup(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            config=config,
            validators=validators,
            sections=dict(zip(_SECTION_NAMES, (slm, llm, routing, retry, cache, ledger, default_validators, counterfactual_pricing))),
            http_client=http_client,
        )
        transport = AsyncInProcessTransport(setup.native)
        client = http_client if setup.reused else httpx.AsyncClient(transport=transport, timeout=openai.DEFAULT_TIMEOUT)
        super().__init__(**{**openai_options, **setup.openai_options, "http_client": client})
        if not setup.reused:
            transport.default_read_s = _default_read_s(self.timeout)
        self._native = setup.native
        self.ledger = Ledger(setup.native)

    def explain(self, **params: Any) -> Dict[str, Any]:
        """As ``OpenAI.explain``."""
        return _explain(self._native, params)

    def feedback(self, call_id: str, correct: bool, reason: Optional[str] = None) -> None:
        """As ``OpenAI.feedback`` (quick: it only writes a ledger record)."""
        self._native.feedback(call_id, correct, reason)

    async def evaluate(self, tasks: EvalTasks, *, bare: bool = False) -> EvalResult:
        """As ``OpenAI.evaluate``, on a worker thread so the event loop keeps running."""
        import asyncio

        return await asyncio.to_thread(_evaluate, self._native, tasks, bare)

    def _make_status_error(self, err_msg: str, *, body: object, response: Any) -> openai.APIStatusError:
        native = response.extensions.get(_NATIVE_ERROR)
        if isinstance(native, _exceptions.APIError):
            return _to_openai(native, response)  # type: ignore[return-value]
        return super()._make_status_error(err_msg, body=body, response=response)

    def __repr__(self) -> str:
        return f"<slmkit.AsyncOpenAI {self._native!r}>"


def _explain(native: NativeClient, params: Mapping[str, Any]) -> Dict[str, Any]:
    from ._client import _request

    request, _, _ = _request(params)
    decision: Dict[str, Any] = json.loads(native.explain(request))
    return decision

