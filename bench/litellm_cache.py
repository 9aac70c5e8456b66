"""The Python side of `cargo bench -p slmkit-cli --bench shared` (run by it, side by side).

Measures, interleaved per request, on the Redis and the loopback LLM test server the Rust
bench started:
  - a plain redis-py GET of a value the size of LiteLLM's cached entry (Python's floor);
  - a LiteLLM cache hit: `litellm.completion(..., caching=True)` with
    `litellm.cache = Cache(type="redis", ...)`, the answer made by an earlier call;
  - a `slmkit serve` L2 hit over HTTP (httpx, keep-alive): the answer made by another serve
    process, read from Redis by this one for the first time;
  - the same request again to that serve process: an L1 hit over HTTP.

Usage: python litellm_cache.py REDIS_PORT LLM_BASE_URL MAKER_BASE READER_BASE CALLS
Prints one JSON object: {path: [microseconds, ...]}.
"""

import json
import sys
import time

import httpx
import litellm
import redis
from litellm.caching.caching import Cache


def main() -> None:
    redis_port, llm_base, maker, reader, calls = sys.argv[1:6]
    calls = int(calls)
    litellm.cache = Cache(type="redis", host="127.0.0.1", port=int(redis_port))
    litellm.suppress_debug_info = True
    plain = redis.Redis(host="127.0.0.1", port=int(redis_port))
    http = httpx.Client(timeout=30)

    def messages(index: int, who: str) -> list:
        return [
            {"role": "system", "content": "You are a careful assistant."},
            {"role": "user", "content": f"Summarise ticket {index} ({who}): the export button does nothing on Safari."},
        ]

    def ask_litellm(index: int):
        return litellm.completion(
            model="openai/m",
            api_base=llm_base,
            api_key="k",
            messages=messages(index, "litellm"),
            temperature=0,
            caching=True,
        )

    def ask_serve(base: str, index: int, user: str) -> dict:
        body = {"model": "auto", "temperature": 0, "user": user, "messages": messages(index, "slmkit")}
        response = http.post(f"{base}/chat/completions", json=body)
        response.raise_for_status()
        return response.json()

    # The entry LiteLLM writes, to size the plain GET like it.
    ask_litellm(-1)
    sizes = [plain.strlen(key) for key in plain.scan_iter(count=1000) if plain.type(key) == b"string"]
    entry = max(sizes) if sizes else 700
    plain.set("bench:litellm-sized", b"x" * entry)

    times = {"redis_py_get": [], "litellm_hit": [], "serve_l2_hit_http": [], "serve_l1_hit_http": []}
    for index in range(calls):
        ask_litellm(index)  # a miss: the backend answers, LiteLLM stores it
        ask_serve(maker, index, "maker")  # another process makes slmkit's answer

        started = time.perf_counter()
        assert len(plain.get("bench:litellm-sized")) == entry
        times["redis_py_get"].append(time.perf_counter() - started)

        started = time.perf_counter()
        hit = ask_litellm(index)
        times["litellm_hit"].append(time.perf_counter() - started)
        assert hit._hidden_params.get("cache_hit") is True, "a LiteLLM cache hit"

        started = time.perf_counter()
        answer = ask_serve(reader, index, "l2")
        times["serve_l2_hit_http"].append(time.perf_counter() - started)
        assert answer["slmkit"]["cache"] == "hit", answer

        started = time.perf_counter()
        answer = ask_serve(reader, index, "l1")
        times["serve_l1_hit_http"].append(time.perf_counter() - started)
        assert answer["slmkit"]["cache"] == "hit", answer

    print(json.dumps({"entry_bytes": entry, "micros": {k: [t * 1e6 for t in v] for k, v in times.items()}}))


if __name__ == "__main__":
    main()
