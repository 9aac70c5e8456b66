"""A MetaGPT LLM provider backed by ``slmkit.AsyncOpenAI``.

Every LLM call MetaGPT makes goes through slmkit: routine ones are answered by the small
model in-process, checked, retried, and escalated to the large model when they fail. Each
call carries the name of the MetaGPT action that made it (``WritePRD``, ``WriteCode``…) as a
routing hint, so slmkit's router can send whole actions to one tier, and so that the
retries MetaGPT hides (``ActionNode._aask_v1`` re-asks up to 6 times when the output does not
parse; ``WriteCode.write_code`` 6 times) show up per action in :meth:`SlmkitLLM.attempts_by_action`.

Use it::

    from metagpt.configs.llm_config import LLMType
    from slmkit_provider import register
    register(LLMType.OPENAI)   # every role whose config says api_type: openai now uses slmkit

or give one role its own instance: ``role.llm = SlmkitLLM(config)``.

slmkit's own configuration (the small model, validators, pricing) comes from the file named
by ``$SLMKIT_CONFIG`` (or ``SlmkitLLM(config, slmkit_config="slmkit.toml")``); the LLM tier
comes from the MetaGPT config's ``base_url`` / ``api_key`` / ``model``.
"""

from __future__ import annotations

import contextvars
import sys
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Union

import slmkit
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion
from metagpt.configs.llm_config import LLMConfig, LLMType
from metagpt.const import USE_CONFIG_TIMEOUT
from metagpt.logs import log_llm_stream
from metagpt.provider.base_llm import BaseLLM
from metagpt.provider.llm_provider_registry import register_provider

#: Set this to name the task explicitly (it wins over the action found on the call stack).
current_task: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar("slmkit_task", default=None)


def calling_action(skip: int = 2) -> Optional[str]:
    """The class name of the MetaGPT ``Action`` (or ``ActionNode`` owner) up the call stack.

    Actions call the LLM through ``self._aask`` / ``ActionNode.fill``, so walking up the frames
    finds the action instance without any change to MetaGPT.
    """
    frame = sys._getframe(skip)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if candidate is not None and any(cls.__name__ == "Action" for cls in type(candidate).__mro__):
            return type(candidate).__name__
        frame = frame.f_back  # type: ignore[assignment]
    return None


