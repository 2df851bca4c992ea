"""API keys managed at run time: stored in the NATS JetStream key-value bucket
``SWITCHYARD_KEYS`` (one entry per key id: the key's settings with its
SHA-256 digest and public prefix, never the plain key), watched by every edge
replica so a created, rotated or revoked key takes effect everywhere as soon
as the change is delivered (well within a second on a healthy NATS).

A replica that loses NATS keeps its last known set and re-reads the whole
bucket when it reconnects. Writes use compare-and-set on the entry's revision
(create fails if the id exists; rotate and revoke act on the revision read).

Every key's state (a value or a deletion) is held with its revision, and a
state only ever gives way to a newer one. That is what lets a replica apply
its own writes at once without a re-read undoing them: a write made while a
re-read is under way may be missing from the re-read's snapshot and reach the
watch only later, and the snapshot must not win over it (see ``merge_reread``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import nats
import orjson
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue
from pydantic import ValidationError

from switchyard import nats_client
from switchyard.config import ApiKeySpec
from switchyard.errors import UnavailableError

log = logging.getLogger(__name__)

BUCKET = "SWITCHYARD_KEYS"
MAX_KEYS = 100_000
# JetStream's "wrong last sequence" errors: a compare-and-set that lost.
WRONG_LAST_SEQUENCE = (10071, 10164)


class KeyExistsError(Exception):
    """A key with that id already exists."""


# A write that found no stream leader (a NATS node just died and the bucket
# elects another) or no answer in time: the client may retry shortly.
TRANSIENT = (NatsTimeoutError, NoStreamResponseError, NoRespondersError, ConnectionClosedError)


@contextlib.contextmanager
def _transient_as_unavailable() -> Iterator[None]:
    try:
        yield
    except TRANSIENT as exc:
        raise UnavailableError("the key store (NATS) did not answer in time; retry shortly",
                               code="key_store_unavailable", retry_after_ms=1000) from exc


class ManagedKeys:
    def __init__(self, nats_url: str, on_change: Callable[[dict[str, ApiKeySpec]], None]) -> None:
        self.nats_url = nats_url
        self.on_change = on_change
        self.keys: dict[str, ApiKeySpec] = {}
        # The revision of the state held for each key id, deletions included.
        self._revisions: dict[str, int] = {}
        self._nc: nats.NATS | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self._resync = asyncio.Event()
        self._loaded = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._kv is not None and self._nc is not None and self._nc.is_connected

    async def start(self, wait_s: float = 3.0) -> None:
        """Connect and read the bucket, waiting at most ``wait_s`` (the watch goes on in the background)."""
        self._task = asyncio.create_task(self._run())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loaded.wait(), wait_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await nats_client.close(self._nc)

    async def _run(self) -> None:
        self._nc = await nats_client.connect(self.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
                                      connect_timeout=2, name="switchyard-edge-keys", error_cb=_quiet,
                                      reconnected_cb=self._reconnected)
        self._js = self._nc.jetstream()
        self._kv = await nats_client.open_bucket(self._js, BUCKET, history=1)
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("keys: watch failed (%s); keeping the last known keys", type(exc).__name__)
                await asyncio.sleep(1)

    async def _reconnected(self) -> None:
        self._resync.set()

    async def _watch(self) -> None:
        """Read the whole bucket into a new set, then follow changes until a
        reconnect asks for a fresh read."""
        assert self._kv is not None
        self._resync.clear()
        # The stream's last revision before the snapshot: a held key missing
        # from the snapshot was removed if its revision is not newer.
        position = (await self._kv.status()).stream_info.state.last_seq
        watcher = await self._kv.watchall()
        fresh: dict[str, ApiKeySpec] = {}
        fresh_revisions: dict[str, int] = {}
        initial = True
        resync = asyncio.ensure_future(self._resync.wait())
        try:
            while True:
                update = asyncio.ensure_future(watcher.updates(timeout=3600))
                done, _ = await asyncio.wait({update, resync}, return_when=asyncio.FIRST_COMPLETED)
                if resync in done:
                    update.cancel()
                    return
                try:
                    entry = update.result()
                except nats.errors.TimeoutError:
                    continue
                if entry is None:  # the end of the bucket's current contents
                    initial = False
                    keys, self._revisions = merge_reread(self.keys, self._revisions, fresh, fresh_revisions,
                                                         position)
                    self._publish(keys)
                elif initial:
                    _fold(fresh, fresh_revisions, entry)
                elif entry.revision > self._revisions.get(entry.key, 0):
                    keys = dict(self.keys)
                    _fold(keys, self._revisions, entry)
                    self._publish(keys)
        finally:
            resync.cancel()
            with contextlib.suppress(Exception):
                await watcher.stop()

    def _publish(self, keys: dict[str, ApiKeySpec]) -> None:
        self.keys = keys
        self.on_change(keys)
        self._loaded.set()

    # ------------------------------------------------------------ writes --

    def _bucket(self) -> KeyValue:
        if not self.ready:
            raise ConnectionError("NATS is not reachable; keys cannot be changed now")
        assert self._kv is not None
        return self._kv

    async def get(self, key_id: str) -> tuple[ApiKeySpec, int] | None:
        try:
            with _transient_as_unavailable():
                entry = await self._bucket().get(key_id)
        except KeyNotFoundError:
            return None
        return ApiKeySpec.model_validate(orjson.loads(entry.value)), entry.revision

    async def create(self, spec: ApiKeySpec) -> None:
        try:
            with _transient_as_unavailable():
                revision = await self._bucket().create(spec.id, _encode(spec))
        except KeyWrongLastSequenceError:
            raise KeyExistsError(spec.id) from None
        self._apply(spec.id, spec, revision)

    async def replace(self, spec: ApiKeySpec, revision: int) -> None:
        """Raises KeyWrongLastSequenceError if the key changed since it was read."""
        with _transient_as_unavailable():
            written = await self._bucket().update(spec.id, _encode(spec), last=revision)
        self._apply(spec.id, spec, written)

    async def revoke(self, key_id: str, revision: int) -> None:
        """Raises KeyWrongLastSequenceError if the key changed since it was read.
        (``KeyValue.delete`` returns no revision and raises a bare APIError on a
        lost compare-and-set, so the delete marker is written here.)"""
        self._bucket()  # raises while NATS is unreachable
        assert self._js is not None
        headers = {KV_OP: KV_DEL, api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE: str(revision)}
        try:
            with _transient_as_unavailable():
                ack = await self._js.publish(f"$KV.{BUCKET}.{key_id}", headers=headers)
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise KeyWrongLastSequenceError(description=exc.description) from None
            raise
        self._apply(key_id, None, ack.seq)

    def _apply(self, key_id: str, spec: ApiKeySpec | None, revision: int) -> None:
        """This replica sees its own write at once (the watch confirms it)."""
        if revision <= self._revisions.get(key_id, 0):
            return  # the watch already delivered this write or a newer one
        self._revisions[key_id] = revision
        keys = dict(self.keys)
        if spec is None:
            keys.pop(key_id, None)
        else:
            keys[key_id] = spec
        self._publish(keys)


def merge_reread(held: dict[str, ApiKeySpec], held_revisions: dict[str, int], fresh: dict[str, ApiKeySpec],
                 fresh_revisions: dict[str, int], position: int) -> tuple[dict[str, ApiKeySpec], dict[str, int]]:
    """The key set after a re-read: the snapshot (``fresh``), except where this
    replica holds a newer state of a key, which can only come from its own
    write made while the re-read was under way (its watch message is still on
    its way). A held key absent from the snapshot is newer if its revision is
    past ``position``, the stream's last revision before the snapshot;
    otherwise it was removed from the bucket and is dropped."""
    for key_id, revision in held_revisions.items():
        in_snapshot = fresh_revisions.get(key_id)
        if revision > (position if in_snapshot is None else in_snapshot):
            fresh_revisions[key_id] = revision
            if key_id in held:
                fresh[key_id] = held[key_id]
            else:
                fresh.pop(key_id, None)
    return fresh, fresh_revisions


def _fold(keys: dict[str, ApiKeySpec], revisions: dict[str, int], entry: KeyValue.Entry) -> None:
    """Apply one watched entry (a value or a deletion) to a key set."""
    revisions[entry.key] = entry.revision
    if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
        keys.pop(entry.key, None)
    elif entry.key in keys or len(keys) < MAX_KEYS:
        try:
            keys[entry.key] = ApiKeySpec.model_validate(orjson.loads(entry.value))
        except (ValidationError, ValueError) as exc:
            log.error("keys: entry %s is invalid and ignored: %s", entry.key, exc)


def _encode(spec: ApiKeySpec) -> bytes:
    return orjson.dumps(spec.model_dump(mode="json", exclude_none=True, exclude_defaults=True))


async def _quiet(exc: Exception) -> None:
    log.debug("keys: NATS client error: %s", exc)
