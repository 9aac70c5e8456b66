#!/usr/bin/env python3
"""Static checks for an eval task file (stdlib only).

    python3 tests/eval/check_tasks.py [tests/eval/agent_tasks.jsonl]

Validates the format described in tests/eval/FORMAT.md plus this set's own conventions
(known kinds, one check type per kind, strict JSON schemas, tools that exist, labels that
the prompt lists, a prompt-size budget), and warns where a ground-truth value cannot be
found literally in the prompt. Exit status 1 on any error; warnings alone exit 0.
"""
import json
import re
import sys
from collections import Counter

TOP_KEYS = {"id", "kind", "request", "check", "note"}
CHECK_FIELDS = {
    "json_fields": {"fields"},
    "json_equal": {"value"},
    "label": {"labels", "expected"},
    "tool_call": {"name", "arguments"},
    "contains_all": {"terms"},
    "regex": {"pattern"},
}
# kind -> allowed check types in this set
KINDS = {
    "extract_schema": {"json_fields"},
    "extract_prompt_json": {"json_fields"},
    "classify": {"label"},
    "tool_auto": {"tool_call"},
    "tool_required": {"tool_call"},
    "yes_no": {"label"},
    "json_repair": {"json_equal"},
    "summary": {"contains_all", "regex"},
}
ROLES = {"system", "user", "assistant", "tool", "developer"}
MAX_PROMPT_TOKENS = 600  # approximate: characters / 4
MAX_TOKENS_CAP = 256

errors = []
warnings = []


def err(tid, msg):
    errors.append(f"{tid}: {msg}")


def warn(tid, msg):
    warnings.append(f"{tid}: {msg}")


def prompt_text(request):
    parts = []
    for m in request.get("messages", []):
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
    return "\n".join(parts)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def type_ok(value, schema):
    t = schema.get("type")
    if t == "string":
        ok = isinstance(value, str)
    elif t == "number":
        ok = is_num(value)
    elif t == "integer":
        ok = is_num(value) and float(value).is_integer()
    elif t == "boolean":
        ok = isinstance(value, bool)
    elif t == "null":
        ok = value is None
    elif t == "array":
        ok = isinstance(value, list)
    elif t == "object":
        ok = isinstance(value, dict)
    elif isinstance(t, list):
        return any(type_ok(value, dict(schema, type=x)) for x in t)
    else:
        ok = True
    if ok and "enum" in schema:
        ok = any(str(value).strip().lower() == str(e).strip().lower() for e in schema["enum"])
    return ok


def value_against_schema(tid, where, value, schema):
    """Check an expected value fits a JSON schema (objects: keys exist, types match)."""
    if not type_ok(value, schema):
        err(tid, f"{where}: expected value {value!r} does not fit schema {json.dumps(schema)}")
        return
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        for k, v in value.items():
            if k not in props:
                err(tid, f"{where}.{k}: not a property of the schema")
            else:
                value_against_schema(tid, f"{where}.{k}", v, props[k])


def strict_schema_rules(tid, schema, where="schema"):
    """OpenAI strict mode: every object lists all properties as required and forbids extras."""
    if schema.get("type") == "object":
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            err(tid, f"{where}: strict schema object needs additionalProperties: false")
        if sorted(schema.get("required", [])) != sorted(props):
            err(tid, f"{where}: strict schema object must require every property")
        for k, p in props.items():
            strict_schema_rules(tid, p, f"{where}.{k}")
    elif schema.get("type") == "array" and isinstance(schema.get("items"), dict):
        strict_schema_rules(tid, schema["items"], f"{where}[]")


def leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)
    else:
        yield value


def literal_in_prompt(tid, value, text, schema_text=""):
    """Warn when an expected leaf value is not literally in the prompt (or in an enum of the schema/tools)."""
    low = text.lower()
    hay = low + "\n" + schema_text.lower()
    for leaf in leaves(value):
        if isinstance(leaf, str):
            if leaf.strip().lower() not in hay:
                warn(tid, f"expected string {leaf!r} not found literally in the prompt")
        elif isinstance(leaf, bool) or leaf is None:
            continue
        elif is_num(leaf):
            forms = {str(leaf), repr(leaf)}
            if float(leaf).is_integer():
                forms.add(str(int(leaf)))
                forms.add(f"{int(leaf):,}")
            forms.add(f"{leaf:.2f}")
            forms.add(str(abs(leaf)))
            if not any(f.lower() in low for f in forms):
                warn(tid, f"expected number {leaf!r} not found literally in the prompt")


