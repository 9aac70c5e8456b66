#!/usr/bin/env python3
"""Generate tiny, random-weight GGUF models used as slmkit test fixtures.

The models use llama.cpp's "llama" architecture with a real (but very small)
byte-level BPE vocabulary ("gpt2" tokenizer model): the 256 GPT-2
byte-to-unicode tokens, a few merges, and the ChatML control tokens
<|endoftext|>, <|im_start|>, <|im_end|>. The weights are random, so the text
the model generates is gibberish, but loading, tokenizing, chat templating,
sampling and stopping on <|im_end|> all go through the real code paths.

Output is deterministic: the same arguments produce byte-identical files.

Usage:
    pip install -r scripts/requirements-fixtures.txt
    python scripts/gen_tiny_gguf.py --out core/tests/fixtures
        -> writes tiny-chatml.gguf and tiny-notemplate.gguf

    # a single, bigger "realistic shape" model (not for committing):
    python scripts/gen_tiny_gguf.py --out /tmp/models --name bigger \\
        --n-embd 896 --n-layer 24 --n-head 14 --n-head-kv 2 --n-ff 4864 \\
        --n-vocab-extra 1000 --dtype q8_0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType, LlamaFileType, TokenType

# --------------------------------------------------------------------------
# Chat template (ChatML with tool support, in the style of Qwen2.5).
#
# Written for both Jinja2 and minijinja: it uses no Python string methods,
# only `tojson`, `is string`, `is defined`, `loop.*` and indexing.
# Pieces that mix `tojson` output with literal text are emitted as separate
# `{{ }}` expressions (Jinja2's tojson returns Markup, and `str + Markup`
# would HTML-escape the literal part).
# --------------------------------------------------------------------------
CHATML_TOOLS_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages and messages[0].role == 'system' %}\n"
    "        {{- messages[0].content }}\n"
    "    {%- else %}\n"
    "        {{- 'You are a helpful assistant.' }}\n"
    "    {%- endif %}\n"
    "    {{- '\\n\\n# Tools\\n\\nYou can call the functions described below to help with the user request.\\n\\n"
    "The function signatures are listed inside <tools></tools> XML tags:\\n<tools>' }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- '\\n' }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- '\\n</tools>\\n\\nTo call a function, reply with a JSON object holding the function name and its arguments "
    "inside <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n"
    "</tool_call><|im_end|>\\n' }}\n"
    "{%- elif messages and messages[0].role == 'system' %}\n"
    "    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.role == 'system' %}\n"
    "        {%- if not loop.first %}\n"
    "            {{- '<|im_start|>system\\n' + message.content + '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- elif message.role == 'assistant' and message.tool_calls %}\n"
    "        {{- '<|im_start|>assistant' }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": ' }}\n"
    "            {{- tool_call.name | tojson }}\n"
    "            {{- ', \"arguments\": ' }}\n"
    "            {%- if tool_call.arguments is string %}\n"
    "                {{- tool_call.arguments }}\n"
    "            {%- else %}\n"
    "                {{- tool_call.arguments | tojson }}\n"
    "            {%- endif %}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == 'tool' %}\n"
    "        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}\n"
    "        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

# Merges, in rank order. Every part must be a token already in the vocabulary
# (a byte token or the result of an earlier merge).
MERGES: list[tuple[str, str]] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("i", "n"),
    ("e", "r"),
    ("Ġ", "a"),
    ("Ġt", "he"),
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

DTYPES = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


def bytes_to_unicode() -> list[tuple[int, str]]:
    """GPT-2's byte -> printable unicode mapping, in GPT-2 vocab order."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [(b, chr(c)) for b, c in zip(bs, cs)]


def build_vocab(n_extra: int) -> tuple[list[str], list[int], list[str], dict[str, int]]:
    tokens = [u for _, u in bytes_to_unicode()]
    types = [TokenType.NORMAL] * len(tokens)
    known = set(tokens)
    merges = []
    for a, b in MERGES:
        assert a in known and b in known, (a, b)
        merged = a + b
        assert merged not in known, merged
        merges.append(f"{a} {b}")
        tokens.append(merged)
        types.append(TokenType.NORMAL)
        known.add(merged)
    special_ids = {}
    for s in SPECIAL_TOKENS:
        special_ids[s] = len(tokens)
        tokens.append(s)
        types.append(TokenType.CONTROL)
    # Optional filler to reach a realistic vocabulary size; placed after the
    # real special tokens so their ids don't depend on --n-vocab-extra. NORMAL, not
    # CONTROL: llama.cpp scans every control token when it splits text on special
    # tokens, and 150k of them would make tokenizing the benchmarks' bottleneck.
    for i in range(n_extra):
        tokens.append(f"<|reserved_{i}|>")
        types.append(TokenType.NORMAL)
    return tokens, [int(t) for t in types], merges, special_ids


