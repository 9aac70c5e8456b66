"""The MetaGPT provider example (examples/python/metagpt), checked against MetaGPT's
documented BaseLLM interface.

`pip install metagpt` (0.8.2, the newest release) does not install on this Python: its exact
pins have no wheels here, and with `--no-deps` importing `metagpt.provider` needs every
provider SDK. So unless a real `metagpt` imports, these tests stand in a minimal BaseLLM that
follows MetaGPT 0.8.2's documented flow: `aask` builds the messages and calls
`acompletion_text(messages, stream, timeout)`, which calls `_achat_completion_stream`, or
`_achat_completion` then `get_choice_text`; `_update_costs(usage)` reads prompt_tokens and
completion_tokens; `register_provider(keys)` fills a registry keyed by LLMType.
"""

from __future__ import annotations

import asyncio
import enum
import importlib
import sys
import types
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from conftest import ROOT, Server

EXAMPLE = ROOT / "examples" / "python" / "metagpt"


def _stub_metagpt() -> Dict[str, types.ModuleType]:
    class LLMType(enum.Enum):
        OPENAI = "openai"
        OPEN_LLM = "open_llm"

    class LLMConfig:
        def __init__(self, **fields: Any) -> None:
            self.api_key = "sk-"
            self.api_type = LLMType.OPENAI
            self.base_url = "https://api.openai.com/v1"
            self.model: Optional[str] = None
            self.max_token = 4096
            self.temperature = 0.0
            self.stream = True
            self.timeout = 600
            self.calc_usage = True
            self.pricing_plan: Optional[str] = None
            self.__dict__.update(fields)

    registry: Dict[Any, Any] = {}

    def register_provider(keys: Any) -> Any:
        def decorator(cls: Any) -> Any:
            for key in keys if isinstance(keys, list) else [keys]:
                registry[key] = cls
            return cls

        return decorator

    class BaseLLM:
        system_prompt = "You are a helpful assistant."
        use_system_prompt = True
        cost_manager: Any = None

        def __init__(self, config: Any) -> None:
            raise NotImplementedError

        async def aask(self, msg: str, system_msgs: Optional[List[str]] = None, timeout: int = 0, stream: Optional[bool] = None) -> str:
            messages = [{"role": "system", "content": m} for m in (system_msgs or [self.system_prompt])]
            messages.append({"role": "user", "content": msg})
            if stream is None:
                stream = self.config.stream
            return await self.acompletion_text(messages, stream=stream, timeout=self.get_timeout(timeout))

        async def acompletion_text(self, messages: List[Dict[str, Any]], stream: bool = False, timeout: int = 0) -> str:
            if stream:
                return await self._achat_completion_stream(messages, timeout=self.get_timeout(timeout))
            rsp = await self._achat_completion(messages, timeout=self.get_timeout(timeout))
            return self.get_choice_text(rsp)

        def get_timeout(self, timeout: int) -> int:
            return timeout or self.config.timeout or 300

        def _update_costs(self, usage: Any, model: Optional[str] = None, local_calc_usage: bool = True) -> None:
            usage = usage.model_dump() if hasattr(usage, "model_dump") else usage
            self.costs = getattr(self, "costs", [])
            self.costs.append((int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))))

    modules = {name: types.ModuleType(name) for name in [
        "metagpt", "metagpt.configs", "metagpt.configs.llm_config", "metagpt.const", "metagpt.logs",
        "metagpt.provider", "metagpt.provider.base_llm", "metagpt.provider.llm_provider_registry",
    ]}
    modules["metagpt.configs.llm_config"].__dict__.update(LLMConfig=LLMConfig, LLMType=LLMType)
    modules["metagpt.const"].__dict__.update(USE_CONFIG_TIMEOUT=0)
    modules["metagpt.logs"].__dict__.update(log_llm_stream=lambda text: None)
    modules["metagpt.provider.base_llm"].__dict__.update(BaseLLM=BaseLLM)
    modules["metagpt.provider.llm_provider_registry"].__dict__.update(
        register_provider=register_provider, LLM_REGISTRY=registry
    )
    return modules


