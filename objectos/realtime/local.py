"""``/realtime`` in one process: a :class:`~objectos.realtime.namespace.RealtimeBackend`
over an in-process feed, subscription room and presence tracker.

The hub runs ``/realtime`` on Ray (``actors.realtime.RayRealtimeBackend``: one room
actor per object, presence shards, the feed actor). An embedded hub, a single-process
tool or a test serves the same protocol with this backend::

    backend = LocalRealtimeBackend(data.change_log, permissions=RecordPermissions(engine),
                                   columns=data.tables.columns)
    namespace = RealtimeNamespace(identify, backend)
    backend.attach(namespace)                      # where batches are delivered
    sio.register_namespace(namespace)
    data.hooks = NudgeOnCommit(backend.nudge, data.hooks)
    await backend.start()

One :class:`~objectos.realtime.subscriptions.SubscriptionRoom` holds every object's
subscribers (so a multi-object subscription replays in server order), fed by one
:class:`~objectos.realtime.feed.ChangeFeed`; one
:class:`~objectos.realtime.presence.PresenceTracker` holds presence. Object existence
and object read permission are checked as on Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from objectos.data.actor import Actor
from objectos.data.changelog import ChangeEntry
from objectos.data.filter import ColumnInfo
from objectos.errors import ObjectOSError, Unauthenticated
from objectos.realtime.feed import Backoff, ChangeFeed, ChangeSource, Registration
from objectos.realtime.namespace import RealtimeNamespace
from objectos.realtime.permissions import RecordPermissions
from objectos.realtime.presence import PresenceTracker, parse_room
from objectos.realtime.subscriptions import SubscriptionRoom, SubscriptionSpec

ROOM = "local"
GATEWAY = "local"


class _Columns(Mapping[str, Mapping[str, ColumnInfo]]):
    """``columns(object_name)`` as the mapping a room wants (KeyError for unknown objects)."""

    def __init__(self, lookup: Callable[[str], Mapping[str, ColumnInfo]]) -> None:
        self._lookup = lookup

    def __getitem__(self, name: str) -> Mapping[str, ColumnInfo]:
        try:
            return self._lookup(name)
        except (ObjectOSError, LookupError):
            raise KeyError(name) from None

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0


class LocalRealtimeBackend:
    """Record subscriptions and presence in this process (see the module docstring)."""

    def __init__(
        self,
        log: ChangeSource,
        *,
        permissions: RecordPermissions,
        columns: Callable[[str], Mapping[str, ColumnInfo]] | None = None,
        presence_timeout_s: float = 30.0,
        idle: Backoff | None = None,
        page_size: int = 500,
    ) -> None:
        self.permissions = permissions
        self._namespace: RealtimeNamespace | None = None
        self._feed = ChangeFeed(log, self._dispatch, idle=idle, page_size=page_size)
        self.room = SubscriptionRoom(
            ROOM,
            log=log,
            visibility=permissions,
            deliver=self._deliver,
            columns=_Columns(columns) if columns is not None else None,
            register=self._register,
            page_size=page_size,
        )
        self.tracker = PresenceTracker(self._deliver, timeout_s=presence_timeout_s)
        self._sweeping: asyncio.Task[None] | None = None

    def attach(self, namespace: RealtimeNamespace) -> None:
        """Deliver events and presence snapshots to ``namespace``'s sockets."""
        self._namespace = namespace

    async def start(self) -> None:
        """Start tailing the change log and timing out silent presence."""
        await self._feed.start()
        self._sweeping = asyncio.get_running_loop().create_task(self._sweep())

    async def stop(self) -> None:
        await self._feed.stop()
        if self._sweeping is not None:
            self._sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeping

    def nudge(self) -> None:
        """A commit happened: read the log now (``NudgeOnCommit(backend.nudge)``)."""
        self._feed.nudge()

    # -- wiring ------------------------------------------------------------------------------

    async def _register(self, objects: frozenset[str]) -> Registration:
        return self._feed.register(ROOM, objects)

    async def _dispatch(self, target: str, entries: Sequence[ChangeEntry]) -> None:
        await self.room.push(entries)

    async def _deliver(self, gateway: str, batch: Any) -> None:
        if self._namespace is None:
            return
        unknown = await self._namespace.deliver(batch)
        for connection_id in unknown:
            self.room.disconnect(connection_id)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.tracker.timeout_s / 3)
            await self.tracker.expire()

    # -- RealtimeBackend -------------------------------------------------------------------

    async def subscribe(
        self,
        spec: SubscriptionSpec,
        connection_id: str,
        actor: Actor,
        *,
        keep: Collection[str] = (),
    ) -> tuple[int, list[str]]:
        # One room, which checks a spec before it replaces the subscription with its
        # id: a refused subscribe has nothing to undo and leaves the previous one as is.
        for name in spec.objects:
            self.permissions.engine.require(actor, name, "read")
        cursor = await self.room.subscribe(
            spec, connection_id=connection_id, gateway=GATEWAY, actor=actor
        )
        return cursor, [ROOM]

    async def unsubscribe(
        self, rooms: Iterable[str], connection_id: str, subscription_id: str | None
    ) -> int:
        if subscription_id is None:
            return self.room.disconnect(connection_id)
        return int(await self.room.unsubscribe(connection_id, subscription_id))

    async def join(
        self, room: str, connection_id: str, actor: Actor, status: str
    ) -> dict[str, Any]:
        object_name, _ = parse_room(room)
        if actor.user_id is None:
            raise Unauthenticated("presence needs a signed-in user")
        self.permissions.engine.require(actor, object_name, "read")
        snapshot = await self.tracker.join(
            room,
            connection_id=connection_id,
            user_id=str(actor.user_id),
            gateway=GATEWAY,
            status=status,
        )
        return snapshot.to_dict()

    async def update(self, room: str, connection_id: str, status: str) -> dict[str, Any]:
        snapshot = await self.tracker.update(room, connection_id=connection_id, status=status)
        return snapshot.to_dict()

    async def leave(self, room: str, connection_id: str) -> bool:
        return await self.tracker.leave(room, connection_id=connection_id)

    async def heartbeat(self, rooms: Mapping[str, Iterable[str]]) -> list[str]:
        return [c for c in rooms if not await self.tracker.heartbeat(c)]

    async def disconnect_presence(self, connection_id: str, rooms: Iterable[str]) -> None:
        await self.tracker.disconnect(connection_id)


__all__ = ["LocalRealtimeBackend"]
