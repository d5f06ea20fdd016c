"""Collaborative Yjs documents as Ray actors: rooms, the directory that caps them, the gateway side.

Three roles (ARCHITECTURE.md, "The actors" and "Realtime fan-out"):

* :class:`DocumentRoomActor` -- ``room:yjs:<doc>``: one
  :class:`~objectos.realtime.yjs.DocumentRoom` (pycrdt document, awareness, SQL log)
  in its own process. A *virtual actor*: activated on first use by name, passivated
  (flushed, compacted, closed, process gone) after ``idle_timeout_s`` without members.
* :class:`RoomDirectoryActor` -- ``rooms:yjs``: activates rooms and keeps at most
  ``max_rooms`` alive, passivating the least recently activated room without members.
* :class:`RayRoomDirectory` -- inside each gateway: the
  :class:`~objectos.realtime.yjs.RoomDirectory` the y-socket.io handler talks to.
  Its rooms (:class:`RemoteRoom`) forward sync, updates and awareness to the room
  actors and receive the rooms' broadcasts through :meth:`RayRoomDirectory.deliver`.

The hub itself reads and edits documents through :class:`HubDocument`.

Message flow::

    clients -> gateway:<node> --receive([update, awareness, ...])--> room:yjs:<doc>
                                                                     | appended to SQL
    clients <- gateway:<node> <--deliver([update, ...])------------- + (each gateway
                                                                        with members)

Both directions batch: what queues up while a call is in flight travels in the next
call, so a busy document costs one actor call per round trip, not one per keystroke
(~14k events/s batched vs ~300/s one by one, ARCHITECTURE.md). Consecutive document
updates in a broadcast batch are merged into one Yjs update.

Failures, and why nothing acknowledged is lost:

* The room only broadcasts (and answers) what its store holds (``DocumentRoom``).
* Every gateway with members keeps one ``watch`` call pending on the room. When the
  room's process dies (``kill -9``, node loss) that call fails at once; the gateway
  re-activates the room from the store (a fresh process loads snapshot + log),
  re-joins its sockets, asks every client for what the store lacks (server
  ``sync-step-1``) and sends every client the whole document (what it may have missed
  while the room was down). Updates sent into the dead room are refused with an
  ``error`` event; their authors still hold them and push them in that re-sync.
* Passivation compacts the log *before* the actor exits, and a room's name is only
  free once it has exited, so a client that reconnects meanwhile waits
  (:meth:`RoomDirectoryActor.activate` retries) and then loads the compacted state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import ray
from pycrdt import merge_updates
from pydantic import BaseModel, ConfigDict, Field
from ray.exceptions import RayActorError, RayTaskError
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from actors import factory
from actors.process import set_process_niceness
from objectos.errors import ObjectOSError, ServiceUnavailable
from objectos.realtime.yjs.room import (
    AWARENESS_UPDATE,
    SYNC_UPDATE,
    DocumentRoom,
    RoomListener,
    RoomState,
    RoomUnavailable,
)
from objectos.realtime.yjs.store import SQLUpdateStore, create_yjs_tables
from objectos.realtime.yjs.update import InvalidUpdate, inspect_update

logger = logging.getLogger("objectos.realtime.rooms")

Broadcast = tuple[str, bytes, str | None]
"""``(event, payload, sid)`` from a room to one gateway: ``event`` is ``sync-update`` or
``awareness-update``; ``sid`` is the gateway's connection that caused it (the gateway
skips it), or None."""

MAX_BATCH = 500
"""Most events per actor call, in either direction."""

RECEIVE_IN_FLIGHT = 1
"""``receive`` calls one gateway keeps in flight per document. Measured with 20 editors
at 500 and 1000 updates/s: 2 in flight (a batch need not wait for the previous one's
store write; the order would be kept, as the room applies each call in memory before
its first await, in the order Ray starts them) gave *higher* latency (p50 33 vs 23 ms,
55-72 vs 44 ms) and more CPU than 1, because smaller batches merge less. Broadcasts
stay one call in flight regardless: their emits may await, and clients should see
updates in order."""

Inbound = tuple[str, bytes, str]
"""``(event, payload, sid)`` from a gateway to a room: a connection's update or awareness."""


class RoomSettings(BaseModel):
    """How Yjs room actors store documents and when they go away (one set per hub)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str = Field(
        description="SQLAlchemy async URL of the hub's database (the _yjs_* tables live there)."
    )
    compact_every: int = Field(
        500, ge=0, description="Write a snapshot after this many logged updates (0: on close)."
    )
    idle_timeout_s: float = Field(
        60.0, gt=0, description="Passivate a room this long after its last member left."
    )
    sweep_interval_s: float = Field(
        5.0, gt=0, description="How often a room checks idleness, awareness and its gateways."
    )
    awareness_timeout_s: float = Field(
        30.0, gt=0, description="Drop an awareness client silent for this long."
    )
    max_rooms: int = Field(
        100,
        ge=1,
        description="Live room actors at most (LRU passivation). Each is a process of about "
        "130 MB RSS / 80 MB private memory: size this to the memory realtime may use.",
    )
    activation_timeout_s: float = Field(
        30.0, gt=0, description="Give up activating a room (e.g. a passivation that hangs)."
    )
    gateway_timeout_s: float = Field(
        5.0, gt=0, description="A gateway slower than this to answer a membership check is skipped."
    )
    niceness: int | None = Field(
        0,
        ge=-20,
        le=19,
        description="Scheduling niceness of room processes (Ray starts workers at 15, which "
        "starves realtime work on a busy node); None keeps Ray's.",
    )


def room_engine(database_url: str) -> AsyncEngine:
    """A small engine for one room's store.

    SQLite: WAL and a busy timeout, because every room actor is its own process
    writing the same file. Elsewhere a pool of two: a room writes one group commit
    at a time, and a thousand rooms must not hold a thousand large pools.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_size=2, max_overflow=2, pool_pre_ping=True)
    engine = create_async_engine(url)
    memory = url.database in (None, "", ":memory:")
    busy_ms = int(os.environ.get("OBJECTOS_SQLITE_BUSY_TIMEOUT_MS", "30000"))

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
        finally:
            cursor.close()

    return engine


