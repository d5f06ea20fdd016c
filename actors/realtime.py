"""Ray actor shells of the realtime engines: record rooms, presence shards, the change feed.

::

    REST replica ──commit──▶ _change_log ◀──reads── ChangeFeedActor (feed:changes)
         └── NudgeOnCommit ──── nudge() ───────────────────▲   │ push(entries), server order
                                                               ▼
    gateway ──subscribe──▶ SubscriptionRoomActor (room:records:<object>) ──deliver──▶ gateway
    gateway ──join, heartbeat──▶ PresenceActor (presence:<shard>) ─────────deliver──▶ gateway

* :class:`SubscriptionRoomActor` wraps a
  :class:`~objectos.realtime.subscriptions.SubscriptionRoom` for one object. It is
  *virtual*: :func:`subscribe_records` activates it on first subscribe, and it
  passivates itself (unregisters from the feed, exits) once it has had no
  subscribers for ``idle_s``. While alive it re-registers with the feed every
  ``attach_interval_s``, which is how it notices a restarted feed and reads
  what it missed from the log. Replays read the log through the feed actor, so
  only the feed holds a database connection.
* :class:`PresenceActor` wraps a :class:`~objectos.realtime.presence.PresenceTracker`
  (detached, one per shard, ``presence_shard(room, shards)`` picks it) and sweeps
  timed-out connections every ``timeout_s / 3``.
* :class:`ChangeFeedActor` wraps a :class:`~objectos.realtime.feed.ChangeFeed` over
  the database at ``database_url`` and pushes runs of changes to the room actors.

**The gateway side.** Rooms and presence hand batches to gateways through
:class:`RayGatewayDelivery`: ``await <gateway actor>.deliver_records(batch)``, where the
gateway actor is found by the name the subscriber gave (``gateway:<node>``) and
``batch`` is an :class:`~objectos.realtime.subscriptions.EventBatch` or a
:class:`~objectos.realtime.presence.PresenceBatch`; both offer
``batch.messages()`` — the ``(connection_id, event_name, payload)`` triples to
emit on ``/realtime``. A gateway that no longer exists loses its subscriptions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from actors.factory import (
    get_change_feed,
    get_named_actor,
    get_or_create_presence,
    get_or_create_record_room,
    presence_actor_name,
    presence_shard,
    record_room_name,
)
from actors.process import set_process_niceness
from objectos.data.actor import Actor
from objectos.data.changelog import ChangeEntry, ChangeLog, ChangePage
from objectos.data.filter import ColumnInfo
from objectos.errors import RecordNotFound, ServiceUnavailable, Unauthenticated
from objectos.realtime.feed import Backoff, ChangeFeed, Registration, TargetGone
from objectos.realtime.permissions import HubRecordPermissions
from objectos.realtime.presence import PresenceTracker, parse_room
from objectos.realtime.subscriptions import (
    GatewayGone,
    RecordVisibility,
    SubscriptionRoom,
    SubscriptionSpec,
    compile_filters,
)

logger = logging.getLogger("objectos.actors.realtime")


class RoomPassivated(ServiceUnavailable):
    """The room is passivating; activate it again (:func:`subscribe_records` does)."""


def _gone(exc: BaseException) -> bool:
    """An actor error that means the actor is dead for good, not restarting."""
    return isinstance(exc, RayActorError) and not isinstance(exc, ActorUnavailableError)


class RayGatewayDelivery:
    """``deliver(gateway_name, batch)`` → ``<gateway actor>.deliver_records.remote(batch)``.

    (``deliver`` of a gateway is the Yjs rooms' call; record and presence batches
    have their own method.)
    """

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}

    async def __call__(self, gateway: str, batch: Any) -> None:
        handle = self._handles.get(gateway)
        if handle is None:
            handle = get_named_actor(gateway)
            if handle is None:
                raise GatewayGone(gateway)
            self._handles[gateway] = handle
        try:
            await handle.deliver_records.remote(batch)
        except RayActorError as exc:
            self._handles.pop(gateway, None)
            if _gone(exc):
                raise GatewayGone(gateway) from exc
            raise


class FeedChangeSource:
    """A ChangeSource that reads the change log through the feed actor."""

    def __init__(self, feed: Any) -> None:
        self._feed = feed

    async def since(
        self, cursor: int = 0, objects: Iterable[str] | None = None, limit: int = 100
    ) -> ChangePage:
        wanted = sorted(objects) if objects is not None else None
        page: ChangePage = await self._feed.read.remote(cursor, wanted, limit)
        return page

    async def latest(self) -> int:
        latest: int = await self._feed.latest.remote()
        return latest


#: Scheduling niceness of the record rooms, presence shards and change feed. Ray starts
#: worker processes at 15, below anything else on the machine; these sit on the path
#: from commit to subscriber, so they run at the default priority like the gateways
#: and document rooms (``actors.room.set_process_niceness``). None keeps Ray's.
REALTIME_NICENESS: int | None = 0


def _feed_handle() -> Any:
    feed = get_change_feed()
    if feed is None:
        raise ServiceUnavailable("the change feed is not running", details={"service": "feed"})
    return feed


class SubscriptionRoomActor:
    """The record subscription room of one object (``room:records:<object>``)."""

    def __init__(
        self,
        object_name: str,
        *,
        visibility: RecordVisibility,
        columns: Mapping[str, ColumnInfo] | None = None,
        idle_s: float = 30.0,
        attach_interval_s: float = 5.0,
        page_size: int = 500,
        niceness: int | None = REALTIME_NICENESS,
    ) -> None:
        """``visibility``: the permission engine (pickled into this actor); ``columns``:
        ``DataEngine.tables.columns(object_name)`` for typed, checked filters;
        ``niceness``: see :data:`REALTIME_NICENESS`."""
        set_process_niceness(niceness)
        self.object_name = object_name
        self.name = record_room_name(object_name)
        self._visibility = visibility
        self._feed = _feed_handle()
        self._idle_s = idle_s
        self._attach_interval_s = attach_interval_s
        self._room = SubscriptionRoom(
            self.name,
            log=FeedChangeSource(self._feed),
            visibility=visibility,
            deliver=RayGatewayDelivery(),
            objects=[object_name],
            columns={object_name: dict(columns)} if columns is not None else None,
            register=self._register,
            page_size=page_size,
        )
        self._closing = False
        self._busy = 0
        self._empty_since = time.monotonic()
        self._loop = asyncio.get_event_loop().create_task(self._maintain())

    async def _register(self, objects: frozenset[str]) -> Registration:
        registration: Registration = await self._feed.register.remote(self.name, sorted(objects))
        return registration

    def _check_open(self) -> None:
        if self._closing:
            raise RoomPassivated(f"room {self.name} is passivating", details={"room": self.name})

    # -- called by gateways ------------------------------------------------------------------

    async def subscribe(
        self,
        spec: SubscriptionSpec | Mapping[str, Any],
        connection_id: str,
        gateway: str,
        actor: Actor,
    ) -> int:
        """Subscribe (spec or raw client payload, narrowed to this object); return the cursor."""
        self._check_open()
        if not isinstance(spec, SubscriptionSpec):
            spec = SubscriptionSpec.parse(spec)
        self._busy += 1
        try:
            ready = getattr(self._visibility, "ready", None)
            if ready is not None:  # a permission engine built in this process on first use
                await ready()
            return await self._room.subscribe(
                spec.for_objects([self.object_name]),
                connection_id=connection_id,
                gateway=gateway,
                actor=actor,
            )
        finally:
            self._busy -= 1
            self._touch()

    async def unsubscribe(self, connection_id: str, subscription_id: str) -> bool:
        """Remove one subscription."""
        removed = await self._room.unsubscribe(connection_id, subscription_id)
        self._touch()
        return removed

    async def disconnect(self, connection_id: str) -> int:
        """Remove every subscription of a connection."""
        removed = self._room.disconnect(connection_id)
        self._touch()
        return removed

    # -- called by the feed -------------------------------------------------------------------

    async def push(self, entries: Sequence[ChangeEntry]) -> int:
        """Changes of this object, in server order; returns once delivered."""
        if self._closing:
            raise RoomPassivated(f"room {self.name} is passivating", details={"room": self.name})
        return await self._room.push(entries)

    # -- operations ------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Subscriptions, cursor and counters."""
        return {
            "name": self.name,
            "object": self.object_name,
            "cursor": self._room.cursor,
            "closing": self._closing,
            "subscriptions": self._room.subscriptions(),
            "stats": dict(self._room.stats),
        }

    async def passivate(self) -> bool:
        """Passivate now if nobody is subscribed (the actor exits just after); else False."""
        if self._room.subscriber_count or self._busy or self._closing:
            return False
        self._closing = True
        self._loop.cancel()
        self._loop = asyncio.get_event_loop().create_task(self._close())
        return True

    def _touch(self) -> None:
        if self._room.subscriber_count == 0:
            self._empty_since = time.monotonic()

    async def _maintain(self) -> None:
        while not self._closing:
            await asyncio.sleep(min(self._attach_interval_s, self._idle_s))
            try:
                if self._room.subscriber_count:
                    # Cheap when the feed knows us; a catch-up from the log when it did not.
                    await self._room.attach()
                elif not self._busy and time.monotonic() - self._empty_since >= self._idle_s:
                    await self._close()
                    return
            except Exception as exc:
                logger.warning("room %s maintenance failed: %r", self.name, exc)

    async def _close(self) -> None:
        self._closing = True
        try:
            await self._feed.unregister.remote(self.name)
        except Exception as exc:  # the feed forgets us anyway once we are gone
            logger.info("room %s could not unregister: %r", self.name, exc)
        close = getattr(self._visibility, "aclose", None)  # metadata check, role directory
        if close is not None:
            try:
                await close()
            except Exception as exc:
                logger.info("room %s could not close its permissions: %r", self.name, exc)
        ray.actor.exit_actor()