def make_tensor(rng: np.random.RandomState, shape: tuple[int, ...], scale: float) -> np.ndarray:
    # float64 draw then cast, so the values don't depend on --dtype.
    return (rng.standard_normal(size=shape) * scale).astype(np.float32)


def add_weight(w: gguf.GGUFWriter, name: str, data: np.ndarray, qtype: GGMLQuantizationType) -> None:
    if data.ndim == 1 or qtype == GGMLQuantizationType.F32:
        w.add_tensor(name, data.astype(np.float32))
    elif qtype == GGMLQuantizationType.F16:
        w.add_tensor(name, data.astype(np.float16))
    else:
        q = gguf.quants.quantize(data, qtype)
        w.add_tensor(name, q, raw_dtype=qtype)


def write_model(path: Path, args: argparse.Namespace, with_template: bool) -> None:
    n_embd, n_layer, n_head = args.n_embd, args.n_layer, args.n_head
    n_head_kv, n_ff = args.n_head_kv, args.n_ff
    if n_embd % n_head != 0:
        sys.exit("--n-embd must be divisible by --n-head")
    if n_head % n_head_kv != 0:
        sys.exit("--n-head must be divisible by --n-head-kv")
    head_dim = n_embd // n_head
    qtype, ftype = DTYPES[args.dtype]
    if qtype == GGMLQuantizationType.Q8_0 and (n_embd % 32 or n_ff % 32):
        sys.exit("q8_0 needs --n-embd and --n-ff to be multiples of 32")

    tokens, token_types, merges, special = build_vocab(args.n_vocab_extra)
    n_vocab = len(tokens)

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(args.name_meta)
    w.add_file_type(int(ftype))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    w.add_vocab_size(n_vocab)
    w.add_context_length(args.n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)

    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(token_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(special["<|endoftext|>"])
    w.add_eos_token_id(special["<|im_end|>"])
    w.add_pad_token_id(special["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    if with_template:
        w.add_chat_template(CHATML_TOOLS_TEMPLATE)

    # Tensors. numpy shape is (n_out, n_in), which ggml sees as ne=[n_in, n_out].
    rng = np.random.RandomState(args.seed)
    s = args.init_scale
    ones = np.ones(n_embd, dtype=np.float32)
    add_weight(w, "token_embd.weight", make_tensor(rng, (n_vocab, n_embd), s), qtype)
    for i in range(n_layer):
        p = f"blk.{i}."
        add_weight(w, p + "attn_norm.weight", ones, qtype)
        add_weight(w, p + "attn_q.weight", make_tensor(rng, (n_head * head_dim, n_embd), s), qtype)
        add_weight(w, p + "attn_k.weight", make_tensor(rng, (n_head_kv * head_dim, n_embd), s), qtype)
        add_weight(w, p + "attn_v.weight", make_tensor(rng, (n_head_kv * head_dim, n_embd), s), qtype)
        add_weight(w, p + "attn_output.weight", make_tensor(rng, (n_embd, n_head * head_dim), s), qtype)
        add_weight(w, p + "ffn_norm.weight", ones, qtype)
        add_weight(w, p + "ffn_gate.weight", make_tensor(rng, (n_ff, n_embd), s), qtype)
        add_weight(w, p + "ffn_up.weight", make_tensor(rng, (n_ff, n_embd), s), qtype)
        add_weight(w, p + "ffn_down.weight", make_tensor(rng, (n_embd, n_ff), s), qtype)
    add_weight(w, "output_norm.weight", ones, qtype)
    add_weight(w, "output.weight", make_tensor(rng, (n_vocab, n_embd), s), qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {path} ({path.stat().st_size} bytes, {n_vocab} tokens, dtype {args.dtype})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--name", help="write a single model DIR/NAME.gguf instead of the two default fixtures")
    ap.add_argument("--no-template", action="store_true", help="with --name: omit tokenizer.chat_template")
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-head-kv", type=int, default=2)
    ap.add_argument("--n-ff", type=int, default=128)
    ap.add_argument("--n-ctx", type=int, default=2048, help="llama.context_length")
    ap.add_argument("--n-vocab-extra", type=int, default=0, help="extra <|reserved_N|> control tokens")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="f32", help="type of the 2-D weights (norms stay f32)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--init-scale", type=float, default=0.02)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    if args.name:
        args.name_meta = args.name
        write_model(args.out / f"{args.name}.gguf", args, with_template=not args.no_template)
    else:
        if args.no_template:
            sys.exit("--no-template only applies with --name (the default run writes both variants)")
        args.name_meta = "tiny-chatml"
        write_model(args.out / "tiny-chatml.gguf", args, with_template=True)
        args.name_meta = "tiny-notemplate"
        write_model(args.out / "tiny-notemplate.gguf", args, with_template=False)


if __name__ == "__main__":
    main()
