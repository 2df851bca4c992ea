"""Version numbers of routing configs: pure functions over the published
document, so every replica that publishes the same file agrees on them.

The published document holds the config file's text (env references left
unexpanded: each replica expands them from its own environment) and, per
routing config slug, its current version, the digest of its effective
content (the validated config with defaults filled in, so writing out a
default value is not a change) and the retained history for pinning
(``@production@3``). A version is never reused: a deleted slug keeps its
counter, and re-adding it continues from there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from switchyard.config import Config, RouteSpec

HISTORY = 20          # versions retained per slug for pinning
FILE_HISTORY = 20     # file digests remembered (to recognise a stale file)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def route_content(spec: RouteSpec) -> dict[str, Any]:
    """The effective content of a config: what its version number stands for."""
    return spec.model_dump(mode="json")


def route_digest(spec: RouteSpec) -> str:
    return hashlib.sha256(orjson.dumps(route_content(spec), option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(slots=True)
class RouteVersions:
    version: int
    digest: str
    deleted: bool = False
    # version -> effective content, newest last, at most HISTORY entries
    history: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class RoutingDocument:
    text: str
    digest: str
    routes: dict[str, RouteVersions] = field(default_factory=dict)
    file_digests: list[str] = field(default_factory=list)

    def version_of(self, slug: str) -> int:
        entry = self.routes.get(slug)
        return 0 if entry is None or entry.deleted else entry.version

    def to_bytes(self) -> bytes:
        return orjson.dumps({
            "text": self.text, "digest": self.digest, "file_digests": self.file_digests,
            "routes": {slug: {"version": r.version, "digest": r.digest, "deleted": r.deleted,
                              "history": [[v, c] for v, c in r.history.items()]}
                       for slug, r in self.routes.items()},
        })

    @classmethod
    def from_bytes(cls, raw: bytes) -> RoutingDocument:
        data = orjson.loads(raw)
        routes = {slug: RouteVersions(int(r["version"]), str(r["digest"]), bool(r.get("deleted")),
                                      {int(v): c for v, c in r.get("history", [])})
                  for slug, r in data.get("routes", {}).items()}
        return cls(str(data["text"]), str(data["digest"]), routes, list(data.get("file_digests", [])))


def publish(previous: RoutingDocument | None, text: str, config: Config) -> RoutingDocument:
    """The document after publishing ``text`` (already validated as ``config``)
    on top of ``previous``: unchanged configs keep their version, changed or
    new ones get the next number, removed ones are marked deleted."""
    digest = text_digest(text)
    old = previous.routes if previous is not None else {}
    routes: dict[str, RouteVersions] = {}
    for slug, spec in config.routes.items():
        content_digest = route_digest(spec)
        before = old.get(slug)
        if before is not None and not before.deleted and before.digest == content_digest:
            routes[slug] = before
            continue
        version = (before.version if before is not None else 0) + 1
        history = dict(before.history) if before is not None else {}
        history[version] = route_content(spec)
        while len(history) > HISTORY:
            del history[min(history)]
        routes[slug] = RouteVersions(version, content_digest, False, history)
    for slug, before in old.items():
        if slug not in routes:
            routes[slug] = RouteVersions(before.version, before.digest, True, before.history)
    file_digests = [d for d in (previous.file_digests if previous else []) if d != digest] + [digest]
    return RoutingDocument(text, digest, routes, file_digests[-FILE_HISTORY:])


def is_stale_file(document: RoutingDocument, text: str) -> bool:
    """Whether ``text`` is an older file than the one ``document`` was made
    from (a replica whose mounted config has not caught up yet)."""
    digest = text_digest(text)
    return digest != document.digest and digest in document.file_digests