def coalesce_broadcasts(events: Sequence[Broadcast]) -> list[Broadcast]:
    """Merge each run of consecutive ``sync-update`` events into one update.

    Yjs updates merge losslessly, so a gateway emits one message per run instead of
    one per keystroke. The merged event keeps its ``sid`` only when every update of
    the run came from that connection; otherwise it goes to everybody, which costs a
    client at most a duplicate (Yjs ignores what it already has).
    """
    out: list[Broadcast] = []
    run: list[Broadcast] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            sids = {sid for _, _, sid in run}
            sid = run[0][2] if len(sids) == 1 else None
            out.append((SYNC_UPDATE, merge_updates(*(payload for _, payload, _ in run)), sid))
        run.clear()

    for item in events:
        if item[0] == SYNC_UPDATE:
            run.append(item)
            continue
        flush()
        out.append(item)
    flush()
    return out


def unwrap_remote_error(exc: BaseException, doc_name: str) -> ObjectOSError:
    """The hub error behind a failed actor call (never a stack trace for a client).

    Ray wraps what a remote method raised in a ``RayTaskError`` whose ``cause`` is the
    original exception; a dead actor is a ``RayActorError``.
    """
    cause = exc.cause if isinstance(exc, RayTaskError) else exc
    if isinstance(cause, ObjectOSError):
        return cause
    if isinstance(exc, RayActorError):
        return RoomUnavailable(
            f"the room of document {doc_name!r} is gone ({type(exc).__name__}); "
            "it is re-activated from the store on next use",
            details={"doc": doc_name, "state": "lost"},
        )
    logger.error("yjs %r: unexpected error in a room call: %r", doc_name, cause)
    return ServiceUnavailable(
        f"document {doc_name!r} is unavailable (internal error)", details={"doc": doc_name}
    )


def _member(gateway: str, sid: str) -> str:
    # Gateway names never contain "|"; sids are only unique within one gateway.
    return f"{gateway}|{sid}"


# ---------------------------------------------------------------------- room actor


class GatewayOutbox:
    """Broadcasts one room owes one gateway, sent in order, one batch per actor call."""

    def __init__(
        self,
        doc_name: str,
        gateway: str,
        handle: Any,
        on_gone: Callable[[str], Awaitable[None]],
    ) -> None:
        self.doc_name = doc_name
        self.gateway = gateway
        self.handle = handle
        self._on_gone = on_gone
        self._events: list[Broadcast] = []
        self._sender: asyncio.Task[None] | None = None
        self.batches = 0

    def put(self, event_name: str, payload: bytes, sid: str | None) -> None:
        self._events.append((event_name, payload, sid))
        if self._sender is None:
            self._sender = asyncio.create_task(self._drain(), name=f"yjs-outbox:{self.gateway}")

    async def close(self) -> None:
        """Stop sending; what is still queued is dropped (the gateway has no members left)."""
        self._events = []
        task, self._sender = self._sender, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _drain(self) -> None:
        gone = False
        try:
            while self._events:
                batch, self._events = coalesce_broadcasts(self._events), []
                try:
                    await self.handle.deliver.remote(self.doc_name, batch)
                    self.batches += 1
                except RayActorError:
                    gone = True
                    self._events = []
                except Exception as exc:
                    # The gateway's own code failed on this batch; its clients re-sync
                    # on their next reconnect. Keep serving the others.
                    logger.error(
                        "yjs %r: gateway %s failed a batch: %r", self.doc_name, self.gateway, exc
                    )
        finally:
            self._sender = None
        if gone:
            await self._on_gone(self.gateway)


