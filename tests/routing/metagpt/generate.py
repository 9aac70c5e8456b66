"""Builds MetaGPT-shaped chat calls from MetaGPT 0.8.2's own prompt templates, filled as a run
fills them, for measuring the router's task keys (`tests/routing/metagpt-calls.jsonl`).

Run with the MetaGPT venv (`bash tests/e2e/metagpt/install.sh` prints it):

    METAGPT_PROJECT_ROOT=<folder with config/config2.yaml> "$venv/bin/python" \
        tests/routing/metagpt/generate.py > tests/routing/metagpt-calls.jsonl

Each line: {"id", "template", "request"}. `template` names the MetaGPT template (the action and
its prompt); the requests carry no `slmkit_task` tag, so the router has to fingerprint them.
"""

from __future__ import annotations

import json
import string
import sys

from metagpt.actions import debug_error, summarize_code, write_code, write_code_review, write_test
from metagpt.actions.design_api_an import DESIGN_API_NODE
from metagpt.actions.project_management_an import PM_NODE
from metagpt.actions.write_prd_an import WP_ISSUE_TYPE_NODE, WP_IS_RELATIVE_NODE, WRITE_PRD_NODE
from metagpt.roles.role import CONSTRAINT_TEMPLATE, PREFIX_TEMPLATE

ROLES = {
    "ProductManager": ("Product Manager", "Alice", "efficiently create a successful product that meets market "
                       "demands and user expectations", "utilize the same language as the user requirements for "
                       "seamless communication"),
    "Architect": ("Architect", "Bob", "design a concise, usable, complete software system",
                  "make sure the architecture is simple enough and use  appropriate open source libraries."
                  "Use same language as user requirement"),
    "ProjectManager": ("Project Manager", "Eve", "break down tasks according to PRD/technical design, generate a "
                       "task list, and analyze task dependencies to start with the prerequisite modules",
                       "use same language as user requirement"),
    "Engineer": ("Engineer", "Alex", "write elegant, readable, extensible, efficient code",
                 "the code should conform to standards like google-style and be modular and maintainable. "
                 "Use same language as user requirement"),
    "QaEngineer": ("QaEngineer", "Edward", "Write comprehensive and robust tests to ensure codes will work as "
                   "expected without bugs", "The test code you write should conform to code standard like PEP8, "
                   "be modular, easy to read and maintain. Use same language as user requirement"),
}

IDEAS = [
    ("snake_game", "Create a snake game in pygame with a high-score table", "game.py"),
    ("todo_cli", "Write a command-line todo list that stores tasks in SQLite and supports tags", "storage.py"),
    ("weather_api", "Build a REST API that caches weather forecasts for 10 minutes per city", "cache.py"),
    ("markdown_blog", "Make a static blog generator that turns Markdown files into HTML pages", "render.py"),
    ("expense_split", "An app for splitting shared expenses between 2 to 12 friends, with CSV export", "ledger.py"),
    ("pomodoro", "A pomodoro timer with a Tk GUI, 25/5 minute cycles and a daily summary", "timer_view.py"),
]


def system(role: str) -> str:
    profile, name, goal, constraints = ROLES[role]
    prefix = PREFIX_TEMPLATE.format(profile=profile, name=name, goal=goal)
    return prefix + CONSTRAINT_TEMPLATE.format(constraints=constraints)


def fill(template: str, idea: tuple[str, str, str]) -> str:
    """Fills every placeholder as a run would: documents as JSON, code as code, names as names."""
    project, requirement, filename = idea
    values = {}
    for _, field, _, _ in string.Formatter().parse(template):
        if not field:
            continue
        if "file" in field or "path" in field:
            values[field] = filename if "name" in field else f"/workspace/{project}/{project}/{filename}"
        elif field == "workspace":
            values[field] = f"/workspace/{project}"
        elif "code" in field:
            values[field] = (
                f"```python\n## {filename}\nclass {project.title().replace('_', '')}:\n"
                f"    def __init__(self):\n        self.items = []\n\n    def run(self):\n"
                f"        return len(self.items)\n```"
            )
        elif "log" in field or "feedback" in field:
            values[field] = f"Traceback (most recent call last):\n  File \"{filename}\", line 12\nKeyError: 'items'"
        else:
            values[field] = json.dumps(
                {"Implementation approach": f"We will use Python to {requirement.lower()}.",
                 "File list": ["main.py", filename], "Anything UNCLEAR": ""},
                indent=4,
            )
    return template.format(**values)


def chat(role: str, user: str) -> dict:
    return {"model": "gpt-4-turbo", "messages": [{"role": "system", "content": system(role)},
                                                  {"role": "user", "content": user}], "temperature": 0}


def templates():
    prd = lambda idea: WRITE_PRD_NODE.compile(context=idea[1], schema="json", mode="auto")  # noqa: E731
    yield "WritePRD", "ProductManager", prd
    yield "WritePRD.is_relative", "ProductManager", lambda idea: WP_IS_RELATIVE_NODE.compile(
        context=f"## Old PRD\n{{\"Original Requirements\": \"{idea[1]}\"}}\n## New Requirements\nAdd dark mode",
        schema="json", mode="auto")
    yield "WritePRD.issue_type", "ProductManager", lambda idea: WP_ISSUE_TYPE_NODE.compile(
        context=f"{idea[1]}. It crashes when I press start.", schema="json", mode="auto")
    yield "WriteDesign", "Architect", lambda idea: DESIGN_API_NODE.compile(
        context=json.dumps({"Original Requirements": idea[1], "Product Goals": ["fast", "simple"]}, indent=4),
        schema="json", mode="auto")
    yield "WriteTasks", "ProjectManager", lambda idea: PM_NODE.compile(
        context=json.dumps({"Implementation approach": idea[1], "File list": ["main.py", idea[2]]}, indent=4),
        schema="json", mode="auto")
    yield "WriteCode", "Engineer", lambda idea: fill(write_code.PROMPT_TEMPLATE, idea)
    yield "WriteCodeReview", "Engineer", lambda idea: fill(
        write_code_review.PROMPT_TEMPLATE + write_code_review.EXAMPLE_AND_INSTRUCTION, idea)
    yield "WriteCodeReview.rewrite", "Engineer", lambda idea: fill(write_code_review.REWRITE_CODE_TEMPLATE, idea)
    yield "SummarizeCode", "Engineer", lambda idea: fill(summarize_code.PROMPT_TEMPLATE, idea)
    yield "WriteTest", "QaEngineer", lambda idea: fill(write_test.PROMPT_TEMPLATE, idea)
    yield "DebugError", "QaEngineer", lambda idea: fill(debug_error.PROMPT_TEMPLATE, idea)


def main() -> None:
    count = 0
    for name, role, build in templates():
        for idea in IDEAS:
            count += 1
            line = {"id": f"mg-{count:03d}", "template": name, "request": chat(role, build(idea))}
            sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
