"""The low-level clients: ``slmkit.native.Client`` and ``slmkit.native.AsyncClient``.

They take the same arguments as ``slmkit.OpenAI`` and answer ``chat.completions.create`` with
``slmkit.types`` objects (``model_dump()`` gives what ``openai``'s models accept), straight over
the native module: no ``openai`` or ``httpx`` import and the least overhead per call (figures in
``bench/results/dropin-python-*.md``). Use them where a library does not take the client
object and every microsecond counts; ``slmkit.OpenAI`` is the drop-in for everything else.

Errors are ``slmkit``'s classes (``slmkit.BadRequestError``…), not openai's.
"""

from ._client import AsyncClient, AsyncStream, Client, EvalResult, Ledger, Report, Stream, Validator

__all__ = ["AsyncClient", "AsyncStream", "Client", "EvalResult", "Ledger", "Report", "Stream", "Validator"]
