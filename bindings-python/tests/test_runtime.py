"""Behaviour under real use: concurrency, the GIL, cancellation, Ctrl-C, fork."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Dict, List

import pytest
from openai.types.chat import ChatCompletionChunk

import slmkit
from conftest import ROOT, Server, local_slm, remote_llm, user


def test_200_concurrent_async_calls_complete(server: Server) -> None:
    client = slmkit.AsyncOpenAI(base_url=server.base_url, api_key="sk-test")

    async def run() -> List[slmkit.ChatCompletion]:
        return await asyncio.gather(
            *[client.chat.completions.create(model="m", messages=user(f"n{i}")) for i in range(200)]
        )

    results = asyncio.run(run())
    assert [r.choices[0].message.content for r in results] == [f"echo: n{i}" for i in range(200)]
    assert client.ledger.report()["calls"] == 200


def test_200_concurrent_async_calls_on_the_local_model() -> None:
    client = slmkit.AsyncOpenAI(slm=local_slm(slots=4, queue=256, context=256))

    async def run() -> List[slmkit.ChatCompletion]:
        return await asyncio.gather(
            *[client.chat.completions.create(model="slm", messages=user(f"n{i}"), max_tokens=4) for i in range(200)]
        )

    results = asyncio.run(run())
    assert len(results) == 200 and all(r.slmkit and r.slmkit["tier"] == "slm" for r in results)


def test_async_stream_parses(server: Server) -> None:
    client = slmkit.AsyncOpenAI(base_url=server.base_url, api_key="sk-test")

    async def run() -> List[slmkit.ChatCompletionChunk]:
        stream = await client.chat.completions.create(
            model="m", messages=user("a b c"), stream=True, stream_options={"include_usage": True}
        )
        return [chunk async for chunk in stream]

    chunks = asyncio.run(run())
    parsed = [ChatCompletionChunk.model_validate(c.model_dump()) for c in chunks]
    assert "".join(c.choices[0].delta.content or "" for c in parsed if c.choices) == "echo: a b c"
    assert parsed[-1].usage is not None


def test_async_validators_run_on_the_callers_loop() -> None:
    seen: List[Any] = []

    async def check(request: Dict[str, Any], answer: slmkit.ChatCompletion) -> bool:
        seen.append(asyncio.get_running_loop())
        await asyncio.sleep(0)
        return True

    client = slmkit.AsyncOpenAI(slm=local_slm(), validators=[check])

    async def run() -> Any:
        await client.chat.completions.create(model="slm", messages=user("hi"), max_tokens=4)
        return asyncio.get_running_loop()

    loop = asyncio.run(run())
    assert seen == [loop]
    # The sync client runs an async validator on a loop of its own.
    sync = slmkit.OpenAI(slm=local_slm(), validators=[check])
    sync.chat.completions.create(model="slm", messages=user("hi"), max_tokens=4)
    assert len(seen) == 2


def test_a_background_thread_keeps_ticking_during_a_sync_call(server: Server) -> None:
    ticks: List[float] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.01)

    client = slmkit.OpenAI(base_url=server.base_url, api_key="sk-test", slm=local_slm())
    thread = threading.Thread(target=tick)
    thread.start()
    try:
        # A network wait: the server answers after 500 ms.
        server.script({"kind": "reply", "content": "late", "delay_ms": 500})
        started = time.perf_counter()
        client.chat.completions.create(model="m", messages=user("x"), metadata={"slmkit_route": "llm"})
        during = [t for t in ticks if t >= started]
        assert len(during) >= 10, f"only {len(during)} ticks in {time.perf_counter() - started:.2f}s"
        # Local generation: the GIL is released while llama.cpp decodes.
        before = len(ticks)
        started = time.perf_counter()
        while time.perf_counter() - started < 0.5:
            client.chat.completions.create(model="slm", messages=user("hello"), max_tokens=64)
        assert len(ticks) - before >= 10
    finally:
        stop.set()
        thread.join()


def test_breaking_out_of_a_stream_frees_the_slot() -> None:
    client = slmkit.OpenAI(slm=local_slm(slots=1, queue=1, context=512))
    for _ in range(3):
        # Greedy: with a random seed the fixture model sometimes ends at once, and a stream
        # with no content runs to its end before there is anything to break out of. Leaving
        # the `with` closes openai's stream (a bare `break` leaves it to the garbage
        # collector, as with openai over HTTP: its Stream refers to itself).
        with client.chat.completions.create(
            model="slm", messages=user("hi"), max_tokens=400, temperature=0, stream=True
        ) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
        # The only slot is free again: the next call is not overloaded.
        client.chat.completions.create(model="slm", messages=user("again"), max_tokens=4)
    outcomes = [r["outcome"] for r in client.ledger.records()]
    assert outcomes.count("cancelled") == 3 and outcomes.count("ok") == 3, outcomes


class CountingNative:
    """Stands in for a transport's native client, counting the calls it starts."""

    def __init__(self, transport: Any) -> None:
        self.native = transport.native
        self.count = 0
        transport.native = self

    def create_async(self, *args: Any) -> Any:
        self.count += 1
        return self.native.create_async(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.native, name)


