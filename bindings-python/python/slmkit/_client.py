"""``slmkit.native.Client`` and ``slmkit.native.AsyncClient``: the low-level clients, with the
``openai`` clients' ``chat.completions.create`` surface over the native module, without
importing ``openai``. ``slmkit.OpenAI`` (``_dropin.py``) is openai's own client on top of them."""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import os
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    FrozenSet,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    overload,
)

from . import _slmkit
from .types import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    from typing import Literal, TypedDict

    from typing_extensions import NotRequired, Unpack

    class CompletionCreateParams(TypedDict):
        """The keyword arguments of ``chat.completions.create``, besides ``messages``,
        ``model`` and ``stream`` (the ``openai`` package's names)."""

        audio: NotRequired[Optional[Mapping[str, Any]]]
        frequency_penalty: NotRequired[Optional[float]]
        function_call: NotRequired[Any]
        functions: NotRequired[Iterable[Mapping[str, Any]]]
        logit_bias: NotRequired[Optional[Mapping[str, int]]]
        logprobs: NotRequired[Optional[bool]]
        max_completion_tokens: NotRequired[Optional[int]]
        max_tokens: NotRequired[Optional[int]]
        metadata: NotRequired[Optional[Mapping[str, Any]]]
        modalities: NotRequired[Optional[List[str]]]
        moderation: NotRequired[Any]
        n: NotRequired[Optional[int]]
        parallel_tool_calls: NotRequired[bool]
        prediction: NotRequired[Any]
        presence_penalty: NotRequired[Optional[float]]
        prompt_cache_key: NotRequired[Optional[str]]
        prompt_cache_options: NotRequired[Any]
        prompt_cache_retention: NotRequired[Optional[str]]
        reasoning_effort: NotRequired[Optional[str]]
        response_format: NotRequired[Mapping[str, Any]]
        safety_identifier: NotRequired[Optional[str]]
        seed: NotRequired[Optional[int]]
        service_tier: NotRequired[Optional[str]]
        stop: NotRequired[Union[str, Sequence[str], None]]
        store: NotRequired[Optional[bool]]
        stream_options: NotRequired[Optional[Mapping[str, Any]]]
        temperature: NotRequired[Optional[float]]
        tool_choice: NotRequired[Union[str, Mapping[str, Any]]]
        tools: NotRequired[Iterable[Mapping[str, Any]]]
        top_logprobs: NotRequired[Optional[int]]
        top_p: NotRequired[Optional[float]]
        user: NotRequired[str]
        verbosity: NotRequired[Optional[str]]
        web_search_options: NotRequired[Any]
        extra_headers: NotRequired[Optional[Mapping[str, str]]]
        extra_query: NotRequired[Optional[Mapping[str, object]]]
        extra_body: NotRequired[Optional[Mapping[str, object]]]
        timeout: NotRequired[Any]


__all__ = ["AsyncClient", "AsyncStream", "Client", "EvalResult", "Ledger", "Report", "Stream", "Validator"]

#: A validator: called with the request (a dict) and the SLM's answer; returns None or True
#: to accept, False or a reason (str) to reject; may be ``async def``. Raising aborts the call
#: and the exception reaches the caller.
Validator = Callable[[Dict[str, Any], ChatCompletion], Any]

# The request parameters of openai's ``chat.completions.create``, plus the transport ones.
_REQUEST_PARAMS = frozenset(
    """audio frequency_penalty function_call functions logit_bias logprobs max_completion_tokens
    max_tokens messages metadata modalities model moderation n parallel_tool_calls prediction
    presence_penalty prompt_cache_key prompt_cache_options prompt_cache_retention
    reasoning_effort response_format safety_identifier seed service_tier stop store stream
    stream_options temperature tool_choice tools top_logprobs top_p user verbosity
    web_search_options""".split()
)
_TRANSPORT_PARAMS = frozenset(["extra_headers", "extra_query", "extra_body", "timeout"])
_CREATE_PARAMS = _REQUEST_PARAMS | _TRANSPORT_PARAMS


