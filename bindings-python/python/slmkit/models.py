"""Model references, resolved to local GGUF files.

    from slmkit.models import resolve
    path = resolve("qwen2.5-coder-0.5b-instruct")     # a catalog name
    path = resolve("hf:Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")

A reference is a catalog name (``slmkit models`` lists them), ``hf:ORG/REPO/FILE.gguf[@rev]``,
an ``https://`` URL, or a path. Files are downloaded into the Hugging Face cache
(``$HF_HUB_CACHE``, ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``), verified by size and
sha256 when known, and found there next time. ``HF_HUB_OFFLINE=1`` / ``SLMKIT_OFFLINE=1``:
cache only. ``OpenAI(slm="qwen2.5-coder-0.5b-instruct")`` resolves its model the same way.
"""

from typing import Callable, Optional

from . import _slmkit

#: ``progress(file, done, total)``: bytes of ``file`` received so far; ``total`` may be None.
ProgressCallback = Callable[[str, int, Optional[int]], object]

__all__ = ["ProgressCallback", "resolve"]


def resolve(ref: str, progress: Optional[ProgressCallback] = None) -> str:
    """The local path of the model ``ref``, downloading it first when it is not cached.

    Raises ``slmkit.ModelFetchError`` when a download fails (with the reason: not found,
    access denied and a hint to set ``HF_TOKEN``, a network error, a sha256 mismatch) or when
    offline and not cached; ``slmkit.ModelLoadError`` for a path that does not exist.
    """
    return _slmkit.resolve_model(ref, progress)
