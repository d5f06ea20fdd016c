"""Presence: who is online, away or busy in which room, across tabs and gateways.

A :class:`PresenceTracker` is the engine a ``presence:<shard>`` actor wraps. It
keeps, per *connection* (one socket of one user, through one gateway), the rooms
it joined with a status, and the last time it was heard from::

    tracker = PresenceTracker(publish, timeout_s=30)
    await tracker.join("case/42", connection_id=sid, user_id="alice", gateway="gateway:n1")
    await tracker.update("case/42", connection_id=sid, status="away")
    await tracker.heartbeat(sid)          # every few seconds, per connection
    await tracker.expire()                # periodically: silent connections go offline

**Rooms** are an object (``case``) or a record (``case/42``); active users can be
asked per object (its room and every record room of it) or per record.

**A user counts once.** A room lists each user once, with the most present
status of their connections there — ``online`` > ``busy`` > ``away`` >
``offline`` — because another tab going idle must not hide a user who is active
in this one. A user whose connections are all ``offline`` (invisible), or gone,
is not listed; so a user goes offline only when their last connection leaves,
disconnects or times out. ``since`` is when the listed status began.

**Snapshots on change.** After every operation the tracker compares each
affected room's list with the previous one; when it changed, the whole list
(``presence {room, users[{userId, status, since}]}``) goes to every connection
in the room, batched per gateway through ``publish(gateway, PresenceBatch)``.
A joining connection always gets the current list, changed or not. Snapshots
are full state, so one lost in transit is repaired by the next. A gateway that
is gone (:class:`~objectos.realtime.subscriptions.GatewayGone`) takes its
connections with it.

Time comes from the injected ``clock`` (seconds since the epoch), so tests move
it by hand.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from objectos.errors import FieldError, InvalidField
from objectos.realtime.subscriptions import MAX_ID_LENGTH, GatewayGone

logger = logging.getLogger("objectos.realtime.presence")

#: Statuses a client may set, most present first.
STATUSES = ("online", "busy", "away", "offline")
_RANK = {status: len(STATUSES) - i for i, status in enumerate(STATUSES)}
#: The Socket.IO event name of a presence snapshot.
PRESENCE_EVENT = "presence"

_ROOM = re.compile(r"(?P<object>[a-z][a-z0-9_]{0,63})(?:/(?P<id>[A-Za-z0-9_-]{1,36}))?")


def _bad(field_name: str, reason: str) -> InvalidField:
    return InvalidField(
        f"invalid presence request: {field_name} {reason}",
        details={"field": field_name, "reason": reason},
        field_errors=[FieldError(field_name, "invalid_field", f"{field_name} {reason}")],
    )


def parse_room(room: Any) -> tuple[str, str | None]:
    """``"case"`` → ``("case", None)``, ``"case/42"`` → ``("case", "42")``; else InvalidField."""
    match = _ROOM.fullmatch(room) if isinstance(room, str) else None
    if match is None:
        raise _bad("room", "must be an object name or <object>/<record id>")
    return match["object"], match["id"]


def parse_status(status: Any) -> str:
    """One of :data:`STATUSES`; InvalidField otherwise."""
    if status not in STATUSES:
        raise _bad("status", f"must be one of {', '.join(STATUSES)}")
    return str(status)


def _text(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LENGTH:
        raise _bad(field_name, f"must be text of 1 to {MAX_ID_LENGTH} characters")
    return value


@dataclass(frozen=True)
class PresenceUser:
    """One user as a room lists them."""

    user_id: str
    status: str
    since: str

    def to_dict(self) -> dict[str, str]:
        """``{userId, status, since}``."""
        return {"userId": self.user_id, "status": self.status, "since": self.since}


@dataclass(frozen=True)
class PresenceSnapshot:
    """Everyone present in one room: the payload of the ``presence`` message."""

    room: str
    users: tuple[PresenceUser, ...]

    def to_dict(self) -> dict[str, Any]:
        """``{room, users[{userId, status, since}]}``."""
        return {"room": self.room, "users": [u.to_dict() for u in self.users]}


@dataclass(frozen=True)
class PresenceBatch:
    """What a presence tracker hands one gateway in one ``publish(gateway, batch)`` call.

    ``deliveries`` pair connection ids with the snapshot they get. Like
    :class:`~objectos.realtime.subscriptions.EventBatch` it offers
    :meth:`messages`, the ``(connection_id, event_name, payload)`` triples to emit.
    """

    deliveries: tuple[tuple[tuple[str, ...], PresenceSnapshot], ...]

    def messages(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(connection_id, "presence", snapshot)`` for every recipient."""
        for connection_ids, snapshot in self.deliveries:
            payload = snapshot.to_dict()
            for connection_id in connection_ids:
                yield connection_id, PRESENCE_EVENT, payload