def _given(value: object) -> bool:
    """False for None and for the openai package's NOT_GIVEN / omit sentinels."""
    return value is not None and type(value).__name__ not in ("NotGiven", "Omit")


def _json_default(value: object) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(exclude_none=True)
    if isinstance(value, (set, frozenset, tuple)) or inspect.isgenerator(value):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _check_params(method: str, params: Mapping[str, Any], allowed: FrozenSet[str]) -> None:
    for name in params:
        if name not in allowed:
            close = difflib.get_close_matches(name, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"{method}() got an unexpected keyword argument {name!r}{hint}")


def _request(params: Mapping[str, Any]) -> Tuple[str, bool, Optional[float]]:
    """The request body as JSON, whether it streams, and the call's timeout in seconds."""
    _check_params("create", params, _CREATE_PARAMS)
    if "messages" not in params:
        raise TypeError("create() missing required keyword argument: 'messages'")
    body: Dict[str, Any] = {}
    for name, value in params.items():
        if name in _TRANSPORT_PARAMS or not _given(value):
            continue
        body[name] = list(value) if name in ("messages", "tools", "functions") else value
    extra = params.get("extra_body")
    if _given(extra):
        body.update(extra)  # type: ignore[arg-type]
    return (
        json.dumps(body, default=_json_default, ensure_ascii=False),
        bool(body.get("stream")),
        _seconds(params.get("timeout")),
    )


def _seconds(timeout: object) -> Optional[float]:
    """A timeout as seconds: a number, or an httpx.Timeout (its read timeout)."""
    if not _given(timeout):
        return None
    if isinstance(timeout, (int, float)):
        return float(timeout)
    for attribute in ("read", "connect", "pool"):
        value = getattr(timeout, attribute, None)
        if isinstance(value, (int, float)):
            return float(value)
    raise TypeError(f"timeout must be a number of seconds or an httpx.Timeout, got {timeout!r}")


def _verdict(result: object, name: str) -> Optional[str]:
    if result is None or result is True:
        return None
    if result is False:
        return f"rejected by {name}"
    if isinstance(result, str):
        return result or f"rejected by {name}"
    raise TypeError(f"validator {name} returned {result!r}; return None/True to accept, False or a reason to reject")


def _adapt_validator(name: str, check: Validator) -> Callable[[str, str], Any]:
    """The native side calls validators with JSON text; this gives the user's function a dict
    and a ChatCompletion, and turns its answer into None (accept) or a reason (reject)."""

    def adapter(request_json: str, answer_json: str) -> Any:
        result = check(json.loads(request_json), ChatCompletion.model_validate_json(answer_json))
        if inspect.isawaitable(result):
            awaitable = result

            async def later() -> Optional[str]:
                return _verdict(await awaitable, name)

            return later()
        return _verdict(result, name)

    return adapter


def _run_awaitable(awaitable: Awaitable[Any]) -> Any:
    """Runs an async validator for the sync client, which has no event loop of its own."""

    async def run() -> Any:
        return await awaitable

    return asyncio.run(run())


class Report(Dict[str, Any]):
    """The ledger's totals: a dict (``report["savings_usd"]``); ``str()`` gives a table."""

    def __init__(self, data: Mapping[str, Any], table: str) -> None:
        super().__init__(data)
        self._table = table

    def __str__(self) -> str:
        return self._table


class EvalResult(Dict[str, Any]):
    """An eval run (``slmkit eval``'s JSON): a dict (``result["overall"]["accuracy"]``,
    ``result["kinds"]``, ``result["tasks"]``); ``str()`` gives the table."""

    def __init__(self, data: Mapping[str, Any], table: str) -> None:
        super().__init__(data)
        self._table = table

    def __str__(self) -> str:
        return self._table


