"""Renders the tool-call conversation in core/tests/fixtures/templates/conversation.json with
each template there the way Hugging Face transformers renders chat templates (jinja2 with
trim_blocks and lstrip_blocks, `tojson` as json.dumps(ensure_ascii=False)), writing
<template>.expected.txt beside it. The Rust test `templates_match_the_reference_rendering`
compares slmkit's rendering with these files.

Run: python3 -m venv /tmp/v && /tmp/v/bin/pip install jinja2 && /tmp/v/bin/python scripts/render_reference.py
"""
import json
import pathlib

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

here = pathlib.Path(__file__).resolve().parent.parent / "core" / "tests" / "fixtures" / "templates"
conversation = json.loads((here / "conversation.json").read_text())


def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


for template_path in sorted(here.glob("*.jinja")):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    template = env.from_string(template_path.read_text())
    rendered = template.render(
        messages=conversation["messages"],
        tools=conversation["tools"],
        add_generation_prompt=True,
        bos_token="",
        eos_token="<|im_end|>",
    )
    template_path.with_suffix(".expected.txt").write_text(rendered)
    print(template_path.name, len(rendered))
