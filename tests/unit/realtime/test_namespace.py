"""The ``/realtime`` namespace in one process: a real Socket.IO server and client, no Ray.

The sample CRM (``configs/metadata``) in a SQLite file, written by a real DataEngine
whose commits nudge the in-process backend; permissions are the hub's
PermissionEngine through :class:`RecordPermissions`. Only the identity is a stand-in:
a token is the name of a CRM user (the hub's token checks are tested elsewhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import socketio
import uvicorn

from objectos.data import Actor, DataEngine, create_engine
from objectos.errors import InvalidToken
from objectos.metadata import MetadataRegistry
from objectos.realtime.feed import Backoff, NudgeOnCommit
from objectos.realtime.local import LocalRealtimeBackend
from objectos.realtime.namespace import REALTIME_NAMESPACE as NS
from objectos.realtime.namespace import RealtimeNamespace
from objectos.realtime.permissions import RecordPermissions
from objectos.security.permissions import PermissionEngine
from objectos.security.sharing import InMemoryRoleDirectory

METADATA = Path(__file__).resolve().parents[3] / "configs" / "metadata"
USERS = {"eve": ["east_rep"], "wes": ["west_rep"], "carol": ["ceo"]}
SEED = Actor.system_actor("seed")


@dataclass(frozen=True)
class Identified:
    principal: Any
    expires_at: float | None = None


async def identify(auth: dict[str, Any] | None) -> Identified:
    """``{token: "<user>"}`` or ``{token: "<user>:<seconds to live>"}``."""
    token = str((auth or {}).get("token", ""))
    user, _, ttl = token.partition(":")
    if user not in USERS:
        raise InvalidToken("invalid token")
    return Identified(Actor.user(user, USERS[user]), time.time() + float(ttl) if ttl else None)


@dataclass
class Server:
    url: str
    data: DataEngine
    backend: LocalRealtimeBackend
    namespace: RealtimeNamespace

    @contextlib.asynccontextmanager
    async def client(self, token: str) -> AsyncIterator[Client]:
        client = Client()
        await client.sio.connect(
            self.url, namespaces=[NS], auth={"token": token}, transports=["websocket"]
        )
        try:
            yield client
        finally:
            await client.sio.disconnect()


class Client:
    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[dict[str, Any]] = []
        self.presence: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.sio.on("event", self.events.append, namespace=NS)
        self.sio.on("presence", self.presence.append, namespace=NS)
        self.sio.on("error", self.errors.append, namespace=NS)

    async def call(self, event: str, payload: Any) -> Any:
        return await self.sio.call(event, payload, namespace=NS, timeout=10)


async def until(predicate: Callable[[], Any], within_s: float = 10.0) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    registry = MetadataRegistry.load([METADATA])
    database = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'crm.db'}")
    data = DataEngine(database, registry)
    await data.migrate()
    engine = PermissionEngine.from_registry(registry, InMemoryRoleDirectory(USERS))
    backend = LocalRealtimeBackend(
        data.change_log,
        permissions=RecordPermissions(engine),
        columns=data.tables.columns,
        presence_timeout_s=30,
        idle=Backoff(0.02, 0.2),
    )
    data.hooks = NudgeOnCommit(backend.nudge)
    namespace = RealtimeNamespace(identify, backend, heartbeat_s=0.2)
    backend.attach(namespace)
    sio = socketio.AsyncServer(async_mode="asgi")
    sio.register_namespace(namespace)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    uv = uvicorn.Server(uvicorn.Config(socketio.ASGIApp(sio), log_level="warning", lifespan="off"))
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    await backend.start()
    try:
        await until(lambda: uv.started)
        yield Server(f"http://127.0.0.1:{sock.getsockname()[1]}", data, backend, namespace)
    finally:
        uv.should_exit = True
        await task
        sock.close()
        await backend.stop()
        await namespace.close()
        await database.dispose()


async def test_events_follow_permissions_and_unsubscribe_stops_them(server: Server) -> None:
    async with server.client("eve") as eve, server.client("wes") as wes:
        for client in (eve, wes):
            ack = await client.call(
                "subscribe", {"subscriptionId": "d", "objects": ["opportunity"]}
            )
            assert ack["ok"] and ack["subscriptionId"] == "d", ack
        account = await server.data.insert("account", {"name": "Acme", "owner": "eve"}, actor=SEED)
        deal = await server.data.insert(
            "opportunity",
            {"name": "Deal", "account": account["id"], "stage": "prospecting", "owner": "eve"},
            actor=SEED,
        )
        await until(lambda: eve.events)
        assert [(e["eventName"], e["recordId"]) for e in eve.events] == [
            ("record.created", deal["id"])
        ]
        removed = await eve.call("unsubscribe", {"subscriptionId": "d"})
        assert removed == {"ok": True, "subscriptionId": "d", "removed": 1}
        await server.data.update("opportunity", deal["id"], {"name": "Renamed"}, actor=SEED)
        marker = await server.data.insert(
            "opportunity",
            {"name": "Wes deal", "account": account["id"], "stage": "prospecting", "owner": "wes"},
            actor=SEED,
        )
        await until(lambda: wes.events)
        assert [e["recordId"] for e in wes.events] == [marker["id"]]  # never eve's deal
        assert len(eve.events) == 1  # nothing after the unsubscribe


async def test_connections_that_see_the_same_event_share_one_packet(server: Server) -> None:
    async with (
        server.client("eve") as tab1,
        server.client("eve") as tab2,
        server.client("carol") as carol,
    ):
        for client in (tab1, tab2, carol):
            ack = await client.call("subscribe", {"subscriptionId": "a", "objects": ["account"]})
            assert ack["ok"], ack
        before = dict(server.namespace.stats)
        account = await server.data.insert(
            "account", {"name": "Acme", "owner": "eve", "annual_revenue": 10}, actor=SEED
        )
        await server.data.update("account", account["id"], {"name": "Acme 2"}, actor=SEED)
        await until(lambda: all(len(c.events) == 2 for c in (tab1, tab2, carol)))
        assert tab1.events == tab2.events
        assert "annual_revenue" in carol.events[0]["record"]  # the CEO's own packet
        assert "annual_revenue" not in tab1.events[0]["record"]
        assert server.namespace.stats["events"] - before["events"] == 6
        assert server.namespace.stats["packets"] - before["packets"] == 4


async def test_bad_requests_are_answered_and_the_connection_survives(server: Server) -> None:
    async with server.client("eve") as eve:
        bad = await eve.call("subscribe", {"subscriptionId": "x", "objects": ["account"], "x": 1})
        assert bad["ok"] is False and bad["error"]["details"]["field"] == "x"
        bad = await eve.call("presence:leave", ["not", "an", "object"])
        assert bad["error"]["details"] == {"field": "payload", "reason": "must be an object"}
        ok = await eve.call("subscribe", {"subscriptionId": "x", "objects": ["account"]})
        assert ok["ok"]
    refused = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(server.url, namespaces=[NS], auth={"token": "mallory"})


async def test_a_refused_resubscribe_leaves_the_previous_subscription_working(
    server: Server,
) -> None:
    async with server.client("eve") as eve:
        ack = await eve.call("subscribe", {"subscriptionId": "s", "objects": ["account"]})
        assert ack["ok"], ack
        # stage is an opportunity field: the account part of the new spec is refused,
        # after the opportunity part was accepted.
        refused = await eve.call(
            "subscribe",
            {
                "subscriptionId": "s",
                "objects": ["opportunity", "account"],
                "filter": {"stage": "prospecting"},
            },
        )
        assert refused["ok"] is False and refused["error"]["details"]["field"] == "stage", refused
        ahead = await eve.call(
            "subscribe", {"subscriptionId": "s", "objects": ["account"], "since": 10**9}
        )
        assert ahead["ok"] is False and ahead["error"]["details"]["field"] == "since", ahead

        account = await server.data.insert("account", {"name": "Acme", "owner": "eve"}, actor=SEED)
        await server.data.insert(
            "opportunity",
            {"name": "Deal", "account": account["id"], "stage": "prospecting", "owner": "eve"},
            actor=SEED,
        )
        marker = await server.data.insert("account", {"name": "Marker", "owner": "eve"}, actor=SEED)
        await until(lambda: any(e["recordId"] == marker["id"] for e in eve.events))
        assert [(e["subscriptionId"], e["object"], e["recordId"]) for e in eve.events] == [
            ("s", "account", account["id"]),
            ("s", "account", marker["id"]),
        ]


async def test_presence_lists_a_user_once_and_disconnects_clean_up(server: Server) -> None:
    async with server.client("wes") as wes:
        async with server.client("eve") as tab1, server.client("eve") as tab2:
            await tab1.call("presence:join", {"room": "account/a1"})
            await tab2.call("presence:join", {"room": "account/a1", "status": "away"})
            joined = await wes.call("presence:join", {"room": "account/a1", "status": "busy"})
            users = [(u["userId"], u["status"]) for u in joined["presence"]["users"]]
            assert users == [("eve", "online"), ("wes", "busy")]
            await asyncio.sleep(0.5)  # heartbeats run meanwhile and keep everyone listed
            assert server.backend.tracker.connection_count() == 3
        await until(
            lambda: wes.presence and [u["userId"] for u in wes.presence[-1]["users"]] == ["wes"]
        )
        assert server.backend.tracker.connection_count() == 1


async def test_a_token_that_expires_ends_the_session(server: Server) -> None:
    async with server.client("carol:0.5") as carol:
        assert (await carol.call("subscribe", {"subscriptionId": "s", "objects": ["account"]}))[
            "ok"
        ]
        await until(lambda: not carol.sio.connected, within_s=5)
        assert [e["code"] for e in carol.errors] == ["expired_token"]
    assert server.namespace.connection_count == 0
    assert server.backend.room.subscriber_count == 0  # its subscription went with it
    expired = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await expired.connect(server.url, namespaces=[NS], auth={"token": "carol:-1"})
