"""Drives MetaGPT 0.8.2's own code against an OpenAI-compatible server (`slmkit serve`).

Run it with the MetaGPT venv's Python (`tests/e2e/metagpt/install.sh` prints it), with
`METAGPT_PROJECT_ROOT` set to a folder holding `config/config2.yaml` (whose `llm.base_url`
points at the server) and `HOME` set to a throwaway folder, so nothing of the user's is read
or written. It prints one JSON object on its last stdout line: what each scenario produced.

    python drive.py aask         # a tiny custom Action's _aask
    python drive.py fill CONTEXT # ActionNode.fill on a node with typed fields
    python drive.py repo IDEA    # generate_repo(IDEA, n_round=3, implement=False, code_review=False)
    python drive.py repo IDEA --implement  # the same with the Engineer: n_round=5, implement=True
    python drive.py worker       # imports MetaGPT once, then runs one JSON command per stdin line
                                 # ({"scenario": "fill", "text": "..."}) and answers each with one
                                 # JSON line; MetaGPT's own output goes to stderr

Importing MetaGPT takes 10-25 s on 2 cores, so the tests keep one worker for the session.

Options: `--task-hints` passes the calling MetaGPT action's name to slmkit as
`metadata.slmkit_task` (what `examples/python/metagpt/slmkit_provider.py` does in-process;
config2.yaml alone cannot); `--request-log FILE` appends one JSON line per request MetaGPT
sends (the calling action, a digest of the messages, whether it repeats the previous request
of that action: a re-ask); `--implement` (repo only) lets MetaGPT's Engineer write the code
too; `--no-retry-wait` makes ActionNode's re-ask (tenacity, up to 6
tries) wait 0 s instead of 1-20 s, which changes no request, only the time between them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional


def calling_action(skip: int = 2) -> Optional[str]:
    """The class name of the MetaGPT Action up the call stack (as slmkit_provider.py finds it)."""
    frame = sys._getframe(skip)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if candidate is not None and any(cls.__name__ == "Action" for cls in type(candidate).__mro__):
            return type(candidate).__name__
        frame = frame.f_back  # type: ignore[assignment]
    return None


def install_task_hints() -> None:
    """MetaGPT's OpenAILLM (api_type open_llm) sends `metadata.slmkit_task` = the calling action."""
    from metagpt.provider.openai_api import OpenAILLM

    original = OpenAILLM._cons_kwargs

    def _cons_kwargs(self: Any, messages: List[Dict[str, Any]], timeout: Any = None, **extra: Any) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = original(self, messages, timeout=timeout, **extra)
        task = calling_action(skip=2)
        if task:
            kwargs.setdefault("extra_body", {})["metadata"] = {"slmkit_task": task}
        return kwargs

    OpenAILLM._cons_kwargs = _cons_kwargs  # type: ignore[method-assign]


def log_requests(path: str) -> None:
    """Every request OpenAILLM sends, appended to `path`: action, messages digest, re-ask flag."""
    import hashlib

    from metagpt.provider.openai_api import OpenAILLM

    original = OpenAILLM._cons_kwargs
    last: Dict[str, str] = {}

    def _cons_kwargs(self: Any, messages: List[Dict[str, Any]], timeout: Any = None, **extra: Any) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = original(self, messages, timeout=timeout, **extra)
        action = calling_action(skip=2) or "unknown"
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True, default=str).encode()).hexdigest()[:16]
        entry = {"time": time.time(), "action": action, "messages": digest, "reask": last.get(action) == digest}
        last[action] = digest
        with open(path, "a") as log:
            log.write(json.dumps(entry) + "\n")
        return kwargs

    OpenAILLM._cons_kwargs = _cons_kwargs  # type: ignore[method-assign]


def no_retry_wait() -> None:
    import tenacity
    from metagpt.actions.action_node import ActionNode

    ActionNode._aask_v1.retry.wait = tenacity.wait_fixed(0)  # type: ignore[attr-defined]


