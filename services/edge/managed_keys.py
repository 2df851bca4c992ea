"""API keys managed at run time: stored in the NATS JetStream key-value bucket
``SWITCHYARD_KEYS`` (one entry per key id: the key's settings with its
SHA-256 digest and public prefix, never the plain key), watched by every edge
replica so a created, rotated or revoked key takes effect everywhere as soon
as the change is delivered (well within a second on a healthy NATS).

A replica that loses NATS keeps its last known set and re-reads the whole
bucket when it reconnects. Writes use compare-and-set on the entry's revision
(create fails if the id exists; rotate and revoke act on the revision read)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

import nats
import orjson
from nats.errors import ConnectionClosedError, NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue
from pydantic import ValidationError

from switchyard import nats_client
from switchyard.config import ApiKeySpec
from switchyard.errors import UnavailableError

log = logging.getLogger(__name__)

BUCKET = "SWITCHYARD_KEYS"
MAX_KEYS = 100_000


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
        self._nc: nats.NATS | None = None
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
        js = self._nc.jetstream()
        self._kv = await nats_client.open_bucket(js, BUCKET, history=1)
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
        watcher = await self._kv.watchall()
        fresh: dict[str, ApiKeySpec] = {}
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
                target = fresh if initial else dict(self.keys)
                if entry is None:  # the end of the bucket's current contents
                    initial = False
                    self._publish(fresh)
                    continue
                if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
                    target.pop(entry.key, None)
                elif len(target) < MAX_KEYS:
                    try:
                        target[entry.key] = ApiKeySpec.model_validate(orjson.loads(entry.value))
                    except (ValidationError, ValueError) as exc:
                        log.error("keys: entry %s is invalid and ignored: %s", entry.key, exc)
                if not initial:
                    self._publish(target)
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
                await self._bucket().create(spec.id, _encode(spec))
        except KeyWrongLastSequenceError:
            raise KeyExistsError(spec.id) from None
        self._apply(spec)

    async def replace(self, spec: ApiKeySpec, revision: int) -> None:
        """Raises KeyWrongLastSequenceError if the key changed since it was read."""
        with _transient_as_unavailable():
            await self._bucket().update(spec.id, _encode(spec), last=revision)
        self._apply(spec)

    async def revoke(self, key_id: str, revision: int) -> None:
        with _transient_as_unavailable():
            await self._bucket().delete(key_id, last=revision)
        keys = dict(self.keys)
        keys.pop(key_id, None)
        self._publish(keys)

    def _apply(self, spec: ApiKeySpec) -> None:
        """This replica sees its own write at once (the watch confirms it)."""
        self._publish({**self.keys, spec.id: spec})


def _encode(spec: ApiKeySpec) -> bytes:
    return orjson.dumps(spec.model_dump(mode="json", exclude_none=True, exclude_defaults=True))


async def _quiet(exc: Exception) -> None:
    log.debug("keys: NATS client error: %s", exc)