EvalTasks = Union[str, "os.PathLike[str]", Iterable[Mapping[str, Any]]]


def _evaluate(native: _slmkit.NativeClient, tasks: EvalTasks, bare: bool) -> EvalResult:
    if isinstance(tasks, (str, os.PathLike)):
        result, table = native.evaluate(tasks_path=os.fspath(tasks), bare=bare)
    else:
        text = "\n".join(json.dumps(task, default=_json_default) for task in tasks)
        result, table = native.evaluate(tasks_text=text, bare=bare)
    return EvalResult(json.loads(result), table)


class Ledger:
    """Every attempt the client made, priced; ``report()`` adds them up."""

    def __init__(self, native: _slmkit.NativeClient) -> None:
        self._native = native

    def report(self) -> Report:
        """Calls, attempts, tiers, retries, escalations, cost and the net saving."""
        return Report(json.loads(self._native.ledger_report()), self._native.ledger_table())

    def records(self) -> List[Dict[str, Any]]:
        """One dict per attempt, oldest first (call_id, attempt, tier, outcome, reason, cost…)."""
        records: List[Dict[str, Any]] = json.loads(self._native.ledger_records())
        return records


class Stream(Iterator[ChatCompletionChunk]):
    """The chunks of a streamed call. Closing it (or dropping it) cancels the call."""

    def __init__(self, native: _slmkit.NativeStream) -> None:
        self._native = native

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate_json(next(self._native))

    def close(self) -> None:
        """Stops the stream, freeing the local engine's slot if it was still generating."""
        self._native.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncStream(AsyncIterator[ChatCompletionChunk]):
    """The chunks of a streamed call, for ``async for``. Closing it cancels the call."""

    def __init__(self, native: _slmkit.NativeAsyncStream) -> None:
        self._native = native

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return ChatCompletionChunk.model_validate_json(await self._native.__anext__())

    async def close(self) -> None:
        """Stops the stream, freeing the local engine's slot if it was still generating."""
        self._native.close()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


_SECTIONS = ("slm", "llm", "routing", "retry", "cache", "ledger", "default_validators", "counterfactual_pricing")


def _native_client(
    *,
    api_key: Optional[str],
    base_url: Optional[str],
    timeout: object,
    max_retries: Optional[int],
    config: Union[str, "os.PathLike[str]", None],
    validators: Optional[Sequence[Union[Validator, Tuple[str, Validator], Mapping[str, Any]]]],
    sections: Dict[str, Any],
) -> _slmkit.NativeClient:
    given = {name: value for name, value in sections.items() if value is not None}
    callbacks: List[Tuple[str, Callable[[str, str], Any]]] = []
    declared: List[Mapping[str, Any]] = []
    for entry in validators or ():
        if isinstance(entry, Mapping):
            declared.append(entry)  # a config validator: {"kind": "regex", "pattern": ...}
        elif isinstance(entry, tuple):
            name, check = entry
            callbacks.append((name, _adapt_validator(name, check)))
        elif callable(entry):
            name = getattr(entry, "__name__", type(entry).__name__)
            callbacks.append((name, _adapt_validator(name, entry)))
        else:
            raise TypeError(f"a validator must be a callable, a (name, callable) pair or a dict, got {entry!r}")
    if declared:
        given["validators"] = declared
    if isinstance(given.get("ledger"), os.PathLike):
        given["ledger"] = os.fspath(given["ledger"])
    if isinstance(given.get("slm"), os.PathLike):
        given["slm"] = os.fspath(given["slm"])
    return _slmkit.NativeClient(
        config_path=os.fspath(config) if config is not None else None,
        sections=json.dumps(given) if given else None,
        api_key=api_key if _given(api_key) else None,
        base_url=str(base_url) if _given(base_url) else None,
        timeout=_seconds(timeout),
        max_retries=max_retries,
        validators=callbacks,
    )