async def run_aask() -> Dict[str, Any]:
    from metagpt.actions import Action

    class SayHello(Action):
        name: str = "SayHello"

        async def run(self, topic: str) -> str:  # type: ignore[override]
            return await self._aask(f"Say one short sentence about {topic}.")

    answer = await SayHello().run("snakes")
    return {"answer": answer}


async def run_fill(context: str) -> Dict[str, Any]:
    from metagpt.actions.action_node import ActionNode
    from metagpt.llm import LLM

    name = ActionNode(
        key="Project Name", expected_type=str, instruction="A snake_case name for the project.", example="cli_snake"
    )
    features = ActionNode(
        key="Features", expected_type=List[str], instruction="Up to three features.", example=["move", "eat", "grow"]
    )
    size = ActionNode(key="Team Size", expected_type=int, instruction="How many developers it needs.", example=2)
    root = ActionNode.from_children("Plan", [name, features, size])
    node = await root.fill(context=context, llm=LLM())
    return {"fields": node.instruct_content.model_dump(), "content": node.content}


def run_repo(idea: str, implement: bool) -> Dict[str, Any]:
    from metagpt.config2 import config
    from metagpt.software_company import generate_repo

    started = time.monotonic()
    # Rounds: PRD, design, tasks; with the Engineer, its code and its summary of the code.
    repo = generate_repo(idea, n_round=5 if implement else 3, implement=implement, code_review=False)
    workdir = Path(repo.workdir) if repo is not None else None
    docs: Dict[str, List[str]] = {}
    for kind in ("prd", "system_design", "task"):
        folder = workdir / "docs" / kind if workdir else None
        docs[kind] = sorted(str(path) for path in folder.glob("*.json")) if folder and folder.is_dir() else []
    # The Engineer writes into a package folder named after the project.
    code = sorted(str(path) for path in (workdir / workdir.name).rglob("*.py")) if workdir else []
    return {
        "workdir": str(workdir) if workdir else None,
        "workspace": str(config.workspace.path),
        "docs": docs,
        "code": code,
        "seconds": round(time.monotonic() - started, 2),
    }


def run(scenario: str, text: str, implement: bool = False) -> Dict[str, Any]:
    import asyncio

    result: Dict[str, Any] = {"scenario": scenario}
    try:
        if scenario == "aask":
            result.update(asyncio.run(run_aask()))
        elif scenario == "fill":
            result.update(asyncio.run(run_fill(text or "A command-line snake game.")))
        elif scenario == "repo":
            result.update(run_repo(text or "A command-line snake game", implement))
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
        result["ok"] = True
    except Exception as error:  # noqa: BLE001 -- reported to the test, which decides
        result.update(ok=False, error=f"{type(error).__name__}: {error}")
    return result


def worker() -> None:
    """One JSON command per stdin line, one JSON answer per line on the original stdout.
    MetaGPT prints streamed answers to stdout, so stdout is pointed at stderr for it."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    import metagpt.actions.action_node  # noqa: F401 -- the slow import, before the first command
    import metagpt.software_company  # noqa: F401

    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        answers.write(json.dumps(run(command["scenario"], command.get("text", "")), default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["aask", "fill", "repo", "worker"])
    parser.add_argument("text", nargs="?", default="")
    parser.add_argument("--task-hints", action="store_true")
    parser.add_argument("--no-retry-wait", action="store_true")
    parser.add_argument("--request-log")
    parser.add_argument("--implement", action="store_true")
    args = parser.parse_args()
    if not os.environ.get("METAGPT_PROJECT_ROOT"):
        sys.exit("drive.py: set METAGPT_PROJECT_ROOT to a folder with config/config2.yaml")
    if args.task_hints:
        install_task_hints()
    if args.request_log:
        log_requests(args.request_log)
    if args.no_retry_wait:
        no_retry_wait()

    if args.scenario == "worker":
        worker()
    else:
        print(json.dumps(run(args.scenario, args.text, args.implement), default=str))


if __name__ == "__main__":
    main()