def test_cancelling_an_async_call_frees_the_slot(server: Server) -> None:
    client = slmkit.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0)

    async def run() -> None:
        server.script({"kind": "reply", "delay_ms": 3000})
        task = asyncio.ensure_future(client.chat.completions.create(model="m", messages=user("slow")))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.1)

    started = time.perf_counter()
    asyncio.run(run())
    assert time.perf_counter() - started < 2
    assert client.ledger.records()[-1]["outcome"] == "cancelled"

    local = slmkit.AsyncOpenAI(slm=local_slm(slots=1, queue=1, context=512))
    started = CountingNative(local._client._transport)  # type: ignore[attr-defined]

    async def local_run() -> slmkit.ChatCompletion:
        tasks = [asyncio.ensure_future(local.chat.completions.create(model="slm", messages=user("x"), max_tokens=400)) for _ in range(2)]
        # openai's client awaits a few steps before its transport starts the calls: cancel
        # once both are in the native client (one generating, one queued behind it).
        while started.count < 2:
            await asyncio.sleep(0.001)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A cancelled request leaves the engine's queue when its Rust future is dropped, which
        # happens on a runtime thread just after asyncio's cancellation returns.
        deadline = time.perf_counter() + 5
        while True:
            try:
                return await local.chat.completions.create(model="slm", messages=user("after"), max_tokens=4)
            except slmkit.OverloadedError:
                if time.perf_counter() > deadline:
                    raise
                await asyncio.sleep(0.05)

    assert asyncio.run(local_run()).slmkit is not None
    assert [r["outcome"] for r in local.ledger.records()].count("cancelled") >= 1


