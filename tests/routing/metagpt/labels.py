"""Labels for recorded MetaGPT calls, by action, with the rubric of `shared/routing/README.md`.

`LABELS.md` gives the reasoning for each. An action that sends two kinds of call gets a suffix
for the second kind (`refine`), read from the call's own fixed text.
"""

from typing import Any, Dict

# slm: narrow, routine, a fixed output format. llm: design, planning, review, debugging, long
# original writing.
LABELS: Dict[str, str] = {
    # The software company.
    "WritePRD": "llm",
    "WritePRD:WP_ISSUE_TYPE": "slm",
    "WritePRD:WP_IS_RELATIVE": "slm",
    "WritePRD:RefinedPRD": "llm",
    "WriteDesign:DesignAPI": "llm",
    "WriteDesign:RefinedDesignAPI": "llm",
    "WriteTasks:PM_NODE": "llm",
    "WriteTasks:REFINED_PM_NODE": "llm",
    "WriteCodePlanAndChange": "llm",
    "WriteCode": "slm",
    "WriteCodeReview": "llm",
    "WriteCodeReview:rewrite": "llm",
    "SummarizeCode": "slm",
    "WriteTest": "slm",
    "RunCode": "slm",
    "DebugError": "llm",
    # Other roles.
    "WritePRDReview": "llm",
    "DesignReview": "llm",
    "WriteReview:WRITE_REVIEW_NODE": "llm",
    "PrepareInterview:Questions": "slm",
    "GenerateQuestions:Questions": "slm",
    "WriteDocstring": "slm",
    "WriteDirectory": "slm",
    "WriteContent": "llm",
    # Researcher.
    "CollectLinks": "slm",
    "WebBrowseAndSummarize": "slm",
    "ConductResearch": "llm",
    # Data interpreter.
    "WritePlan": "llm",
    "WriteAnalysisCode": "slm",
    "WriteAnalysisCode:reflection": "llm",
}


def refine(action: str, request: Dict[str, Any]) -> str:
    """The action's name, with a suffix when it sent its second kind of call."""
    text = "\n".join(str(message.get("content", "")) for message in request.get("messages", []))
    if action == "WriteCodeReview" and "## Rewrite Code:" in text:
        return "WriteCodeReview:rewrite"
    if action == "WriteAnalysisCode" and "[reflection on previous impl]" in text:
        return "WriteAnalysisCode:reflection"
    return action


def label_for(action: str, request: Dict[str, Any]) -> str:
    """The label of a call; an action not in `LABELS` is an error (label it first)."""
    if action not in LABELS:
        raise KeyError(f"no label for MetaGPT action {action!r}: add it to labels.py and LABELS.md")
    return LABELS[action]
