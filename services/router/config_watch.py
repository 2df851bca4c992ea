"""Live routing configuration: the config file is watched, validated and
published; every replica serves the published version.

- The file is polled (mtime, size, inode). A changed file that fails
  validation is refused as a whole, with the loader's errors (path and line)
  in the log, and the previous version stays live.
- With NATS configured, the accepted text is published to the JetStream
  key-value bucket ``SWITCHYARD_ROUTES`` (key ``config``) with compare-and-set
  on the entry's revision, together with the version numbers of its routing
  configs (``versions.py``). Every replica polls that entry and serves what
  it holds, so all replicas serve the same versions within a poll interval.
  At start-up a replica whose file is an older one the bucket has seen (its
  mounted config has not caught up yet) follows the bucket instead of
  publishing.
- A replica that cannot reach NATS keeps serving its last good table and
  reports ``synced = False`` (the ``switchyard.v1.Router.config`` health
  status turns NOT_SERVING while the replica keeps answering requests).

Routes, aliases, templates, retry and breaker settings take effect live;
providers, keys and limits are read by the other services at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import nats
from nats.errors import NoRespondersError
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from router.routes import RoutingTable
from router.versions import RoutingDocument, is_stale_file, publish, text_digest
from switchyard import nats_client
from switchyard.config import Config, ConfigError, parse_config

log = logging.getLogger(__name__)

BUCKET = "SWITCHYARD_ROUTES"
KEY = "config"
MAX_TEXT_BYTES = 512 * 1024   # a config file beyond this is refused (the bucket holds it whole)
CAS_ATTEMPTS = 5


class ConfigWatcher:
    def __init__(self, path: Path, nats_url: str | None, *, poll_s: float = 1.0,
                 on_change: Callable[[RoutingTable], None] | None = None) -> None:
        self.path = path
        self.nats_url = nats_url
        self.poll_s = poll_s
        self.on_change = on_change
        text = path.read_text()
        config = parse_config(text, str(path))
        self._file_text = text
        self._file_stat = _stat(path)
        self.document = publish(None, text, config)  # local numbering until the bucket answers
        self.table = RoutingTable(config, self.document)
        self.synced = nats_url is None
        self._nc: nats.NATS | None = None
        self._kv: KeyValue | None = None
        self._revision = 0
        self._unpublished: Config | None = None  # a file edit waiting for NATS
        self._first_sync = True
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------- lifecycle --

    async def start(self, wait_s: float = 3.0) -> None:
        """Sync with the bucket (waiting at most ``wait_s`` for NATS), then keep watching."""
        log.info("config: watching %s every %g s%s", self.path, self.poll_s,
                 " and the published configuration" if self.nats_url else "")
        if self.nats_url:
            connector = asyncio.create_task(self._open())
            self._tasks.append(connector)
            await asyncio.wait([connector], timeout=wait_s)
            if self._kv is not None:
                try:
                    await self._sync()
                except Exception as exc:  # the watch loop tries again
                    log.warning("config: first sync failed (%s: %s)", type(exc).__name__, exc)
        self._tasks.append(asyncio.create_task(self._run()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await nats_client.close(self._nc)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the watcher die: the next poll retries
                self.synced = self.nats_url is None
                log.warning("config: watch failed (%s: %s)", type(exc).__name__, exc)

    async def check(self) -> None:
        """One poll: the file (an edit is published, or applied at once
        without NATS), then the bucket."""
        stat = await asyncio.to_thread(_stat, self.path)
        if stat != self._file_stat:
            self._file_stat = stat
            text = await asyncio.to_thread(self.path.read_text)
            if text != self._file_text:
                config = await self._validated(text, str(self.path))
                if config is not None:
                    self._file_text = text
                    if self.nats_url:
                        self._unpublished = config
                    else:
                        self._apply(publish(self.document, text, config), config)
        if self.nats_url and self._kv is not None:
            try:
                await self._sync()
            except (NotFoundError, NoStreamResponseError, NoRespondersError):
                if not await self._bucket_gone():
                    raise  # NATS is restarting: the next poll tries again
                log.warning("config: bucket %s is gone; creating it again", BUCKET)
                self._kv, self._revision, self._first_sync = None, 0, True
                await self._open_bucket()
                await self._sync()

    # --------------------------------------------------------------- bucket --

    async def _open(self) -> None:
        """Connect (nats-py retries forever) and open the bucket."""
        self._nc = await nats_client.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                             connect_timeout=2, name="switchyard-router-config",
                                             error_cb=_quiet, disconnected_cb=self._lost)
        await self._open_bucket()

    async def _bucket_gone(self) -> bool:
        assert self._nc is not None
        try:
            await self._nc.jetstream().key_value(BUCKET)
        except BucketNotFoundError:
            return True
        return False

    async def _open_bucket(self) -> None:
        """Open the bucket, creating it when it does not exist (first start, or an operator deleted it)."""
        assert self._nc is not None
        self._kv = await nats_client.open_bucket(self._nc.jetstream(), BUCKET, history=5,
                                                 max_value_size=2 * MAX_TEXT_BYTES)

    async def _sync(self) -> None:
        """Publish a pending file edit (or the start-up file), then serve what
        the bucket holds."""
        if self._first_sync or self._unpublished is not None:
            await self._publish_file(startup=self._first_sync, config=self._unpublished)
            self._first_sync = False
            self._unpublished = None
        current, revision = await self._entry()
        if current is None:
            await self._publish_file(startup=False)
        elif revision != self._revision:
            await self._adopt(current, revision)
        self.synced = True

    async def _lost(self) -> None:
        self.synced = False
        log.warning("config: NATS connection lost; serving the last known configuration")

    async def _entry(self) -> tuple[RoutingDocument | None, int]:
        assert self._kv is not None
        try:
            entry = await self._kv.get(KEY)
        except KeyNotFoundError:
            return None, 0
        if not entry.value:
            return None, entry.revision
        return RoutingDocument.from_bytes(entry.value), entry.revision

    async def _publish_file(self, *, startup: bool, config: Config | None = None) -> None:
        """Publish the file's text unless the bucket already holds it (or, at
        start-up, holds something newer than it)."""
        text = self._file_text
        config = config or self.table.config
        for _ in range(CAS_ATTEMPTS):
            current, revision = await self._entry()
            if current is not None and (current.digest == text_digest(text)
                                        or (startup and is_stale_file(current, text))):
                if current.digest != text_digest(text):
                    log.warning("config: %s is older than the published configuration; following the published "
                                "one", self.path)
                await self._adopt(current, revision)
                return
            document = publish(current, text, config)
            try:
                if current is None and revision == 0:
                    revision = await self._kv.create(KEY, document.to_bytes())
                else:
                    revision = await self._kv.update(KEY, document.to_bytes(), last=revision)
            except KeyWrongLastSequenceError:
                continue  # another replica published first: look again
            self._apply(document, config, revision)
            log.info("config: published %s", _versions(document))
            return
        raise RuntimeError("could not publish the configuration: the bucket kept changing")

    async def _adopt(self, document: RoutingDocument, revision: int) -> None:
        if revision == self._revision:
            self.synced = True
            return
        config = self.table.config if document.digest == self.document.digest else \
            await self._validated(document.text, f"{BUCKET}/{KEY} (revision {revision})")
        if config is None:
            self._revision = revision  # do not retry the same broken text every poll
            return
        self._apply(document, config, revision)
        self.synced = True

    # --------------------------------------------------------------- common --

    async def _validated(self, text: str, source: str) -> Config | None:
        if len(text.encode()) > MAX_TEXT_BYTES:
            log.error("config: %s is larger than %d bytes; refused, previous version stays live", source,
                      MAX_TEXT_BYTES)
            return None
        try:
            return await asyncio.to_thread(parse_config, text, source)
        except ConfigError as exc:
            log.error("config: refused, previous version stays live:\n%s", exc)
            return None

    def _apply(self, document: RoutingDocument, config: Config, revision: int = 0) -> None:
        changed = _versions(document) != _versions(self.document) or document.digest != self.document.digest
        self.document = document
        self._revision = revision or self._revision
        if changed or config is not self.table.config:
            self.table = RoutingTable(config, document)
            if self.on_change is not None:
                self.on_change(self.table)
            log.info("config: serving %s", _versions(document) or "no routing configs")


def _versions(document: RoutingDocument) -> str:
    return ", ".join(f"@{slug} v{entry.version}" for slug, entry in sorted(document.routes.items())
                     if not entry.deleted)


def _stat(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_mtime_ns, info.st_size, info.st_ino


async def _quiet(exc: Exception) -> None:
    log.debug("config: NATS client error: %s", exc)
