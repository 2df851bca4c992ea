"""Per-request scripting of the simulated upstream, and the record of what it
received.

A request is scripted either by ``x-sim-*`` headers (direct tests) or by a
directive anywhere in the prompt text, which survives every hop of the
gateway unchanged:

    [[sim status=429 retry_after=2 delay_ms=100 chunk_delay_ms=5 stall_after=3
          cut_after=2 malformed_after=1 tokens=40 error_after=2]]

Keys (header form is ``x-sim-<key with - for _>``):
- ``status``: answer with this HTTP status and the API's own error body.
- ``retry_after``: seconds, sent as ``retry-after`` with an error status.
- ``error_type``: override the API-specific error type/status string.
- ``delay_ms``: wait before the response headers (time to first byte).
- ``chunk_delay_ms``: wait between stream chunks.
- ``stall_after``: after N content chunks, send nothing more and hold the
  connection open until the client leaves.
- ``cut_after``: after N content chunks, close the connection without the
  stream terminator.
- ``malformed_after``: after N content chunks, send a chunk that is not JSON.
- ``error_after``: after N content chunks, send an in-band error event.
- ``tokens``: the answer has exactly this many words (else derived from the prompt).
- ``finish``: force a finish reason (``length``, ``content_filter``...).
- ``reasoning``: emit this many reasoning words before the answer.
- ``disobey``: 1 = answer in plain text even when a system prompt asks for
  a JSON object (a model ignoring its instructions).
- ``no_json_schema``: 1 = the compat flavour refuses ``response_format``
  ``json_schema`` with a 500, as llama.cpp's server does.
- ``no_usage``: 1 = report no usage at all (no ``usage`` in the answer, no
  usage chunk even when asked for), as llama.cpp's server does.
- ``hostile``/``hostile_kib``: answer with a hostile body instead (see
  ``hostile.py``: bare newlines, a gzip bomb, endless lines, bad UTF-8...).
- ``model``: apply this directive only when the request is for this model
  (so a fallback test can fail the primary and let the backup answer).
- ``fail_first``: apply ``status`` only to the first N requests carrying
  the same directive text (a retry test: fail once, then answer).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

_DIRECTIVE = re.compile(r"\[\[sim((?:\s+[a-z_]+=[^\s\]]+)*)\s*\]\]")
_INT_KEYS = {"status", "retry_after", "delay_ms", "chunk_delay_ms", "stall_after", "cut_after",
             "malformed_after", "error_after", "tokens", "reasoning", "fail_first", "hostile_kib", "disobey",
             "no_json_schema", "no_usage"}
_SEEN: OrderedDict[str, int] = OrderedDict()  # directive text -> requests seen (fail_first)
_SEEN_MAX = 10_000


@dataclass(slots=True)
class Script:
    status: int = 0
    retry_after: int | None = None
    error_type: str = ""
    delay_ms: int = 0
    chunk_delay_ms: int = 0
    stall_after: int | None = None
    cut_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    tokens: int | None = None
    finish: str = ""
    reasoning: int = 0
    fail_first: int | None = None
    hostile: str = ""
    hostile_kib: int | None = None
    disobey: int = 0
    no_json_schema: int = 0
    no_usage: int = 0


def parse_script(headers: Any, prompt_text: str, model: str | None = None) -> Script:
    """Script from ``x-sim-*`` headers, overridden by prompt directives that
    apply to ``model``."""
    values: dict[str, str] = {}
    for name, value in headers.items():
        lname = name.lower()
        if lname.startswith("x-sim-"):
            values[lname[6:].replace("-", "_")] = value
    applied: list[str] = []
    for match in _DIRECTIVE.finditer(prompt_text):
        pairs = dict(pair.partition("=")[::2] for pair in match.group(1).split())
        only = pairs.pop("model", None)
        if only is not None and only != model:
            continue
        values.update(pairs)
        applied.append(match.group(0))
    script = Script()
    for key, value in values.items():
        if not hasattr(script, key):
            continue
        setattr(script, key, int(value) if key in _INT_KEYS else value)
    if script.fail_first is not None and _count("".join(applied) or repr(sorted(values.items()))) > script.fail_first:
        script.status, script.retry_after = 0, None
    return script


def _count(key: str) -> int:
    """How many requests carried ``key`` so far, this one included."""
    seen = _SEEN.pop(key, 0) + 1
    _SEEN[key] = seen
    if len(_SEEN) > _SEEN_MAX:
        _SEEN.popitem(last=False)
    return seen


def strip_directives(text: str) -> str:
    return _DIRECTIVE.sub("", text).strip()


def words_for(prompt_text: str, model: str, count: int | None, max_tokens: int | None) -> tuple[list[str], bool]:
    """Deterministic answer words for a prompt; True if cut by max_tokens."""
    text = strip_directives(prompt_text)
    base = f"Simulated answer from {model}: {text}".split()
    if count is not None:
        base = (base * (count // max(len(base), 1) + 1))[:count]
    truncated = max_tokens is not None and len(base) > max_tokens
    if truncated:
        base = base[:max_tokens]
    return base, truncated


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


# ------------------------------------------------------------------ recorder --


@dataclass(slots=True)
class Received:
    id: int
    api: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    peer_port: int = 0  # the client's TCP source port (which gateway process sent it)
    status: int = 0
    finished_at: float | None = None
    disconnected_at: float | None = None  # the client went away before we finished
    chunks_sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "api": self.api, "path": self.path, "headers": self.headers, "body": self.body,
                "received_at": self.received_at, "peer_port": self.peer_port, "status": self.status,
                "finished_at": self.finished_at,
                "disconnected_at": self.disconnected_at, "chunks_sent": self.chunks_sent}


class Recorder:
    """Keeps the last N requests so tests can assert what the upstream saw."""

    def __init__(self, size: int = 2000) -> None:
        self._items: deque[Received] = deque(maxlen=size)
        self._ids = itertools.count(1)
        self._arrived = asyncio.Condition()

    async def record(self, api: str, request: web.Request, body: Any) -> Received:
        headers = {k.lower(): v for k, v in request.headers.items()}
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        item = Received(next(self._ids), api, request.path_qs, headers, body, time.time(),
                        peer[1] if isinstance(peer, tuple) and len(peer) > 1 else 0)
        self._items.append(item)
        async with self._arrived:
            self._arrived.notify_all()
        return item

    async def record_request(self, api: str, request: web.Request) -> tuple[Any, bool, Received]:
        """Read and record a request: its JSON body (or its text when it is
        not JSON), whether it was JSON, and the record."""
        raw = await request.read()
        try:
            body, is_json = orjson.loads(raw), True
        except orjson.JSONDecodeError:
            body, is_json = raw.decode("utf-8", "replace"), False
        return body, is_json, await self.record(api, request, body)

    def finish(self, item: Received, *, disconnected: bool) -> None:
        now = time.time()
        item.finished_at = now
        if disconnected:
            item.disconnected_at = now
        item.done.set()

    def matching(self, contains: str | None) -> list[Received]:
        if not contains:
            return list(self._items)
        return [r for r in self._items if contains in repr(r.body)]

    async def wait(self, contains: str, state: str, timeout: float) -> Received | None:  # noqa: ASYNC109
        """Wait until a request containing ``contains`` is seen (state=received)
        or has ended (state=finished)."""
        async def _first() -> Received:
            async with self._arrived:
                while True:
                    found = self.matching(contains)
                    if found:
                        return found[-1]
                    await self._arrived.wait()
        try:
            async with asyncio.timeout(timeout):
                item = await _first()
                if state == "finished":
                    await item.done.wait()
                return item
        except TimeoutError:
            return None

    def clear(self) -> None:
        self._items.clear()