class SlmkitLLM(BaseLLM):  # type: ignore[misc]
    """``BaseLLM`` over slmkit. Implements the three abstract methods; everything else
    (``aask``, ``acompletion_text``, ``get_choice_text``, cost tracking) is BaseLLM's own."""

    def __init__(self, config: LLMConfig, slmkit_config: Optional[str] = None, **slmkit_options: Any) -> None:
        self.config = config
        self.model = config.model
        self.pricing_plan = getattr(config, "pricing_plan", None) or config.model
        llm_tier: Dict[str, Any] = {}
        if getattr(config, "base_url", None) or getattr(config, "api_key", None):
            llm_tier = {"base_url": config.base_url, "api_key": config.api_key}
        self.aclient: slmkit.AsyncOpenAI = slmkit.AsyncOpenAI(config=slmkit_config, **llm_tier, **slmkit_options)
        # call_id (from each answer's slmkit metadata) -> the action that made the call.
        self._task_of_call: Dict[str, str] = {}
        self.calls_by_action: Counter[str] = Counter()

    def _cons_kwargs(self, messages: List[Dict[str, Any]], timeout: Any, task: Optional[str]) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = {
            "messages": messages,
            "max_tokens": getattr(self.config, "max_token", None) or 4096,
            "temperature": self.config.temperature,
            "model": self.model or "",
            "timeout": self.get_timeout(timeout),
        }
        if task:
            # MetaGPT re-asks the identical prompt when it cannot parse the answer; slmkit
            # recognises the re-send itself (the answer is recorded as rejected by the caller,
            # never served again from the cache, and the re-ask is retried), so nothing here
            # needs to tell the two apart.
            kwargs["extra_body"] = {"slmkit": {"task": task}}
        return kwargs

    def _task(self) -> str:
        return current_task.get() or calling_action(skip=3) or "unknown"

    def _remember(self, task: str, metadata: Optional[Dict[str, Any]]) -> None:
        self.calls_by_action[task] += 1
        if metadata and metadata.get("call_id"):
            self._task_of_call[metadata["call_id"]] = task

    async def _achat_completion(
        self, messages: List[Dict[str, Any]], timeout: Any = USE_CONFIG_TIMEOUT
    ) -> ChatCompletion:
        task = self._task()
        rsp: ChatCompletion = await self.aclient.chat.completions.create(
            **self._cons_kwargs(messages, timeout, task)
        )
        self._remember(task, getattr(rsp, "slmkit", None))
        if rsp.usage is not None:
            self._update_costs(rsp.usage.model_dump())
        return rsp

    async def acompletion(
        self, messages: List[Dict[str, Any]], timeout: Any = USE_CONFIG_TIMEOUT
    ) -> ChatCompletion:
        rsp: ChatCompletion = await self._achat_completion(messages, timeout=timeout)
        return rsp

    async def _achat_completion_stream(self, messages: List[Dict[str, Any]], timeout: Any = USE_CONFIG_TIMEOUT) -> str:
        task = self._task()
        stream = await self.aclient.chat.completions.create(
            **self._cons_kwargs(messages, timeout, task), stream=True, stream_options={"include_usage": True}
        )
        parts: List[str] = []
        usage: Optional[CompletionUsage] = None
        async with stream:
            async for chunk in stream:
                # slmkit's metadata rides on the first chunk only (an extra field of openai's model).
                metadata = getattr(chunk, "slmkit", None)
                if metadata:
                    self._remember(task, metadata)
                if chunk.usage is not None:
                    usage = chunk.usage
                if not chunk.choices:  # the usage-only chunk, skipped as OpenAILLM does
                    continue
                text = chunk.choices[0].delta.content or ""
                log_llm_stream(text)
                parts.append(text)
        log_llm_stream("\n")
        if usage is not None:
            self._update_costs(usage.model_dump())
        return "".join(parts)

    def get_choice_text(self, rsp: Union[ChatCompletion, Dict[str, Any]]) -> str:
        if isinstance(rsp, dict):
            return str(rsp["choices"][0]["message"]["content"] or "")
        return rsp.choices[0].message.content or ""

    def attempts_by_action(self) -> Dict[str, Dict[str, int]]:
        """Per MetaGPT action: calls made (MetaGPT's parse retries included), slmkit attempts
        (slmkit's own retries and escalations included), how they ended, and how many answers
        MetaGPT rejected by re-sending the request (``rejected_by_caller``)."""
        table: Dict[str, Dict[str, int]] = defaultdict(lambda: Counter())
        for task, calls in self.calls_by_action.items():
            table[task]["calls"] += calls
        for record in self.aclient.ledger.records():
            task = self._task_of_call.get(record["call_id"], "unknown")
            if record["outcome"] == "rejected_by_caller":
                # A verdict on an earlier attempt, not an attempt of its own.
                table[task]["rejected_by_caller"] += 1
                continue
            table[task]["attempts"] += 1
            table[task][f"{record['tier']}_{record['outcome']}"] += 1
        return {task: dict(counts) for task, counts in table.items()}


def register(api_type: Any = None) -> type:
    """Registers :class:`SlmkitLLM` for ``api_type`` (default ``LLMType.OPENAI``), so roles
    configured with that type get slmkit. MetaGPT's ``LLMType`` is a closed enum, so slmkit
    takes over an existing type rather than adding its own."""
    decorated: type = register_provider(api_type or LLMType.OPENAI)(SlmkitLLM)
    return decorated
