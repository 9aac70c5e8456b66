"""Writes bench/results/metagpt-DATE.md from what bench/metagpt_eval.sh left in bench/results:
per run, slmkit's ledger (`metagpt-DATE-RUN.ledger.jsonl`), MetaGPT's own request log
(`.requests.jsonl`, written inside MetaGPT by tests/e2e/metagpt/drive.py), the run's result
(`.result.json`: the files generate_repo wrote) and MetaGPT's errors (`.errors.txt`).

    python3 bench/metagpt_report.py --date 2026-12-01 --slmkit target/debug/slmkit plain hints

Standard library only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Dict, List

RESULTS = Path(__file__).resolve().parent / "results"


def jsonl(path: Path) -> List[Dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def compiles(path: Path) -> bool:
    try:
        compile(path.read_text(), str(path), "exec")
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return False
    return True


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def run_section(name: str, date: str, slmkit: str) -> Dict[str, Any]:
    stem = RESULTS / f"metagpt-{date}-{name}"
    records = jsonl(Path(f"{stem}.ledger.jsonl"))
    requests = jsonl(Path(f"{stem}.requests.jsonl"))
    result_path = Path(f"{stem}.result.json")
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    errors_path = Path(f"{stem}.errors.txt")
    errors = errors_path.read_text().splitlines() if errors_path.exists() else []
    report: Dict[str, Any] = {}
    if records:
        done = subprocess.run([slmkit, "report", f"{stem}.ledger.jsonl", "--json"], capture_output=True, text=True)
        if done.returncode == 0:
            report = json.loads(done.stdout)

    calls: "OrderedDict[str, List[Dict[str, Any]]]" = OrderedDict()
    for record in sorted(records, key=lambda r: (r["timestamp_ms"], r["attempt"])):
        calls.setdefault(record["call_id"], []).append(record)
    # MetaGPT sends one request at a time, so its requests and slmkit's calls line up in order.
    aligned = len(calls) == len(requests)
    per_action: "OrderedDict[str, Counter[str]]" = OrderedDict()
    for index, (call_id, attempts) in enumerate(calls.items()):
        action = requests[index]["action"] if aligned else (attempts[0].get("task") or "?")
        counts = per_action.setdefault(action, Counter())
        counts["requests"] += 1
        if aligned and requests[index]["reask"]:
            counts["re-sends"] += 1
        served = [a for a in attempts if a["served"] and a["outcome"] != "rejected_by_caller"]
        tier = served[0]["tier"] if served else "failed"
        if served and served[0]["outcome"] == "cache_hit":
            tier = "cache"
        counts[f"served by {tier}"] += 1
        if any(a["tier"] == "slm" and a["outcome"] not in ("ok", "cache_hit") for a in attempts):
            counts["SLM attempts rejected or failed"] += 1
        if served and served[0]["tier"] == "llm" and any(a["tier"] == "slm" for a in attempts):
            counts["escalated"] += 1
        counts["caller rejections"] += sum(1 for a in attempts if a["outcome"] == "rejected_by_caller")

    docs = result.get("docs") or {}
    if not result:  # a stopped run: the documents the eval copied before stopping it
        folder = Path(f"{stem}.docs")
        docs = {kind: [str(folder / f"{kind}.json")] for kind in ("prd", "system_design", "task") if (folder / f"{kind}.json").exists()}
    code = [Path(path).name for path in result.get("code") or []]
    # The code's files as the eval kept them: whether each is valid Python (a floor, not a
    # verdict on the code).
    kept = sorted(Path(f"{stem}.docs/code").glob("*.py"))
    compiling = [path.name for path in kept if compiles(path)]
    lines = [f"### Run `{name}`", ""]
    lines.append(
        "- Files: "
        + ", ".join(f"{kind} {'yes' if docs.get(kind) else 'no'}" for kind in ("prd", "system_design", "task"))
        + (
            f", code {len(code)} ({', '.join(code) or 'none'}; {len(compiling)} of {len(kept)} compile)"
            if name.startswith("code")
            else ""
        )
        + (
            f"; wall time {result.get('wall_s', '?')} s; MetaGPT "
            + ("returned." if result.get("ok") else f"raised: {result.get('error')}.")
            if result
            else "; the run was stopped before MetaGPT finished (no result)."
        )
    )
    sent = len(requests)
    reasks = sum(1 for r in requests if r["reask"])
    lines.append(
        f"- MetaGPT sent {sent} requests ({reasks} identical re-send{'' if reasks == 1 else 's'} after an answer it could not parse); "
        f"slmkit's ledger has {len(calls)} calls, {len(records)} records"
        + ("" if aligned else " (not one call per request: the per-action table uses the ledger's task tags)")
        + "."
    )
    if report:
        lines.append(
            f"- Served by the SLM: {report['served_by_slm']} of {report['calls']} calls ({percent(report['served_by_slm'], report['calls'])}); "
            f"by the LLM stand-in: {report['served_by_llm']}; from the cache: {report['served_from_cache']}; failed: {report['failed_calls']}."
        )
        lines.append(
            f"- Escalations SLM -> LLM: {report['escalations']}; validation failures: {report['validation_failures']}; "
            f"errors: {report['errors']}; SLM first-try success: {report['slm_first_try_success_rate'] * 100:.0f}% of {report['slm_first_tried']} calls."
        )
        lines.append(
            f"- Caller rejections (ledger `rejected_by_caller`): {sum(1 for r in records if r['outcome'] == 'rejected_by_caller')}; "
            f"tokens {report['prompt_tokens']} / {report['completion_tokens']}; cost ${report['cost_usd']:.4f} "
            f"(all-LLM counterfactual ${report['counterfactual_llm_cost_usd']:.4f})."
        )
    if per_action:
        keys = ["requests", "re-sends", "served by slm", "served by llm", "served by cache", "served by failed",
                "escalated", "SLM attempts rejected or failed", "caller rejections"]
        lines += ["", "| action | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for action, counts in per_action.items():
            lines.append(f"| {action} | " + " | ".join(str(counts.get(key, 0)) for key in keys) + " |")
    if errors:
        lines += ["", "MetaGPT's errors (first 5):", "", "```"] + [e[:300] for e in errors[:5]] + ["```"]
    lines.append("")
    return {"lines": lines, "report": report, "docs": docs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--date", required=True)
    parser.add_argument("--slmkit", default="slmkit")
    parser.add_argument("--max-token", default="?")
    parser.add_argument("--threads", default="?")
    parser.add_argument("--idea", default="?")
    args = parser.parse_args()

    lines = [
        f"# MetaGPT 0.8.2 through slmkit serve, real models ({args.date})",
        "",
        "`make eval-metagpt` (`bench/metagpt_eval.sh`): MetaGPT's own `generate_repo(idea, n_round=3,",
        "implement=False, code_review=False)` (WritePRD, WriteDesign, WriteTasks) through `slmkit serve`;",
        "the `code-` runs are `generate_repo(idea, n_round=5, implement=True, code_review=False)`, where",
        "MetaGPT's Engineer also writes the code (WriteCode per file; MetaGPT's default",
        "`max_auto_summarize_code` of 0 skips SummarizeCode), with 8192-token contexts for the longer prompts.",
        "SLM: Qwen2.5-Coder-0.5B-Instruct Q4_K_M; LLM: Qwen2.5-Coder-1.5B-Instruct, a local stand-in",
        "priced at gpt-4o's list price. The README's `[CONTENT]` regex validator. MetaGPT's `max_token`",
        f"{args.max_token} (its default is 4096), temperature 0, streamed;",
        f"{args.threads} threads, niced. Idea: \"{args.idea}\".",
        "",
        "- `plain`: the zero-code route (`config2.yaml`), the router sees only the prompts.",
        "- `hints`: MetaGPT's OpenAILLM also sends the calling action as `metadata.slmkit_task`, and",
        "  the default caller-tag rules send WritePRD, WriteDesign and WriteTasks to the LLM (and",
        "  WriteCode and SummarizeCode to the SLM).",
        "",
        "Each run had its own server, cache and ledger (kept beside this file as",
        "`metagpt-DATE-RUN.ledger.jsonl`, with MetaGPT's request log and the documents it wrote).",
        "MetaGPT's re-ask wait (tenacity, 1-20 s) was set to 0 s; the requests are unchanged.",
        "",
    ]
    # Every run of the day with a ledger here, so a later invocation for other runs keeps these.
    order = ["plain", "hints", "code-plain", "code-hints"]
    found = [run for run in order if (RESULTS / f"metagpt-{args.date}-{run}.ledger.jsonl").exists()]
    for run in found + [run for run in args.runs if run not in found]:
        lines += run_section(run, args.date, args.slmkit)["lines"]
    target = RESULTS / f"metagpt-{args.date}.md"
    target.write_text("\n".join(lines))
    print(target)


if __name__ == "__main__":
    main()
