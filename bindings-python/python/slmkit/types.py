"""Response objects with the attributes of the ``openai`` package's models.

``ChatCompletion`` and ``ChatCompletionChunk`` (and the objects inside them) read like
``openai.types.chat.ChatCompletion``: ``resp.choices[0].message.content``,
``.tool_calls[0].function.arguments``, ``.usage.prompt_tokens``. ``model_dump()`` gives a
dict that ``openai.types.chat.ChatCompletion.model_validate`` accepts, and
``model_dump_json()`` the JSON an OpenAI server would send.

They are plain Python classes, not pydantic models, so ``import slmkit`` stays light. Fields
a server sends that are not declared here (such as slmkit's own ``slmkit`` routing metadata)
are kept and readable as attributes, like pydantic's ``extra="allow"``.
"""

from __future__ import annotations

import json
from typing import Any, Callable, ClassVar, Dict, List, Optional, Type, TypeVar

__all__ = [
    "BaseModel",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "ChatCompletionMessageToolCall",
    "Choice",
    "ChoiceDelta",
    "ChoiceDeltaToolCall",
    "ChoiceDeltaToolCallFunction",
    "ChunkChoice",
    "CompletionTokensDetails",
    "CompletionUsage",
    "Function",
    "PromptTokensDetails",
]

_M = TypeVar("_M", bound="BaseModel")


def _dump(value: Any, exclude_none: bool) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_none=exclude_none)
    if isinstance(value, list):
        return [_dump(item, exclude_none) for item in value]
    if isinstance(value, dict):
        return {key: _dump(item, exclude_none) for key, item in value.items()}
    return value


class BaseModel:
    """The shared behaviour: construction from a dict, attribute access, dumps."""

    # Field name -> how to build its value from JSON (None: keep as is). Declared fields that
    # are absent read as None, as with openai's models.
    _fields: ClassVar[Dict[str, Optional[Callable[[Any], Any]]]] = {}

    def __init__(self, **data: Any) -> None:
        fields = type(self)._fields
        for name in fields:
            self.__dict__[name] = None
        for key, value in data.items():
            build = fields.get(key)
            self.__dict__[key] = build(value) if build is not None and value is not None else value

    @classmethod
    def model_validate(cls: Type[_M], data: Dict[str, Any]) -> _M:
        """Builds the object from a dict shaped like OpenAI's JSON."""
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.model_validate expects a dict, got {type(data).__name__}")
        return cls(**data)

    @classmethod
    def model_validate_json(cls: Type[_M], text: str) -> _M:
        """Builds the object from OpenAI's JSON text."""
        return cls.model_validate(json.loads(text))

    def model_dump(
        self,
        *,
        mode: str = "python",
        exclude_none: bool = False,
        exclude_unset: bool = False,
        by_alias: bool = False,
        **_ignored: Any,
    ) -> Dict[str, Any]:
        """The object as a dict (every declared field, plus any extra ones)."""
        out: Dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if value is None and exclude_none:
                continue
            out[key] = _dump(value, exclude_none)
        return out

    def model_dump_json(self, *, indent: Optional[int] = None, exclude_none: bool = False, **_ignored: Any) -> str:
        """The object as JSON text."""
        return json.dumps(self.model_dump(exclude_none=exclude_none), indent=indent, ensure_ascii=False)

    def to_dict(self, *, exclude_none: bool = True) -> Dict[str, Any]:
        """As openai's ``to_dict()``: a dict without the unset (None) fields."""
        return self.model_dump(exclude_none=exclude_none)

    def to_json(self, *, indent: Optional[int] = 2) -> str:
        """As openai's ``to_json()``."""
        return self.model_dump_json(indent=indent, exclude_none=True)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self.__dict__.items() if value is not None)
        return f"{type(self).__name__}({fields})"


def _list_of(model: Type[_M]) -> Callable[[Any], List[_M]]:
    def build(items: Any) -> List[_M]:
        return [model(**item) if isinstance(item, dict) else item for item in items]

    return build


def _one(model: Type[_M]) -> Callable[[Any], Any]:
    def build(item: Any) -> Any:
        return model(**item) if isinstance(item, dict) else item

    return build


