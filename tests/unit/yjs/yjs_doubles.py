"""Test doubles for the yjs tests, all in one place.

:class:`FaultyStore` is the real :class:`MemoryUpdateStore` with switches that make
one operation fail the way a database or a crash would; nothing else is faked.
"""

from __future__ import annotations

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
        self.appends = 0
        self.compactions = 0

    async def load(self) -> StoredDocument:
        if self.fail_load:
            raise StoreDown("database unreachable (load)")
        return await super().load()

    async def append(self, update: bytes) -> int:
        if self.fail_append:
            raise StoreDown("database unreachable (append)")
        self.appends += 1
        return await super().append(update)

    async def compact(self, snapshot: bytes, up_to_seq: int) -> None:
        if self.crash_after_snapshot:
            self.snapshot, self.snapshot_seq = bytes(snapshot), up_to_seq
            raise StoreDown("crashed after writing the snapshot, before deleting the log")
        self.compactions += 1
        await super().compact(snapshot, up_to_seq)
