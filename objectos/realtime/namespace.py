"""The Socket.IO namespace ``/realtime``: record subscriptions and presence (PROTOCOL.md).

A python-socketio namespace handler that knows rooms and presence trackers only
through a :class:`RealtimeBackend` (the gateway actor gives it Ray actors,
``actors.realtime.RayRealtimeBackend``; tests may give it in-process engines)::

    namespace = RealtimeNamespace(identify, backend)
    sio.register_namespace(namespace)
    unknown = await namespace.deliver(batch)      # an EventBatch or PresenceBatch

**Connect** with handshake ``auth: {token}``: ``identify(auth)`` proves who it
is (an :class:`~objectos.data.Actor`, and when the token expires); a bad token
is refused at connect with its code, an expired one later ends the session
(:class:`~objectos.realtime.expiry.SessionExpiry`: an ``error`` event with
``expired_token``, then a disconnect).

**Client → server**, each answered through the Socket.IO ack:

* ``subscribe {subscriptionId, objects[], events[], filter, since?}`` →
  ``{ok: true, subscriptionId, cursor}``; ``since`` replays what was missed, in
  order, before live events. Subscribing again with the same id replaces it.
* ``unsubscribe {subscriptionId}`` → ``{ok: true, removed}``.
* ``presence:join {room, status?}`` → ``{ok: true, presence: {room, users}}``;
  ``presence:update {room, status}``; ``presence:leave {room}``.

Any refusal is ``{ok: false, error: {code, message, category, details,
fieldErrors}}`` -- a bad payload names the field and the reason in ``details``
-- and never closes the connection. Unexpected failures are
``internal_error`` without internals.

**Server → client**: ``event`` (one record event, PROTOCOL.md) and ``presence``
(``{room, users[{userId, status, since}]}``), handed over by :meth:`deliver`.

**Heartbeats**: while a connection has joined presence rooms, the namespace
reports it alive to the trackers every ``heartbeat_s`` (its Socket.IO pings
prove it); a tracker that no longer knows it (it restarted) gets the joins
again. **Disconnect** (or an ended session) removes its subscriptions and its
presence everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import socketio

from objectos.data.actor import Actor
from objectos.errors import FieldError, InvalidField, ObjectOSError, Unauthenticated
from objectos.realtime.expiry import SessionExpiry, check_not_expired, expired_payload
from objectos.realtime.presence import PresenceBatch, parse_room, parse_status
from objectos.realtime.subscriptions import (
    MAX_ID_LENGTH,
    SOCKET_EVENT,
    EventBatch,
    RecordEvent,
    SubscriptionSpec,
)

logger = logging.getLogger("objectos.realtime.namespace")

REALTIME_NAMESPACE = "/realtime"
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
PRESENCE_JOIN = "presence:join"
PRESENCE_UPDATE = "presence:update"
PRESENCE_LEAVE = "presence:leave"
ERROR_EVENT = "error"
MAX_PRESENCE_ROOMS = 100
"""Most presence rooms one connection may be in."""
MAX_SUBSCRIPTIONS = 100
"""Most subscriptions one connection may hold."""


class Identified(Protocol):
    """What identifying a handshake yields (``actors.gateway.Grant`` fits)."""

    @property
    def principal(self) -> Any: ...

    @property
    def expires_at(self) -> float | None: ...


Identify = Callable[[dict[str, Any] | None], Awaitable[Identified]]
"""``await identify(auth)``; raises ``Unauthenticated`` (or a subclass) to refuse."""

ActorOf = Callable[[Identified], Actor]
"""Turns what ``identify`` returned into the :class:`Actor` the connection acts for."""


class RealtimeBackend(Protocol):
    """Where subscriptions and presence live (record rooms and presence trackers)."""

    async def subscribe(
        self,
        spec: SubscriptionSpec,
        connection_id: str,
        actor: Actor,
        *,
        keep: Collection[str] = (),
    ) -> tuple[int, list[str]]:
        """Subscribe; return the cursor live delivery starts at and the rooms holding it.

        ``keep``: the rooms of the subscription with this id that ``spec`` replaces. If
        subscribing fails, a backend undoes what it did in other rooms only, so the
        previous subscription keeps delivering (the client was told the subscribe failed).
        """
        ...

    async def unsubscribe(
        self, rooms: Iterable[str], connection_id: str, subscription_id: str | None
    ) -> int:
        """Remove one subscription (or, with None, every one) of a connection from ``rooms``."""
        ...

    async def join(
        self, room: str, connection_id: str, actor: Actor, status: str
    ) -> dict[str, Any]:
        """``presence:join``; the room's snapshot."""
        ...

    async def update(self, room: str, connection_id: str, status: str) -> dict[str, Any]:
        """``presence:update``; the room's snapshot."""
        ...

    async def leave(self, room: str, connection_id: str) -> bool:
        """``presence:leave``."""
        ...

    async def heartbeat(self, rooms: Mapping[str, Iterable[str]]) -> list[str]:
        """Connections (→ their presence rooms) are alive; returns those the trackers forgot."""
        ...

    async def disconnect_presence(self, connection_id: str, rooms: Iterable[str]) -> None:
        """The connection is gone: leave its presence rooms."""
        ...