@pytest.fixture()
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    try:
        importlib.import_module("metagpt.provider.base_llm")
    except ImportError:
        for name, module in _stub_metagpt().items():
            monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    sys.modules.pop("slmkit_provider", None)
    yield importlib.import_module("slmkit_provider")
    sys.modules.pop("slmkit_provider", None)


class Action:
    """Stands in for metagpt.actions.Action: actions ask through `self._aask`."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm

    async def _aask(self, prompt: str) -> str:
        result: str = await self.llm.aask(prompt)
        return result


class WritePRD(Action):
    async def run(self) -> str:
        # ActionNode._aask_v1 re-asks until the output parses: the hidden retries.
        for _ in range(6):
            answer = await self._aask("Write a PRD. Answer inside [CONTENT][/CONTENT].")
            if answer.startswith("[CONTENT]"):
                return answer
        raise ValueError("never parsed")


class WriteCode(Action):
    async def run(self) -> str:
        return await self._aask("Write the code")


def test_provider_implements_base_llm_and_tags_actions(provider: types.ModuleType, server: Server) -> None:
    from metagpt.configs.llm_config import LLMConfig, LLMType
    from metagpt.provider.llm_provider_registry import LLM_REGISTRY

    config = LLMConfig(api_type=LLMType.OPENAI, model="gpt-4o", base_url=server.base_url, api_key="sk-test", stream=False)
    llm = provider.SlmkitLLM(config)
    server.script(
        {"kind": "reply", "content": "no tags", "prompt_tokens": 10, "completion_tokens": 2},
        {"kind": "reply", "content": "still none", "prompt_tokens": 10, "completion_tokens": 2},
        {"kind": "reply", "content": "[CONTENT]{}[/CONTENT]", "prompt_tokens": 10, "completion_tokens": 5},
        {"kind": "reply", "content": "print('hi')", "prompt_tokens": 8, "completion_tokens": 4},
    )

    async def run() -> List[str]:
        return [await WritePRD(llm).run(), await WriteCode(llm).run()]

    prd, code = asyncio.run(run())
    assert prd == "[CONTENT]{}[/CONTENT]" and code == "print('hi')"
    assert server.requests()[-1]["body"]["model"] == "gpt-4o"
    # MetaGPT's parse retries are visible per action.
    table = llm.attempts_by_action()
    assert table["WritePRD"]["calls"] == 3 and table["WritePRD"]["attempts"] == 3
    # Each re-send told slmkit that MetaGPT rejected the answer before it.
    assert table["WritePRD"]["rejected_by_caller"] == 2
    assert table["WriteCode"] == {"calls": 1, "attempts": 1, "llm_ok": 1}
    assert llm.costs == [(10, 2), (10, 2), (10, 5), (8, 4)]
    # The action name travels as the routing hint.
    assert llm._cons_kwargs([{"role": "user", "content": "new"}], 0, "WriteCode")["extra_body"] == {"slmkit": {"task": "WriteCode"}}

    provider.register(LLMType.OPENAI)
    assert LLM_REGISTRY.get(LLMType.OPENAI, getattr(LLM_REGISTRY, "providers", {}).get(LLMType.OPENAI)) is provider.SlmkitLLM


def test_provider_streams_like_openai_llm(provider: types.ModuleType, server: Server) -> None:
    from metagpt.configs.llm_config import LLMConfig

    llm = provider.SlmkitLLM(LLMConfig(model="m", base_url=server.base_url, api_key="k", stream=True))
    server.script({"kind": "reply", "content": "streamed answer", "prompt_tokens": 4, "completion_tokens": 2})

    answer = asyncio.run(WriteCode(llm).run())
    assert answer == "streamed answer"
    assert llm.costs == [(4, 2)]
    assert llm.calls_by_action["WriteCode"] == 1
    assert llm.get_choice_text({"choices": [{"message": {"content": "x"}}]}) == "x"
