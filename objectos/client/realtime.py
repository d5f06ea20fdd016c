"""The ``/realtime`` Socket.IO namespace from Python: record subscriptions and presence.

Written to PROTOCOL.md ("Socket.IO", namespace ``/realtime``)::

    rt = RealtimeClient("http://127.0.0.1:8001", token=lambda: hub.fresh_token())
    sub = await rt.subscribe(objects=["case"], events=["record.*"], filter={"status": "open"})
    async for event in sub:                  # RecordEvent(event_name, object, record_id, ...)
        print(event.event_name, event.record_id, event.record)

    users = await rt.presence.join("case/42", status="online")   # who is there now (the ack)
    rt.presence.on_change(lambda room, users: print(room, users))
    await rt.presence.update("case/42", "away")

**Resuming.** The handshake sends ``auth: {token}`` (the token callable is asked
on every (re)connect, so a refreshed token is used). When the connection drops,
python-socketio reconnects with backoff; when the hub ends the session itself
(an ``error`` event -- ``expired_token``, kept in :attr:`RealtimeClient.errors`
-- then a namespace disconnect), this client reconnects too.
After every reconnect each live subscription is sent again with ``since`` = the
last cursor it has, and every presence room is joined again with its status.

**Cursors.** A subscription keeps, per object, the highest cursor it has seen
(the ack's cursor counts: everything up to it has been delivered); ``since`` on
resume is the lowest of those, so a multi-object subscription whose rooms replay
independently misses nothing. Events of one change share its cursor; with
``field.changed`` a change makes several, so a resume then starts one change
earlier and the rest of a change cut short by the disconnect comes again.
Replayed events an object had already seen are dropped, so the consumer sees
each event once, in order per object. A hub that no longer holds the log at
``since`` answers ``invalid_field`` with ``details.expired``: the subscription
then starts again from now and reports a :class:`SubscriptionGap` through
``on_error`` (the changes in between are lost: reload what you show).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import socketio

from objectos.client.errors import HubError, error_from_payload
from objectos.realtime.subscriptions import RECORD_ANY, RecordEvent

logger = logging.getLogger("objectos.client.realtime")

NAMESPACE = "/realtime"
SUBSCRIBE, UNSUBSCRIBE, EVENT = "subscribe", "unsubscribe", "event"
PRESENCE_JOIN = "presence:join"
PRESENCE_UPDATE = "presence:update"
PRESENCE_LEAVE = "presence:leave"
PRESENCE = "presence"
ERROR = "error"

TokenSource = Callable[[], Awaitable[str | None]] | str | None
UrlSource = Callable[[], Awaitable[str]] | str
EventHandler = Callable[[RecordEvent], Awaitable[None] | None]
ErrorHandler = Callable[[BaseException], Awaitable[None] | None]
PresenceHandler = Callable[[str, list[dict[str, Any]]], Awaitable[None] | None]


class SubscriptionGap(HubError):
    """A resumed subscription could not replay from its cursor (the hub's log moved on):
    it restarted from now, and changes in between were not delivered."""

    code = "subscription_gap"


class RealtimeClosed(ConnectionError):
    """The realtime client was closed."""


def parse_event(payload: Any) -> RecordEvent:
    """A server ``event`` message as a :class:`~objectos.realtime.subscriptions.RecordEvent`."""
    if not isinstance(payload, Mapping):
        raise ValueError(f"an event must be an object, got {type(payload).__name__}")
    cursor = payload.get("cursor")
    if not isinstance(cursor, int) or isinstance(cursor, bool):
        if isinstance(cursor, str) and cursor.isdigit():
            cursor = int(cursor)
        else:
            raise ValueError(f"event cursor {cursor!r} is not a server version")
    return RecordEvent(
        subscription_id=str(payload["subscriptionId"]),
        event_name=str(payload["eventName"]),
        object=str(payload["object"]),
        record_id=str(payload["recordId"]),
        record=dict(payload.get("record") or {}),
        changed_fields=tuple(payload.get("changedFields") or ()),
        version=int(payload.get("version") or 0),
        cursor=cursor,
        timestamp=str(payload.get("timestamp") or ""),
    )


def _ack_result(ack: Any) -> Mapping[str, Any]:
    """The ``{ok: true, ...}`` ack, or raise the error it carries."""
    if isinstance(ack, tuple):  # several ack arguments: the first one is the answer
        ack = ack[0] if ack else None
    if isinstance(ack, Mapping) and ack.get("ok") is True:
        return ack
    error = ack.get("error", ack) if isinstance(ack, Mapping) else ack
    if error is None:
        error = {"code": "internal_error", "message": "the hub acknowledged without an answer"}
    raise error_from_payload(error)


def _is_error(answer: Any) -> TypeGuard[Mapping[str, Any]]:
    """Whether an ack answer (of a message without a defined answer) reports an error."""
    return isinstance(answer, Mapping) and (
        answer.get("ok") is False or "error" in answer or "code" in answer
    )


async def _call_handler(handler: Callable[..., Any], *args: Any) -> None:
    result = handler(*args)
    if inspect.isawaitable(result):
        await result


_END = object()
FIELD_CHANGED = "field.changed"

_EventKey = tuple[str, str, tuple[str, ...]]


def _key_of(event: RecordEvent) -> _EventKey:
    """What tells apart the events of one change (they share the cursor)."""
    return event.event_name, event.record_id, event.changed_fields


class Subscription:
    """One ``subscribe`` of a :class:`RealtimeClient`: iterate it, or give ``on_event``."""

    def __init__(
        self,
        client: RealtimeClient,
        subscription_id: str,
        objects: Sequence[str],
        events: Sequence[str],
        filter: Mapping[str, Any] | Sequence[Any] | None,
        since: int | None,
        on_event: EventHandler | None,
        on_error: ErrorHandler | None,
    ) -> None:
        self.client = client
        self.id = subscription_id
        self.objects = tuple(objects)
        self.events = tuple(events)
        self.filter = filter
        self.gaps = 0
        """How many times a resume could not replay (see :class:`SubscriptionGap`)."""
        self.resumes = 0
        """How many times the subscription was sent again after a reconnect."""
        self.error: BaseException | None = None
        """Set when the hub refused a resume: the subscription has ended."""
        self.active = False
        self._ended = False
        self._since = since
        self._seen: dict[str, int] = {}
        self._seen_keys: dict[str, set[_EventKey]] = {}  # events received at _seen[obj]
        self._floor: dict[str, int] = {}
        self._floor_keys: dict[str, set[_EventKey]] = {}
        # Only field.changed makes one change more than one event of this subscription.
        self._several_per_change = FIELD_CHANGED in self.events
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._on_event = on_event
        self._on_error = on_error
        self._consumer: asyncio.Task[None] | None = None
        if on_event is not None:
            self._consumer = asyncio.get_running_loop().create_task(self._consume(on_event))

    # -- cursors -----

    @property
    def cursor(self) -> int | None:
        """Where this subscription stands: the lowest per-object cursor seen (keep it
        to subscribe again later with ``since``)."""
        if not self._seen:
            return self._since
        return min(self._seen.get(obj, self._since or 0) for obj in self.objects)

    @property
    def resume_since(self) -> int | None:
        """The ``since`` a resume sends: :attr:`cursor`, except that when a change may
        make several events (``field.changed``) and some of an object's newest change
        were received, it starts one change earlier: a connection lost halfway
        through a change's events gets the rest replayed (those received are dropped)."""
        if not self._seen:
            return self._since
        return min(self._resume_from(obj) for obj in self.objects)

    def _resume_from(self, obj: str) -> int:
        seen = self._seen.get(obj)
        if seen is None:
            return self._since or 0
        if self._several_per_change and self._seen_keys.get(obj) and seen > 0:
            return seen - 1
        return seen

    def payload(self) -> dict[str, Any]:
        """The ``subscribe`` message: ``{subscriptionId, objects, events, filter, since?}``."""
        body: dict[str, Any] = {
            "subscriptionId": self.id,
            "objects": list(self.objects),
            "events": list(self.events),
            "filter": self.filter,
        }
        since = self.resume_since
        if since is not None:
            body["since"] = since
        return body

    def _prepare_resume(self) -> None:
        # Whatever an object has seen is a duplicate if replayed.
        self._floor = dict(self._seen)
        self._floor_keys = {obj: set(keys) for obj, keys in self._seen_keys.items()}

    def _acknowledged(self, cursor: Any) -> None:
        if isinstance(cursor, int) and not isinstance(cursor, bool):
            for obj in self.objects:
                if cursor > self._seen.get(obj, -1):
                    self._seen[obj] = cursor
                    self._seen_keys[obj] = set()  # nothing received at the ack's cursor
        self.active = True

    def _restart_from_now(self) -> None:
        self._seen.clear()
        self._seen_keys.clear()
        self._floor.clear()
        self._floor_keys.clear()
        self._since = None

    def _receive(self, event: RecordEvent) -> None:
        obj, key = event.object, _key_of(event)
        floor = self._floor.get(obj, -1)
        if event.cursor < floor or (event.cursor == floor and key in self._floor_keys.get(obj, ())):
            return  # replayed, and delivered before the reconnect
        if event.cursor > self._seen.get(obj, -1):
            self._seen[obj] = event.cursor
            self._seen_keys[obj] = {key}
        elif event.cursor == self._seen[obj]:
            self._seen_keys.setdefault(obj, set()).add(key)
        self._queue.put_nowait(event)

    async def _report(self, error: BaseException) -> None:
        if self._on_error is not None:
            try:
                await _call_handler(self._on_error, error)
            except Exception:
                logger.exception("subscription %s: on_error failed", self.id)
        else:
            logger.warning("subscription %s: %s", self.id, error)

    def _end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self.active = False
        self.error = error
        self._queue.put_nowait(error if error is not None else _END)

    # -- consuming -----

    async def _consume(self, handler: EventHandler) -> None:
        while True:
            item = await self._queue.get()
            if item is _END or isinstance(item, BaseException):
                return
            try:
                await _call_handler(handler, item)
            except Exception:
                logger.exception("subscription %s: on_event failed", self.id)

    def __aiter__(self) -> AsyncIterator[RecordEvent]:
        if self._on_event is not None:
            raise TypeError("this subscription delivers to on_event; it cannot be iterated")
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[RecordEvent]:
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def next_event(self, within_s: float | None = None) -> RecordEvent:
        """The next event (for iteration by hand); raises TimeoutError after ``within_s``."""
        if self._on_event is not None:
            raise TypeError("this subscription delivers to on_event")
        async with asyncio.timeout(within_s):
            item = await self._queue.get()
        if item is _END:
            raise RealtimeClosed(f"subscription {self.id} has ended")
        if isinstance(item, BaseException):
            raise item
        event: RecordEvent = item
        return event

    async def unsubscribe(self) -> None:
        """``unsubscribe {subscriptionId}``; iteration ends."""
        await self.client._unsubscribe(self)

    async def _stop(self) -> None:
        self._end()
        if self._consumer is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._consumer), 5)
            self._consumer.cancel()