def _child_script(body: str) -> List[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def test_ctrl_c_interrupts_a_long_sync_call(server: Server) -> None:
    server.script({"kind": "reply", "delay_ms": 20000})
    # A process started in the background by a non-interactive shell (`make test &`, CI
    # runners, nohup) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt
    # handler: Ctrl-C could never interrupt anything. The child asks for the handler itself,
    # as a program that wants Ctrl-C must, so the test checks slmkit rather than its launcher.
    script = f"""
        import signal, sys, time, slmkit
        signal.signal(signal.SIGINT, signal.default_int_handler)
        client = slmkit.OpenAI(base_url={server.base_url!r}, api_key="k", max_retries=0)
        started = time.perf_counter()
        try:
            print("calling", flush=True)
            client.chat.completions.create(model="m", messages=[{{"role": "user", "content": "x"}}])
        except KeyboardInterrupt:
            print("interrupted after %.2f" % (time.perf_counter() - started), flush=True)
            sys.exit(0)
        sys.exit(3)
    """
    child = subprocess.Popen(_child_script(script), stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "calling"
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=10)
    assert child.returncode == 0, out
    assert float(out.split()[-1]) < 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_clients_and_the_runtime_survive_fork(server: Server) -> None:
    # Both tiers used in the parent, then the same client used in the child: without fork
    # handling the child's calls wait on connections and an engine thread that do not exist.
    script = f"""
        import os, sys, slmkit
        client = slmkit.OpenAI(base_url={server.base_url!r}, api_key="k", max_retries=0, timeout=5,
                               slm={local_slm(context=512)!r}, cache={{"enabled": False}})
        def ask(text, **extra):
            return client.chat.completions.create(model="m", messages=[{{"role": "user", "content": text}}], **extra)
        assert ask("parent", metadata={{"slmkit_route": "llm"}}).choices[0].message.content == "echo: parent"
        assert ask("parent", max_tokens=8).slmkit["tier"] == "slm"
        pid = os.fork()
        if pid == 0:
            ok = ask("child", metadata={{"slmkit_route": "llm"}}).choices[0].message.content == "echo: child"
            ok = ok and ask("child", max_tokens=8).slmkit["tier"] == "slm"
            fresh = slmkit.AsyncOpenAI(base_url={server.base_url!r}, api_key="k")
            import asyncio
            answer = asyncio.run(fresh.chat.completions.create(model="m", messages=[{{"role": "user", "content": "async child"}}]))
            os._exit(0 if ok and answer.choices[0].message.content == "echo: async child" else 4)
        _, status = os.waitpid(pid, 0)
        assert ask("again", metadata={{"slmkit_route": "llm"}}).choices[0].message.content == "echo: again"
        assert ask("again", max_tokens=8).slmkit["tier"] == "slm"
        sys.exit(os.waitstatus_to_exitcode(status))
    """
    result = subprocess.run(_child_script(script), timeout=60, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_explain_ledger_and_routing_hints(server: Server) -> None:
    client = slmkit.OpenAI(slm=local_slm(), llm=remote_llm(server))
    decision = client.explain(messages=user("hi"))
    assert decision["tier"] == "slm" and decision["reasons"]
    assert client.explain(messages=user("hi"), metadata={"slmkit_route": "llm"})["tier"] == "llm"
    assert client.explain(messages=user("hi"), extra_body={"slmkit": {"route": "llm"}})["tier"] == "llm"

    resp = client.chat.completions.create(model="slm", messages=user("route me"), extra_body={"slmkit": {"route": "llm"}})
    assert resp.choices[0].message.content == "echo: route me" and resp.slmkit is not None
    assert resp.slmkit["tier"] == "llm"
    # The hint does not leave the process.
    sent = server.requests()[-1]["body"]
    assert "slmkit" not in sent and "metadata" not in sent
    client.chat.completions.create(model="slm", messages=user("local"), max_tokens=4)

    report = client.ledger.report()
    assert isinstance(report, dict) and report["calls"] == 2
    assert report["served_by_llm"] == 1 and report["served_by_slm"] == 1
    assert "slmkit ledger report" in str(report)
    records = client.ledger.records()
    assert [r["tier"] for r in records] == ["llm", "slm"]
    assert {"call_id", "attempt", "outcome", "cost_usd"} <= set(records[0])

    # Feedback on an answered call is a ledger record; an unknown call is a BadRequestError.
    client.feedback(resp.slmkit["call_id"], correct=False, reason="wrong answer")
    verdict = client.ledger.records()[-1]
    assert verdict["outcome"] == "feedback" and verdict["call_id"] == resp.slmkit["call_id"]
    assert verdict["feedback"] == {"correct": False, "source": "caller"} and verdict["reason"] == "wrong answer"
    with pytest.raises(slmkit.BadRequestError):
        client.feedback("call-nope", correct=True)


def test_config_file_and_environment(tmp_path: Any, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "slmkit.toml"
    config.write_text(
        f'[slm]\nbackend = "local"\nmodel = "{local_slm()["model"]}"\ncontext = 1024\n\n'
        f'[llm]\nbackend = "remote"\nbase_url = "{server.base_url}"\nmodel = "big"\napi_key = "k"\n'
    )
    from_file = slmkit.OpenAI(config=config)
    assert from_file.explain(messages=user("x"))["tier"] == "slm"
    # A section given as an argument replaces the file's.
    routed = slmkit.OpenAI(config=config, routing={"default": "llm"})
    assert routed.explain(messages=user("x"))["tier"] == "llm"
    monkeypatch.setenv("SLMKIT_CONFIG", str(config))
    assert slmkit.OpenAI().explain(messages=user("x"))["tier"] == "slm"
    monkeypatch.delenv("SLMKIT_CONFIG")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    from_env = slmkit.OpenAI()
    assert from_env.chat.completions.create(model="m", messages=user("env")).choices[0].message.content == "echo: env"
    assert server.requests()[-1]["authorization"] == "Bearer sk-env"


def test_async_validator_exceptions_surface_as_themselves() -> None:
    class Nope(ValueError):
        pass

    async def check(request: Dict[str, Any], answer: slmkit.ChatCompletion) -> None:
        raise Nope("async validator bug")

    client = slmkit.AsyncOpenAI(slm=local_slm(), validators=[("strict", check)])
    with pytest.raises(Nope, match="async validator bug"):
        asyncio.run(client.chat.completions.create(model="slm", messages=user("hi"), max_tokens=4))
    assert client.ledger.records()[-1]["outcome"] == "error"


def test_pricing_and_the_cache_through_constructor_arguments(server: Server) -> None:
    llm = {**remote_llm(server), "pricing": {"kind": "per_token", "input_usd_per_million": 1e6, "output_usd_per_million": 0}}
    client = slmkit.OpenAI(llm=llm, cache={"enabled": True, "max_entries": 10})
    server.script({"kind": "reply", "content": "priced", "prompt_tokens": 3, "completion_tokens": 1})
    first = client.chat.completions.create(model="m", messages=user("price me"), temperature=0)
    # Another agent's identical request is a hit; the same caller re-sending it at once would be
    # a re-ask (the caller rejecting the first answer), which never reads the cache.
    again = client.chat.completions.create(model="m", messages=user("price me"), temperature=0, user="another-agent")
    assert first.slmkit is not None and again.slmkit is not None
    assert (first.slmkit["cache"], again.slmkit["cache"]) == ("miss", "hit")
    assert again.choices[0].message.content == "priced"
    report = client.ledger.report()
    assert report["llm_cost_usd"] == pytest.approx(3.0)
    assert report["served_from_cache"] == 1
    uncached = slmkit.OpenAI(llm=remote_llm(server), cache={"enabled": False})
    assert uncached.chat.completions.create(model="m", messages=user("x"), temperature=0).slmkit["cache"] != "hit"  # type: ignore[index]


def test_router_rules_from_constructor_route_by_task_tag(server: Server) -> None:
    client = slmkit.OpenAI(
        slm=local_slm(), llm=remote_llm(server), routing={"rules": [{"tags": ["WriteDesign"], "route": "llm"}]}
    )
    decision = client.explain(messages=user("hi"), extra_body={"slmkit": {"task": "WriteDesign"}})
    assert decision["tier"] == "llm" and any("WriteDesign" in reason for reason in decision["reasons"])
    assert client.explain(messages=user("hi"), metadata={"slmkit_task": "WriteDesign"})["tier"] == "llm"


def test_import_stays_light() -> None:
    script = "import sys, slmkit; bad = [m for m in ('openai', 'pydantic', 'httpx') if m in sys.modules]; sys.exit(1 if bad else 0)"
    assert subprocess.run([sys.executable, "-c", script], timeout=30).returncode == 0
