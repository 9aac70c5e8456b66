"""slmkit as a drop-in for the OpenAI client.

    python examples/python/quickstart.py [model.gguf]

Without an argument it runs on the repository's tiny test model (random weights: gibberish
text, but valid JSON and tool calls). Set OPENAI_API_KEY (and OPENAI_BASE_URL) to give it a
large model to escalate to.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

from slmkit import OpenAI  # was: from openai import OpenAI

MODEL = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "core/tests/fixtures/tiny-chatml.gguf"


def main() -> None:
    client = OpenAI(slm={"backend": "local", "model": str(MODEL), "context": 2048})

    # The same call as with openai.
    resp = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}], max_tokens=16
    )
    print("text:", repr(resp.choices[0].message.content), "| served by", getattr(resp, "slmkit", {}).get("tier"))

    # Structured output: the small model is held to the schema by its grammar.
    schema: Dict[str, Any] = {"type": "object", "properties": {"order_id": {"type": "integer"}}, "required": ["order_id"]}
    resp = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Extract the order id: 'order 1234 is late'"}],
        response_format={"type": "json_schema", "json_schema": {"name": "order", "schema": schema}},
        max_tokens=48,
    )
    print("json:", json.loads(resp.choices[0].message.content or "{}"))

    # Streaming.
    for chunk in client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Count to three"}], max_tokens=16, stream=True
    ):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()

    # Where would this go, and what did it all cost?
    print(client.explain(messages=[{"role": "user", "content": "hi"}], metadata={"slmkit_route": "llm"}))
    print(client.ledger.report())


if __name__ == "__main__":
    main()