class PresenceActor:
    """One presence shard (``presence:<shard>``)."""

    def __init__(
        self,
        shard: int,
        *,
        timeout_s: float = 30.0,
        sweep_interval_s: float | None = None,
        niceness: int | None = REALTIME_NICENESS,
    ) -> None:
        """Connections silent for ``timeout_s`` go offline; swept every ``sweep_interval_s``."""
        set_process_niceness(niceness)
        self.shard = shard
        self.name = presence_actor_name(shard)
        self._tracker = PresenceTracker(RayGatewayDelivery(), timeout_s=timeout_s)
        self._sweep_s = sweep_interval_s if sweep_interval_s is not None else timeout_s / 3
        self._loop = asyncio.get_event_loop().create_task(self._sweep())

    async def join(
        self, room: str, connection_id: str, user_id: str, gateway: str, status: str = "online"
    ) -> dict[str, Any]:
        """``presence:join``; returns the room's snapshot (also sent to the joiner)."""
        snapshot = await self._tracker.join(
            room, connection_id=connection_id, user_id=user_id, gateway=gateway, status=status
        )
        return snapshot.to_dict()

    async def update(self, room: str, connection_id: str, status: str) -> dict[str, Any]:
        """``presence:update``; returns the room's snapshot."""
        snapshot = await self._tracker.update(room, connection_id=connection_id, status=status)
        return snapshot.to_dict()

    async def leave(self, room: str, connection_id: str) -> bool:
        """``presence:leave``."""
        return await self._tracker.leave(room, connection_id=connection_id)

    async def heartbeat(self, connection_ids: Sequence[str]) -> list[str]:
        """Heartbeats of many connections at once; returns those unknown here (join again)."""
        return [c for c in connection_ids if not await self._tracker.heartbeat(c)]

    async def disconnect(self, connection_id: str) -> int:
        """The connection closed; returns how many rooms it left."""
        return await self._tracker.disconnect(connection_id)

    async def snapshot(self, room: str) -> dict[str, Any]:
        """Who is in ``room``."""
        return self._tracker.snapshot(room).to_dict()

    async def users_on_object(self, object_name: str) -> list[dict[str, str]]:
        """Users in an object's room or any of its record rooms."""
        return [u.to_dict() for u in self._tracker.users_on_object(object_name)]

    async def users_on_record(self, object_name: str, record_id: str) -> list[dict[str, str]]:
        """Users in one record's room."""
        return [u.to_dict() for u in self._tracker.users_on_record(object_name, record_id)]

    async def status(self) -> dict[str, Any]:
        """Rooms, connections and counters."""
        return {
            "name": self.name,
            "rooms": self._tracker.rooms(),
            "connections": self._tracker.connection_count(),
            "stats": dict(self._tracker.stats),
        }

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_s)
            try:
                await self._tracker.expire()
            except Exception as exc:
                logger.warning("presence %s sweep failed: %r", self.name, exc)