class DocumentRoomActor:
    """``room:yjs:<doc>``: one Yjs document in its own process (see the module docstring).

    Methods called by gateways: :meth:`join`, :meth:`leave`, :meth:`attach`,
    :meth:`detach`, :meth:`watch`, :meth:`sync_step1`, :meth:`sync_step2`,
    :meth:`awareness_update`, :meth:`receive`. By the hub: :meth:`read_text`,
    :meth:`write_text`, :meth:`insert_text`, :meth:`delete_text`. By the directory:
    :meth:`activate`, :meth:`status`, :meth:`passivate`.
    """

    def __init__(self, doc_name: str, settings: dict[str, Any]) -> None:
        """Nothing is loaded here; :meth:`activate` loads (and is idempotent)."""
        self.doc_name = doc_name
        self.settings = RoomSettings.model_validate(settings)
        set_process_niceness(self.settings.niceness)
        self.incarnation = uuid.uuid4().hex
        self.started_at = time.time()
        self._engine: AsyncEngine | None = None
        self._room: DocumentRoom | None = None
        self._load_lock = asyncio.Lock()
        self._closing = False
        self._passivation_requested = False
        self._closed = asyncio.Event()
        self._outboxes: dict[str, GatewayOutbox] = {}
        self._retired_deliveries = 0  # deliver calls of outboxes closed since
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def activate(self) -> dict[str, Any]:
        """Load the document if it is not loaded (or was broken by a failed write); status.

        Raises :class:`RoomUnavailable` (``state`` ``closed``) while passivating, so the
        directory waits for the next activation instead of using this one.
        """
        async with self._load_lock:
            room = self._open_room("activate", allow_unloaded=True)
            if room is None or room.state is not RoomState.LOADED:
                room = await self._load()
            room.last_active = time.monotonic()
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="yjs-room-sweeper")
        return self.status()

    def status(self) -> dict[str, Any]:
        """What operators and the directory look at."""
        room = self._room
        return {
            "doc": self.doc_name,
            "incarnation": self.incarnation,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
            "state": "closing" if self._closing else (room.state.value if room else "new"),
            "members": len(room.connections) if room else 0,
            "gateways": sorted(self._outboxes),
            "idle_for_s": room.idle_for() if room else 0.0,
            "log_length": room.log_length if room else 0,
            "client_id": room.client_id if room else 0,
            # Broadcast batches sent to gateways so far (updates / deliver calls = batching).
            "deliver_calls": self._retired_deliveries
            + sum(box.batches for box in self._outboxes.values()),
        }

    async def passivate(self, *, force: bool = False, min_idle_s: float = 0.0) -> bool:
        """Flush, compact and close the document, then end this actor's process.

        Refused (returns False) while the room has members or has been idle for less
        than ``min_idle_s``, unless ``force``. The caller sees the actor die rather
        than True: ``exit_actor`` only works from an actor method, so this is where
        idle rooms end too (their sweeper calls it on their own handle).
        """
        if self._closing:
            return True
        room = self._room
        if not force and room is not None and (room.connections or room.idle_for() < min_idle_s):
            self._passivation_requested = False
            return False
        self._closing = True
        await self._close()
        ray.actor.exit_actor()
        return True  # not reached: exit_actor raises

    async def watch(self) -> str:
        """Returns when this room passivates; fails (RayActorError) when its process dies.

        Each gateway with members keeps one call pending: the fastest way to learn
        about a room's death is a call in flight when it happens.
        """
        await self._closed.wait()
        return "passivated"

    # ------------------------------------------------------------------ gateways

    async def attach(self, gateway: str, handle: Any) -> None:
        """Send this room's broadcasts to ``gateway`` (idempotent)."""
        room = self._require("attach a gateway")
        room.last_active = time.monotonic()
        if gateway not in self._outboxes:
            self._outboxes[gateway] = GatewayOutbox(
                self.doc_name, gateway, handle, self._gateway_gone
            )

    async def detach(self, gateway: str) -> None:
        """Stop sending to ``gateway`` (its last socket for this document left)."""
        outbox = self._outboxes.pop(gateway, None)
        if outbox is not None:
            self._retired_deliveries += outbox.batches
            await outbox.close()

    async def join(self, gateway: str, sid: str, handle: Any = None) -> None:
        """Count ``sid`` of ``gateway`` as a member (and make sure that gateway is attached)."""
        room = self._require("join")
        await room.join(_member(gateway, sid))
        if handle is not None and gateway not in self._outboxes:
            await self.attach(gateway, handle)

    async def leave(self, gateway: str, sid: str) -> bytes:
        room = self._room
        if room is None:
            return b""
        return await room.leave(_member(gateway, sid))

    async def sync_step1(self) -> bytes:
        return await self._require("sync").sync_step1()

    async def sync_step2(self, state_vector: bytes) -> bytes:
        return await self._require("sync").sync_step2(state_vector)

    async def awareness_update(self) -> bytes:
        return await self._require("read awareness").awareness_update()

    async def receive(self, gateway: str, events: list[Inbound]) -> list[bytes | ObjectOSError]:
        """Apply a gateway's batch of document updates and awareness changes.

        One result per event: what it changed (``b""`` for nothing, and for updates
        applied as part of a merged batch -- the batch's change is broadcast, not
        copied into every result), or the error to report to that connection.
        The well-formed document updates of the batch are merged and applied as one
        update -- one transaction in memory, one append to the store, one broadcast --
        which is what makes a busy document cheap; a malformed update fails alone.
        Awareness changes are applied one by one.
        """
        try:
            room = self._require("apply updates")
        except RoomUnavailable as exc:
            return [exc for _ in events]
        results: list[bytes | ObjectOSError] = [b""] * len(events)
        updates: list[int] = []
        for i, (kind, payload, sid) in enumerate(events):
            if kind == AWARENESS_UPDATE:
                results[i] = await self._receive_one(room, gateway, kind, payload, sid)
                continue
            if kind != SYNC_UPDATE:
                results[i] = ServiceUnavailable(
                    f"unknown room event {kind!r}", details={"event": kind}
                )
                continue
            try:
                if not inspect_update(payload).is_empty:
                    updates.append(i)
            except InvalidUpdate as exc:  # V2, truncated, garbage: refused, nothing applied
                results[i] = exc
        if len(updates) == 1:
            i = updates[0]
            kind, payload, sid = events[i]
            results[i] = await self._receive_one(room, gateway, kind, payload, sid)
        elif updates:
            sids = {events[i][2] for i in updates}
            origin = _member(gateway, sids.pop()) if len(sids) == 1 else None
            changed: bytes | ObjectOSError | None
            try:
                merged = merge_updates(*(events[i][1] for i in updates))
                await room.apply_update(merged, origin)
                changed = b""
            except InvalidUpdate:
                changed = None
            except ObjectOSError as exc:
                changed = exc
            except Exception:  # Yrs refused to merge what our parser accepted
                changed = None
            for i in updates:
                if changed is None:
                    # One of them is bad in a way only Yrs noticed: apply them alone
                    # (re-applying the good ones is a no-op), so only it fails.
                    kind, payload, sid = events[i]
                    results[i] = await self._receive_one(room, gateway, kind, payload, sid)
                else:
                    results[i] = changed
        return results

    # ------------------------------------------------------------------ hub edits

    async def read_text(self, field: str) -> str:
        return self._require("read").read_text(field)

    async def write_text(self, field: str, text: str) -> bytes:
        """Set ``field`` to ``text`` (see ``DocumentRoom.write_text``); durable and broadcast."""
        return await self._require("edit").write_text(field, text)

    async def insert_text(self, field: str, index: int, text: str) -> bytes:
        return await self._require("edit").insert_text(field, index, text)

    async def delete_text(self, field: str, index: int, length: int) -> bytes:
        return await self._require("edit").delete_text(field, index, length)

    async def snapshot(self) -> bytes:
        """The whole document as one V1 update (what a brand-new client would receive)."""
        return await self._require("read").sync_step2(b"\x00")

    # ------------------------------------------------------------------ internals

    def _open_room(self, action: str, *, allow_unloaded: bool = False) -> DocumentRoom | None:
        if self._closing:
            raise RoomUnavailable(
                f"cannot {action}: document {self.doc_name!r} is passivating",
                details={"doc": self.doc_name, "state": "closed"},
            )
        if self._room is None and not allow_unloaded:
            raise RoomUnavailable(
                f"cannot {action}: document {self.doc_name!r} is not loaded",
                details={"doc": self.doc_name, "state": "new"},
            )
        return self._room

    def _require(self, action: str) -> DocumentRoom:
        room = self._open_room(action)
        assert room is not None
        return room

    async def _load(self) -> DocumentRoom:
        try:
            if self._engine is None:
                self._engine = room_engine(self.settings.database_url)
                await create_yjs_tables(self._engine)
        except Exception as exc:
            raise RoomUnavailable(
                f"document {self.doc_name!r}: its database is unreachable ({type(exc).__name__})",
                details={"doc": self.doc_name, "state": "new"},
            ) from exc
        # A broken room (a failed append) is replaced, never repaired: only a fresh
        # load is a durable view. Its members re-join through the gateways' re-sync.
        room = DocumentRoom(
            self.doc_name,
            SQLUpdateStore(self._engine, self.doc_name),
            compact_every=self.settings.compact_every,
        )
        await room.load()
        await room.subscribe(self._broadcast)
        self._room = room
        return room

    async def _broadcast(self, event_name: str, payload: bytes, origin: str | None) -> None:
        # Runs inside the room's write path: only enqueue here.
        origin_gateway, _, origin_sid = (origin or "").partition("|")
        for name, outbox in self._outboxes.items():
            outbox.put(event_name, payload, origin_sid if name == origin_gateway else None)

    async def _receive_one(
        self, room: DocumentRoom, gateway: str, kind: str, payload: bytes, sid: str
    ) -> bytes | ObjectOSError:
        try:
            if kind == SYNC_UPDATE:
                return await room.apply_update(payload, _member(gateway, sid))
            if kind == AWARENESS_UPDATE:
                return await room.apply_awareness(payload, _member(gateway, sid))
            return ServiceUnavailable(f"unknown room event {kind!r}", details={"event": kind})
        except ObjectOSError as exc:
            return exc
        except Exception:
            logger.exception("yjs %r: %s from %s failed", self.doc_name, kind, sid)
            return ServiceUnavailable(
                f"document {self.doc_name!r} could not apply the {kind}",
                details={"doc": self.doc_name},
            )

    async def _gateway_gone(self, gateway: str) -> None:
        """A gateway died: forget its members (their awareness goes away for everybody)."""
        outbox = self._outboxes.pop(gateway, None)
        if outbox is not None:
            self._retired_deliveries += outbox.batches
            await outbox.close()
        room = self._room
        if room is None:
            return
        for key in sorted(room.connections):
            if key.partition("|")[0] == gateway:
                await room.leave(key)

    async def _sweep_forever(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self._sweep()
            except Exception:
                logger.exception("yjs %r: room sweep failed", self.doc_name)

    async def _sweep(self) -> None:
        room = self._room
        if room is None or self._closing or room.state is not RoomState.LOADED:
            return
        await room.expire_awareness(self.settings.awareness_timeout_s)
        await self._reconcile_members(room)
        if (
            not room.connections
            and room.idle_for() >= self.settings.idle_timeout_s
            and not self._passivation_requested
        ):
            self._passivation_requested = True
            me = ray.get_runtime_context().current_actor
            # Not awaited: the call ends this process. ``passivate`` re-checks idleness.
            me.passivate.remote(min_idle_s=self.settings.idle_timeout_s)

    async def _reconcile_members(self, room: DocumentRoom) -> None:
        """Drop members whose gateway no longer holds them (a gateway that crashed quietly)."""
        gateways = {key.partition("|")[0] for key in room.connections} | set(self._outboxes)
        for name in sorted(gateways):
            outbox = self._outboxes.get(name)
            handle = outbox.handle if outbox is not None else factory.get_gateway(name)
            held: set[str] = set()
            if handle is not None:
                try:
                    held = set(
                        await asyncio.wait_for(
                            handle.holds.remote(self.doc_name), self.settings.gateway_timeout_s
                        )
                    )
                except RayActorError:
                    handle = None
                except (TimeoutError, RayTaskError):
                    continue  # busy or failing: ask again next sweep
            if handle is None:
                await self._gateway_gone(name)
                continue
            for key in sorted(room.connections):
                owner, _, sid = key.partition("|")
                if owner == name and sid not in held:
                    await room.leave(key)
            if not held:
                # Restarted or done with this document: stop sending it broadcasts.
                # (A gateway that is just connecting re-attaches with its join.)
                await self.detach(name)

    async def _close(self) -> None:
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None and sweeper is not asyncio.current_task():
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        room = self._room
        if room is not None:
            try:
                await room.close()
            except Exception:
                # Every update the room accepted is already in the log; only the
                # final snapshot is missing, and the next load replays the log.
                logger.warning("yjs %r: final compaction failed", self.doc_name, exc_info=True)
        for outbox in list(self._outboxes.values()):
            await outbox.close()
        self._outboxes.clear()
        self._closed.set()
        directory = factory.get_room_directory()
        if directory is not None:
            # Awaited (briefly): the process ends right after, possibly before an
            # unawaited call left it. The cap is only wrong until the next activation.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(directory.forget.remote(self.doc_name, self.incarnation), 2)
        if self._engine is not None:
            await self._engine.dispose()


# ---------------------------------------------------------------------- directory actor


class RoomDirectoryActor:
    """``rooms:yjs``: activates Yjs room actors and caps how many are alive.

    Activation is single-flight per document and waits out a passivation in
    progress. Beyond ``max_rooms`` live rooms, the least recently activated room
    without members is passivated first; when every live room has members the
    activation is refused with ``service_unavailable`` rather than grow without bound.
    """

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = RoomSettings.model_validate(settings)
        self.max_rooms = self.settings.max_rooms
        # doc -> incarnation of its live room, least recently activated first.
        self._live: OrderedDict[str, str] = OrderedDict()
        self._flights: dict[str, asyncio.Future[Any]] = {}
        self._space = asyncio.Lock()
        # After a restart: the rooms are detached and still running; find them by name.
        for doc in factory.live_yjs_rooms():
            self._live[doc] = ""

    async def activate(self, doc_name: str) -> Any:
        """The handle of the loaded room of ``doc_name``, activating it if needed."""
        pending = self._flights.get(doc_name)
        if pending is not None:
            return await asyncio.shield(pending)
        flight: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._flights[doc_name] = flight
        try:
            handle = await self._activate(doc_name)
        except BaseException as exc:
            if isinstance(exc, Exception):
                flight.set_exception(exc)
                flight.exception()  # retrieved: there may be no other waiter
            else:
                flight.cancel()
            raise
        else:
            flight.set_result(handle)
            return handle
        finally:
            del self._flights[doc_name]

    async def forget(self, doc_name: str, incarnation: str) -> None:
        """A room reports that it passivated itself (ignored if a newer one is live)."""
        if self._live.get(doc_name) in (incarnation, ""):
            self._live.pop(doc_name, None)

    async def passivate(self, doc_name: str, force: bool = False) -> bool:
        """Passivate the room of ``doc_name`` now (refused with members, unless ``force``)."""
        handle = factory.get_yjs_room(doc_name)
        if handle is None:
            self._live.pop(doc_name, None)
            return False
        done = await _passivate(handle, force=force)
        if done:
            self._live.pop(doc_name, None)
        return done

    async def live_rooms(self) -> list[str]:
        """Documents with a live room, least recently activated first."""
        return list(self._live)

    async def set_max_rooms(self, max_rooms: int) -> int:
        """Change the cap (e.g. under memory pressure) from the next activation; the old cap."""
        if max_rooms < 1:
            raise ValueError("max_rooms must be >= 1")
        previous, self.max_rooms = self.max_rooms, max_rooms
        return previous

    async def room_settings(self) -> dict[str, Any]:
        return self.settings.model_dump()

    async def _activate(self, doc_name: str) -> Any:
        if doc_name not in self._live:
            await self._make_space(doc_name)
        deadline = time.monotonic() + self.settings.activation_timeout_s
        delay = 0.02
        while True:
            handle = factory.get_or_create_yjs_room(doc_name, self.settings.model_dump())
            try:
                status = await handle.activate.remote()
            except (RayActorError, RayTaskError) as exc:
                error = unwrap_remote_error(exc, doc_name)
                if isinstance(exc, RayActorError):
                    closing = not exc.actor_init_failed
                else:
                    closing = error.details.get("state") == "closed"
                if not closing:
                    # The load failed (database down, corrupt log): nothing is in
                    # memory, so end the process instead of leaving it behind.
                    ray.kill(handle, no_restart=True)
                    raise error from None
                # Passivating, or exited but its name is not free yet: the next
                # activation must load what that one's final compaction wrote.
                if time.monotonic() > deadline:
                    raise RoomUnavailable(
                        f"document {doc_name!r} could not be activated within "
                        f"{self.settings.activation_timeout_s}s",
                        details={"doc": doc_name, "state": "closed"},
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            self._live[doc_name] = status["incarnation"]
            self._live.move_to_end(doc_name)
            return handle

    async def _make_space(self, doc_name: str) -> None:
        async with self._space:
            while len(self._live) >= self.max_rooms:
                if not await self._evict_one(exclude=doc_name):
                    raise ServiceUnavailable(
                        f"all {self.max_rooms} live documents have connected clients; "
                        "raise max_rooms or add capacity",
                        details={"max_rooms": self.max_rooms, "doc": doc_name},
                    )

    async def _evict_one(self, exclude: str) -> bool:
        for doc in list(self._live):
            if doc == exclude or doc in self._flights:
                continue
            handle = factory.get_yjs_room(doc)
            if handle is None:
                self._live.pop(doc, None)  # already gone: that was the space we needed
                return True
            try:
                status = await asyncio.wait_for(
                    handle.status.remote(), self.settings.gateway_timeout_s
                )
            except RayActorError:
                self._live.pop(doc, None)
                return True
            except (TimeoutError, RayTaskError):
                continue
            if status["members"]:
                continue
            if await _passivate(handle, force=False):
                self._live.pop(doc, None)
                return True
        return False


async def _passivate(handle: Any, *, force: bool) -> bool:
    try:
        return bool(await handle.passivate.remote(force=force))
    except RayActorError:
        return True  # exit_actor: the caller sees the actor die, which is success


# ---------------------------------------------------------------------- gateway side


class RemoteRoom:
    """A room actor seen from one gateway: the ``DocumentRoomLike`` the protocol handler uses.

    Updates and awareness changes are queued and sent one batch per call (one call
    in flight per document, so their order is kept). Once the actor is known to be
    gone every method raises :class:`RoomUnavailable`, which makes the handler
    re-bind the document to a freshly activated room.
    """

    def __init__(self, doc_name: str, handle: Any, directory: RayRoomDirectory) -> None:
        self.doc_name = doc_name
        self.handle = handle
        self._directory = directory
        self._inbox: list[tuple[str, bytes, str, asyncio.Future[Any]]] = []
        self._senders = 0
        self._watcher: asyncio.Task[None] | None = None
        self._watch_ref: Any = None
        self.lost = False

    async def join(self, connection: str) -> None:
        self._directory.held(self.doc_name).add(connection)
        try:
            await self._call("join", self._directory.gateway, connection, self._directory.handle)
        except ObjectOSError:
            self._directory.release(self.doc_name, connection)
            raise

    async def leave(self, connection: str) -> bytes:
        self._directory.release(self.doc_name, connection)
        if self.lost:
            return b""
        result: bytes = await self._call("leave", self._directory.gateway, connection)
        return result

    async def sync_step1(self) -> bytes:
        result: bytes = await self._call("sync_step1")
        return result

    async def sync_step2(self, state_vector: bytes) -> bytes:
        result: bytes = await self._call("sync_step2", state_vector)
        return result

    async def apply_update(self, update: bytes, origin: str | None = None) -> bytes:
        result: bytes = await self._enqueue(SYNC_UPDATE, update, origin or "")
        return result

    async def apply_awareness(self, update: bytes, connection: str) -> bytes:
        result: bytes = await self._enqueue(AWARENESS_UPDATE, update, connection)
        return result

    async def awareness_update(self) -> bytes:
        result: bytes = await self._call("awareness_update")
        return result

    async def subscribe(self, listener: RoomListener) -> Callable[[], Awaitable[None]]:
        """Receive the room's broadcasts (delivered to this gateway) until unsubscribed."""
        key = self._directory.add_listener(self.doc_name, listener)
        try:
            await self._call("attach", self._directory.gateway, self._directory.handle)
        except ObjectOSError:
            self._directory.remove_listener(self.doc_name, key)
            raise
        if self._watcher is None:
            self._watcher = self._directory.spawn(self._watch(), f"yjs-watch:{self.doc_name}")

        async def unsubscribe() -> None:
            if not self._directory.remove_listener(self.doc_name, key):
                return  # another binding of this document still listens
            watcher, self._watcher = self._watcher, None
            if watcher is not None and watcher is not asyncio.current_task():
                watcher.cancel()
                self._cancel_watch()
            if not self.lost:
                with contextlib.suppress(ObjectOSError):
                    await self._call("detach", self._directory.gateway)

        return unsubscribe

    def _gone(self) -> RoomUnavailable:
        return RoomUnavailable(
            f"the room of document {self.doc_name!r} is gone; re-activating it",
            details={"doc": self.doc_name, "state": "lost"},
        )

    async def _call(self, method: str, *args: Any) -> Any:
        if self.lost:
            raise self._gone()
        try:
            return await getattr(self.handle, method).remote(*args)
        except (RayActorError, RayTaskError) as exc:
            if isinstance(exc, RayActorError):
                self.lost = True
            raise unwrap_remote_error(exc, self.doc_name) from None

    def _enqueue(self, kind: str, payload: bytes, sid: str) -> asyncio.Future[Any]:
        if self.lost:
            raise self._gone()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inbox.append((kind, payload, sid, future))
        if self._senders < RECEIVE_IN_FLIGHT:
            self._senders += 1
            self._directory.spawn(self._send(), f"yjs-inbox:{self.doc_name}")
        return future

    async def _send(self) -> None:
        batch: list[tuple[str, bytes, str, asyncio.Future[Any]]] = []
        try:
            while self._inbox:
                # Bounded: a call's size (and the room's time on it) stays small.
                batch = self._inbox[:MAX_BATCH]
                self._inbox = self._inbox[MAX_BATCH:]
                events = [(kind, payload, sid) for kind, payload, sid, _ in batch]
                results: list[Any]
                try:
                    results = await self.handle.receive.remote(self._directory.gateway, events)
                except (RayActorError, RayTaskError) as exc:
                    if isinstance(exc, RayActorError):
                        self.lost = True
                    results = [unwrap_remote_error(exc, self.doc_name) for _ in batch]
                for (*_, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                batch = []
        finally:
            self._senders -= 1
            # Cancelled (the gateway is stopping): nobody may wait forever -- not for
            # this call, nor for queued events no other sender will pick up.
            stranded = batch
            if not self._senders:
                stranded, self._inbox = stranded + self._inbox, []
            for *_, future in stranded:
                if not future.done():
                    future.set_exception(self._gone())

    def _cancel_watch(self) -> None:
        # Cancelling our await does not end the room's pending ``watch`` coroutine.
        ref, self._watch_ref = self._watch_ref, None
        if ref is not None and not self.lost:
            with contextlib.suppress(Exception):
                ray.cancel(ref)

    async def _watch(self) -> None:
        try:
            self._watch_ref = self.handle.watch.remote()
            await self._watch_ref
        except RayActorError:
            pass
        except RayTaskError as exc:
            logger.warning("yjs %r: watch failed: %r", self.doc_name, exc)
        self.lost = True
        self._watcher = None
        self._watch_ref = None
        self._directory.room_lost(self)


RoomLostHandler = Callable[[str, RemoteRoom], Awaitable[None]]
"""``await handler(doc_name, lost_room)``: move the document's sockets to a fresh room."""


class RayRoomDirectory:
    """The :class:`~objectos.realtime.yjs.RoomDirectory` of one gateway actor.

    ``get`` activates rooms through ``rooms:yjs`` (created with ``settings`` if it is
    not running yet). The gateway forwards the rooms' broadcasts to :meth:`deliver`
    and answers their membership checks with :meth:`holds`. When a room with members
    here is lost, ``on_room_lost`` (set by the gateway) moves its sockets to a fresh
    room; it is retried with backoff while activation fails.
    """

    def __init__(
        self,
        gateway: str,
        handle: Any,
        settings: RoomSettings | None = None,
        *,
        recover_attempts: int = 8,
    ) -> None:
        self.gateway = gateway
        self.handle = handle
        self.settings = settings
        self.recover_attempts = recover_attempts
        self.on_room_lost: RoomLostHandler | None = None
        self._listeners: dict[str, dict[int, RoomListener]] = {}
        self._held: dict[str, set[str]] = {}
        self._next_key = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.recoveries = 0

    async def get(self, doc_name: str) -> RemoteRoom:
        directory = self._directory()
        try:
            handle = await directory.activate.remote(doc_name)
        except (RayActorError, RayTaskError) as exc:
            raise unwrap_remote_error(exc, doc_name) from None
        return RemoteRoom(doc_name, handle, self)

    async def deliver(self, doc_name: str, events: list[Broadcast]) -> None:
        """A room's broadcast batch: hand each event to this gateway's listeners, in order."""
        for event_name, payload, sid in events:
            for listener in list(self._listeners.get(doc_name, {}).values()):
                try:
                    await listener(event_name, payload, sid)
                except Exception:
                    logger.exception("yjs %r: a %s listener failed", doc_name, event_name)

    def holds(self, doc_name: str) -> list[str]:
        """The sids of this gateway that are members of ``doc_name``."""
        return sorted(self._held.get(doc_name, ()))

    def held(self, doc_name: str) -> set[str]:
        """The (mutable) set of this gateway's members of ``doc_name``."""
        return self._held.setdefault(doc_name, set())

    def release(self, doc_name: str, sid: str) -> None:
        held = self._held.get(doc_name)
        if held is not None:
            held.discard(sid)
            if not held:
                del self._held[doc_name]

    @property
    def documents(self) -> list[str]:
        """Documents with sockets or listeners on this gateway."""
        return sorted({d for d, s in self._held.items() if s} | set(self._listeners))

    def add_listener(self, doc_name: str, listener: RoomListener) -> int:
        self._next_key += 1
        self._listeners.setdefault(doc_name, {})[self._next_key] = listener
        return self._next_key

    def remove_listener(self, doc_name: str, key: int) -> bool:
        """Remove one listener; True when it was the document's last one here."""
        listeners = self._listeners.get(doc_name)
        if listeners is None:
            return False
        listeners.pop(key, None)
        if listeners:
            return False
        del self._listeners[doc_name]
        return True

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start a task this directory owns (cancelled by :meth:`close`)."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def room_lost(self, room: RemoteRoom) -> None:
        if self._held.get(room.doc_name) or room.doc_name in self._listeners:
            self.spawn(self._recover(room), f"yjs-recover:{room.doc_name}")

    async def close(self) -> None:
        """Cancel every task this directory owns (watchers, senders, recoveries)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _recover(self, room: RemoteRoom) -> None:
        delay = 0.1
        for attempt in range(1, self.recover_attempts + 1):
            handler = self.on_room_lost
            if handler is None or not (
                self._held.get(room.doc_name) or room.doc_name in self._listeners
            ):
                return
            try:
                await handler(room.doc_name, room)
                self.recoveries += 1
                return
            except ObjectOSError as exc:
                logger.warning(
                    "yjs %r: re-activation attempt %d failed: %s", room.doc_name, attempt, exc
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        logger.error(
            "yjs %r: gave up re-activating; clients re-sync on their next edit", room.doc_name
        )

    def _directory(self) -> Any:
        directory = factory.get_room_directory()
        if directory is not None:
            return directory
        if self.settings is None:
            raise ServiceUnavailable(
                "collaborative documents are not running (no room directory)",
                details={"actor": factory.YJS_ROOM_DIRECTORY_NAME},
            )
        return factory.get_or_create_room_directory(self.settings.model_dump())


# ---------------------------------------------------------------------- hub side


class HubDocument:
    """The hub's own access to one document: read and edit it like a client, from anywhere.

    Edits are durable and broadcast to every connected client before the call
    returns. The room is activated on first use and re-activated if it passivated
    or died since, so a ``HubDocument`` can be kept around.
    """

    def __init__(self, doc_name: str, settings: RoomSettings | None = None) -> None:
        self.doc_name = doc_name
        self.settings = settings
        self._handle: Any = None

    async def read_text(self, field: str) -> str:
        result: str = await self._call("read_text", field)
        return result

    async def write_text(self, field: str, text: str) -> bytes:
        """Make ``field`` read ``text`` ("set" semantics, see ``DocumentRoom.write_text``)."""
        result: bytes = await self._call("write_text", field, text)
        return result

    async def insert_text(self, field: str, index: int, text: str) -> bytes:
        result: bytes = await self._call("insert_text", field, index, text)
        return result

    async def delete_text(self, field: str, index: int, length: int) -> bytes:
        result: bytes = await self._call("delete_text", field, index, length)
        return result

    async def snapshot(self) -> bytes:
        result: bytes = await self._call("snapshot")
        return result

    async def status(self) -> dict[str, Any] | None:
        """The live room's status, or None when the document is passivated (not activated)."""
        handle = factory.get_yjs_room(self.doc_name)
        if handle is None:
            return None
        try:
            result: dict[str, Any] = await handle.status.remote()
        except RayActorError:
            return None
        return result

    async def passivate(self, force: bool = False) -> bool:
        """Ask the room to passivate now (refused while it has members unless ``force``)."""
        directory = self._directory()
        self._handle = None
        return bool(await directory.passivate.remote(self.doc_name, force))

    async def _call(self, method: str, *args: Any) -> Any:
        for attempt in range(3):
            if self._handle is None:
                try:
                    self._handle = await self._directory().activate.remote(self.doc_name)
                except (RayActorError, RayTaskError) as exc:
                    raise unwrap_remote_error(exc, self.doc_name) from None
            try:
                return await getattr(self._handle, method).remote(*args)
            except (RayActorError, RayTaskError) as exc:
                error = unwrap_remote_error(exc, self.doc_name)
                gone = isinstance(exc, RayActorError) or error.details.get("state") in (
                    "closed",
                    "broken",
                )
                if not gone or attempt == 2:
                    raise error from None
                self._handle = None  # passivated or died since: activate again
        raise AssertionError("unreachable")

    def _directory(self) -> Any:
        directory = factory.get_room_directory()
        if directory is not None:
            return directory
        if self.settings is None:
            raise ServiceUnavailable(
                "collaborative documents are not running (no room directory)",
                details={"actor": factory.YJS_ROOM_DIRECTORY_NAME},
            )
        return factory.get_or_create_room_directory(self.settings.model_dump())


__all__ = [
    "Broadcast",
    "DocumentRoomActor",
    "GatewayOutbox",
    "HubDocument",
    "Inbound",
    "RayRoomDirectory",
    "RemoteRoom",
    "RoomDirectoryActor",
    "RoomLostHandler",
    "RoomSettings",
    "coalesce_broadcasts",
    "room_engine",
    "set_process_niceness",
    "unwrap_remote_error",
]
