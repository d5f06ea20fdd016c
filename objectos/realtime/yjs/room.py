"""One collaborative document in memory: its pycrdt ``Doc``, its awareness, its store.

A :class:`DocumentRoom` is the engine a Ray Room actor wraps; nothing here knows
about Ray or sockets. Callers hand it updates; it answers with what to broadcast
and also delivers that to its subscribers (the Socket.IO side), so that edits the
hub makes itself travel exactly like a client's.

Invariants, and why:

* **Nothing is broadcast or acknowledged before it is durable.** An update is
  applied, the change it really made (the transaction's update, not the bytes the
  client sent) is appended to the store, and only then published and returned.
  Appends are *group-committed*: changes that arrive while a write is in flight
  go to the store together in the next one, so a document is not capped at one
  transaction per keystroke. If an append fails the room turns *broken*: it drops
  its document and refuses everything until it is loaded again, so no peer syncs
  state the store lacks for longer than that write took. The clients that sent the
  lost changes still have them and push them again when they re-sync.
* **A failed load leaves nothing behind.** ``load`` builds a fresh ``Doc`` and only
  installs it once the snapshot and every logged update applied; until then the
  room has no document at all, so it cannot answer a sync with an empty document,
  cannot accept an update onto one and cannot write one as a snapshot.
* **Server documents use 32-bit client ids** (Yjs draws ``uint32``; y-py truncated
  pycrdt's default 53-bit ids and diverged) and **V1 updates only** (pycrdt ignores
  V2 silently; :func:`~objectos.realtime.yjs.update.inspect_update` refuses it).
* **Pending updates survive compaction.** Yrs leaves structs whose dependencies
  have not arrived out of ``Doc.get_update()``; the room keeps such updates raw and
  merges them into every snapshot until they are integrated.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from pycrdt import (
    Array,
    Doc,
    Map,
    Text,
    TransactionEvent,
    XmlElement,
    XmlFragment,
    XmlText,
    merge_updates,
)

from objectos.errors import ServiceUnavailable, ValidationError

from .awareness import AwarenessStates
from .store import UpdateStore
from .update import InvalidUpdate, UpdateInfo, decode_state_vector, inspect_update

logger = logging.getLogger(__name__)

SYNC_UPDATE = "sync-update"
"""Event name of a document update on the y-socket.io wire (and for room subscribers)."""
AWARENESS_UPDATE = "awareness-update"
"""Event name of an awareness update on the y-socket.io wire (and for room subscribers)."""

RoomListener = Callable[[str, bytes, str | None], Awaitable[None]]
"""``await listener(event, payload, origin)``: ``event`` is :data:`SYNC_UPDATE` or
:data:`AWARENESS_UPDATE`, ``origin`` the connection that caused it (``None`` for the
hub itself) so that a fan-out can skip the sender."""


class RoomUnavailable(ServiceUnavailable):
    """The room cannot serve the document right now: not loaded, closed, or broken.

    ``details["state"]`` says which. A broken or closed room is replaced by the
    directory on the next ``get``; the client retries or re-syncs.
    """


class _QueuedWrite:
    """One change waiting for the group commit: what to store, what to relay, to whom."""

    __slots__ = ("changed", "done", "durable", "error", "origin")

    def __init__(self, durable: bytes, changed: bytes, origin: str | None) -> None:
        self.durable = durable
        self.changed = changed
        self.origin = origin
        self.done = False
        self.error: RoomUnavailable | None = None


class RoomState(Enum):
    NEW = "new"  # constructed, or its load failed: no document in memory
    LOADED = "loaded"
    BROKEN = "broken"  # a write to the store failed: the in-memory doc was dropped
    CLOSED = "closed"


def new_client_id() -> int:
    """A random 32-bit Yjs client id, the range yjs itself draws from (``uint32``)."""
    return secrets.randbits(32)


class DocumentRoom:
    """One Yjs document, its awareness and its durable log (see the module docstring)."""

    def __init__(
        self,
        name: str,
        store: UpdateStore,
        clock: Callable[[], float] = time.monotonic,
        compact_every: int = 500,
    ) -> None:
        """Create an unloaded room; call :meth:`load` before anything else.

        ``compact_every``: write a snapshot after that many appended updates
        (0 = only on :meth:`compact` / :meth:`close`). ``clock`` (seconds) drives
        idleness and awareness expiry, so tests can move time by hand.
        """
        if compact_every < 0:
            raise ValueError("compact_every must be >= 0")
        self.name = name
        self._store = store
        self._clock = clock
        self._compact_every = compact_every
        self._state = RoomState.NEW
        self._doc: Doc | None = None
        self._subscription: Any = None
        self._client_id = 0
        # Changes are applied in memory at once (no await) and queued; whoever holds
        # the flush lock writes the whole queue in one append. Load, compaction and
        # close take the same lock so they never interleave with a write.
        self._flush_lock = asyncio.Lock()
        self._queue: list[_QueuedWrite] = []
        self._txn_updates: list[bytes] = []
        self._pending: list[tuple[bytes, UpdateInfo]] = []
        self._last_seq = 0
        self._log_length = 0
        self._awareness = AwarenessStates()
        self._connections: set[str] = set()
        self._listeners: dict[int, RoomListener] = {}
        self._next_listener = 0
        self.last_active = clock()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> RoomState:
        return self._state

    @property
    def loaded(self) -> bool:
        return self._state is RoomState.LOADED

    @property
    def client_id(self) -> int:
        """The Yjs client id of the hub's own edits in this activation (0 before load)."""
        return self._client_id

    @property
    def connections(self) -> frozenset[str]:
        return frozenset(self._connections)

    @property
    def awareness_states(self) -> dict[int, Any]:
        """Yjs client id -> awareness state of every present client."""
        return self._awareness.states

    @property
    def log_length(self) -> int:
        """Updates in the store after the last snapshot (what the next compaction folds in)."""
        return self._log_length

    @property
    def pending_updates(self) -> int:
        """Updates held raw because Yrs could not integrate them yet."""
        return len(self._pending)

    def idle_for(self) -> float:
        """Seconds since the last activity, or 0 while any connection is joined."""
        if self._connections:
            return 0.0
        return self._clock() - self.last_active

    # ------------------------------------------------------------------ lifecycle

    async def load(self) -> None:
        """Load the snapshot and the logged updates; a no-op if already loaded.

        On any failure the room keeps no document (see the module docstring) and
        the error propagates; calling ``load`` again retries. A corrupt stored update
        fails the load rather than being skipped: skipping would silently lose it
        at the next snapshot.
        """
        async with self._flush_lock:
            if self._state is RoomState.CLOSED:
                raise self._unavailable("load")
            if self._state is RoomState.LOADED:
                return
            try:
                stored = await self._store.load()
            except Exception as exc:
                raise RoomUnavailable(
                    f"document {self.name!r} could not be loaded from its store: {exc}",
                    details={"doc": self.name, "state": self._state.value},
                ) from exc
            doc: Doc[Any] = Doc(client_id=new_client_id())
            applied: list[tuple[bytes, UpdateInfo]] = []
            blobs = [("snapshot", stored.snapshot)] if stored.snapshot is not None else []
            blobs += [(f"logged update #{i + 1}", u) for i, u in enumerate(stored.updates)]
            for label, blob in blobs:
                assert blob is not None
                try:
                    info = inspect_update(blob)
                except InvalidUpdate as exc:
                    raise RoomUnavailable(
                        f"the stored {label} of document {self.name!r} is corrupt: {exc}",
                        details={"doc": self.name, "state": "corrupt"},
                    ) from exc
                doc.apply_update(blob)
                applied.append((blob, info))
            vector = decode_state_vector(doc.get_state())
            self._pending = [(b, i) for b, i in applied if not i.covered_by(vector)]
            self._install(doc)
            self._last_seq = stored.last_seq
            self._log_length = len(stored.updates)
            self._state = RoomState.LOADED
            self._touch()
            logger.debug(
                "loaded yjs document %r: snapshot=%s, %d logged updates, %d pending",
                self.name,
                stored.snapshot is not None,
                len(stored.updates),
                len(self._pending),
            )

    async def compact(self) -> None:
        """Write a snapshot of the whole document and drop the log entries it covers.

        Atomic in the store; a failure leaves the log as it was (and is raised).
        """
        async with self._flush_lock:
            self._require_doc("compact")
            await self._flush_queue()
            doc = self._require_doc("compact")
            await self._compact(doc)

    async def close(self) -> None:
        """Compact what the log holds (so the next load is one snapshot) and close.

        Every accepted update is already durable, so even a failed final
        compaction loses nothing; its error is raised after the room is closed.
        """
        async with self._flush_lock:
            if self._state is RoomState.CLOSED:
                return
            try:
                await self._flush_queue()
                if self._doc is not None and self._state is RoomState.LOADED:
                    await self._compact(self._doc)
            finally:
                self._state = RoomState.CLOSED
                self._uninstall()
                self._listeners.clear()

    # ------------------------------------------------------------------ sync

    async def sync_step1(self) -> bytes:
        """The document's state vector (what the server sends in ``sync-step-1``)."""
        doc = self._require_doc("sync")
        self._touch()
        return doc.get_state()

    async def sync_step2(self, state_vector: bytes) -> bytes:
        """Everything the holder of ``state_vector`` is missing, as one V1 update."""
        decode_state_vector(state_vector)  # refuse garbage before Yrs sees it
        doc = self._require_doc("sync")
        self._touch()
        update = doc.get_update(bytes(state_vector))
        if self._pending:
            # As yjs does: pending structs travel too, a peer may hold their dependencies.
            update = merge_updates(update, *(raw for raw, _ in self._pending))
        return update

    async def apply_update(self, update: bytes, origin: str | None = None) -> bytes:
        """Apply a client's V1 update; persist, publish and return what it changed.

        Returns ``b""`` when the update changes nothing (already known, or held
        pending); nothing is then broadcast. Raises :class:`InvalidUpdate` for
        malformed or V2 bytes (the document is untouched) and
        :class:`RoomUnavailable` when the room cannot take writes.
        """
        info = inspect_update(update)
        doc = self._require_doc("apply an update")
        self._touch()
        if info.is_empty:
            return b""
        # From here to the enqueue there is no await: the apply and the bookkeeping
        # of what it changed are atomic with respect to every other coroutine.
        self._txn_updates.clear()
        failure: Exception | None = None
        try:
            doc.apply_update(bytes(update))
        except Exception as exc:  # Yrs rejected what the V1 parser accepted
            failure = InvalidUpdate(
                f"the update could not be applied: {exc}", details={"format": "rejected"}
            )
        changed = self._take_txn_update()
        vector = decode_state_vector(doc.get_state())
        went_pending = failure is None and not info.covered_by(vector)
        self._pending = [(b, i) for b, i in self._pending if not i.covered_by(vector)]
        if went_pending:
            self._pending.append((bytes(update), info))
        # Pending structs are not in the transaction's update: persist the raw
        # bytes then, or a restart before their dependencies arrive loses them.
        durable = bytes(update) if went_pending else changed
        if durable:
            await self._commit(_QueuedWrite(durable, changed, origin))
        if failure is not None:
            raise failure
        return changed

    # ------------------------------------------------------------------ hub edits

    def read_text(self, field: str) -> str:
        """The current content of the ``Y.Text`` named ``field`` ("" if it does not exist)."""
        return str(self._text(self._require_doc("read"), field))

    async def write_text(self, field: str, text: str, origin: str | None = None) -> bytes:
        """Make ``field`` read ``text``, touching only the span that differs.

        Concurrent client edits the room has not seen yet merge as usual; edits it
        *has* seen and that ``text`` does not contain are removed -- this is "set",
        not "merge". Use :meth:`insert_text` / :meth:`delete_text` for edits that
        must compose with concurrent typing.
        """

        def edit(target: Text) -> None:
            current = str(target)
            prefix = _common_prefix(current, text)
            suffix = _common_suffix(current[prefix:], text[prefix:])
            start = _utf8_offset(current, prefix)
            end = _utf8_offset(current, len(current) - suffix)
            if end > start:
                del target[start:end]
            middle = text[prefix : len(text) - suffix]
            if middle:
                target.insert(start, middle)

        return await self._edit(field, edit, origin)

    async def insert_text(
        self, field: str, index: int, text: str, origin: str | None = None
    ) -> bytes:
        """Insert ``text`` at character ``index`` (a Python ``str`` index, clamped)."""

        def edit(target: Text) -> None:
            current = str(target)
            at = _utf8_offset(current, max(0, min(index, len(current))))
            if text:
                target.insert(at, text)

        return await self._edit(field, edit, origin)

    async def delete_text(
        self, field: str, index: int, length: int, origin: str | None = None
    ) -> bytes:
        """Delete ``length`` characters from character ``index`` (clamped to the text)."""

        def edit(target: Text) -> None:
            current = str(target)
            start = max(0, min(index, len(current)))
            stop = max(start, min(start + length, len(current)))
            if stop > start:
                del target[_utf8_offset(current, start) : _utf8_offset(current, stop)]

        return await self._edit(field, edit, origin)

    # ------------------------------------------------------------------ awareness

    async def join(self, connection: str) -> None:
        """Count ``connection`` as a member (a room with members is never passivated)."""
        if self._state is RoomState.CLOSED:
            raise self._unavailable("join")
        self._connections.add(connection)
        self._touch()

    async def leave(self, connection: str) -> bytes:
        """Forget ``connection``; remove its awareness clients and publish the removal.

        Never raises for a closed or broken room: leaving must always succeed.
        """
        self._connections.discard(connection)
        self._touch()
        removal = self._awareness.remove_connection(connection, self._clock())
        if removal and self._state is not RoomState.CLOSED:
            await self._publish(AWARENESS_UPDATE, removal, connection)
        return removal

    async def apply_awareness(self, update: bytes, connection: str) -> bytes:
        """Track a connection's awareness update; publish and return the accepted part."""
        if self._state is RoomState.CLOSED:
            raise self._unavailable("update awareness")
        relay = self._awareness.apply(update, connection, self._clock())
        self._touch()
        if relay:
            await self._publish(AWARENESS_UPDATE, relay, connection)
        return relay

    async def awareness_update(self) -> bytes:
        """All present awareness states as one update (``b""`` if nobody is there)."""
        return self._awareness.encode_all()

    async def expire_awareness(self, max_silence: float = 30.0) -> bytes:
        """Remove awareness clients silent for ``max_silence`` seconds; publish the removal."""
        removal = self._awareness.expire(self._clock(), max_silence)
        if removal and self._state is not RoomState.CLOSED:
            await self._publish(AWARENESS_UPDATE, removal, None)
        return removal

    # ------------------------------------------------------------------ subscribers

    async def subscribe(self, listener: RoomListener) -> Callable[[], Awaitable[None]]:
        """Deliver every published update to ``listener``; returns the unsubscribe coroutine.

        Listeners run in publication order, inside the room's write path: a slow
        listener slows the room, a failing one is logged and skipped.
        """
        key = self._next_listener
        self._next_listener += 1
        self._listeners[key] = listener

        async def unsubscribe() -> None:
            self._listeners.pop(key, None)

        return unsubscribe

    # ------------------------------------------------------------------ internals

    def _install(self, doc: Doc) -> None:
        self._uninstall()
        self._doc = doc
        self._client_id = doc.client_id
        self._subscription = doc.observe(self._on_transaction)

    def _uninstall(self) -> None:
        if self._doc is not None and self._subscription is not None:
            self._doc.unobserve(self._subscription)
        self._doc = None
        self._subscription = None

    def _on_transaction(self, event: TransactionEvent) -> None:
        # Yrs reports exactly what a transaction changed: integrated structs and
        # newly deleted ranges, nothing for duplicates. That is what we persist and send.
        self._txn_updates.append(event.update)

    def _take_txn_update(self) -> bytes:
        updates, self._txn_updates = self._txn_updates, []
        if not updates:
            return b""
        return updates[0] if len(updates) == 1 else merge_updates(*updates)

    async def _edit(self, field: str, edit: Callable[[Text], None], origin: str | None) -> bytes:
        doc = self._require_doc("edit")
        self._touch()
        target = self._text(doc, field)
        self._txn_updates.clear()
        with doc.transaction():
            edit(target)
        changed = self._take_txn_update()
        if changed:
            await self._commit(_QueuedWrite(changed, changed, origin))
        return changed

    async def _commit(self, write: _QueuedWrite) -> None:
        """Queue ``write`` and return once it is durable and published (group commit)."""
        self._queue.append(write)
        while not write.done:
            async with self._flush_lock:
                if write.done:
                    break
                if self._state is not RoomState.LOADED:
                    # Closed (or broken) while this write waited: the doc it changed
                    # is gone, and appending now could land behind a newer activation.
                    error = self._unavailable("persist an update")
                    for queued in self._queue:
                        queued.done, queued.error = True, error
                    self._queue = []
                    break
                await self._flush_queue()
        if write.error is not None:
            raise write.error

    async def _flush_queue(self) -> None:
        """Append everything queued in one store write, then publish it in order."""
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            seqs = await self._store.append_many([write.durable for write in batch])
        except BaseException as exc:
            # The doc now holds changes the store may not have (a cancellation
            # leaves it unknown). Drop the doc so nobody syncs non-durable state.
            self._state = RoomState.BROKEN
            self._uninstall()
            self._pending = []
            logger.error("yjs document %r: append failed, room broken: %r", self.name, exc)
            for write in batch + self._queue:
                write.done = True
                write.error = RoomUnavailable(
                    f"document {self.name!r} could not persist an update ({exc!r}); "
                    "it must be loaded again",
                    details={"doc": self.name, "state": "broken"},
                )
            self._queue = []
            if not isinstance(exc, Exception):
                raise
            return
        self._last_seq = max(self._last_seq, *seqs)
        self._log_length += len(batch)
        for write in batch:
            if write.changed:
                await self._publish(SYNC_UPDATE, write.changed, write.origin)
            write.done = True
        if not self._queue and self._doc is not None:
            # Only between batches: a snapshot then covers exactly the durable log.
            await self._maybe_compact(self._doc)

    async def _maybe_compact(self, doc: Doc) -> None:
        if not self._compact_every or self._log_length < self._compact_every:
            return
        try:
            await self._compact(doc)
        except Exception:
            # The updates are durable in the log; compaction is only an optimisation
            # and is retried after the next append.
            logger.warning("yjs document %r: compaction failed", self.name, exc_info=True)

    async def _compact(self, doc: Doc) -> None:
        if self._log_length == 0:
            return
        snapshot = doc.get_update()
        if self._pending:
            snapshot = merge_updates(snapshot, *(raw for raw, _ in self._pending))
        await self._store.compact(snapshot, self._last_seq)
        self._log_length = 0

    async def _publish(self, event: str, payload: bytes, origin: str | None) -> None:
        for listener in list(self._listeners.values()):
            try:
                await listener(event, payload, origin)
            except Exception:
                logger.exception("yjs document %r: a %s listener failed", self.name, event)

    def _text(self, doc: Doc, field: str) -> Text:
        """The root ``field`` as a Y.Text, refusing roots that clients use as something else.

        Yjs does not transmit a root's type: a root that arrived in an update is
        untyped until first accessed, and the first access decides. Accessing a
        ProseMirror ``Y.XmlFragment`` or a ``Y.Map`` as text would make the hub's
        next edit write characters into it and corrupt it for every client, so an
        untyped root is probed on a scratch copy first (once per activation).
        """
        roots = dict(doc.items())
        if field in roots:
            current = roots[field]
            if current is None:
                self._refuse_if_not_text(doc, field)
            elif not isinstance(current, Text):
                raise self._not_text(field, f"a {type(current).__name__}")
        return doc.get(field, type=Text)

    def _refuse_if_not_text(self, doc: Doc, field: str) -> None:
        scratch: Doc[Any] = Doc()
        scratch.apply_update(doc.get_update())
        if list(scratch.get(field, type=Map).keys()):
            raise self._not_text(field, "a Y.Map")
        shared = (Array, Map, Text, XmlElement, XmlFragment, XmlText)
        if any(isinstance(chunk, shared) for chunk, _ in scratch.get(field, type=Text).diff()):
            raise self._not_text(field, "shared types (an XmlFragment or an Array)")

    def _not_text(self, field: str, what: str) -> ValidationError:
        return ValidationError(
            f"field {field!r} of document {self.name!r} holds {what}, not text; "
            "the hub edits Y.Text fields only",
            details={"doc": self.name, "field": field},
        )

    def _require_doc(self, action: str) -> Doc:
        if self._state is not RoomState.LOADED or self._doc is None:
            raise self._unavailable(action)
        return self._doc

    def _unavailable(self, action: str) -> RoomUnavailable:
        reason = {
            RoomState.NEW: "is not loaded (its load failed or was never attempted)",
            RoomState.BROKEN: "lost an update write and must be loaded again",
            RoomState.CLOSED: "is closed (passivated)",
        }.get(self._state, "is unavailable")
        return RoomUnavailable(
            f"cannot {action}: document {self.name!r} {reason}",
            details={"doc": self.name, "state": self._state.value},
        )

    def _touch(self) -> None:
        self.last_active = self._clock()


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _common_suffix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[len(a) - 1 - i] == b[len(b) - 1 - i]:
        i += 1
    return i


def _utf8_offset(text: str, index: int) -> int:
    # pycrdt 0.14 indexes Text by UTF-8 byte offset; an offset inside a character
    # silently lands elsewhere. The hub's API speaks Python str indices.
    return len(text[:index].encode("utf-8"))