class ChangeFeedActor:
    """Tails the change log at ``database_url`` and pushes changes to record rooms."""

    def __init__(
        self,
        database_url: str,
        *,
        page_size: int = 500,
        idle_initial_s: float = 0.05,
        idle_max_s: float = 2.0,
        max_attempts: int = 5,
        ready_timeout_s: float = 30.0,
        niceness: int | None = REALTIME_NICENESS,
    ) -> None:
        """Polls from 50 ms up to ``idle_max_s`` while idle; :meth:`nudge` looks at once.

        ``ready_timeout_s``: how long a registration waits for the change log to
        become readable (the data engine creates it) before ServiceUnavailable.
        """
        set_process_niceness(niceness)
        # Imported here: only the feed talks to the database, rooms do not load SQL drivers.
        from objectos.data.schema import ObjectTables, create_engine
        from objectos.metadata.registry import MetadataRegistry

        self._engine = create_engine(database_url)
        tables = ObjectTables(MetadataRegistry.from_objects([]))
        self._log = ChangeLog(self._engine, tables.change_log, tables.sequence)
        self._rooms: dict[str, Any] = {}
        self._ready_timeout_s = ready_timeout_s
        self._feed = ChangeFeed(
            self._log,
            self._dispatch,
            page_size=page_size,
            idle=Backoff(idle_initial_s, idle_max_s),
            max_attempts=max_attempts,
        )
        self._ready = asyncio.get_event_loop().create_task(self._start())

    async def _start(self) -> None:
        # The tables may not exist yet (the data engine migrates them): keep trying.
        retry = Backoff(0.2, 5.0)
        while True:
            try:
                await self._feed.start()
                return
            except Exception as exc:
                logger.warning("change feed cannot start yet: %r", exc)
                await asyncio.sleep(retry.next())

    async def _dispatch(self, target: str, entries: Sequence[ChangeEntry]) -> None:
        handle = self._rooms.get(target)
        if handle is None:
            handle = get_named_actor(target)
            if handle is None:
                raise TargetGone(target)
            self._rooms[target] = handle
        try:
            await handle.push.remote(list(entries))
        except RoomPassivated as exc:
            self._rooms.pop(target, None)
            raise TargetGone(target) from exc
        except RayActorError as exc:
            self._rooms.pop(target, None)
            if _gone(exc):
                raise TargetGone(target) from exc
            raise

    async def register(self, target: str, objects: Sequence[str]) -> Registration:
        """Push changes of ``objects`` to the actor named ``target`` (a room) from now on."""
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self._ready_timeout_s)
        except TimeoutError:
            raise ServiceUnavailable(
                "the change feed cannot read the change log yet", details={"service": "feed"}
            ) from None
        return self._feed.register(target, objects)

    async def unregister(self, target: str, objects: Sequence[str] | None = None) -> bool:
        """Stop pushing to ``target``."""
        self._rooms.pop(target, None)
        return self._feed.unregister(target, objects)

    async def nudge(self) -> None:
        """Something was committed: read now."""
        self._feed.nudge()

    async def read(
        self, cursor: int, objects: Sequence[str] | None = None, limit: int = 500
    ) -> ChangePage:
        """A page of the change log (rooms replay through this)."""
        return await self._log.since(cursor, objects, limit)

    async def latest(self) -> int:
        """The newest committed server version."""
        return await self._log.latest()

    async def status(self) -> dict[str, Any]:
        """Cursor, targets and counters."""
        return {
            "cursor": self._feed.cursor,
            "running": self._feed.running,
            "targets": self._feed.targets(),
            "stats": dict(self._feed.stats),
        }


