"""Records the chat calls real MetaGPT 0.8.2 sends, for labelled routing sets
(`tests/routing/metagpt-dev.jsonl`, `tests/routing/metagpt-heldout.jsonl`).

MetaGPT runs its own code end to end: `generate_repo` with implementation, code review and
tests (PRD, design, tasks, code, review, summary, tests, run analysis, debugging), an
incremental run on the same project (the refine nodes, the code plan and change), and the
actions of other roles called as those roles call them (research, data interpreter, tutorial,
docstring, interview, reviews). Its LLM is `slmkit-testserver` on loopback, whose default
answer is the prompt's own `## format example` block (an echo without one), so no model and no
network is needed; the web search and browser the research actions use are canned functions.
What is recorded is what reached the server: `GET /_requests` after each project, each body
matched by its messages to the MetaGPT action (and ActionNode) that sent it. Identical
requests (MetaGPT's re-asks) are kept once.

    venv="$(bash tests/e2e/metagpt/install.sh)"
    cargo build -p slmkit-testserver
    "$venv/bin/python" tests/routing/metagpt/record.py \
        --testserver "${CARGO_TARGET_DIR:-target}/debug/slmkit-testserver" --out tests/routing

Writes `metagpt-dev.jsonl`, `metagpt-heldout.jsonl` and `metagpt-fresh.jsonl` under `--out`, one call a line:
`{"id", "label", "action", "idea", "request"}`. Labels come from `labels.py` (the reasoning is
in `LABELS.md`). The splits use different project ideas; the incremental run and a few roles'
actions are in the held-out and fresh splits only. `fresh` was added after the prior was tuned
(see LABELS.md). Takes about a minute (MetaGPT's import is most
of it).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from labels import label_for, refine  # noqa: E402 -- after the path insert

# (slug, idea, split). Held-out ideas differ in domain from the dev ones.
IDEAS = [
    ("snake_game", "Create a snake game in pygame with a high-score table", "dev"),
    ("todo_cli", "Write a command-line todo list that stores tasks in SQLite and supports tags", "dev"),
    ("weather_api", "Build a REST API that caches weather forecasts for 10 minutes per city", "dev"),
    ("expense_split", "An app for splitting shared expenses between 2 to 12 friends, with CSV export", "heldout"),
    ("markdown_blog", "Make a static blog generator that turns Markdown files into HTML pages", "heldout"),
    # Recorded after the prior was tuned, and measured once: a clean check of the tuning.
    ("recipe_box", "A recipe manager that scales ingredient amounts and prints shopping lists", "fresh"),
    ("habit_tracker", "A habit tracker web app with streaks and weekly email reminders", "fresh"),
]
# Per idea: the module besides main.py, its class, and three features (what the scripted PRD,
# design and task list say, so each project's later prompts differ).
PROJECTS = {
    "snake_game": ("game.py", "Game", ["move the snake with arrow keys", "grow when eating food", "keep the top 10 scores"]),
    "todo_cli": ("storage.py", "Storage", ["add tasks with tags", "list tasks by tag", "mark tasks done"]),
    "weather_api": ("cache.py", "ForecastCache", ["get a forecast by city", "cache each city for 10 minutes", "report cache hits"]),
    "expense_split": ("ledger.py", "Ledger", ["record who paid what", "settle debts with few transfers", "export balances to CSV"]),
    "markdown_blog": ("render.py", "Renderer", ["render Markdown to HTML", "build an index page", "copy static assets"]),
    "recipe_box": ("recipes.py", "RecipeBook", ["scale a recipe to n servings", "merge shopping lists", "print a list"]),
    "habit_tracker": ("habits.py", "HabitStore", ["check off a habit", "count the current streak", "send weekly reminders"]),
}
# What the incremental run (held-out only) adds to the project it changes.
INCREMENT = "Add a dark mode and a settings page that remembers the user's choices"

RESEARCH = [
    ("dev", "The energy cost of running small language models on laptops"),
    ("heldout", "How municipal bike-sharing schemes affect car traffic"),
    ("fresh", "How green roofs reduce urban heat islands"),
]
ANALYSIS = [
    ("dev", "Train a classifier on the iris dataset from sklearn and report its accuracy on a held-out 20%"),
    ("heldout", "Load sales.csv, find the three months with the highest revenue per region and plot them"),
    ("fresh", "Cluster the customers in customers.csv by purchase frequency and spend, and describe each cluster"),
]


def digest(messages: List[Dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


# --- which MetaGPT action sent a request -----------------------------------------------------


def calling_action() -> str:
    """The MetaGPT Action up the stack, and the outermost ActionNode it fills (`Action:node`
    when the node's key is not the action's own name)."""
    frame = sys._getframe(2)
    action: Optional[str] = None
    node: Optional[str] = None
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if candidate is not None:
            names = [cls.__name__ for cls in type(candidate).__mro__]
            if "ActionNode" in names and getattr(candidate, "key", None):
                node = str(candidate.key)
            if action is None and "Action" in names:
                action = type(candidate).__name__
        frame = frame.f_back  # type: ignore[assignment]
    action = action or "unknown"
    if node and node.replace(" ", "") != action:
        return f"{action}:{node}"
    return action


SENT: Dict[str, str] = {}


def tag_requests() -> None:
    """Notes which action built each request (nothing is added to the request itself)."""
    from metagpt.provider.openai_api import OpenAILLM

    original = OpenAILLM._cons_kwargs

    def _cons_kwargs(self: Any, messages: List[Dict[str, Any]], timeout: Any = None, **extra: Any) -> Dict[str, Any]:
        kwargs: Dict[str, Any] = original(self, messages, timeout=timeout, **extra)
        SENT.setdefault(digest(kwargs["messages"]), calling_action())
        return kwargs

    OpenAILLM._cons_kwargs = _cons_kwargs  # type: ignore[method-assign]


def offline() -> None:
    """What would reach the network besides the LLM: RunCode's `pip install -r requirements.txt`
    and tiktoken's encodings (the research actions size their prompts with them; an estimate
    of 4 characters a token stands in). Also ActionNode's re-ask waits, which change no
    request, only the time between them."""
    import tenacity
    from metagpt.actions.action_node import ActionNode
    from metagpt.actions.run_code import RunCode
    from metagpt.utils import text, token_counter

    def estimate(string: str, model: str = "") -> int:
        return len(string) // 4 + 1

    def estimate_messages(messages: List[Dict[str, Any]], model: str = "") -> int:
        return sum(estimate(str(message.get("content", ""))) + 4 for message in messages)

    token_counter.count_output_tokens = estimate  # type: ignore[assignment]
    token_counter.count_input_tokens = estimate_messages  # type: ignore[assignment]
    text.count_output_tokens = estimate  # type: ignore[attr-defined]

    RunCode._install_dependencies = staticmethod(lambda working_directory, env: None)  # type: ignore[assignment]
    ActionNode._aask_v1.retry.wait = tenacity.wait_fixed(0)  # type: ignore[attr-defined]


# --- the server --------------------------------------------------------------------------------


class Server:
    def __init__(self, binary: str) -> None:
        self.process = subprocess.Popen([binary, "--port", "0"], stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.base_url = self.process.stdout.readline().strip()
        self.origin = self.base_url[: -len("/v1")]
        self.seen = 0
        self.post("/_default", {"kind": "format_example"})

    def post(self, path: str, body: Any) -> None:
        request = urllib.request.Request(
            self.origin + path, json.dumps(body).encode(), {"content-type": "application/json"}, method="POST"
        )
        urllib.request.urlopen(request, timeout=5).read()

    def new_requests(self) -> List[Dict[str, Any]]:
        with urllib.request.urlopen(self.origin + "/_requests", timeout=5) as response:
            received = json.loads(response.read())
        fresh = [entry["body"] for entry in received[self.seen :]]
        self.seen = len(received)
        return fresh

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# --- what MetaGPT is asked to do ---------------------------------------------------------------


def documents(slug: str, idea: str) -> List[str]:
    """The PRD, design and task list a model would write for this idea, as MetaGPT's ActionNode
    parser takes them (its format examples filled with the idea's own names), in call order."""
    from metagpt.actions.design_api_an import DESIGN_API_NODE
    from metagpt.actions.project_management_an import PM_NODE
    from metagpt.actions.write_prd_an import WRITE_PRD_NODE

    module, cls, features = PROJECTS[slug]
    overrides = [
        {"Original Requirements": idea, "Project Name": slug,
         "Product Goals": [f"Let users {feature}" for feature in features],
         "User Stories": [f"As a user, I want to {feature}" for feature in features],
         "Requirement Pool": [[f"The app can {feature}", "P0"] for feature in features],
         "Requirement Analysis": f"{idea}. The core is {module}; main.py wires it to the user.",
         "Anything UNCLEAR": ""},
        {"Implementation approach": f"We will keep {cls} in {module} and a thin entry point in main.py.",
         "File list": ["main.py", module],
         "Data structures and interfaces": "\nclassDiagram\n    class Main {\n        +main() str\n    }\n"
                                           f"    class {cls} {{\n" + "".join(
             f"        +{feature.split()[0]}_{i}() None\n" for i, feature in enumerate(features)) + "    }\n"
                                           f"    Main --> {cls}\n",
         "Program call flow": f"\nsequenceDiagram\n    participant M as Main\n    participant C as {cls}\n"
                              f"    M->>C: {features[0].split()[0]}_0()\n",
         "Anything UNCLEAR": ""},
        {"Required packages": ["pytest==8.0.0"], "Required Other language third-party packages": ["No third-party dependencies required"],
         "Logic Analysis": [[module, f"{cls}: {', '.join(features)}"], ["main.py", f"Creates {cls} and runs it"]],
         "Task list": [module, "main.py"], "Full API spec": "",
         "Shared Knowledge": f"{module} holds all state in {cls}.", "Anything UNCLEAR": ""},
    ]
    replies = []
    for node, override in zip((WRITE_PRD_NODE, DESIGN_API_NODE, PM_NODE), overrides):
        example = {child.key: child.example for child in node.children.values()}
        example.update({key: value for key, value in override.items() if key in example})
        replies.append("[CONTENT]\n" + json.dumps(example, indent=4) + "\n[/CONTENT]")
    return replies


def software_company(server: "Server", slug: str, idea: str, increment: bool) -> None:
    from metagpt.software_company import generate_repo

    # The first three calls of a new project are the PRD, the design and the task list.
    server.post("/_script", [{"kind": "reply", "content": reply} for reply in documents(slug, idea)])

    repo = generate_repo(idea, n_round=12, implement=True, code_review=True, run_tests=True, project_name=slug)
    if increment and repo is not None:
        generate_repo(INCREMENT, n_round=12, implement=True, code_review=True, run_tests=False,
                      project_path=str(repo.workdir))


async def research(topic: str) -> None:
    from metagpt.actions.research import CollectLinks, ConductResearch, WebBrowseAndSummarize
    from metagpt.tools import SearchEngineType, WebBrowserEngineType
    from metagpt.tools.search_engine import SearchEngine
    from metagpt.tools.web_browser_engine import WebBrowserEngine
    from metagpt.utils.parse_html import WebPage

    async def search(query: str, max_results: int = 8, as_string: bool = True) -> Any:
        results = [
            {"title": f"{query}: study {i}", "link": f"https://example.org/{i}", "snippet": f"Findings {i} on {query}."}
            for i in range(max_results)
        ]
        return json.dumps(results) if as_string else results

    async def browse(url: str, *urls: str) -> Any:
        def page(link: str) -> WebPage:
            text = (f"{topic}. Measurements from {link}: the survey covered 14 sites over two years. " * 12).strip()
            return WebPage(inner_text=text, html=f"<p>{text}</p>", url=link)

        return [page(u) for u in (url, *urls)] if urls else page(url)

    links = CollectLinks(search_engine=SearchEngine(engine=SearchEngineType.CUSTOM_ENGINE, run_func=search))
    found = await links.run(topic, decomposition_nums=2, url_per_query=2)
    browser = WebBrowseAndSummarize(web_browser_engine=WebBrowserEngine(engine=WebBrowserEngineType.CUSTOM,
                                                                        run_func=browse))
    summaries: Dict[str, Any] = {}
    for query, urls in list(found.items())[:2]:
        if urls:
            summaries.update(await browser.run(*urls[:2], query=query))
    content = "\n".join(f"url: {url}\nsummary: {text}" for url, text in summaries.items() if text) or topic
    await ConductResearch().run(topic, content)


async def data_interpreter(requirement: str) -> None:
    from metagpt.actions.di.write_analysis_code import WriteAnalysisCode
    from metagpt.actions.di.write_plan import WritePlan
    from metagpt.schema import Message

    await WritePlan().run([Message(content=requirement, role="user")])
    status = (
        "## Finished Tasks\n### code\n```python\nimport pandas as pd\ndf = pd.read_csv('data.csv')\n```\n"
        "### execution result\n   a  b\n0  1  2\n\n## Current Task\nClean the data and fit the model\n"
    )
    await WriteAnalysisCode().run(user_requirement=requirement, plan_status=status)
    failed = [
        Message(content="```python\nmodel.fit(X, y)\n```", role="assistant"),
        Message(content="NameError: name 'X' is not defined", role="user"),
    ]
    await WriteAnalysisCode().run(user_requirement=requirement, plan_status=status, working_memory=failed,
                                  use_reflection=True)


async def other_roles(slug: str, idea: str, split: str) -> None:
    """Actions of MetaGPT's other roles, called with the inputs those roles pass."""
    from metagpt.actions.generate_questions import GenerateQuestions
    from metagpt.actions.prepare_interview import PrepareInterview
    from metagpt.actions.write_prd_review import WritePRDReview
    from metagpt.actions.write_review import WriteReview

    prd = json.dumps({"Original Requirements": idea, "Product Goals": ["simple", "fast", "reliable"],
                      "User Stories": [f"As a user, I want to {idea.lower()}"]}, indent=2)
    await WritePRDReview().run(prd)
    await WriteReview().run(prd)
    await PrepareInterview().run(f"Senior Python engineer to build: {idea}")
    await GenerateQuestions().run(f"## TOPIC\n{idea}\n\n## RECORD\nWe agreed on Python and SQLite.")
    if split != "dev":
        from metagpt.actions.design_api_review import DesignReview
        from metagpt.actions.write_docstring import WriteDocstring
        from metagpt.actions.write_tutorial import WriteContent, WriteDirectory

        code = (f"def split_{slug}(items, people):\n    total = sum(i.amount for i in items)\n"
                "    return {p: round(total / len(people), 2) for p in people}\n")
        await WriteDocstring().run(code)
        await DesignReview().run(prd, "GET /items, POST /items, DELETE /items/{id}")
        directory = {"title": f"Tutorial: {idea}", "directory": [{"Setup": ["Install", "Configure"]}]}
        await WriteDirectory().run(topic=idea)
        await WriteContent(directory=directory["directory"][0]).run(topic=idea)


# --- the sets ----------------------------------------------------------------------------------


def collect(server: Server, split: str, idea: str, rows: List[Dict[str, Any]], seen: set) -> None:
    for body in server.new_requests():
        key = digest(body["messages"])
        if key in seen:
            continue  # a re-ask: MetaGPT sent the identical request again
        seen.add(key)
        action = refine(SENT.get(key, "unknown"), body)
        rows.append({"split": split, "idea": idea, "action": action, "request": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--testserver", required=True, help="the slmkit-testserver binary")
    parser.add_argument("--out", required=True, type=Path, help="folder for metagpt-{dev,heldout}.jsonl")
    args = parser.parse_args()
    args.out = args.out.resolve()
    args.testserver = str(Path(args.testserver).resolve())

    work = Path(tempfile.mkdtemp(prefix="slmkit-metagpt-record-"))
    server = Server(args.testserver)
    try:
        (work / "config").mkdir()
        (work / "home").mkdir()
        # MetaGPT's defaults otherwise (max_token 4096, temperature 0, streaming): what a user's
        # config2.yaml with only base_url, key and model gets.
        (work / "config" / "config2.yaml").write_text(json.dumps({"llm": {
            "api_type": "open_llm", "base_url": server.base_url, "api_key": "sk-unused", "model": "gpt-4o",
            "calc_usage": False,
        }}))
        os.environ.update(METAGPT_PROJECT_ROOT=str(work), HOME=str(work / "home"))
        os.chdir(work)
        # MetaGPT prints streamed answers to stdout; the sets go to files, so that is harmless.
        tag_requests()
        offline()

        rows: List[Dict[str, Any]] = []
        seen: set = set()
        for slug, idea, split in IDEAS:
            software_company(server, slug, idea, increment=split != "dev")
            collect(server, split, slug, rows, seen)
            asyncio.run(other_roles(slug, idea, split))
            collect(server, split, slug, rows, seen)
        for split, topic in RESEARCH:
            asyncio.run(research(topic))
            collect(server, split, "research", rows, seen)
        for split, requirement in ANALYSIS:
            asyncio.run(data_interpreter(requirement))
            collect(server, split, "analysis", rows, seen)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    counts: Dict[Tuple[str, str], int] = {}
    for split in ("dev", "heldout", "fresh"):
        chosen = [row for row in rows if row["split"] == split]
        with open(args.out / f"metagpt-{split}.jsonl", "w", encoding="utf-8") as out:
            for index, row in enumerate(chosen, 1):
                line = {"id": f"mg{split[0]}-{index:03d}", "label": label_for(row["action"], row["request"]),
                        "action": row["action"], "idea": row["idea"], "request": row["request"]}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
                counts[(split, row["action"])] = counts.get((split, row["action"]), 0) + 1
    for (split, action), count in sorted(counts.items()):
        print(f"{split:8} {action:40} {count}", file=sys.stderr)


if __name__ == "__main__":
    main()
