"""A replica's view of the shared bucket: the key index and the local copies."""

from __future__ import annotations

import hashlib

from router.cache_index import ABSENT, UNKNOWN, KeyIndex, LocalEntries
from switchyard.v1 import cache_pb2 as cpb


def k(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def test_the_index_proves_absence_only_once_complete_and_not_overflowed() -> None:
    index = KeyIndex(max_keys=2)
    index.note(k("a"), expires_ms=1000, write_id=7)
    assert index.state(k("a"), now_ms=999) == 7
    assert index.state(k("b"), now_ms=0) == UNKNOWN  # still catching up with the bucket: ask NATS
    index.complete = True
    assert index.state(k("b"), now_ms=0) == ABSENT
    assert index.state(k("a"), now_ms=1000) == ABSENT and len(index) == 0  # expired: forgotten
    index.note(k("a"), 5000, 1)
    index.note(k("b"), 5000, 2)
    index.note(k("c"), 5000, 3)  # over max_keys: not held, and absence proves nothing any more
    assert index.overflowed and len(index) == 2
    assert index.state(k("c"), 0) == UNKNOWN and index.state(k("d"), 0) == UNKNOWN
    index.note(k("a"), 6000, 9)  # a rewrite of a held key still counts
    assert index.state(k("a"), 0) == 9


def test_a_sweep_drops_expired_keys_in_chunks() -> None:
    index = KeyIndex(max_keys=100)
    for i in range(10):
        index.note(k(str(i)), expires_ms=100 if i % 2 else 900, write_id=i)
    slots = index.slots()
    assert index.drop_expired(slots[:5], now_ms=500) + index.drop_expired(slots[5:], now_ms=500) == 5
    assert len(index) == 5


def entry(size: int, write_id: int) -> cpb.CacheEntry:
    return cpb.CacheEntry(events=[b"x" * size], write_id=write_id)


def test_local_copies_are_bounded_and_dropped_when_another_write_replaces_them() -> None:
    local = LocalEntries(max_bytes=1000)
    local.put(k("a"), entry(400, 1), 400)
    local.put(k("b"), entry(400, 2), 400)
    assert local.get(k("a"), 1) is not None  # now the most recently used
    local.put(k("c"), entry(400, 3), 400)     # over 1000 bytes: the least recently used (b) goes
    assert local.get(k("b"), 2) is None and local.get(k("a"), 1) is not None and local.size == 800
    assert local.get(k("a"), 99) is None      # the bucket holds a newer write: this copy is stale
    assert len(local) == 1 and local.size == 400
    local.put(k("huge"), entry(2000, 4), 2000)  # larger than the whole budget: not kept
    assert local.get(k("huge"), 4) is None and local.size == 400