async def subscribe_records(
    payload: SubscriptionSpec | Mapping[str, Any],
    *,
    connection_id: str,
    gateway: str,
    actor: Actor,
    visibility: RecordVisibility,
    columns: Mapping[str, Mapping[str, ColumnInfo]] | None = None,
    attempts: int = 5,
    **room_options: Any,
) -> dict[str, Any]:
    """What a gateway does for a client's ``subscribe``: one room per object, activated as needed.

    Returns the ack ``{ok: True, cursor, rooms}``: ``cursor`` is the lowest of the
    rooms' cursors (a safe ``since`` for all of them) and ``rooms`` the room actor
    names, for ``unsubscribe``/``disconnect``. A room that is passivating or died
    is activated again (up to ``attempts`` times). ``visibility``, ``columns``
    (per object) and ``room_options`` only count for rooms this call creates.
    Errors in the payload raise InvalidField/InvalidFilter/ObjectNotFound.
    """
    spec = payload if isinstance(payload, SubscriptionSpec) else SubscriptionSpec.parse(payload)
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    _feed_handle()  # a clear error instead of rooms that die in their constructor
    cursors: list[int] = []
    rooms: list[str] = []
    for object_name in spec.objects:
        options = dict(room_options, visibility=visibility)
        if columns is not None and object_name in columns:
            options["columns"] = dict(columns[object_name])
        cursor = 0
        for attempt in range(1, attempts + 1):
            room = get_or_create_record_room(object_name, **options)
            try:
                cursor = await room.subscribe.remote(
                    spec.for_objects([object_name]), connection_id, gateway, actor
                )
                break
            except (RoomPassivated, RayActorError):
                if attempt == attempts:
                    raise
                # The old actor still holds the name until Ray has reaped it.
                await asyncio.sleep(0.1 * attempt)
        cursors.append(cursor)
        rooms.append(record_room_name(object_name))
    return {"ok": True, "cursor": min(cursors), "rooms": rooms}