class _ClientBase:
    _native: _slmkit.NativeClient

    def __init__(
        self,
        *,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
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
        organization: Optional[str] = None,
        project: Optional[str] = None,
        default_headers: Optional[Mapping[str, str]] = None,
        default_query: Optional[Mapping[str, object]] = None,
        http_client: Any = None,
    ) -> None:
        """Configures the client.

        Where the configuration comes from, in order:

        * ``config=``: a TOML file (see slmkit's config reference);
        * the sections as keyword arguments, replacing the file's sections of the same name:
          ``slm`` (a dict, or a GGUF path), ``llm`` (a dict, or a base URL), ``routing``,
          ``retry``, ``cache``, ``ledger`` (a dict, or a JSONL path), ``default_validators``,
          ``counterfactual_pricing``; each tier's ``pricing`` sits inside it;
        * with neither, the file named by ``$SLMKIT_CONFIG``, if set.

        ``api_key`` / ``base_url`` set the remote LLM tier as they set an ``openai.OpenAI``'s
        endpoint (each request's ``model`` is then sent as is); ``timeout`` and
        ``max_retries`` apply to it. Without an LLM tier from any of these, one comes from
        ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``OPENAI_MODEL`` when set.

        ``validators``: callables (``check(request: dict, answer: ChatCompletion)``, sync or
        async) returning None/True to accept or False/a reason to reject; ``(name, check)``
        pairs; or config validators as dicts (``{"kind": "regex", "pattern": "..."}``).

        ``organization``, ``project``, ``default_headers``, ``default_query`` and
        ``http_client`` are accepted for compatibility and not used.

        Raises:
            ModelLoadError: a local model file is missing or broken.
            ConfigError: the configuration is invalid.
            TypeError: an unknown keyword argument.
        """
        self._native = _native_client(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            config=config,
            validators=validators,
            sections={
                "slm": os.fspath(slm) if isinstance(slm, os.PathLike) else slm,
                "llm": llm,
                "routing": routing,
                "retry": retry,
                "cache": cache,
                "ledger": ledger,
                "default_validators": default_validators,
                "counterfactual_pricing": counterfactual_pricing,
            },
        )
        self.ledger = Ledger(self._native)
        self._attach()

    def _attach(self) -> None:
        raise NotImplementedError

    def explain(self, **params: Any) -> Dict[str, Any]:
        """Where a call with these ``create`` arguments would go, and why (``tier``,
        ``reasons``), without making it."""
        request, _, _ = _request(params)
        decision: Dict[str, Any] = json.loads(self._native.explain(request))
        return decision

    def feedback(self, call_id: str, correct: bool, reason: Optional[str] = None) -> None:
        """Tells slmkit whether call ``call_id``'s answer (its ``slmkit.call_id``) was right. It
        goes into the ledger as its own record, and the adaptive router weighs it above the
        validators' verdict."""
        self._native.feedback(call_id, correct, reason)

    def __repr__(self) -> str:
        return f"<slmkit.native.{type(self).__name__} {self._native!r}>"


class Completions:
    """``client.chat.completions``."""

    def __init__(self, native: _slmkit.NativeClient) -> None:
        self._native = native

    @overload
    def create(
        self,
        *,
        messages: Iterable[Any],
        model: Optional[str] = ...,
        stream: Literal[False] | None = ...,
        **params: Unpack[CompletionCreateParams],
    ) -> ChatCompletion: ...

    @overload
    def create(
        self,
        *,
        messages: Iterable[Any],
        model: Optional[str] = ...,
        stream: Literal[True],
        **params: Unpack[CompletionCreateParams],
    ) -> Stream: ...

    @overload
    def create(
        self,
        *,
        messages: Iterable[Any],
        model: Optional[str] = ...,
        stream: bool,
        **params: Unpack[CompletionCreateParams],
    ) -> Union[ChatCompletion, Stream]: ...

    def create(self, **params: Any) -> Union[ChatCompletion, Stream]:
        """Answers a chat completion request, with the ``openai`` package's arguments.

        Routed to the small or the large model, validated, retried and escalated as
        configured. The extra top-level field ``slmkit`` of the answer says how. Routing hints:
        ``metadata={"slmkit_route": "llm"}`` or ``extra_body={"slmkit": {"route": "llm"}}``.

        Raises:
            TypeError: an unknown keyword argument.
            APIError: a subclass saying what failed (see ``slmkit._exceptions``).
        """
        request, stream, timeout = _request(params)
        if stream:
            return Stream(self._native.stream(request, timeout))
        return ChatCompletion.model_validate_json(self._native.create(request, timeout))


