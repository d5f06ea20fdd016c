"""Test doubles for the yjs tests, all in one place.

:class:`FaultyStore` is the real :class:`MemoryUpdateStore` with switches that make
one operation fail the way a database or a crash would; nothing else is faked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from objectos.realtime.yjs import MemoryUpdateStore, StoredDocument


class StoreDown(RuntimeError):
    """What the faulty store raises (stands in for a driver's connection error)."""


class FaultyStore(MemoryUpdateStore):
    """A memory store that can be told to fail ``load``/``append``, or to crash mid-compaction.

    ``crash_after_snapshot`` models a store without transactions that dies between
    writing the snapshot and deleting the log: the snapshot is written, the log is
    left as it was, and the call raises.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fail_load = False
        self.fail_append = False
        self.crash_after_snapshot = False
        self.appends = 0  # updates appended
        self.batches = 0  # store writes (group commits)
        self.compactions = 0

    async def load(self) -> StoredDocument:
        if self.fail_load:
            raise StoreDown("database unreachable (load)")
        return await super().load()

    async def append_many(self, updates: Sequence[bytes]) -> list[int]:
        if self.fail_append:
            raise StoreDown("database unreachable (append)")
        self.appends += len(updates)
        self.batches += 1
        return await super().append_many(updates)

    async def compact(self, snapshot: bytes, up_to_seq: int) -> None:
        if self.crash_after_snapshot:
            self.snapshot, self.snapshot_seq = bytes(snapshot), up_to_seq
            raise StoreDown("crashed after writing the snapshot, before deleting the log")
        self.compactions += 1
        await super().compact(snapshot, up_to_seq)


class SlowStore(FaultyStore):
    """Every write takes ``delay`` seconds, so concurrent writers pile up behind it."""

    def __init__(self, delay: float = 0.02) -> None:
        super().__init__()
        self.delay = delay

    async def append_many(self, updates: Sequence[bytes]) -> list[int]:
        await asyncio.sleep(self.delay)
        return await super().append_many(updates)
