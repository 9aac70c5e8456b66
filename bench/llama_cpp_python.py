"""llama-cpp-python on the same GGUF and thread count as `cargo bench -p slmkit --bench engine`.

    bench/.venv-llamacpp/bin/python bench/llama_cpp_python.py MODEL.gguf [THREADS]

Same prompts, same measures (medians [min, max] of 3): prompt processing and generation
tokens/s, TTFT of a second call sharing a ~2,000-token system prompt with the first (with
llama-cpp-python's RAM prompt cache, LlamaRAMCache), and aggregate generation tokens/s for
1..8 "concurrent" requests (llama-cpp-python serves one at a time, so they run in turn).
"""

import statistics
import sys
import time

import llama_cpp

RUNS = 3
WORDS = ["agent", "routes", "the", "ticket", "to", "billing", "when", "a", "refund", "is", "asked", "for", "by", "an",
         "angry", "customer"]


def words(seed: int, count: int) -> str:
    return " ".join(WORDS[(i * 7 + seed * 13 + i // 5) % len(WORDS)] for i in range(count))


def messages(system: str, user: str):
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def timed(llm, system, user, max_tokens):
    started = time.perf_counter()
    first = None
    tokens = 0
    for chunk in llm.create_chat_completion(messages(system, user), max_tokens=max_tokens, temperature=0.0,
                                            stream=True):
        delta = chunk["choices"][0]["delta"] if chunk["choices"] else {}
        if first is None and delta.get("content"):
            first = time.perf_counter() - started
        if delta.get("content") is not None:
            tokens += 1
    total = time.perf_counter() - started
    return (first if first is not None else total), total, tokens


def stats(values):
    values = sorted(values)
    return f"{statistics.median(values):>9.1f}  [{values[0]:.1f}, {values[-1]:.1f}]"


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, n_batch=512,
                          verbose=False)
    print(f"llama-cpp-python {llama_cpp.__version__} ({threads} threads), medians [min, max] of {RUNS}")
    pp, tg = [], []
    for run in range(RUNS):
        system, user = words(100 + run, 90), words(200 + run, 10)
        prompt = llm.tokenize(f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
                              "<|im_start|>assistant\n".encode(), special=True)
        first, _, _ = timed(llm, system, user, 1)
        pp.append(len(prompt) / first)
        first, total, tokens = timed(llm, words(300 + run, 4), "go", 64)
        tg.append(max(tokens - 1, 0) / (total - first))
    print(f"  prompt processing, tokens/s      {stats(pp)}")
    print(f"  generation, tokens/s             {stats(tg)}")

    llm.set_cache(llama_cpp.LlamaRAMCache(capacity_bytes=2 << 30))
    cold, warm = [], []
    shared = 0
    for run in range(RUNS):
        system = words(400 + run, 470)
        shared = len(llm.tokenize(system.encode(), add_bos=False))
        first, _, _ = timed(llm, system, "first question", 1)
        second, _, _ = timed(llm, system, "a second, different question", 1)
        cold.append(first * 1000)
        warm.append(second * 1000)
    print(f"  TTFT, {shared}-token shared prefix, ms (LlamaRAMCache)")
    print(f"    first call (cold)              {stats(cold)}")
    print(f"    second call (prefix reused)    {stats(warm)}")
    print(f"    cold / warm                    {stats([c / w for c, w in zip(cold, warm)])}")
    llm.set_cache(None)

    for concurrent in (1, 2, 4, 8):
        aggregate = []
        for run in range(RUNS):
            started = time.perf_counter()
            tokens = sum(timed(llm, words(500 + run * 10 + i, 6), "continue", 64)[2] for i in range(concurrent))
            aggregate.append(tokens / (time.perf_counter() - started))
        print(f"  {concurrent} concurrent (served in turn), aggregate tokens/s end to end {stats(aggregate)}")


if __name__ == "__main__":
    main()
