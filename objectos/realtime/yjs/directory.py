"""Finding the live room of a document: the seam between the Socket.IO side and the rooms.

The y-socket.io handler asks a :class:`RoomDirectory` for a document's room and
talks to it only through :class:`DocumentRoomLike` -- coroutines with plain bytes
and strings, so a Ray actor handle (behind a thin adapter in ``actors/``) fits the
same slot as the in-process :class:`~objectos.realtime.yjs.room.DocumentRoom`.

:class:`LocalRoomDirectory` keeps rooms in this process: activated on first use,
passivated when idle, at most ``max_rooms`` alive (least recently used goes first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Protocol, Self

from objectos.errors import ServiceUnavailable

from .room import DocumentRoom, RoomListener, RoomState
from .store import UpdateStore

logger = logging.getLogger(__name__)


class DocumentRoomLike(Protocol):
    """What the protocol handler needs from a document room, wherever it runs."""

    async def join(self, connection: str) -> None: ...

    async def leave(self, connection: str) -> bytes: ...

    async def sync_step1(self) -> bytes: ...

    async def sync_step2(self, state_vector: bytes) -> bytes: ...

    async def apply_update(self, update: bytes, origin: str | None = None) -> bytes: ...

    async def apply_awareness(self, update: bytes, connection: str) -> bytes: ...

    async def awareness_update(self) -> bytes: ...

    async def subscribe(self, listener: RoomListener) -> Callable[[], Awaitable[None]]: ...


class RoomDirectory(Protocol):
    """Hands out the live room of a document, activating it if needed."""

    async def get(self, doc_name: str) -> DocumentRoomLike:
        """The loaded room of ``doc_name``; raises if it cannot be loaded (never an empty one)."""
        ...


class LocalRoomDirectory:
    """In-process rooms with activation, idle passivation and an LRU cap.

    ``store_factory(doc_name)`` gives each document its store. A room is *idle*
    when no connection has joined it for ``idle_timeout`` seconds; idle rooms are
    passivated (compacted and dropped) by :meth:`sweep`, which the background task
    started by :meth:`start` (or ``async with``) runs every ``sweep_interval``.
    Activating a room beyond ``max_rooms`` first passivates the least recently used
    rooms without members; if every live room has members it refuses with
    :class:`ServiceUnavailable` rather than grow without bound.
    """

    def __init__(
        self,
        store_factory: Callable[[str], UpdateStore],
        *,
        clock: Callable[[], float] = time.monotonic,
        compact_every: int = 500,
        idle_timeout: float = 60.0,
        max_rooms: int = 1000,
        sweep_interval: float = 5.0,
        awareness_timeout: float = 30.0,
    ) -> None:
        if max_rooms < 1:
            raise ValueError("max_rooms must be >= 1")
        self._store_factory = store_factory
        self._clock = clock
        self._compact_every = compact_every
        self.idle_timeout = idle_timeout
        self.max_rooms = max_rooms
        self.sweep_interval = sweep_interval
        self.awareness_timeout = awareness_timeout
        self._rooms: OrderedDict[str, DocumentRoom] = OrderedDict()
        # One activation per document at a time: concurrent first connections must
        # share one load, not race two rooms into existence.
        self._activating: dict[str, asyncio.Future[DocumentRoom]] = {}
        self._closing: dict[str, asyncio.Future[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def live_rooms(self) -> list[str]:
        """Names of the loaded rooms, least recently used first."""
        return list(self._rooms)

    def peek(self, doc_name: str) -> DocumentRoom | None:
        """The live room of ``doc_name`` without activating it or touching its LRU position."""
        return self._rooms.get(doc_name)

    async def get(self, doc_name: str) -> DocumentRoom:
        room = self._rooms.get(doc_name)
        if room is not None and room.state is RoomState.LOADED:
            self._rooms.move_to_end(doc_name)
            return room
        if room is not None:
            # Broken (a store write failed) or closed under us: replace it with a
            # fresh load, which is the only way back to a durable view.
            await self.passivate(doc_name)
        pending = self._activating.get(doc_name)
        if pending is not None:
            await asyncio.wait([pending])  # not shield: our own cancellation still propagates
            if pending.cancelled():  # the activating caller was cancelled; try ourselves
                return await self.get(doc_name)
            return pending.result()
        future: asyncio.Future[DocumentRoom] = asyncio.get_running_loop().create_future()
        self._activating[doc_name] = future
        try:
            room = await self._activate(doc_name)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: there may be no waiter to do it
            raise
        else:
            future.set_result(room)
            return room
        finally:
            del self._activating[doc_name]

    async def passivate(self, doc_name: str) -> bool:
        """Compact and drop the room of ``doc_name`` if it is live; True if it was.

        A failed final compaction is logged, not raised: every update the room
        accepted is already in the store's log.
        """
        room = self._rooms.pop(doc_name, None)
        if room is None:
            return False
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closing[doc_name] = done
        try:
            await room.close()
        except Exception:
            logger.warning("yjs document %r: final compaction failed", doc_name, exc_info=True)
        finally:
            del self._closing[doc_name]
            done.set_result(None)
        return True

    async def sweep(self) -> list[str]:
        """Expire silent awareness clients and passivate idle rooms; returns passivated names."""
        for room in list(self._rooms.values()):
            with contextlib.suppress(Exception):
                await room.expire_awareness(self.awareness_timeout)
        idle = [name for name, room in self._rooms.items() if self._is_idle(room)]
        for name in idle:
            await self.passivate(name)
        return idle

    async def close(self) -> None:
        """Stop the sweeper and passivate every room (each compacts its log)."""
        await self.stop()
        for name in list(self._rooms):
            await self.passivate(name)

    # ------------------------------------------------------------------ sweeper

    async def start(self) -> None:
        """Start the background sweeper; refuses a second start."""
        if self._sweeper is not None:
            raise RuntimeError("LocalRoomDirectory already started")
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="yjs-room-sweeper")

    async def stop(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.sweep()
            except Exception:
                logger.exception("yjs room sweep failed")

    # ------------------------------------------------------------------ internals

    async def _activate(self, doc_name: str) -> DocumentRoom:
        closing = self._closing.get(doc_name)
        if closing is not None:
            # Let the previous activation finish its final compaction first, so the
            # new load sees one consistent snapshot + log.
            await asyncio.wait([closing])
        await self._make_space()
        room = DocumentRoom(
            doc_name,
            self._store_factory(doc_name),
            clock=self._clock,
            compact_every=self._compact_every,
        )
        await room.load()  # raises: nothing is registered, the next get retries
        self._rooms[doc_name] = room
        return room

    async def _make_space(self) -> None:
        while len(self._rooms) >= self.max_rooms:
            victim = next((n for n, r in self._rooms.items() if not r.connections), None)
            if victim is None:
                raise ServiceUnavailable(
                    f"all {self.max_rooms} live documents have connected clients; "
                    "raise max_rooms or add capacity",
                    details={"max_rooms": self.max_rooms},
                )
            await self.passivate(victim)

    def _is_idle(self, room: DocumentRoom) -> bool:
        return room.state is not RoomState.LOADED or room.idle_for() >= self.idle_timeout
