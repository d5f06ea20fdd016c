"""``GET /api/v1/realtime/sse``: record events as Server-Sent Events, for one authenticated actor.

The same events as the Socket.IO ``/realtime`` namespace, for clients that only
speak HTTP (``EventSource``, curl). Pure Starlette, no Ray: one
:class:`RealtimeSSE` per HTTP replica tails the change log itself (one
:class:`~objectos.realtime.feed.ChangeFeed`, nudged by the replica's own commits)
and serves every stream of the replica from one in-process
:class:`~objectos.realtime.subscriptions.SubscriptionRoom`::

    sse = RealtimeSSE(data.change_log, authenticate=..., visibility=...,
                      columns=data.tables.columns)
    data.hooks = NudgeOnCommit(sse.nudge, data.hooks)
    routes.append(sse.route())                     # starts itself on first use

**Request.** ``GET /api/v1/realtime/sse?objects=case,account&events=record.*&
filter={"status":"open"}&since=120&subscriptionId=s1`` — ``objects`` (required,
comma-separated or repeated), ``events`` (default ``record.*``), ``filter``
(JSON, any syntax REST accepts), ``since`` (a cursor), ``subscriptionId``
(default ``sse``). The ``Last-Event-ID`` header, which ``EventSource`` sends
when it reconnects, wins over ``since``. Unknown parameters, a bad filter, an
unknown object or an expired cursor are refused with the JSON error envelope
(400/404), a failed authentication with 401 — before the stream starts.

**Stream.** ``retry:`` first, then each event as ``data: <the Socket.IO event
payload>`` (the default ``message`` type). The last event of each change
carries ``id: <cursor>``, so ``Last-Event-ID`` always names a change that was
received whole. One ``event: subscribed`` frame (``{ok, cursor,
subscriptionId}``, with ``id: <cursor>``) marks the seam between the replay of
``since`` and live events. Idle streams get a ``: keepalive`` comment every
``keepalive_s``. A client that falls ``queue_size`` deliveries behind gets
``event: error`` and the stream ends; its ``EventSource`` reconnects with
``Last-Event-ID`` and loses nothing.

Events of several objects arrive in server order, replay included: one room
holds all objects here.

**Long polling.** ``GET /api/v1/realtime/poll`` takes the same parameters plus
``timeout`` (seconds to wait for an event, default 25, at most 60; 0 answers at
once) and answers the JSON envelope ``{events: [...], cursor, hasMore}``:
the events after ``since`` (the same payloads as the stream), or, when there are
none yet, whatever arrives within ``timeout``. Send ``cursor`` back as the next
``since``: events are never repeated nor skipped. Without ``since`` the poll
starts at the newest change (wait for what comes next). ``hasMore`` means the
answer was cut at ``poll_batches`` deliveries: poll again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from objectos.api.discovery import API_BASE
from objectos.api.envelope import failure, respond
from objectos.data.actor import Actor
from objectos.data.changelog import ChangeEntry
from objectos.data.filter import ColumnInfo
from objectos.errors import InvalidField, ObjectOSError
from objectos.realtime.feed import Backoff, ChangeFeed, ChangeSource, Registration
from objectos.realtime.subscriptions import (
    EventBatch,
    RecordEvent,
    RecordVisibility,
    SubscriptionRoom,
    SubscriptionSpec,
    parse_cursor,
)

logger = logging.getLogger("objectos.api.sse")

SSE_PATH = f"{API_BASE}/realtime/sse"
POLL_PATH = f"{API_BASE}/realtime/poll"
_ROOM = "sse"
_PARAMS = frozenset({"objects", "events", "filter", "since", "subscriptionId"})
_POLL_PARAMS = frozenset({"timeout"})

Authenticate = Callable[[Request], Awaitable[Actor]]
"""``await authenticate(request)``: the actor behind the request, or raise Unauthenticated."""


class _Columns(Mapping[str, Mapping[str, ColumnInfo]]):
    """A Mapping view of ``columns(object_name)`` (raising for unknown objects)."""

    def __init__(self, lookup: Callable[[str], Mapping[str, ColumnInfo]]) -> None:
        self._lookup = lookup

    def __getitem__(self, name: str) -> Mapping[str, ColumnInfo]:
        try:
            return self._lookup(name)
        except (ObjectOSError, LookupError):
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _Stream:
    """The queue between the room and one open response."""

    def __init__(self, limit: int) -> None:
        self.items: deque[tuple[RecordEvent, ...]] = deque()
        self.limit = limit
        self.wake = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def offer(self, events: tuple[RecordEvent, ...]) -> None:
        if self.overflowed or self.closed:
            return
        if len(self.items) >= self.limit:
            self.overflowed = True  # the client resumes from its Last-Event-ID
        else:
            self.items.append(events)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class RealtimeSSE:
    """The SSE endpoint and the feed and room behind it (see the module docstring)."""

    def __init__(
        self,
        log: ChangeSource,
        *,
        authenticate: Authenticate,
        visibility: RecordVisibility,
        columns: Callable[[str], Mapping[str, ColumnInfo]]
        | Mapping[str, Mapping[str, ColumnInfo]]
        | None = None,
        path: str = SSE_PATH,
        auth_params: Sequence[str] = ("access_token",),
        keepalive_s: float = 15.0,
        queue_size: int = 1000,
        retry_ms: int = 3000,
        idle: Backoff | None = None,
        page_size: int = 500,
        poll_path: str = POLL_PATH,
        poll_timeout_s: float = 25.0,
        poll_max_timeout_s: float = 60.0,
        poll_batches: int = 8,
        require_read: Callable[[Actor, str], object] | None = None,
    ) -> None:
        """``columns``: ``DataEngine.tables.columns`` (or a mapping) for checked, typed filters.

        ``require_read(actor, object)``: raises when ``actor`` may not read ``object`` at
        all (``PermissionEngine.require``), so such a request is refused with that error
        (403 / 404) instead of getting a stream on which nothing ever arrives.

        ``auth_params``: query parameters that ``authenticate`` reads (browsers'
        ``EventSource`` cannot send headers), accepted besides the subscription's.
        ``idle``: the feed's polling backoff while nothing is committed;
        ``page_size``: change log entries read at a time (feed and replays).
        ``poll_*``: the long-polling route, its default and longest wait, and how
        many deliveries (each the events of one push or one replay page) one
        answer holds at most.
        """
        self.path = path
        self.poll_path = poll_path
        self._require_read = require_read
        self._poll_timeout_s = poll_timeout_s
        self._poll_max_timeout_s = poll_max_timeout_s
        self._poll_batches = max(1, poll_batches)
        self._authenticate = authenticate
        self._allowed = _PARAMS | frozenset(auth_params)
        self._keepalive_s = keepalive_s
        self._queue_size = queue_size
        self._retry_ms = retry_ms
        self._streams: dict[str, _Stream] = {}
        self._feed = ChangeFeed(log, self._dispatch, idle=idle, page_size=page_size)
        self._room = SubscriptionRoom(
            _ROOM,
            log=log,
            visibility=visibility,
            deliver=self._deliver,
            objects=None,
            columns=_Columns(columns) if callable(columns) else columns,
            register=self._register,
            page_size=page_size,
        )
        self._start_lock = asyncio.Lock()
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start tailing the change log (also done by the first request)."""
        async with self._start_lock:
            if not self._started:
                await self._feed.start()
                self._started = True

    async def stop(self) -> None:
        """Stop the feed and end every open stream."""
        await self._feed.stop()
        for stream in self._streams.values():
            stream.close()

    async def __aenter__(self) -> RealtimeSSE:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def nudge(self) -> None:
        """A commit happened in this replica: read the log now (see NudgeOnCommit)."""
        self._feed.nudge()

    def route(self) -> Route:
        """The Starlette route to mount."""
        return Route(self.path, self.endpoint, methods=["GET"], name="realtime_sse")

    def poll_route(self) -> Route:
        """The long-polling route to mount (errors answer the JSON envelope)."""

        async def endpoint(request: Request) -> Response:
            try:
                return await self.poll(request)
            except Exception as exc:
                request_id = getattr(request.state, "request_id", None)
                status, body, headers = failure(exc, request_id=request_id)
                return JSONResponse(body, status_code=status, headers=headers)

        return Route(self.poll_path, endpoint, methods=["GET"], name="realtime_poll")

    @property
    def open_streams(self) -> int:
        """How many streams are open."""
        return len(self._streams)

    # -- feed and room wiring -----------------------------------------------------------------

    async def _register(self, objects: frozenset[str]) -> Registration:
        return self._feed.register(_ROOM, objects)

    async def _dispatch(self, target: str, entries: Sequence[ChangeEntry]) -> None:
        await self._room.push(entries)

    async def _deliver(self, gateway: str, batch: EventBatch) -> None:
        for delivery in batch.deliveries:
            stream = self._streams.get(delivery.connection_id)
            if stream is not None:
                stream.offer(delivery.events)

    # -- the request ------------------------------------------------------------------------

    async def endpoint(self, request: Request) -> Response:
        """GET handler: authenticate, check, subscribe, then stream."""
        connection_id = uuid.uuid4().hex
        try:
            actor = await self._authenticate(request)
            spec = self._spec(request)
            self._check_objects(actor, spec)
            await self.start()
            self._streams[connection_id] = _Stream(self._queue_size)
            cursor = await self._room.subscribe(
                spec, connection_id=connection_id, gateway=_ROOM, actor=actor
            )
        except Exception as exc:
            self._forget(connection_id)
            request_id = getattr(request.state, "request_id", None)
            status, body, headers = failure(exc, request_id=request_id)
            return JSONResponse(body, status_code=status, headers=headers)
        return _EventStreamResponse(self, connection_id, spec.subscription_id, cursor)

    async def poll(self, request: Request) -> Response:
        """GET handler of long polling: the events after ``since``, waiting up to ``timeout``.

        Raises the request's errors (authentication, parameters) for the caller to
        render; see the module docstring for the answer.
        """
        actor = await self._authenticate(request)
        spec = self._spec(request, extra=_POLL_PARAMS)
        self._check_objects(actor, spec)
        timeout_s = self._poll_timeout(request.query_params.get("timeout"))
        await self.start()
        connection_id = uuid.uuid4().hex
        stream = self._streams[connection_id] = _Stream(self._poll_batches)
        try:
            cursor = await self._room.subscribe(
                spec, connection_id=connection_id, gateway=_ROOM, actor=actor
            )
            if not stream.items and not stream.overflowed and timeout_s > 0:
                stream.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout_s):
                        await stream.wake.wait()
        finally:
            self._forget(connection_id)
        events = [event for batch in stream.items for event in batch]
        # Deliveries hold whole changes, so the last event's cursor loses nothing; events
        # that were not kept (hasMore) all come after it.
        if events:
            cursor = max(events[-1].cursor, cursor) if not stream.overflowed else events[-1].cursor
        data = {
            "events": [event.to_dict() for event in events],
            "cursor": cursor,
            "hasMore": stream.overflowed,
            "subscriptionId": spec.subscription_id,
        }
        return respond(request, data, headers={"cache-control": "no-store"})

    def _check_objects(self, actor: Actor, spec: SubscriptionSpec) -> None:
        if self._require_read is not None:
            for name in spec.objects:
                self._require_read(actor, name)

    def _poll_timeout(self, raw: str | None) -> float:
        if raw is None:
            return self._poll_timeout_s
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not 0 <= value <= self._poll_max_timeout_s:  # also refuses nan
            raise InvalidField(
                f"timeout must be a number of seconds from 0 to {self._poll_max_timeout_s:g}",
                details={"field": "timeout", "reason": "out of range"},
            )
        return value

    def _spec(self, request: Request, extra: frozenset[str] = frozenset()) -> SubscriptionSpec:
        params = request.query_params
        unknown = sorted(set(params) - self._allowed - extra)
        if unknown:
            raise InvalidField(
                f"unknown query parameter {unknown[0]!r}",
                details={"field": unknown[0], "reason": "unknown query parameter"},
            )
        objects = [name for value in params.getlist("objects") for name in value.split(",")]
        events = params.get("events")
        payload: dict[str, Any] = {
            "subscriptionId": params.get("subscriptionId", "sse"),
            "objects": [name.strip() for name in objects if name.strip()],
            "events": [e.strip() for e in events.split(",")] if events is not None else None,
            "filter": params.get("filter"),
            "since": params.get("since"),
        }
        if payload["events"] is None:
            del payload["events"]
        last_event_id = request.headers.get("last-event-id")
        if last_event_id is not None and last_event_id.strip():
            payload["since"] = parse_cursor(last_event_id, "Last-Event-ID")
        return SubscriptionSpec.parse(payload)

    def _forget(self, connection_id: str) -> None:
        stream = self._streams.pop(connection_id, None)
        if stream is not None:
            stream.close()
        self._room.disconnect(connection_id)

    # -- frames -------------------------------------------------------------------------------

    def frames(self, events: Sequence[RecordEvent]) -> str:
        """SSE text for ``events``; ``id:`` on the last event of each change."""
        out: list[str] = []
        for i, event in enumerate(events):
            last_of_change = i + 1 == len(events) or events[i + 1].cursor != event.cursor
            head = f"id: {event.cursor}\n" if last_of_change else ""
            out.append(f"{head}data: {_json(event.to_dict())}\n\n")
        return "".join(out)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class _EventStreamResponse(Response):
    """The response of one stream: writes frames until the client leaves.

    Not a StreamingResponse: that one notices a gone client only on its next
    write and leaves its generator to the garbage collector; this one listens
    for ``http.disconnect`` and unsubscribes at once.
    """

    media_type = "text/event-stream"

    def __init__(self, sse: RealtimeSSE, connection_id: str, subscription_id: str, cursor: int):
        self.sse = sse
        self.connection_id = connection_id
        self.subscription_id = subscription_id
        self.cursor = cursor
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self.sse._streams.get(self.connection_id)
        try:
            if stream is None:
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            writer = asyncio.ensure_future(self._write(stream, send))
            listener = asyncio.ensure_future(_until_disconnect(receive))
            done, pending = await asyncio.wait(
                {writer, listener}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if writer in done and not writer.cancelled():
                error = writer.exception()
                if error is not None and not isinstance(error, OSError):
                    logger.warning("SSE stream %s failed: %r", self.connection_id, error)
            if writer in done:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client is gone
        finally:
            self.sse._forget(self.connection_id)

    async def _write(self, stream: _Stream, send: Send) -> None:
        async def write(text: str) -> None:
            await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        ack = {"ok": True, "cursor": self.cursor, "subscriptionId": self.subscription_id}
        ack_frame = f"event: subscribed\nid: {self.cursor}\ndata: {_json(ack)}\n\n"
        acknowledged = False
        await write(f"retry: {self.sse._retry_ms}\n\n")
        while True:
            while stream.items:
                events = stream.items[0]
                if not acknowledged and events[0].cursor > self.cursor:
                    # The seam: replayed changes are above, live ones below.
                    await write(ack_frame)
                    acknowledged = True
                stream.items.popleft()
                await write(self.sse.frames(events))
            if stream.overflowed:
                # Before any ack: the ack's id would skip what was dropped.
                error = {
                    "code": "service_unavailable",
                    "message": "the stream fell behind; reconnect to resume from Last-Event-ID",
                }
                await write(f"event: error\ndata: {_json(error)}\n\n")
                return
            if not acknowledged:
                await write(ack_frame)
                acknowledged = True
            if stream.closed:
                return
            stream.wake.clear()
            try:
                async with asyncio.timeout(self.sse._keepalive_s):
                    await stream.wake.wait()
            except TimeoutError:
                await write(": keepalive\n\n")


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


__all__ = ["POLL_PATH", "SSE_PATH", "Authenticate", "RealtimeSSE"]