class PromptTokensDetails(BaseModel):
    cached_tokens: Optional[int]
    audio_tokens: Optional[int]
    _fields = {"audio_tokens": None, "cached_tokens": None}


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: Optional[int]
    accepted_prediction_tokens: Optional[int]
    rejected_prediction_tokens: Optional[int]
    audio_tokens: Optional[int]
    _fields = {
        "accepted_prediction_tokens": None,
        "audio_tokens": None,
        "reasoning_tokens": None,
        "rejected_prediction_tokens": None,
    }


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: Optional[PromptTokensDetails]
    completion_tokens_details: Optional[CompletionTokensDetails]
    _fields = {
        "completion_tokens": None,
        "prompt_tokens": None,
        "total_tokens": None,
        "completion_tokens_details": _one(CompletionTokensDetails),
        "prompt_tokens_details": _one(PromptTokensDetails),
    }


class Function(BaseModel):
    """The function a tool call invokes; ``arguments`` is JSON text."""

    name: str
    arguments: str
    _fields = {"arguments": None, "name": None}


class ChatCompletionMessageToolCall(BaseModel):
    id: str
    type: str
    function: Function
    _fields = {"id": None, "function": _one(Function), "type": None}


class ChatCompletionMessage(BaseModel):
    role: str
    content: Optional[str]
    refusal: Optional[str]
    tool_calls: Optional[List[ChatCompletionMessageToolCall]]
    annotations: Optional[List[Any]]
    audio: Optional[Any]
    function_call: Optional[Any]
    _fields = {
        "content": None,
        "refusal": None,
        "role": None,
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": _list_of(ChatCompletionMessageToolCall),
    }


class Choice(BaseModel):
    index: int
    finish_reason: str
    message: ChatCompletionMessage
    logprobs: Optional[Any]
    _fields = {"finish_reason": None, "index": None, "logprobs": None, "message": _one(ChatCompletionMessage)}


class ChatCompletion(BaseModel):
    """A ``chat.completion``. ``slmkit`` (an extra field) says which tier served it and why."""

    id: str
    object: str
    created: int
    model: str
    choices: List[Choice]
    usage: Optional[CompletionUsage]
    system_fingerprint: Optional[str]
    service_tier: Optional[str]
    #: slmkit's routing metadata (tier, attempts, reasons, cache status); None when absent.
    slmkit: Optional[Dict[str, Any]] = None
    _fields = {
        "id": None,
        "choices": _list_of(Choice),
        "created": None,
        "model": None,
        "object": None,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": _one(CompletionUsage),
    }


class ChoiceDeltaToolCallFunction(BaseModel):
    name: Optional[str]
    arguments: Optional[str]
    _fields = {"arguments": None, "name": None}


class ChoiceDeltaToolCall(BaseModel):
    index: int
    id: Optional[str]
    type: Optional[str]
    function: Optional[ChoiceDeltaToolCallFunction]
    _fields = {"index": None, "id": None, "function": _one(ChoiceDeltaToolCallFunction), "type": None}


class ChoiceDelta(BaseModel):
    role: Optional[str]
    content: Optional[str]
    refusal: Optional[str]
    tool_calls: Optional[List[ChoiceDeltaToolCall]]
    function_call: Optional[Any]
    _fields = {
        "content": None,
        "function_call": None,
        "refusal": None,
        "role": None,
        "tool_calls": _list_of(ChoiceDeltaToolCall),
    }


class ChunkChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    finish_reason: Optional[str]
    logprobs: Optional[Any]
    _fields = {"delta": _one(ChoiceDelta), "index": None, "finish_reason": None, "logprobs": None}


class ChatCompletionChunk(BaseModel):
    """A ``chat.completion.chunk``; the first chunk of a call carries the ``slmkit`` field."""

    id: str
    object: str
    created: int
    model: str
    choices: List[ChunkChoice]
    usage: Optional[CompletionUsage]
    system_fingerprint: Optional[str]
    service_tier: Optional[str]
    #: slmkit's routing metadata (tier, attempts, reasons, cache status); None when absent.
    slmkit: Optional[Dict[str, Any]] = None
    _fields = {
        "id": None,
        "choices": _list_of(ChunkChoice),
        "created": None,
        "model": None,
        "object": None,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": _one(CompletionUsage),
    }