def check_request(tid, kind, r):
    if not isinstance(r, dict):
        err(tid, "request is not an object")
        return
    msgs = r.get("messages")
    if not isinstance(msgs, list) or not msgs:
        err(tid, "request.messages must be a non-empty list")
        return
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            err(tid, f"messages[{i}] has no valid role")
        elif not isinstance(m.get("content"), str) or not m["content"].strip():
            err(tid, f"messages[{i}] has no text content")
    if msgs[-1].get("role") != "user":
        err(tid, "last message must be from the user")
    if msgs[0].get("role") not in ("system", "user", "developer"):
        err(tid, "first message must be system or user")
    if r.get("model") not in (None, "gpt-4o"):
        warn(tid, f"model is {r.get('model')!r}, this set uses gpt-4o")
    if r.get("temperature") != 0:
        err(tid, "temperature must be 0")
    mt = r.get("max_tokens")
    if not isinstance(mt, int) or not 1 <= mt <= MAX_TOKENS_CAP:
        err(tid, f"max_tokens must be an integer in 1..{MAX_TOKENS_CAP}")

    has_tools = "tools" in r
    has_rf = "response_format" in r
    if kind in ("tool_auto", "tool_required"):
        tools = r.get("tools")
        if not isinstance(tools, list) or len(tools) < 2:
            err(tid, "tool tasks offer at least two tools")
        want = "auto" if kind == "tool_auto" else "required"
        if r.get("tool_choice") != want:
            err(tid, f"tool_choice must be {want!r}")
        names = []
        for t in tools or []:
            f = t.get("function", {}) if isinstance(t, dict) else {}
            if t.get("type") != "function" or not isinstance(f.get("name"), str):
                err(tid, "tool is not {type: function, function: {name, ...}}")
                continue
            names.append(f["name"])
            params = f.get("parameters", {})
            if params.get("type") != "object" or not isinstance(params.get("properties"), dict):
                err(tid, f"tool {f['name']}: parameters must be an object schema")
            for req_k in params.get("required", []):
                if req_k not in params.get("properties", {}):
                    err(tid, f"tool {f['name']}: required {req_k!r} is not a property")
        if len(set(names)) != len(names):
            err(tid, "duplicate tool names")
    elif has_tools or "tool_choice" in r:
        err(tid, f"{kind} tasks offer no tools")

    if kind == "extract_schema":
        rf = r.get("response_format")
        js = rf.get("json_schema") if isinstance(rf, dict) else None
        if not (isinstance(rf, dict) and rf.get("type") == "json_schema" and isinstance(js, dict)):
            err(tid, "extract_schema needs response_format {type: json_schema, json_schema: {...}}")
        else:
            if not isinstance(js.get("name"), str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", js["name"]):
                err(tid, "json_schema.name must match [A-Za-z0-9_-]{1,64}")
            if js.get("strict") is not True:
                err(tid, "json_schema.strict must be true")
            if not isinstance(js.get("schema"), dict) or js["schema"].get("type") != "object":
                err(tid, "json_schema.schema must be an object schema")
            else:
                strict_schema_rules(tid, js["schema"])
    elif has_rf:
        err(tid, f"{kind} tasks have no response_format")


def check_task(lineno, task, seen):
    tid = task.get("id") if isinstance(task, dict) else None
    if not isinstance(tid, str) or not tid:
        err(f"line {lineno}", "missing string id")
        return None
    if tid in seen:
        err(tid, f"duplicate id (line {lineno})")
    seen.add(tid)
    extra = set(task) - TOP_KEYS
    if extra:
        err(tid, f"unknown top-level keys {sorted(extra)}")
    kind = task.get("kind")
    if kind not in KINDS:
        err(tid, f"unknown kind {kind!r}")
        return kind
    r = task.get("request")
    check_request(tid, kind, r)
    if not isinstance(r, dict) or not isinstance(r.get("messages"), list):
        return kind
    text = prompt_text(r)

    toks = len(json.dumps({k: r[k] for k in ("messages", "tools", "response_format") if k in r},
                          ensure_ascii=False)) / 4
    if toks > MAX_PROMPT_TOKENS:
        err(tid, f"prompt is about {toks:.0f} tokens (> {MAX_PROMPT_TOKENS})")

    c = task.get("check")
    if not isinstance(c, dict) or c.get("type") not in CHECK_FIELDS:
        err(tid, f"unknown check {c!r}")
        return kind
    ct = c["type"]
    if ct not in KINDS[kind]:
        err(tid, f"check type {ct} is not used for kind {kind}")
    extra = set(c) - CHECK_FIELDS[ct] - {"type"}
    if extra:
        err(tid, f"unknown check fields {sorted(extra)}")

    if ct == "json_fields":
        fields = c.get("fields")
        if not isinstance(fields, dict) or not fields:
            err(tid, "json_fields.fields must be a non-empty object")
            return kind
        if kind == "extract_schema":
            schema = r.get("response_format", {}).get("json_schema", {}).get("schema", {})
            value_against_schema(tid, "fields", fields, schema)
            literal_in_prompt(tid, fields, text, json.dumps(schema))
        else:
            for k in fields:
                if f'"{k}"' not in text:
                    err(tid, f"field {k!r} is not named (quoted) in the prompt")
            if "json" not in text.lower():
                err(tid, "extract_prompt_json prompt must ask for JSON")
            literal_in_prompt(tid, fields, text)
    elif ct == "json_equal":
        if "value" not in c:
            err(tid, "json_equal needs value")
        elif not isinstance(c["value"], dict):
            err(tid, "json_equal value should be an object (answers are parsed as one JSON value)")
        else:
            literal_in_prompt(tid, c["value"], text)
    elif ct == "label":
        labels, exp = c.get("labels"), c.get("expected")
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) for x in labels):
            err(tid, "label.labels must be >= 2 strings")
            return kind
        if len({x.lower() for x in labels}) != len(labels):
            err(tid, "duplicate labels")
        if exp not in labels:
            err(tid, "label.expected is not one of labels")
        for a in labels:
            for b in labels:
                if a != b and re.search(r"\b" + re.escape(a.lower()) + r"\b", b.lower()):
                    err(tid, f"label {a!r} occurs as a word inside label {b!r}")
        last = r["messages"][-1]["content"]
        m = re.search(r"Answer with exactly one of: ([^.\n]+)\.", last)
        if not m:
            err(tid, "label prompt must say 'Answer with exactly one of: a, b, c.'")
        elif [x.strip() for x in m.group(1).split(",")] != labels:
            err(tid, "labels listed in the prompt differ from check.labels")
        if kind == "yes_no" and labels != ["yes", "no"]:
            err(tid, "yes_no labels must be ['yes', 'no']")
    elif ct == "tool_call":
        name, args = c.get("name"), c.get("arguments", {})
        tools = {t["function"]["name"]: t["function"] for t in r.get("tools", [])
                 if isinstance(t, dict) and isinstance(t.get("function"), dict) and "name" in t["function"]}
        if name not in tools:
            err(tid, f"tool_call name {name!r} is not among the offered tools")
            return kind
        if not isinstance(args, dict):
            err(tid, "tool_call.arguments must be an object")
            return kind
        params = tools[name].get("parameters", {})
        value_against_schema(tid, f"{name}.arguments", args, dict(params, type="object"))
        literal_in_prompt(tid, args, text, json.dumps(params))
    elif ct == "contains_all":
        terms = c.get("terms")
        if not isinstance(terms, list) or not 1 <= len(terms) <= 3 or not all(isinstance(t, str) and t for t in terms):
            err(tid, "contains_all.terms must be 1-3 non-empty strings")
        else:
            for t in terms:
                if t.lower() not in text.lower():
                    err(tid, f"term {t!r} does not occur in the source text")
    elif ct == "regex":
        pat = c.get("pattern")
        try:
            re.compile(pat)
        except (re.error, TypeError) as e:
            err(tid, f"regex does not compile: {e}")
        if isinstance(pat, str) and re.search(r"\(\?[=!<]|\\[1-9]", pat):
            err(tid, "regex uses look-around or back-references (not in Rust regex)")
    return kind


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/eval/agent_tasks.jsonl"
    seen, kinds = set(), Counter()
    checks = Counter()
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                task = json.loads(line)
            except json.JSONDecodeError as e:
                err(f"line {lineno}", f"not JSON: {e}")
                continue
            kind = check_task(lineno, task, seen)
            if kind:
                kinds[kind] += 1
            if isinstance(task, dict) and isinstance(task.get("check"), dict):
                checks[task["check"].get("type")] += 1
    for k in KINDS:
        if kinds[k] == 0:
            warn("file", f"no tasks of kind {k}")
    total = sum(kinds.values())
    print(f"{path}: {total} tasks")
    print("kinds:  " + ", ".join(f"{k}={kinds[k]}" for k in KINDS))
    print("checks: " + ", ".join(f"{k}={v}" for k, v in sorted(checks.items())))
    for w in warnings:
        print("warning:", w)
    for e in errors:
        print("error:", e)
    print(f"{len(errors)} errors, {len(warnings)} warnings")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
