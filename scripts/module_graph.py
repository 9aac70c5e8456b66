#!/usr/bin/env python3
"""Prints the core crate's module graph (which top-level module uses which) and fails if it
has a cycle. Run from the repository root: `python3 scripts/module_graph.py`.

An edge A -> B is any `crate::B` path in the code of a file of module A (`core/src/A.rs` or
`core/src/A/...`); comments (doc links among them) and tests (`#[cfg(test)] mod tests` blocks
and `tests.rs` files) do not count.
Submodules of one module (e.g. `client::call` and `client::live`) may use each other freely.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SRC = Path("core/src")
PATH = re.compile(r"\bcrate::([a-z_]+)")


def module_of(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0].removesuffix(".rs")


def code_of(text: str) -> str:
    marker = text.find("#[cfg(test)]\nmod tests")
    text = text if marker < 0 else text[:marker]
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def main() -> int:
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        module = module_of(path)
        if module == "lib" or path.name == "tests.rs":
            continue
        text = code_of(path.read_text())
        for used in PATH.findall(text):
            if used != module:
                graph.setdefault(module, set()).add(used)
        graph.setdefault(module, set())
    for module in sorted(graph):
        print(f"{module:<10} -> {', '.join(sorted(graph[module])) or '-'}")
    # Depth-first search for a cycle.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            cycle = visit(node)
            if cycle:
                print("cycle: " + " -> ".join(cycle))
                return 1
    print("no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