class Presence:
    """Presence helpers of a :class:`RealtimeClient` (``presence:join/update/leave``)."""

    def __init__(self, client: RealtimeClient) -> None:
        self._client = client
        self.rooms: dict[str, str] = {}
        """The rooms this client joined, with its status in each (re-joined on reconnect)."""
        self.snapshots: dict[str, list[dict[str, Any]]] = {}
        """The latest ``presence`` list of every room heard of: ``[{userId, status, since}]``."""
        self._handlers: list[PresenceHandler] = []
        self._waiters: dict[str, list[asyncio.Future[list[dict[str, Any]]]]] = {}
        self._changed = asyncio.Condition()

    def on_change(self, handler: PresenceHandler) -> None:
        """Call ``handler(room, users)`` on every ``presence`` message."""
        self._handlers.append(handler)

    def users(self, room: str) -> list[dict[str, Any]]:
        """Who is in ``room`` as last heard (``[]`` before any snapshot)."""
        return list(self.snapshots.get(room, []))

    async def join(
        self, room: str, status: str = "online", *, within_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """Join ``room`` (``<object>`` or ``<object>/<id>``); returns its current users."""
        self.rooms[room] = status
        future = self._wait_for(room)
        try:
            await self._client._emit_checked(
                PRESENCE_JOIN, {"room": room, "status": status}, on_error=_failer(future)
            )
            async with asyncio.timeout(within_s):
                return await future
        except BaseException:
            self.rooms.pop(room, None)
            future.cancel()
            raise

    async def update(self, room: str, status: str) -> None:
        """Change this client's status (online, away, busy, offline) in a joined room."""
        if room not in self.rooms:
            raise ValueError(f"not in presence room {room!r}; join it first")
        self.rooms[room] = status
        await self._client._emit_checked(PRESENCE_UPDATE, {"room": room, "status": status})

    async def leave(self, room: str) -> None:
        """Leave ``room``."""
        self.rooms.pop(room, None)
        await self._client._emit_checked(PRESENCE_LEAVE, {"room": room})

    async def wait_for(
        self,
        predicate: Callable[[dict[str, list[dict[str, Any]]]], bool],
        within_s: float = 30.0,
    ) -> None:
        """Wait until ``predicate(snapshots)`` holds (checked after every presence message)."""
        async with asyncio.timeout(within_s), self._changed:
            await self._changed.wait_for(lambda: predicate(self.snapshots))

    def _wait_for(self, room: str) -> asyncio.Future[list[dict[str, Any]]]:
        future: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(room, []).append(future)
        return future

    async def _received(self, payload: Any) -> None:
        if not isinstance(payload, Mapping) or not isinstance(payload.get("room"), str):
            logger.warning("ignoring a presence message without a room: %r", payload)
            return
        room = payload["room"]
        users = [dict(u) for u in payload.get("users") or [] if isinstance(u, Mapping)]
        self.snapshots[room] = users
        for future in self._waiters.pop(room, []):
            if not future.done():
                future.set_result(list(users))
        async with self._changed:
            self._changed.notify_all()
        for handler in list(self._handlers):
            try:
                await _call_handler(handler, room, list(users))
            except Exception:
                logger.exception("presence handler failed")


def _failer(future: asyncio.Future[Any]) -> Callable[[HubError], None]:
    def fail(exc: HubError) -> None:
        if not future.done():
            future.set_exception(exc)

    return fail


@dataclass
class _Connection:
    sio: socketio.AsyncClient
    url: str


class RealtimeClient:
    """A connection to the hub's ``/realtime`` namespace, opened on first use."""

    def __init__(
        self,
        url: UrlSource,
        token: TokenSource = None,
        *,
        transports: Sequence[str] = ("websocket",),
        ack_timeout: float = 30.0,
        connect_timeout: float = 30.0,
        reconnection_delay: float = 0.5,
        reconnection_delay_max: float = 5.0,
    ) -> None:
        """``url`` is the Socket.IO base URL (or an async callable finding it, e.g. from
        discovery); ``token`` the handshake credential (or an async callable, asked on
        every connect)."""
        self._url = url
        self._token = token
        self._transports = list(transports)
        self._ack_timeout = ack_timeout
        self._connect_timeout = connect_timeout
        self._delay = reconnection_delay
        self._delay_max = reconnection_delay_max
        self._connection: _Connection | None = None
        self._connect_lock = asyncio.Lock()
        self._up = asyncio.Event()  # the namespace is connected
        self._subscriptions: dict[str, Subscription] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._refusal: Any = None
        self.connections = 0
        """How many times the namespace connected (1 + reconnects)."""
        self.errors: collections.deque[BaseException] = collections.deque(maxlen=100)
        """Problems met in the background (failed resumes, refused reconnects...)."""
        self.presence = Presence(self)

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        return self._connection is not None and NAMESPACE in self._connection.sio.namespaces

    @property
    def sid(self) -> str | None:
        """This connection's id in ``/realtime`` (None while disconnected)."""
        if self._connection is None:
            return None
        return self._connection.sio.namespaces.get(NAMESPACE)

    async def connect(self) -> None:
        """Connect now (subscribe and presence calls do it when needed)."""
        if self._closed:
            raise RealtimeClosed("the realtime client is closed")
        async with self._connect_lock:
            if self._connection is not None:
                return
            url = self._url if isinstance(self._url, str) else await self._url()
            sio = socketio.AsyncClient(
                reconnection=True,
                reconnection_delay=self._delay,
                reconnection_delay_max=self._delay_max,
            )
            sio.on("connect", self._on_connect, namespace=NAMESPACE)
            sio.on("connect_error", self._on_connect_error, namespace=NAMESPACE)
            sio.on("disconnect", self._on_disconnect, namespace=NAMESPACE)
            sio.on(EVENT, self._on_event, namespace=NAMESPACE)
            sio.on(PRESENCE, self.presence._received, namespace=NAMESPACE)
            sio.on(ERROR, self._on_error, namespace=NAMESPACE)
            connection = _Connection(sio, url)
            self._connection = connection
            try:
                await self._open(connection)
            except BaseException:
                self._connection = None
                raise

    async def _open(self, connection: _Connection) -> None:
        self._refusal = None
        try:
            await connection.sio.connect(
                connection.url,
                namespaces=[NAMESPACE],
                auth=self._auth,
                transports=self._transports,
                wait_timeout=self._connect_timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            if self._refusal is not None:
                raise refusal_error(self._refusal) from exc
            raise

    async def _auth(self) -> dict[str, Any]:
        token = self._token
        if callable(token):
            token = await token()
        return {"token": token} if token else {}

    async def close(self) -> None:
        """Disconnect for good: subscriptions end, nothing reconnects."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.sio.disconnect()
        subscriptions = list(self._subscriptions.values())
        self._subscriptions.clear()
        for subscription in subscriptions:
            await subscription._stop()

    async def __aenter__(self) -> RealtimeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ wire events

    async def _on_connect(self) -> None:
        self.connections += 1
        self._up.set()
        if self.connections > 1:
            # Inside the client's read loop: acks can only be awaited from another task.
            self._spawn(self._restore())

    def _on_connect_error(self, data: Any = None) -> None:
        self._refusal = data

    async def _on_disconnect(self, reason: Any = None) -> None:
        self._up.clear()
        connection = self._connection
        if self._closed or connection is None:
            return
        for subscription in self._subscriptions.values():
            subscription.active = False
        if reason == connection.sio.reason.SERVER_DISCONNECT:
            # The hub ended the session (python-socketio does not reconnect then).
            self._spawn(self._reconnect(connection))

    def _on_error(self, payload: Any = None) -> None:
        # The hub tells why it ends a session (``expired_token``) before disconnecting it;
        # the disconnect that follows makes this client reconnect with a fresh token.
        exc = error_from_payload(payload)
        self.errors.append(exc)
        logger.info("realtime: the hub reported %s: %s", exc.code, exc.message)

    async def _on_event(self, payload: Any) -> None:
        try:
            event = parse_event(payload)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("ignoring a malformed event: %s (%r)", exc, payload)
            return
        subscription = self._subscriptions.get(event.subscription_id)
        if subscription is not None:
            subscription._receive(event)

    # ------------------------------------------------------------------ resuming

    async def _reconnect(self, connection: _Connection) -> None:
        delay = self._delay
        while not self._closed and self._connection is connection and not self.connected:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._delay_max)
            try:
                await self._open(connection)
            except HubError as exc:
                self.errors.append(exc)
                logger.warning("realtime: the hub refused the reconnect: %s", exc)
            except (socketio.exceptions.ConnectionError, OSError, ValueError) as exc:
                logger.info("realtime: reconnect failed (%s); retrying", exc)

    async def _restore(self) -> None:
        for room, status in list(self.presence.rooms.items()):
            with contextlib.suppress(Exception):
                await self._emit_checked(PRESENCE_JOIN, {"room": room, "status": status})
        for subscription in list(self._subscriptions.values()):
            if subscription.error is not None:
                continue
            subscription._prepare_resume()
            subscription.resumes += 1
            try:
                await self._send_subscribe(subscription)
            except HubError as exc:
                if exc.code == "invalid_field" and exc.details.get("expired"):
                    await self._restart(subscription, exc)
                    continue
                self.errors.append(exc)
                self._subscriptions.pop(subscription.id, None)
                await subscription._report(exc)
                subscription._end(exc)
            except (TimeoutError, socketio.exceptions.SocketIOError) as exc:
                # Disconnected again meanwhile: the next connect resumes it.
                logger.info("realtime: resume of %s interrupted: %s", subscription.id, exc)

    async def _restart(self, subscription: Subscription, cause: HubError) -> None:
        subscription._restart_from_now()
        subscription.gaps += 1
        gap = SubscriptionGap(
            f"subscription {subscription.id} could not replay from its cursor and restarted "
            f"from now: {cause.message}",
            dict(cause.details),
        )
        try:
            await self._send_subscribe(subscription)
        except HubError as exc:
            self._subscriptions.pop(subscription.id, None)
            await subscription._report(exc)
            subscription._end(exc)
            return
        await subscription._report(gap)

    # ------------------------------------------------------------------ requests

    async def _sio(self) -> socketio.AsyncClient:
        """The connected Socket.IO client; waits out a reconnect in progress."""
        await self.connect()
        async with asyncio.timeout(self._connect_timeout):
            await self._up.wait()
        if self._connection is None:
            raise RealtimeClosed("the realtime client is closed")
        return self._connection.sio

    async def _emit_checked(
        self,
        event: str,
        payload: Mapping[str, Any],
        on_error: Callable[[HubError], None] | None = None,
    ) -> None:
        """Emit without waiting for an answer; an error ack (if the hub sends one) is
        recorded in :attr:`errors` and handed to ``on_error``."""
        sio = await self._sio()

        async def on_ack(*args: Any) -> None:
            answer = args[0] if args else None
            if _is_error(answer):
                exc = error_from_payload(answer.get("error", answer))
                self.errors.append(exc)
                logger.warning("realtime: %s refused: %s", event, exc)
                if on_error is not None:
                    on_error(exc)
            elif isinstance(answer, Mapping) and isinstance(answer.get("presence"), Mapping):
                # presence:join/update ack with the room's snapshot: {ok, presence: {room, users}}
                await self.presence._received(answer["presence"])

        await sio.emit(event, dict(payload), namespace=NAMESPACE, callback=on_ack)

    async def _send_subscribe(self, subscription: Subscription) -> Mapping[str, Any]:
        sio = await self._sio()
        ack = await sio.call(
            SUBSCRIBE, subscription.payload(), namespace=NAMESPACE, timeout=self._ack_timeout
        )
        result = _ack_result(ack)
        subscription._acknowledged(result.get("cursor"))
        return result

    async def subscribe(
        self,
        objects: Sequence[str] | str,
        events: Sequence[str] | str = (RECORD_ANY,),
        filter: Mapping[str, Any] | Sequence[Any] | None = None,
        *,
        since: int | None = None,
        on_event: EventHandler | None = None,
        on_error: ErrorHandler | None = None,
        subscription_id: str | None = None,
    ) -> Subscription:
        """Subscribe to record events of ``objects``; returns once the hub acknowledged.

        ``events`` are ``record.created|updated|deleted``, ``field.changed`` or
        ``record.*``; ``filter`` is a REST filter on the records. ``since`` replays
        from a cursor you kept. Events go to ``on_event(event)`` (sync or async, in
        order) or, without it, to ``async for event in subscription``. A refused
        subscribe raises the hub's error (``InvalidField``, ``InvalidFilter``,
        ``ObjectNotFound``...).
        """
        objects = [objects] if isinstance(objects, str) else list(objects)
        events = [events] if isinstance(events, str) else list(events)
        subscription = Subscription(
            self,
            subscription_id or uuid.uuid4().hex,
            objects,
            events,
            filter,
            since,
            on_event,
            on_error,
        )
        # Registered before sending: a replay arrives before the ack.
        self._subscriptions[subscription.id] = subscription
        try:
            await self._send_subscribe(subscription)
        except BaseException:
            self._subscriptions.pop(subscription.id, None)
            await subscription._stop()
            raise
        return subscription

    async def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.pop(subscription.id, None)
        if self.connected and self._connection is not None:
            await self._connection.sio.emit(
                UNSUBSCRIBE, {"subscriptionId": subscription.id}, namespace=NAMESPACE
            )
        await subscription._stop()

    @property
    def subscriptions(self) -> list[Subscription]:
        """The live subscriptions."""
        return list(self._subscriptions.values())


def refusal_error(data: Any) -> HubError:
    """The hub's connect refusal (``{message, data: {code...}}``) as a typed error."""
    if isinstance(data, Mapping):
        inner = data.get("data")
        error = dict(inner) if isinstance(inner, Mapping) else {}
        if "code" not in error and isinstance(data.get("code"), str):
            error = dict(data)
        error.setdefault("code", "unauthenticated")
        error.setdefault("message", data.get("message") or "connection refused")
        return error_from_payload(error)
    return error_from_payload({"code": "unauthenticated", "message": str(data)})


__all__ = [
    "NAMESPACE",
    "Presence",
    "RealtimeClient",
    "RealtimeClosed",
    "Subscription",
    "SubscriptionGap",
    "parse_event",
    "refusal_error",
]
