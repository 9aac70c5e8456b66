"""llama-cpp-python's structured output on the same GGUF, prompt, schema and thread count as
`core/benches/grammar_speed.rs`, for issue 20's side-by-side.

    bench/.venv-llamacpp/bin/python bench/llama_cpp_python_json.py MODEL.gguf [THREADS] [RUNS]

Greedy, up to 96 tokens, one request at a time after a warm-up (llama-cpp-python reuses the
evaluated prefix of an identical prompt, as slmkit's engine does, so the time is generation):
generation tokens/s, median [min, max] of RUNS, for free text, its JSON-schema mode
(`response_format={"type": "json_object", "schema": ...}`) and plain `json_object`.
"""

import statistics
import sys
import time

import llama_cpp

MAX_TOKENS = 96
PROMPT = (
    "A customer writes: 'I was charged twice for order 4411 and nobody answers my emails, this is the third "
    "time.' Describe the ticket: its intent, whether it is urgent, a priority from 1 to 5, a short tag and a "
    "one-sentence summary."
)
SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"type": "string", "enum": ["refund", "billing", "bug", "other"]},
        "urgent": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1, "maximum": 5},
        "tag": {"type": "string", "maxLength": 12},
        "summary": {"type": "string"},
    },
    "required": ["intent", "urgent", "priority", "tag", "summary"],
    "additionalProperties": False,
}
MODES = [
    ("free text", None),
    ("json_schema", {"type": "json_object", "schema": SCHEMA}),
    ("json_object", {"type": "json_object"}),
]


def run(llm: llama_cpp.Llama, response_format) -> "tuple[int, float]":
    started = time.perf_counter()
    answer = llm.create_chat_completion(
        [{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS, temperature=0.0, response_format=response_format
    )
    return answer["usage"]["completion_tokens"], time.perf_counter() - started


def main() -> None:
    path = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_ctx=2048, verbose=False)
    print(f"llama-cpp-python {llama_cpp.__version__}, {path.rsplit('/', 1)[-1]} ({threads} threads), greedy, "
          f"up to {MAX_TOKENS} tokens, generation tokens/s: median [min, max] of {runs}")
    print()
    print("| mode | tokens | tokens/s | vs free text |")
    print("|---|---:|---:|---:|")
    free = None
    for name, response_format in MODES:
        tokens, _ = run(llm, response_format)
        rates = []
        for _ in range(runs):
            generated, seconds = run(llm, response_format)
            rates.append(generated / seconds)
        median = statistics.median(rates)
        free = free or median
        print(f"| {name} | {tokens} | {median:.1f} [{min(rates):.1f}, {max(rates):.1f}] | {median / free:.2f}x |")


if __name__ == "__main__":
    main()