async def unsubscribe_records(
    rooms: Iterable[str], *, connection_id: str, subscription_id: str | None = None
) -> int:
    """A client's ``unsubscribe`` (one subscription) or its disconnect (``subscription_id=None``).

    ``rooms`` are the room actor names :func:`subscribe_records` returned; rooms
    that passivated or died meanwhile are skipped. Returns how many subscriptions went.
    """
    removed = 0
    for name in rooms:
        room = get_named_actor(name)
        if room is None:
            continue
        try:
            if subscription_id is None:
                removed += await room.disconnect.remote(connection_id)
            else:
                removed += int(await room.unsubscribe.remote(connection_id, subscription_id))
        except RayActorError:
            continue  # a dead room holds no subscriptions
    return removed


def unwrap(exc: BaseException) -> BaseException:
    """The exception an actor raised, rather than Ray's wrapper around it."""
    if isinstance(exc, RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return exc


class RayRealtimeBackend:
    """What the gateway's ``/realtime`` namespace calls: record rooms and presence shards.

    :class:`~objectos.realtime.namespace.RealtimeBackend` over Ray actors.
    ``records`` (picklable, see :class:`~objectos.realtime.permissions.HubRecordPermissions`)
    is the permission adapter handed to every room this gateway activates, and
    says which objects exist and who may read them; without it record
    subscriptions are refused. Presence rooms are spread over ``presence_shards``
    trackers by object (:func:`actors.factory.presence_shard`): every gateway of
    a hub must use the same number. Errors raised in actors come back unwrapped,
    so clients see their code and details.
    """

    def __init__(
        self,
        gateway: str,
        records: HubRecordPermissions | None,
        *,
        read_record: Callable[[str, str], Awaitable[Mapping[str, Any] | None]] | None = None,
        presence_shards: int = 1,
        presence_timeout_s: float = 30.0,
        room_options: Mapping[str, Any] | None = None,
    ) -> None:
        """``read_record(object, id)``: the stored record, for presence in a record's
        room (``<object>/<id>``: joined only by those who may read that record)."""
        self.gateway = gateway
        self.records = records
        self.read_record = read_record
        self.presence_shards = presence_shards
        self.presence_timeout_s = presence_timeout_s
        self.room_options = dict(room_options or {})
        self._trackers: dict[int, Any] = {}

    # -- subscriptions ---------------------------------------------------------------------

    def _check_objects(
        self, spec: SubscriptionSpec, actor: Actor
    ) -> tuple[HubRecordPermissions, dict[str, Any]]:
        if self.records is None:
            raise ServiceUnavailable(
                "record subscriptions need the hub's metadata; this gateway has none",
                details={"service": "realtime"},
            )
        engine = self.records.permissions.engine
        columns: dict[str, Any] = {}
        for name in spec.objects:
            engine.require(actor, name, "read")  # ObjectNotFound, PermissionDenied
            columns[name] = self.records.columns(name)
        # The filter is checked here, for every object, before any room is asked: a
        # subscription one room would refuse must not be half taken by the others.
        compile_filters(spec, actor, self.records, columns)
        return self.records, columns

    async def subscribe(
        self,
        spec: SubscriptionSpec,
        connection_id: str,
        actor: Actor,
        *,
        keep: Collection[str] = (),
    ) -> tuple[int, list[str]]:
        if self.records is not None:
            await self.records.ready()
        records, columns = self._check_objects(spec, actor)
        try:
            ack = await subscribe_records(
                spec,
                connection_id=connection_id,
                gateway=self.gateway,
                actor=actor,
                visibility=records,
                columns=columns,
                **self.room_options,
            )
        except BaseException as exc:
            # Rooms that took their share before one refused must not keep it; rooms
            # of the subscription this one replaces (``keep``) hold it still.
            kept = set(keep)
            rooms = [r for r in map(record_room_name, spec.objects) if r not in kept]
            try:
                await unsubscribe_records(
                    rooms, connection_id=connection_id, subscription_id=spec.subscription_id
                )
            except Exception as cleanup:
                logger.warning("could not undo a failed subscribe: %r", cleanup)
            raise unwrap(exc) from None
        return int(ack["cursor"]), list(ack["rooms"])

    async def unsubscribe(
        self, rooms: Iterable[str], connection_id: str, subscription_id: str | None
    ) -> int:
        return await unsubscribe_records(
            rooms, connection_id=connection_id, subscription_id=subscription_id
        )

    # -- presence --------------------------------------------------------------------------

    def _tracker(self, shard: int) -> Any:
        handle = self._trackers.get(shard)
        if handle is None:
            handle = get_or_create_presence(shard, timeout_s=self.presence_timeout_s)
            self._trackers[shard] = handle
        return handle

    async def _call(self, room: str, method: str, *args: Any) -> Any:
        shard = presence_shard(room, self.presence_shards)
        for attempt in (1, 2):
            try:
                return await getattr(self._tracker(shard), method).remote(*args)
            except RayActorError:
                self._trackers.pop(shard, None)
                if attempt == 2:
                    raise ServiceUnavailable(
                        "the presence tracker is unavailable", details={"service": "presence"}
                    ) from None
            except RayTaskError as exc:
                raise unwrap(exc) from None
        raise AssertionError("unreachable")

    async def join(
        self, room: str, connection_id: str, actor: Actor, status: str
    ) -> dict[str, Any]:
        object_name, record_id = parse_room(room)
        if actor.user_id is None:
            raise Unauthenticated("presence needs a signed-in user")
        if self.records is not None:
            await self.records.ready()
            self.records.permissions.engine.require(actor, object_name, "read")
            if record_id is not None and self.read_record is not None:
                record = await self.read_record(object_name, record_id)
                if record is None or not self.records.permissions.can_read(
                    actor, object_name, record
                ):
                    # The same answer for "missing" and "not yours": existence stays private.
                    raise RecordNotFound(
                        f"{object_name} record {record_id!r} does not exist",
                        details={"object": object_name, "id": record_id},
                    )
        snapshot: dict[str, Any] = await self._call(
            room, "join", room, connection_id, actor.user_id, self.gateway, status
        )
        return snapshot

    async def update(self, room: str, connection_id: str, status: str) -> dict[str, Any]:
        snapshot: dict[str, Any] = await self._call(room, "update", room, connection_id, status)
        return snapshot

    async def leave(self, room: str, connection_id: str) -> bool:
        return bool(await self._call(room, "leave", room, connection_id))

    async def heartbeat(self, rooms: Mapping[str, Iterable[str]]) -> list[str]:
        by_shard: dict[int, set[str]] = {}
        for connection_id, names in rooms.items():
            for room in names:
                by_shard.setdefault(presence_shard(room, self.presence_shards), set()).add(
                    connection_id
                )
        forgotten: set[str] = set()
        for shard, connection_ids in by_shard.items():
            unknown = await self._tracker(shard).heartbeat.remote(sorted(connection_ids))
            forgotten.update(unknown)
        return sorted(forgotten)

    async def disconnect_presence(self, connection_id: str, rooms: Iterable[str]) -> None:
        shards = {presence_shard(room, self.presence_shards) for room in rooms}
        for shard in sorted(shards):
            await self._tracker(shard).disconnect.remote(connection_id)


class FeedNudge:
    """``nudge()`` for :class:`~objectos.realtime.feed.NudgeOnCommit` in REST replicas.

    Tells ``feed:changes`` (:meth:`ChangeFeedActor.nudge`) to read the log now,
    without making the request wait: the call runs in a background task of the
    caller's loop, and writes that commit while one is in flight cause one more
    nudge after it, not one each (nothing is returned for NudgeOnCommit to await).
    While no feed runs it looks the actor up at most every ``lookup_s``, so a
    hub without realtime pays nothing per write. A lost nudge only delays events:
    the feed polls anyway.
    """

    def __init__(self, lookup_s: float = 5.0) -> None:
        self.lookup_s = lookup_s
        self._handle: Any = None
        self._looked_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._pending = False
        self.sent = 0

    def __call__(self) -> None:
        if self._task is not None and not self._task.done():
            self._pending = True  # the call in flight may have been read already
            return
        if self._handle is None:
            now = time.monotonic()
            if now - self._looked_at < self.lookup_s:
                return
            self._looked_at = now
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        if self._handle is None:
            # A GCS lookup: off the event loop, which is serving requests.
            self._handle = await asyncio.to_thread(get_change_feed)
            if self._handle is None:
                return
        handle = self._handle
        while True:
            self._pending = False
            try:
                await handle.nudge.remote()
                self.sent += 1
            except Exception as exc:  # stopped or gone: look it up again later
                self._handle = None
                logger.info("nudging the change feed failed: %r", exc)
                return
            if not self._pending:
                return


__all__ = [
    "ChangeFeedActor",
    "FeedChangeSource",
    "FeedNudge",
    "PresenceActor",
    "RayGatewayDelivery",
    "RayRealtimeBackend",
    "RoomPassivated",
    "SubscriptionRoomActor",
    "subscribe_records",
    "unsubscribe_records",
    "unwrap",
]
