"""What one router replica knows of the shared cache bucket without asking
NATS, so that a miss costs no round trip and a repeated hit none either.

- ``KeyIndex``: the keys in the bucket with their expiry and write id,
  built from the bucket when the replica connects and kept current by the
  other replicas' write announcements (``cache_store``). Once built it is
  *complete*: a key it does not hold is not in the bucket (or was written
  elsewhere in the last milliseconds), so the lookup is a miss without I/O.
  Until then, and after it overflowed ``max_keys``, an unknown key is
  looked up in NATS.
- ``LocalEntries``: the answers this replica recently wrote or fetched,
  bounded in bytes, least recently used first out; a copy is used only
  while its write id is the one the index holds (a newer write elsewhere,
  e.g. a no-cache refresh, makes it stale).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from switchyard.v1 import cache_pb2 as cpb

ABSENT: Final = -1   # surely not in the bucket
UNKNOWN: Final = -2  # ask NATS
_ID_BITS = 32


def slot_of(key: str) -> int:
    """The key's first 64 bits: a collision only costs a fetch, which reads the full key."""
    return int(key[:16], 16)


class KeyIndex:
    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self.complete = False
        self.overflowed = False
        self._keys: dict[int, int] = {}  # slot -> expires_ms << 32 | write id (one int: ~110 bytes a key)

    def __len__(self) -> int:
        return len(self._keys)

    def note(self, key: str, expires_ms: int, write_id: int) -> None:
        self.note_slot(slot_of(key), expires_ms, write_id)

    def note_slot(self, slot: int, expires_ms: int, write_id: int) -> None:
        if slot not in self._keys and len(self._keys) >= self.max_keys:
            self.overflowed = True  # absence proves nothing any more: unknown keys are looked up
            return
        self._keys[slot] = expires_ms << _ID_BITS | write_id

    def state(self, key: str, now_ms: int) -> int:
        """The key's write id, ABSENT or UNKNOWN."""
        slot = slot_of(key)
        value = self._keys.get(slot)
        if value is not None:
            if value >> _ID_BITS > now_ms:
                return value & (2**_ID_BITS - 1)
            del self._keys[slot]  # expired (the server drops it by its TTL too)
        return ABSENT if self.complete and not self.overflowed else UNKNOWN

    def clear(self) -> None:
        """The bucket was emptied: a complete index of nothing."""
        self._keys.clear()
        self.overflowed = False

    def slots(self) -> list[int]:
        return list(self._keys)

    def drop_expired(self, slots: list[int], now_ms: int) -> int:
        """Drop the expired ones among ``slots`` (a sweep goes in chunks); how many."""
        dropped = 0
        for slot in slots:
            value = self._keys.get(slot)
            if value is not None and value >> _ID_BITS <= now_ms:
                del self._keys[slot]
                dropped += 1
        return dropped


class LocalEntries:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, tuple[int, cpb.CacheEntry, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, write_id: int) -> cpb.CacheEntry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if found[0] != write_id:  # another write replaced it
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return found[1]

    def put(self, key: str, entry: cpb.CacheEntry, size: int) -> None:
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (entry.write_id, entry, size)
        self.size += size
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0

    def drop_if(self, purged: Callable[[cpb.CacheEntry], bool]) -> None:
        for key in [key for key, (_, entry, _) in self._entries.items() if purged(entry)]:
            self._drop(key)

    def _drop(self, key: str) -> None:
        _, _, size = self._entries.pop(key)
        self.size -= size