Publish = Callable[[str, PresenceBatch], Awaitable[None]]
"""``await publish(gateway_name, batch)``."""


@dataclass(eq=False)
class _Connection:
    connection_id: str
    user_id: str
    gateway: str
    last_seen: float
    rooms: dict[str, str] = field(default_factory=dict)  # room -> status


class PresenceTracker:
    """Presence per room (see the module docstring)."""

    def __init__(
        self,
        publish: Publish,
        *,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 30.0,
    ) -> None:
        """``timeout_s``: a connection not heard from for longer is offline everywhere."""
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._publish = publish
        self._clock = clock
        self.timeout_s = timeout_s
        self._connections: dict[str, _Connection] = {}
        self._members: dict[str, set[str]] = {}  # room -> connection ids
        self._views: dict[str, dict[str, PresenceUser]] = {}  # room -> user -> entry
        self._by_object: dict[str, set[str]] = {}  # object -> rooms
        self._send_lock = asyncio.Lock()
        self.stats = {"snapshots": 0, "batches": 0, "expired": 0}

    # -- operations ----------------------------------------------------------------------

    async def join(
        self,
        room: str,
        *,
        connection_id: str,
        user_id: str,
        gateway: str,
        status: str = "online",
    ) -> PresenceSnapshot:
        """``presence:join``: enter ``room`` (again) with ``status``; return the room's list."""
        object_name, _ = parse_room(room)
        status = parse_status(status)
        connection_id = _text(connection_id, "connectionId")
        user_id = _text(user_id, "userId")
        gateway = _text(gateway, "gateway")
        connection = self._connections.get(connection_id)
        if connection is None:
            connection = _Connection(connection_id, user_id, gateway, self._clock())
            self._connections[connection_id] = connection
        elif connection.user_id != user_id:
            raise _bad("userId", "differs from the user this connection joined as")
        connection.last_seen = self._clock()
        connection.rooms[room] = status
        self._members.setdefault(room, set()).add(connection_id)
        self._by_object.setdefault(object_name, set()).add(room)
        changed = self._recompute([room])
        if not changed:
            # Nothing new for the others, but the newcomer needs the list.
            await self._send({gateway: [((connection_id,), self.snapshot(room))]})
        else:
            await self._broadcast(changed)
        return self.snapshot(room)

    async def update(self, room: str, *, connection_id: str, status: str) -> PresenceSnapshot:
        """``presence:update``: change this connection's status in a room it joined."""
        parse_room(room)
        status = parse_status(status)
        connection = self._connections.get(_text(connection_id, "connectionId"))
        if connection is None or room not in connection.rooms:
            raise _bad("room", "was not joined by this connection")
        connection.last_seen = self._clock()
        connection.rooms[room] = status
        await self._broadcast(self._recompute([room]))
        return self.snapshot(room)

    async def leave(self, room: str, *, connection_id: str) -> bool:
        """``presence:leave``: leave one room; False if the connection was not in it."""
        parse_room(room)
        connection = self._connections.get(_text(connection_id, "connectionId"))
        if connection is None or room not in connection.rooms:
            return False
        del connection.rooms[room]
        self._remove_member(room, connection_id)
        if not connection.rooms:
            del self._connections[connection_id]
        await self._broadcast(self._recompute([room]))
        return True

    async def heartbeat(self, connection_id: str) -> bool:
        """The connection is alive; False if unknown here (the gateway should join again)."""
        connection = self._connections.get(_text(connection_id, "connectionId"))
        if connection is None:
            return False
        connection.last_seen = self._clock()
        return True

    async def disconnect(self, connection_id: str) -> int:
        """The connection closed: leave every room; return how many rooms it was in."""
        rooms = self._drop([_text(connection_id, "connectionId")])
        await self._broadcast(self._recompute(rooms))
        return len(rooms)

    async def expire(self) -> int:
        """Drop connections not heard from for ``timeout_s``; return how many."""
        deadline = self._clock() - self.timeout_s
        stale = [c.connection_id for c in self._connections.values() if c.last_seen < deadline]
        if not stale:
            return 0
        self.stats["expired"] += len(stale)
        await self._broadcast(self._recompute(self._drop(stale)))
        return len(stale)

    async def drop_gateway(self, gateway: str) -> int:
        """Every connection of ``gateway`` disconnected (it died); return how many."""
        gone = [c.connection_id for c in self._connections.values() if c.gateway == gateway]
        if gone:
            await self._broadcast(self._recompute(self._drop(gone)))
        return len(gone)

    # -- queries ---------------------------------------------------------------------------

    def snapshot(self, room: str) -> PresenceSnapshot:
        """Who is in ``room`` now (sorted by user id)."""
        view = self._views.get(room, {})
        return PresenceSnapshot(room, tuple(view[user] for user in sorted(view)))

    def users_on_object(self, object_name: str) -> list[PresenceUser]:
        """Users present in the object's room or any of its record rooms, each once."""
        return self._merge(self._by_object.get(object_name, set()))

    def users_on_record(self, object_name: str, record_id: str) -> list[PresenceUser]:
        """Users present in the room of one record."""
        return list(self.snapshot(f"{object_name}/{record_id}").users)

    def rooms(self) -> dict[str, int]:
        """Rooms with someone listed, and how many users each lists."""
        return {room: len(view) for room, view in sorted(self._views.items()) if view}

    def connection_count(self) -> int:
        """How many connections are tracked."""
        return len(self._connections)

    # -- internals -------------------------------------------------------------------------

    def _merge(self, rooms: Iterable[str]) -> list[PresenceUser]:
        best: dict[str, PresenceUser] = {}
        for room in rooms:
            for user in self._views.get(room, {}).values():
                current = best.get(user.user_id)
                if (
                    current is None
                    or _RANK[user.status] > _RANK[current.status]
                    or (user.status == current.status and user.since < current.since)
                ):
                    best[user.user_id] = user
        return [best[user] for user in sorted(best)]

    def _remove_member(self, room: str, connection_id: str) -> None:
        members = self._members.get(room)
        if members is None:
            return
        members.discard(connection_id)
        if not members:
            del self._members[room]

    def _drop(self, connection_ids: Iterable[str]) -> list[str]:
        rooms: set[str] = set()
        for connection_id in connection_ids:
            connection = self._connections.pop(connection_id, None)
            if connection is None:
                continue
            for room in connection.rooms:
                self._remove_member(room, connection_id)
                rooms.add(room)
        return sorted(rooms)

    def _recompute(self, rooms: Iterable[str]) -> list[str]:
        """Rebuild the lists of ``rooms``; return those that changed."""
        changed: list[str] = []
        now = _iso(self._clock())
        for room in rooms:
            best: dict[str, str] = {}
            for connection_id in self._members.get(room, ()):
                connection = self._connections[connection_id]
                status = connection.rooms[room]
                if _RANK[status] > _RANK.get(best.get(connection.user_id, ""), -1):
                    best[connection.user_id] = status
            old = self._views.get(room, {})
            new: dict[str, PresenceUser] = {}
            for user_id, status in best.items():
                if status == "offline":
                    continue
                previous = old.get(user_id)
                keep = previous is not None and previous.status == status
                new[user_id] = previous if keep and previous else PresenceUser(user_id, status, now)
            if new != old:
                changed.append(room)
            if new:
                self._views[room] = new
            else:
                self._views.pop(room, None)
                if room not in self._members:
                    object_name, _ = parse_room(room)
                    rooms_of = self._by_object.get(object_name)
                    if rooms_of is not None:
                        rooms_of.discard(room)
                        if not rooms_of:
                            del self._by_object[object_name]
        return changed

    async def _broadcast(self, rooms: Iterable[str]) -> None:
        per_gateway: dict[str, list[tuple[tuple[str, ...], PresenceSnapshot]]] = {}
        for room in rooms:
            snapshot = self.snapshot(room)
            recipients: dict[str, list[str]] = {}
            for connection_id in sorted(self._members.get(room, ())):
                gateway = self._connections[connection_id].gateway
                recipients.setdefault(gateway, []).append(connection_id)
            for gateway, connection_ids in recipients.items():
                per_gateway.setdefault(gateway, []).append((tuple(connection_ids), snapshot))
        if per_gateway:
            await self._send(per_gateway)

    async def _send(
        self, per_gateway: dict[str, list[tuple[tuple[str, ...], PresenceSnapshot]]]
    ) -> None:
        gone: list[str] = []
        async with self._send_lock:  # snapshots are state: keep them in order
            for gateway, deliveries in per_gateway.items():
                batch = PresenceBatch(tuple(deliveries))
                try:
                    await self._publish(gateway, batch)
                except GatewayGone:
                    gone.append(gateway)
                except Exception as exc:
                    logger.warning("presence snapshot to %s failed: %r", gateway, exc)
                else:
                    self.stats["batches"] += 1
                    self.stats["snapshots"] += len(deliveries)
        for gateway in gone:
            await self.drop_gateway(gateway)


def _iso(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = [
    "PRESENCE_EVENT",
    "STATUSES",
    "PresenceBatch",
    "PresenceSnapshot",
    "PresenceTracker",
    "PresenceUser",
    "Publish",
    "parse_room",
    "parse_status",
]