class AsyncCompletions:
    """``client.chat.completions`` of the async client."""

    def __init__(self, native: _slmkit.NativeClient) -> None:
        self._native = native

    @overload
    async def create(
        self,
        *,
        messages: Iterable[Any],
        model: Optional[str] = ...,
        stream: Literal[False] | None = ...,
        **params: Unpack[CompletionCreateParams],
    ) -> ChatCompletion: ...

    @overload
    async def create(
        self,
        *,
        messages: Iterable[Any],
        model: Optional[str] = ...,
        stream: Literal[True],
        **params: Unpack[CompletionCreateParams],
    ) -> AsyncStream: ...

    @overload
    async def create(
        self,
        *,
        messages: Iterable[Any],
        model: Optional[str] = ...,
        stream: bool,
        **params: Unpack[CompletionCreateParams],
    ) -> Union[ChatCompletion, AsyncStream]: ...

    async def create(self, **params: Any) -> Union[ChatCompletion, AsyncStream]:
        """As ``Client.chat.completions.create``, awaited. Cancelling the task cancels the
        call and frees the local engine's slot."""
        request, stream, timeout = _request(params)
        if stream:
            return AsyncStream(await self._native.stream_async(request, timeout))
        return ChatCompletion.model_validate_json(await self._native.create_async(request, timeout))


class Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class SyncChat(Chat):
    completions: Completions


class AsyncChat(Chat):
    completions: AsyncCompletions


class Client(_ClientBase):
    """The low-level client: ``client.chat.completions.create(...)`` as with ``openai.OpenAI``,
    answers as ``slmkit.types`` objects, no ``openai`` import, the least overhead per call."""

    chat: SyncChat

    def _attach(self) -> None:
        self.chat = SyncChat(Completions(self._native))

    def evaluate(self, tasks: EvalTasks, *, bare: bool = False) -> EvalResult:
        """Runs checkable agent tasks through this client, one at a time, and adds up the
        results per task kind and overall (what ``slmkit eval`` prints).

        Args:
            tasks: a JSONL file's path, or the tasks as dicts (``{"id", "kind", "request",
                "check"}``; the format is in ``tests/eval/FORMAT.md``).
            bare: ask the bare model: the SLM alone, one attempt, no validators, no grammar.

        Raises:
            BadRequestError: a bad task (the message names its line) or unknown check type.
            APIConnectionError: a remote endpoint that answers first cannot be reached. A
                call that fails during the run is not raised: its task counts as wrong.
        """
        return _evaluate(self._native, tasks, bare)

    def close(self) -> None:
        """For compatibility with ``openai.OpenAI``; nothing to release."""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(_ClientBase):
    """The async low-level client: ``await client.chat.completions.create(...)``."""

    chat: AsyncChat

    def _attach(self) -> None:
        self.chat = AsyncChat(AsyncCompletions(self._native))

    async def evaluate(self, tasks: EvalTasks, *, bare: bool = False) -> EvalResult:
        """As ``Client.evaluate``, on a worker thread so the event loop keeps running."""
        return await asyncio.to_thread(_evaluate, self._native, tasks, bare)

    async def close(self) -> None:
        """For compatibility with ``openai.AsyncOpenAI``; nothing to release."""

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
