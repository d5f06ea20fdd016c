"""A test peer for the client's ``/realtime`` logic: a real python-socketio server under
uvicorn that implements the contract of PROTOCOL.md ("Socket.IO", ``/realtime``).

It is not the hub: it keeps one in-memory change log (cursor = position in it),
answers ``subscribe`` with a replay from ``since`` and an ack ``{ok, subscriptionId,
cursor}``, sends live ``event`` messages, refuses a ``since`` older than its retained log
(``invalid_field`` with ``details.expired``) and tracks presence per room. Its acks
and messages have the shapes of the hub's gateway (objectos.realtime.namespace):
``presence:join``/``update`` ack ``{ok, presence: {room, users}}``, ``presence:leave``
``{ok, room, left}``, ``unsubscribe`` ``{ok, subscriptionId, removed}``, refusals
``{ok: false, error}``, and an ended session is an ``error`` event then a disconnect. What the
client under test sends is recorded, so tests can check the wire (e.g. the
``since`` of a resume). The server can be stopped and started again on the same
port with the same state, as a restarted gateway would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import socketio
import uvicorn

NS = "/realtime"
RECORD_EVENTS = {"record.created", "record.updated", "record.deleted"}


@dataclass
class Change:
    cursor: int
    object: str
    record_id: str
    operation: str
    record: dict[str, Any]
    changed: tuple[str, ...] = ()


@dataclass
class PeerSubscription:
    sid: str
    subscription_id: str
    objects: tuple[str, ...]
    events: frozenset[str]
    filter: dict[str, Any] | None


@dataclass
class RealtimePeer:
    """The server's state (it survives a restart of the socket server)."""

    tokens: set[str] = field(default_factory=lambda: {"good-token"})
    log: list[Change] = field(default_factory=list)
    retained_from: int = 0  # cursors <= this are pruned: a since below it is expired
    subscriptions: dict[tuple[str, str], PeerSubscription] = field(default_factory=dict)
    received: list[tuple[str, Any]] = field(default_factory=list)
    handshakes: list[Any] = field(default_factory=list)
    presence: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)  # sid -> user id (from the token)
    cut_after: int | None = None  # end the session after sending this many more events
    sio: socketio.AsyncServer | None = None

    @property
    def head(self) -> int:
        return self.log[-1].cursor if self.log else 0

    # -- the server -----

    def build(self) -> socketio.AsyncServer:
        sio = socketio.AsyncServer(async_mode="asgi")
        sio.on("connect", self.on_connect, namespace=NS)
        sio.on("disconnect", self.on_disconnect, namespace=NS)
        sio.on("subscribe", self.on_subscribe, namespace=NS)
        sio.on("unsubscribe", self.on_unsubscribe, namespace=NS)
        sio.on("presence:join", self.on_join, namespace=NS)
        sio.on("presence:update", self.on_update, namespace=NS)
        sio.on("presence:leave", self.on_leave, namespace=NS)
        self.sio = sio
        return sio

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        self.handshakes.append(auth)
        token = (auth or {}).get("token") if isinstance(auth, dict) else None
        if token not in self.tokens:
            raise socketio.exceptions.ConnectionRefusedError(
                "invalid token", {"code": "invalid_token", "details": {"reason": "bad token"}}
            )
        self.users[sid] = f"user-of-{token}"

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        for key in [k for k in self.subscriptions if k[0] == sid]:
            del self.subscriptions[key]
        changed = [room for room, members in self.presence.items() if members.pop(sid, None)]
        for room in changed:
            await self.broadcast_presence(room)

    async def on_subscribe(self, sid: str, payload: Any) -> dict[str, Any]:
        self.received.append(("subscribe", payload))
        if not isinstance(payload, dict) or not payload.get("objects"):
            return _error("invalid_field", "objects is required", field="objects")
        bad = [o for o in payload["objects"] if not str(o).isidentifier()]
        if bad:
            return _error("object_not_found", f"object {bad[0]!r} does not exist", object=bad[0])
        since = payload.get("since")
        if since is not None and since < self.retained_from:
            return _error(
                "invalid_field",
                "since is older than the retained change log",
                field="since",
                expired=True,
            )
        events = set(payload.get("events") or ["record.*"])
        if "record.*" in events:
            events = (events - {"record.*"}) | RECORD_EVENTS
        sub = PeerSubscription(
            sid,
            payload["subscriptionId"],
            tuple(payload["objects"]),
            frozenset(events),
            payload.get("filter"),
        )
        self.subscriptions[(sid, sub.subscription_id)] = sub
        if since is not None:
            # Each object replays on its own (as one room per object does).
            for obj in sub.objects:
                for change in self.log:
                    if change.cursor > since and change.object == obj:
                        await self.send(sub, change)
        return {"ok": True, "subscriptionId": sub.subscription_id, "cursor": self.head}

    async def on_unsubscribe(self, sid: str, payload: Any) -> dict[str, Any]:
        self.received.append(("unsubscribe", payload))
        removed = self.subscriptions.pop((sid, payload.get("subscriptionId")), None)
        return {
            "ok": True,
            "subscriptionId": payload.get("subscriptionId"),
            "removed": int(removed is not None),
        }

    async def on_join(self, sid: str, payload: Any) -> dict[str, Any]:
        self.received.append(("presence:join", payload))
        if payload.get("status") not in ("online", "away", "busy", "offline"):
            return _error("invalid_field", "status must be online, away, busy", field="status")
        self.presence.setdefault(payload["room"], {})[sid] = (self.users[sid], payload["status"])
        # The joiner gets the list both in the ack and as a broadcast, as from the hub.
        await self.broadcast_presence(payload["room"])
        return {"ok": True, "presence": self.snapshot(payload["room"])}

    async def on_update(self, sid: str, payload: Any) -> dict[str, Any]:
        self.received.append(("presence:update", payload))
        members = self.presence.get(payload["room"], {})
        if sid not in members:
            return _error("invalid_field", "room was not joined by this connection", field="room")
        members[sid] = (members[sid][0], payload["status"])
        await self.broadcast_presence(payload["room"])
        return {"ok": True, "presence": self.snapshot(payload["room"])}

    async def on_leave(self, sid: str, payload: Any) -> dict[str, Any]:
        self.received.append(("presence:leave", payload))
        left = self.presence.get(payload["room"], {}).pop(sid, None) is not None
        if left:
            await self.broadcast_presence(payload["room"])
        return {"ok": True, "room": payload["room"], "left": left}

    def snapshot(self, room: str) -> dict[str, Any]:
        """``{room, users[{userId, status, since}]}``, a user listed once."""
        users: dict[str, str] = {}
        for user, status in self.presence.get(room, {}).values():
            users[user] = status
        return {
            "room": room,
            "users": [
                {"userId": u, "status": s, "since": _now()} for u, s in sorted(users.items())
            ],
        }

    async def broadcast_presence(self, room: str) -> None:
        assert self.sio is not None
        snapshot = self.snapshot(room)
        for sid in list(self.presence.get(room, {})):
            await self.sio.emit("presence", snapshot, to=sid, namespace=NS)

    # -- changes -----

    async def write(
        self, obj: str, record_id: str, operation: str = "update", **record: Any
    ) -> Change:
        """Commit a change: append it to the log, send it to live subscribers."""
        change = Change(
            self.head + 1, obj, record_id, operation, {"id": record_id, **record}, tuple(record)
        )
        self.log.append(change)
        for sub in list(self.subscriptions.values()):
            await self.send(sub, change)
        return change

    async def send(self, sub: PeerSubscription, change: Change) -> None:
        if change.object not in sub.objects or self.sio is None:
            return
        name = f"record.{change.operation}d"
        messages: list[tuple[str, list[str]]] = []
        if name in sub.events:
            messages.append((name, list(change.changed)))
        if change.operation == "update" and "field.changed" in sub.events:
            messages += [("field.changed", [f]) for f in change.changed]
        for event_name, changed in messages:
            payload = {
                "subscriptionId": sub.subscription_id,
                "eventName": event_name,
                "object": change.object,
                "recordId": change.record_id,
                "record": change.record,
                "changedFields": changed,
                "version": change.cursor,
                "cursor": change.cursor,
                "timestamp": _now(),
            }
            if self.cut_after is not None:
                if self.cut_after == 0:  # the connection is lost halfway through a change
                    self.cut_after = None
                    with contextlib.suppress(Exception):
                        await self.sio.disconnect(sub.sid, namespace=NS)
                    return
                self.cut_after -= 1
            with contextlib.suppress(Exception):
                await self.sio.emit("event", payload, to=sub.sid, namespace=NS)

    async def expire(self) -> None:
        """End every session as the hub does when a token expires: an ``error`` event
        with ``expired_token``, then a namespace disconnect."""
        assert self.sio is not None
        for sid in list(self.users):
            error = _error("expired_token", "the session's token expired")["error"]
            with contextlib.suppress(Exception):
                await self.sio.emit("error", error, to=sid, namespace=NS)
                await self.sio.disconnect(sid, namespace=NS)

    async def kick(self) -> None:
        """End every session from the server side (a namespace disconnect)."""
        assert self.sio is not None
        for sid in list(self.users):
            with contextlib.suppress(Exception):
                await self.sio.disconnect(sid, namespace=NS)


def _error(code: str, message: str, **details: Any) -> dict[str, Any]:
    field_errors = []
    if "field" in details:
        field_errors = [{"field": details["field"], "code": code, "message": message}]
    return {
        "ok": False,
        "error": {
            "code": code,
            "message": message,
            "category": "validation",
            "details": details,
            "fieldErrors": field_errors,
        },
    }


def _now() -> str:
    return datetime.now(UTC).isoformat()


class PeerServer:
    """Runs a :class:`RealtimePeer` under uvicorn on one 127.0.0.1 port; stop/start keep it."""

    def __init__(self, peer: RealtimePeer) -> None:
        self.peer = peer
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self._sock = sock
        app = socketio.ASGIApp(self.peer.build())
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._server = server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop like a killed gateway: connections drop, the state stays."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        await self._task
        if self._sock is not None:
            self._sock.close()
        self._server = self._task = self._sock = None
        self.peer.subscriptions.clear()
        self.peer.users.clear()
        for members in self.peer.presence.values():
            members.clear()


@contextlib.asynccontextmanager
async def running_peer(peer: RealtimePeer | None = None) -> AsyncIterator[PeerServer]:
    server = PeerServer(peer or RealtimePeer())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