def _dev_actor(identified: Identified) -> Actor:
    principal = identified.principal
    if isinstance(principal, Actor):
        return principal
    raise Unauthenticated("this credential does not identify a user")


@dataclass(eq=False)
class _Session:
    sid: str
    actor: Actor
    subscriptions: dict[str, list[str]] = field(default_factory=dict)  # id -> rooms
    presence: dict[str, str] = field(default_factory=dict)  # room -> status
    pending: set[str] = field(default_factory=set)  # subscription ids being subscribed
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _bad(field_name: str, reason: str) -> InvalidField:
    return InvalidField(
        f"invalid request: {field_name} {reason}",
        details={"field": field_name, "reason": reason},
        field_errors=[FieldError(field_name, "invalid_field", f"{field_name} {reason}")],
    )


def _room(payload: Mapping[str, Any]) -> str:
    room = payload.get("room")
    parse_room(room)  # InvalidField naming "room"
    return str(room)


def _payload(data: Any, keys: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise _bad("payload", "must be an object")
    unknown = sorted(str(k) for k in data if k not in keys)
    if unknown:
        raise _bad(unknown[0], "is not a known key")
    return data


def error_ack(exc: BaseException) -> dict[str, Any]:
    """``{ok: false, error}`` for any exception (internals never reach the client)."""
    if not isinstance(exc, ObjectOSError):
        exc = ObjectOSError("internal error")
    return {"ok": False, "error": exc.to_dict()}


class RealtimeNamespace(socketio.AsyncNamespace):
    """python-socketio handler of ``/realtime`` (see the module docstring)."""

    def __init__(
        self,
        identify: Identify | None,
        backend: RealtimeBackend,
        *,
        actor_of: ActorOf = _dev_actor,
        heartbeat_s: float = 10.0,
        namespace: str = REALTIME_NAMESPACE,
    ) -> None:
        """``identify`` None refuses every connection (no identity configured)."""
        super().__init__(namespace)
        self._identify = identify
        self._backend = backend
        self._actor_of = actor_of
        self._heartbeat_s = heartbeat_s
        self._sessions: dict[str, _Session] = {}
        self.expiry = SessionExpiry(self._end_session)
        self._heartbeats: asyncio.Task[None] | None = None
        # events: record events received by connections; packets: encoded and sent
        # (connections that get the same event share one packet).
        self.stats = {"events": 0, "packets": 0, "presence": 0, "refused": 0, "unknown": 0}
        self._handlers: dict[str, Callable[[_Session, Any], Awaitable[dict[str, Any]]]] = {
            SUBSCRIBE: self._subscribe,
            UNSUBSCRIBE: self._unsubscribe,
            PRESENCE_JOIN: self._join,
            PRESENCE_UPDATE: self._update,
            PRESENCE_LEAVE: self._leave,
        }

    @property
    def connection_count(self) -> int:
        return len(self._sessions)

    def session_of(self, sid: str) -> dict[str, Any] | None:
        """What a connection holds (for operators and tests)."""
        session = self._sessions.get(sid)
        if session is None:
            return None
        return {
            "userId": session.actor.user_id,
            "subscriptions": {k: list(v) for k, v in session.subscriptions.items()},
            "presence": dict(session.presence),
        }

    async def trigger_event(self, event: str, *args: Any) -> Any:
        # Event names contain ':' so on_<event> cannot reach them; dispatch explicitly.
        if event == "connect":
            return await self._on_connect(*args)
        if event == "disconnect":
            return await self._on_disconnect(args[0])
        handler = self._handlers.get(event)
        if handler is None:
            return error_ack(_bad("event", f"{event!r} is not an event of {self.namespace}"))
        sid, data = args[0], args[1] if len(args) > 1 else None
        session = self._sessions.get(sid)
        if session is None:
            return error_ack(Unauthenticated("this connection is not open"))
        try:
            async with session.lock:  # one request at a time per connection, in order
                return await handler(session, data)
        except ObjectOSError as exc:
            self.stats["refused"] += 1
            logger.info("%s %s from %s refused: %s", self.namespace, event, sid, exc)
            return error_ack(exc)
        except Exception as exc:
            self.stats["refused"] += 1
            logger.exception("%s %s from %s failed", self.namespace, event, sid)
            return error_ack(exc)

    # -- connections ---------------------------------------------------------------------

    async def _on_connect(self, sid: str, environ: Any, auth: Any = None) -> bool:
        if self._identify is None:
            raise socketio.exceptions.ConnectionRefusedError(
                "record subscriptions are not available on this gateway",
                {"code": "service_unavailable"},
            )
        try:
            identified = await self._identify(auth if isinstance(auth, dict) else None)
            check_not_expired(identified.expires_at)
            actor = self._actor_of(identified)
        except ObjectOSError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from exc
        except Exception as exc:
            logger.exception("%s: identifying %s failed", self.namespace, sid)
            raise socketio.exceptions.ConnectionRefusedError(
                "authentication failed", {"code": "internal_error"}
            ) from exc
        self._sessions[sid] = _Session(sid, actor)
        self.expiry.watch(self.namespace, sid, identified.expires_at)
        self._start_heartbeats()
        return True

    async def _on_disconnect(self, sid: str) -> None:
        self.expiry.forget(self.namespace, sid)
        session = self._sessions.pop(sid, None)
        if session is not None:
            await self._clean_up(session)

    async def _clean_up(self, session: _Session) -> None:
        rooms = sorted({room for rs in session.subscriptions.values() for room in rs})
        presence = list(session.presence)
        session.subscriptions.clear()
        session.presence.clear()
        if rooms:
            try:
                await self._backend.unsubscribe(rooms, session.sid, None)
            except Exception as exc:  # the rooms drop it on the next failed delivery
                logger.warning("%s: unsubscribing %s failed: %r", self.namespace, session.sid, exc)
        if presence:
            try:
                await self._backend.disconnect_presence(session.sid, presence)
            except Exception as exc:  # the trackers time it out
                logger.warning(
                    "%s: presence of %s not cleared: %r", self.namespace, session.sid, exc
                )

    async def _end_session(self, namespace: str, sid: str) -> None:
        with contextlib.suppress(Exception):
            await self.emit(ERROR_EVENT, expired_payload(), to=sid)
        await self.disconnect(sid)
        await self._on_disconnect(sid)  # in case the server already forgot the socket

    # -- subscriptions -------------------------------------------------------------------

    async def _subscribe(self, session: _Session, data: Any) -> dict[str, Any]:
        spec = SubscriptionSpec.parse(data)
        previous = session.subscriptions.get(spec.subscription_id)
        if previous is None and len(session.subscriptions) >= MAX_SUBSCRIPTIONS:
            raise _bad("subscriptionId", f"exceeds {MAX_SUBSCRIPTIONS} subscriptions")
        # Replayed events arrive before subscribe returns: let them through.
        session.pending.add(spec.subscription_id)
        try:
            cursor, rooms = await self._backend.subscribe(
                spec, session.sid, session.actor, keep=tuple(previous or ())
            )
        finally:
            session.pending.discard(spec.subscription_id)
        if self._sessions.get(session.sid) is not session:  # disconnected meanwhile
            await self._backend.unsubscribe(rooms, session.sid, spec.subscription_id)
            raise Unauthenticated("the connection closed")
        session.subscriptions[spec.subscription_id] = rooms
        stale = sorted(set(previous or ()) - set(rooms))
        if stale:  # a replaced subscription that named other objects
            await self._backend.unsubscribe(stale, session.sid, spec.subscription_id)
        return {"ok": True, "subscriptionId": spec.subscription_id, "cursor": cursor}

    async def _unsubscribe(self, session: _Session, data: Any) -> dict[str, Any]:
        payload = _payload(data, frozenset({"subscriptionId"}))
        subscription_id = payload.get("subscriptionId")
        if not isinstance(subscription_id, str) or not 0 < len(subscription_id) <= MAX_ID_LENGTH:
            raise _bad("subscriptionId", f"must be text of 1 to {MAX_ID_LENGTH} characters")
        rooms = session.subscriptions.pop(subscription_id, None)
        removed = 0
        if rooms:
            removed = await self._backend.unsubscribe(rooms, session.sid, subscription_id)
        return {"ok": True, "subscriptionId": subscription_id, "removed": removed}

    # -- presence ------------------------------------------------------------------------

    async def _join(self, session: _Session, data: Any) -> dict[str, Any]:
        payload = _payload(data, frozenset({"room", "status"}))
        room = _room(payload)
        status = parse_status(payload.get("status", "online"))
        if room not in session.presence and len(session.presence) >= MAX_PRESENCE_ROOMS:
            raise _bad("room", f"exceeds {MAX_PRESENCE_ROOMS} presence rooms per connection")
        snapshot = await self._backend.join(room, session.sid, session.actor, status)
        session.presence[room] = status
        self._start_heartbeats()
        return {"ok": True, "presence": snapshot}

    async def _update(self, session: _Session, data: Any) -> dict[str, Any]:
        payload = _payload(data, frozenset({"room", "status"}))
        room = _room(payload)
        status = parse_status(payload.get("status"))
        if room not in session.presence:
            raise _bad("room", "was not joined by this connection")
        snapshot = await self._backend.update(room, session.sid, status)
        session.presence[room] = status
        return {"ok": True, "presence": snapshot}

    async def _leave(self, session: _Session, data: Any) -> dict[str, Any]:
        payload = _payload(data, frozenset({"room"}))
        room = _room(payload)
        left = False
        if session.presence.pop(room, None) is not None:
            left = await self._backend.leave(room, session.sid)
        return {"ok": True, "room": room, "left": left}

    def _start_heartbeats(self) -> None:
        if self._heartbeats is None or self._heartbeats.done():
            self._heartbeats = asyncio.get_running_loop().create_task(
                self._beat(), name="realtime-presence-heartbeats"
            )

    async def _beat(self) -> None:
        while self._sessions:
            await asyncio.sleep(self._heartbeat_s)
            rooms = {s.sid: list(s.presence) for s in self._sessions.values() if s.presence}
            if not rooms:
                continue
            try:
                forgotten = await self._backend.heartbeat(rooms)
                for sid in forgotten:
                    await self._rejoin(sid)
            except Exception as exc:
                logger.warning("%s: presence heartbeat failed: %r", self.namespace, exc)

    async def _rejoin(self, sid: str) -> None:
        session = self._sessions.get(sid)
        if session is None:
            return
        async with session.lock:
            for room, status in list(session.presence.items()):
                await self._backend.join(room, sid, session.actor, status)

    # -- delivery -------------------------------------------------------------------------

    async def deliver(self, batch: EventBatch | PresenceBatch) -> list[str]:
        """Emit a room's or tracker's batch to its sockets here; return unknown connections.

        Record events of subscriptions a connection no longer holds (unsubscribed
        while the batch was in flight) are dropped. Connections that get exactly
        the same events (same subscription id, same visible record) share one
        encoded packet per event, as a broadcast to a room would.
        """
        if isinstance(batch, EventBatch):
            return await self._deliver_events(batch)
        unknown: list[str] = []
        for connection_id, event, payload in batch.messages():
            session = self._sessions.get(connection_id)
            if session is None:
                if not unknown or unknown[-1] != connection_id:
                    unknown.append(connection_id)
                continue
            if event == SOCKET_EVENT:
                held = payload.get("subscriptionId")
                if held not in session.subscriptions and held not in session.pending:
                    continue
                self.stats["events"] += 1
            else:
                self.stats["presence"] += 1
            await self.emit(event, payload, to=connection_id)
        self.stats["unknown"] += len(unknown)
        return sorted(set(unknown))

    async def _deliver_events(self, batch: EventBatch) -> list[str]:
        unknown: list[str] = []
        # Connections whose event sequence is identical, in order of first appearance.
        groups: dict[tuple[Any, ...], tuple[list[RecordEvent], list[str]]] = {}
        for delivery in batch.deliveries:
            session = self._sessions.get(delivery.connection_id)
            if session is None:
                unknown.append(delivery.connection_id)
                continue
            events = [
                e
                for e in delivery.events
                if e.subscription_id in session.subscriptions
                or e.subscription_id in session.pending
            ]
            if not events:
                continue
            key = tuple(_identity(e) for e in events)
            group = groups.get(key)
            if group is None:
                groups[key] = (events, [delivery.connection_id])
            else:
                group[1].append(delivery.connection_id)
        for events, connections in groups.values():
            for event in events:
                self.stats["events"] += len(connections)
                self.stats["packets"] += 1
                await self.emit(SOCKET_EVENT, event.to_dict(), to=connections)
        self.stats["unknown"] += len(unknown)
        return sorted(set(unknown))

    async def close(self) -> None:
        """Stop heartbeats and expiry timers."""
        await self.expiry.close()
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._heartbeats


def _identity(event: RecordEvent) -> tuple[Any, ...]:
    """What makes two events the same message. Subscribers who see the same fields share
    the record dict (``SubscriptionRoom`` builds one view per readable-field set, and
    pickling keeps the sharing), so its identity stands for its content."""
    return (
        event.subscription_id,
        event.event_name,
        event.cursor,
        event.record_id,
        event.changed_fields,
        id(event.record),
    )


__all__ = [
    "ERROR_EVENT",
    "PRESENCE_JOIN",
    "PRESENCE_LEAVE",
    "PRESENCE_UPDATE",
    "REALTIME_NAMESPACE",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "ActorOf",
    "Identified",
    "Identify",
    "RealtimeBackend",
    "RealtimeNamespace",
    "error_ack",
]
