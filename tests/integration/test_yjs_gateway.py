"""Collaborative documents through the gateway actor and Room actors, on real Ray.

One gateway actor (``gateway:<node>``, its own uvicorn on a free 127.0.0.1 port)
serves every test; documents live in ``room:yjs:<doc>`` actors that persist to the
hub's SQLite file. Writers are stock clients nobody here wrote (yjs + y-socket.io in
Node, ``tests/interop/yjs_clients.mjs``), the hub's Python client, and the hub
itself (:class:`actors.room.HubDocument`, i.e. the room actor's ``write_text``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from conftest import INTEROP_DIR
from pycrdt import Doc, Text
from sqlalchemy.ext.asyncio import create_async_engine

from actors.gateway import (
    DocumentAuthorizer,
    Grant,
    HubTokenIdentity,
    RecordDocument,
    SharedTokenIdentity,
)
from objectos.errors import InvalidToken, ObjectOSError, Unauthenticated
from objectos.realtime.yjs import Access, SQLUpdateStore, YSocketIOClient
from objectos.realtime.yjs.client import ConnectionRefused

WRITER, READER = "writer-token", "reader-token"
FIELD = "content"
SLOW_S = 60  # bound for any single step; activating a room starts a process


async def archived_records_are_read_only(record: RecordDocument, grant: Grant) -> Access:
    """The record-permission hook of these tests: fields of ``archive`` records are frozen."""
    return Access(read=True, write=record.object != "archive")


@dataclass
class Realtime:
    url: str
    hub: dict[str, Any]
    database_url: str
    gateway: dict[str, Any]

    @contextlib.asynccontextmanager
    async def client(self, doc: str, token: str | None = WRITER) -> AsyncIterator[YSocketIOClient]:
        """A connected, synced Python client (generous timeouts: the machine is shared)."""
        client = YSocketIOClient(self.url, doc, auth={"token": token} if token else {})
        await client.connect(wait_timeout=SLOW_S)
        try:
            async with asyncio.timeout(SLOW_S):
                await client.wait_synced()
            yield client
        finally:
            await client.disconnect()


@pytest.fixture(scope="module")
def realtime(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realtime]:
    """The hub's gateway on this node, rooms passivating after 1.5 s idle."""
    from deployments.realtime import ensure_gateways, realtime_settings, stop_realtime

    tmp = tmp_path_factory.mktemp("realtime")
    database_url = f"sqlite+aiosqlite:///{tmp}/objectos.db"
    hub = {"dataDir": str(tmp), "database": {"url": database_url}}
    settings = realtime_settings(
        hub,
        port=0,
        # Shorter pings than the default 25 + 20 s: a client that vanished without a
        # goodbye leaves its rooms within 15 s (not too short: the machine is shared).
        ping_interval_s=5,
        ping_timeout_s=10,
        rooms={"idle_timeout_s": 1.5, "sweep_interval_s": 0.25, "compact_every": 50},
    )
    authorize = DocumentAuthorizer(
        SharedTokenIdentity(WRITER, READER), record_access=archived_records_are_read_only
    )
    (gateway,) = ensure_gateways(hub, settings=settings, authorize=authorize)
    try:
        yield Realtime(gateway["url"], hub, database_url, gateway)
    finally:
        stop_realtime()


# ---------------------------------------------------------------------- helpers


def node_token(who: str, i: int) -> str:
    return f"[{who}{i}\U0001f600]"  # tokenOf() in yjs_clients.mjs


def python_token(i: int) -> str:
    return f"[P{i}é]"


def hub_token(i: int) -> str:
    return f"[H{i}ü]"


def boundaries(text: str) -> list[int]:
    return [0] + [i + 1 for i, ch in enumerate(text) if ch == "]"]


class StockClients:
    """Two stock y-socket.io clients in one Node process, reporting JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, url: str, doc: str, *args: str) -> AsyncIterator[StockClients]:
        process = await asyncio.create_subprocess_exec(
            "node",
            "yjs_clients.mjs",
            url,
            "--doc",
            doc,
            "--field",
            FIELD,
            *args,
            cwd=INTEROP_DIR,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        clients = cls(process)
        try:
            yield clients
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def next_event(self, within_s: float = SLOW_S) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), within_s)
        assert line, await self.stderr()
        self.events.append(json.loads(line))
        return self.events[-1]

    async def result(self, within_s: float = 60) -> dict[str, Any]:
        while not self.events or self.events[-1]["event"] != "result":
            await self.next_event(within_s)
        await asyncio.wait_for(self.process.wait(), within_s)
        return self.events[-1]

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        return (await self.process.stderr.read()).decode()

    @property
    def server_errors(self) -> list[dict[str, Any]]:
        return [e["payload"] for e in self.events if e["event"] == "server-error"]


async def python_writer(
    client: YSocketIOClient, rng: random.Random, edits: int, pause_s: float
) -> None:
    """Insert [P0]..[P<edits-1>] at token boundaries, then delete [P0]."""
    text = client.text(FIELD)
    for i in range(edits):
        await asyncio.sleep(rng.random() * pause_s)
        current = str(text)
        at = rng.choice(boundaries(current))
        async with client.transact():
            text.insert(len(current[:at].encode("utf-8")), python_token(i))  # pycrdt: bytes
    current = str(text)
    start = len(current[: current.index(python_token(0))].encode("utf-8"))
    async with client.transact():
        del text[start : start + len(python_token(0).encode("utf-8"))]


async def hub_writer(doc: Any, rng: random.Random, edits: int, pause_s: float) -> None:
    for i in range(edits):
        await asyncio.sleep(rng.random() * pause_s)
        # Start and end are token boundaries whatever arrives meanwhile.
        await doc.insert_text(FIELD, 0 if rng.random() < 0.5 else 10**9, hub_token(i))


async def stored_text(database_url: str, doc: str) -> str:
    """What the hub's database holds for ``doc``, read without any room."""
    engine = create_async_engine(database_url)
    try:
        stored = await SQLUpdateStore(engine, doc).load()
    finally:
        await engine.dispose()
    ydoc: Doc[Any] = Doc()
    for update in ([stored.snapshot] if stored.snapshot else []) + stored.updates:
        ydoc.apply_update(update)
    return str(ydoc.get(FIELD, type=Text))


def hub_document(doc: str) -> Any:
    from actors.room import HubDocument

    return HubDocument(doc)


async def live_rooms() -> list[str]:
    from actors.factory import get_room_directory

    directory = get_room_directory()
    assert directory is not None
    rooms: list[str] = await directory.live_rooms.remote()
    return rooms


async def eventually(predicate: Any, within_s: float = SLOW_S) -> None:
    """Poll an async ``predicate``: the state lives in other processes, nothing to wait on."""
    async with asyncio.timeout(within_s):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------------- convergence


async def converge_with_writers(
    realtime: Realtime,
    doc: str,
    *,
    edits: int,
    pause_ms: int,
    transports: str = "websocket",
    during: Any = None,
) -> tuple[dict[str, Any], str, StockClients]:
    """Node clients A and B, a Python client and the hub type tokens into one text at once.

    ``during`` (a coroutine function) runs while they type. Returns the Node result,
    the Python client's final text and the Node clients (their events).
    """
    intro = "[intro: the hub wrote this first]"
    document = hub_document(doc)
    await document.write_text(FIELD, intro)
    expected = (
        [intro]
        + [node_token(w, i) for w in "AB" for i in range(1, edits)]
        + [python_token(i) for i in range(1, edits)]
        + [hub_token(i) for i in range(edits)]
    )
    absent = [node_token("A", 0), node_token("B", 0), python_token(0)]
    others = [t for t in expected if not t.startswith(("[A", "[B"))]
    async with StockClients.run(
        realtime.url,
        doc,
        "--token",
        WRITER,
        "--edits",
        str(edits),
        "--pause-ms",
        str(pause_ms),
        "--transports",
        transports,
        "--expect",
        ",".join(others),
        "--absent",
        python_token(0),
        "--timeout",
        "60000",
    ) as node:
        synced = await node.next_event()
        assert synced["event"] == "synced", (synced, await node.stderr())
        assert synced["transports"] == [transports, transports]
        rng = random.Random(11)
        async with realtime.client(doc) as py:
            async with asyncio.TaskGroup() as tg:
                result = tg.create_task(node.result(within_s=90))
                tg.create_task(python_writer(py, rng, edits, pause_ms / 1000))
                tg.create_task(hub_writer(document, rng, edits, pause_ms / 1000))
                if during is not None:
                    tg.create_task(during())

            def converged() -> bool:
                text = str(py.text(FIELD))
                return all(t in text for t in expected) and not any(t in text for t in absent)

            async with asyncio.timeout(60):
                await py.wait_until(converged)
            python_text = str(py.text(FIELD))

            # The hub's "set" reaches every connected client, too.
            await document.write_text(FIELD, python_text + "[hub: done]")
            async with asyncio.timeout(SLOW_S):
                await py.wait_until(lambda: str(py.text(FIELD)).endswith("[hub: done]"))
    outcome = result.result()
    assert outcome["event"] == "result" and outcome["ok"], (outcome, await node.stderr())
    assert outcome["a"] == outcome["b"] == python_text
    assert await document.read_text(FIELD) == python_text + "[hub: done]"
    return outcome, python_text, node


async def test_stock_clients_python_client_and_hub_converge_through_the_gateway(
    realtime: Realtime, node_modules: Path
) -> None:
    doc = "notes/n1/content"
    _, text, node = await converge_with_writers(realtime, doc, edits=12, pause_ms=15)
    assert node.server_errors == []

    # Durable in the hub's SQLite file: read back without any room ...
    assert await stored_text(realtime.database_url, doc) == text + "[hub: done]"
    # ... and the room passivates by itself once nobody is connected.
    await eventually(lambda: _not_live(doc))


async def _not_live(doc: str) -> bool:
    return doc not in await live_rooms()


async def test_long_polling_clients_converge_too(realtime: Realtime, node_modules: Path) -> None:
    # One process holds each connection, so Engine.IO long-polling needs no stickiness.
    _, text, node = await converge_with_writers(
        realtime, "notes/n2/content", edits=6, pause_ms=15, transports="polling"
    )
    assert node.server_errors == []
    assert await stored_text(realtime.database_url, "notes/n2/content") == text + "[hub: done]"


# ---------------------------------------------------------------------- faults


async def test_killed_room_actor_is_reactivated_and_no_update_is_lost(
    realtime: Realtime, node_modules: Path
) -> None:
    doc = "notes/n3/content"
    document = hub_document(doc)
    incarnations: list[str] = []

    async def kill_the_room_mid_typing() -> None:
        await asyncio.sleep(0.6)
        status = await document.status()
        assert status is not None and status["members"] >= 3
        incarnations.append(status["incarnation"])
        os.kill(status["pid"], signal.SIGKILL)
        # The gateway notices, and activates a new room for its members.
        await eventually(lambda: _new_incarnation(document, incarnations))

    _, text, node = await converge_with_writers(
        realtime, doc, edits=25, pause_ms=60, during=kill_the_room_mid_typing
    )
    assert len(incarnations) == 2  # a new process took over the document
    # Edits sent into the dead room were refused as "unavailable" (and came back in
    # the re-sync: every token is in ``text``); nothing else went wrong.
    assert {e["code"] for e in node.server_errors} <= {"service_unavailable"}
    assert (await _gateway_stats(realtime))["recoveries"] >= 1
    assert await stored_text(realtime.database_url, doc) == text + "[hub: done]"


async def _new_incarnation(document: Any, seen: list[str]) -> bool:
    status = await document.status()
    if status is None or status["incarnation"] in seen or not status["members"]:
        return False
    seen.append(status["incarnation"])
    return True


async def _gateway_stats(realtime: Realtime) -> dict[str, Any]:
    from actors.factory import get_gateway

    handle = get_gateway(realtime.gateway["name"])
    assert handle is not None
    stats: dict[str, Any] = await handle.stats.remote()
    return stats


async def test_reconnect_during_passivation_finds_the_state(realtime: Realtime) -> None:
    doc = "notes/n4/content"
    document = hub_document(doc)
    written: list[str] = []
    passivated = 0
    for round_, delay in enumerate([0.0, 0.005, 0.02, 0.05]):
        token = f"[round {round_}]"
        async with realtime.client(doc) as writer:
            async with writer.transact():
                writer.text(FIELD).insert(0, token)
            written.append(token)
            await eventually(lambda: _holds(document, written))

        # Nobody is connected: passivate now (final compaction, process exit) and
        # reconnect while that runs. Whoever wins, the client sees every token.
        passivation = asyncio.create_task(document.passivate())
        await asyncio.sleep(delay)
        async with realtime.client(doc) as reader:
            assert all(t in str(reader.text(FIELD)) for t in written), (round_, written)
        passivated += await passivation
    assert passivated  # (refused when the reader's join came first)
    assert sorted(await stored_text(realtime.database_url, doc)) == sorted("".join(written))


async def _holds(document: Any, tokens: list[str]) -> bool:
    text = await document.read_text(FIELD)
    return all(t in text for t in tokens)


# ---------------------------------------------------------------------- access


async def test_read_only_connections_change_nothing(realtime: Realtime, node_modules: Path) -> None:
    doc = "notes/n5/content"
    document = hub_document(doc)
    await document.write_text(FIELD, "read me, do not edit me")

    async with realtime.client(doc, READER) as reader:
        assert str(reader.text(FIELD)) == "read me, do not edit me"  # readers do read
        async with reader.transact():
            reader.text(FIELD).insert(0, "[vandal]")
        async with asyncio.timeout(SLOW_S):
            await reader.wait_until(lambda: bool(reader.errors))
        assert reader.errors[0]["code"] == "permission_denied"
        assert reader.errors[0]["event"] == "sync-update"

    async with StockClients.run(
        realtime.url, doc, "--token", READER, "--edits", "2", "--timeout", "1500"
    ) as node:
        result = await node.result()
    assert node.events[0]["event"] == "synced"  # stock readers connect and sync
    assert node.server_errors and {e["code"] for e in node.server_errors} == {"permission_denied"}
    assert not result["ok"]  # their edits never came back: the server refused them
    assert await document.read_text(FIELD) == "read me, do not edit me"
    assert await stored_text(realtime.database_url, doc) == "read me, do not edit me"


async def test_the_record_hook_narrows_access_to_a_records_field(realtime: Realtime) -> None:
    frozen, live = "archive/r1/body", "contract/r1/body"
    async with realtime.client(frozen) as writer, realtime.client(live) as other:
        async with writer.transact():
            writer.text(FIELD).insert(0, "nope")
        async with other.transact():
            other.text(FIELD).insert(0, "yes")
        async with asyncio.timeout(SLOW_S):
            await writer.wait_until(lambda: bool(writer.errors))
            await eventually(lambda: _holds(hub_document(live), ["yes"]))
    assert writer.errors[0]["code"] == "permission_denied"
    assert other.errors == []
    assert await hub_document(frozen).read_text(FIELD) == ""


async def test_bad_tokens_and_unknown_namespaces_are_refused_at_connect(
    realtime: Realtime,
) -> None:
    cases = [(None, "unauthenticated"), ("forged", "invalid_token")]
    for token, code in cases:
        with pytest.raises(ConnectionRefused) as refused:
            async with realtime.client("notes/n6/content", token):
                pass
        assert refused.value.data["data"] == {"code": code}
    sio = socketio.AsyncClient(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(realtime.url, namespaces=["/other"], auth={"token": WRITER})
    await sio.disconnect()


async def test_a_bad_payload_is_reported_and_loses_nothing(realtime: Realtime) -> None:
    doc = "notes/n7/content"
    async with realtime.client(doc) as client:
        async with client.transact():
            client.text(FIELD).insert(0, "kept")
        await client.socket.emit("sync-update", "not binary", namespace=client.namespace)
        await client.socket.emit("sync-update", b"\xff\xff\xff", namespace=client.namespace)
        async with asyncio.timeout(SLOW_S):
            await client.wait_until(lambda: len(client.errors) >= 2)
        assert {e["code"] for e in client.errors} <= {"validation_error", "invalid_field"}
        assert all("Traceback" not in e["message"] for e in client.errors)
        async with client.transact():  # the connection still works
            client.text(FIELD).insert(4, " and more")
        await eventually(lambda: _holds(hub_document(doc), ["kept and more"]))


async def test_a_bad_update_in_a_batch_fails_alone(realtime: Realtime) -> None:
    from actors.factory import get_room_directory

    doc = "notes/n8/content"
    await hub_document(doc).write_text(FIELD, "")  # activates the room
    directory = get_room_directory()
    assert directory is not None
    room = await directory.activate.remote(doc)
    writer: Doc[Any] = Doc()
    updates = []
    for token in ["[one]", "[two]"]:
        before = writer.get_state()
        writer.get(FIELD, type=Text).insert(0, token)
        updates.append(writer.get_update(before))
    # What a gateway sends: one call for everything its sockets sent meanwhile.
    results = await room.receive.remote(
        "gateway:test",
        [
            ("sync-update", updates[0], "s1"),
            ("sync-update", b"\xff\xff\xff", "s2"),
            ("sync-update", updates[1], "s1"),
        ],
    )
    assert isinstance(results[1], ObjectOSError) and results[1].code == "validation_error"
    assert results[0] == results[2] == b""  # applied together; the change is broadcast
    assert await hub_document(doc).read_text(FIELD) == "[two][one]"


# ---------------------------------------------------------------------- lifecycle


async def test_room_cap_passivates_idle_rooms_and_refuses_when_all_are_busy(
    realtime: Realtime,
) -> None:
    from actors.factory import get_room_directory

    directory = get_room_directory()
    assert directory is not None
    try:
        await eventually(_no_live_rooms)  # earlier tests' rooms went idle
    except TimeoutError:
        pytest.fail(
            f"rooms still live: {[await hub_document(d).status() for d in await live_rooms()]}"
        )
    previous = await directory.set_max_rooms.remote(2)
    try:
        async with realtime.client("cap/1/x") as one, realtime.client("cap/2/x"):
            with pytest.raises(ConnectionRefused) as refused:
                async with realtime.client("cap/3/x"):
                    pass
            assert refused.value.data["data"] == {"code": "service_unavailable"}
            await one.disconnect()
            await eventually(lambda: _has_no_members("cap/1/x"))
            # Now cap/1 has no members: activating cap/3 passivates it instead.
            async with realtime.client("cap/3/x"):
                assert sorted(await live_rooms()) == ["cap/2/x", "cap/3/x"]
    finally:
        await directory.set_max_rooms.remote(previous)


async def _has_no_members(doc: str) -> bool:
    status = await hub_document(doc).status()
    return status is not None and status["members"] == 0


async def _no_live_rooms() -> bool:
    return not await live_rooms()


async def test_discovery_routes_point_at_a_gateway_that_answers(realtime: Realtime) -> None:
    from deployments.realtime import ensure_gateways, realtime_routes

    routes = realtime_routes()
    assert routes == {
        "realtime": realtime.url,
        "yjs": f"{realtime.url}/yjs|{{document}}",
    }
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{realtime.url}/health")).json()
    assert health["name"] == realtime.gateway["name"]
    # Idempotent: the same gateway process is found by name again.
    again = await asyncio.to_thread(ensure_gateways, realtime.hub, settings=_settings_of(realtime))
    assert [g["pid"] for g in again] == [realtime.gateway["pid"]]


def _settings_of(realtime: Realtime) -> Any:
    from deployments.realtime import realtime_settings

    return realtime_settings(realtime.hub, port=realtime.gateway["port"])


POSTGRES_URL = os.environ.get("OBJECTOS_TEST_POSTGRES_URL")


@pytest.mark.postgres
@pytest.mark.skipif(not POSTGRES_URL, reason="OBJECTOS_TEST_POSTGRES_URL not set")
async def test_a_room_actor_persists_to_postgresql(ray_session: Any) -> None:
    import uuid

    import sqlalchemy as sa

    from actors.factory import get_or_create_yjs_room
    from actors.room import RoomSettings
    from objectos.realtime.yjs.store import yjs_snapshots, yjs_updates

    assert POSTGRES_URL is not None
    doc = f"pg-test/{uuid.uuid4().hex}/body"  # a name nobody else uses: our own rows
    settings = RoomSettings(database_url=POSTGRES_URL, compact_every=3).model_dump()
    room = get_or_create_yjs_room(doc, settings)
    await room.activate.remote()
    for word in ["one ", "two ", "three ", "four "]:
        await room.insert_text.remote(FIELD, 10**6, word)
    with contextlib.suppress(ray_session.exceptions.RayActorError):
        await room.passivate.remote(force=True)  # ends the process: the caller sees it die
    assert await stored_text(POSTGRES_URL, doc) == "one two three four "
    reloaded = get_or_create_yjs_room(doc, settings)
    try:
        await reloaded.activate.remote()
        assert await reloaded.read_text.remote(FIELD) == "one two three four "
    finally:
        ray_session.kill(reloaded, no_restart=True)
        engine = create_async_engine(POSTGRES_URL)
        async with engine.begin() as conn:
            await conn.execute(sa.delete(yjs_updates).where(yjs_updates.c.doc == doc))
            await conn.execute(sa.delete(yjs_snapshots).where(yjs_snapshots.c.doc == doc))
        await engine.dispose()


# ---------------------------------------------------------------------- pure pieces


def test_record_documents_are_recognised_by_name() -> None:
    assert RecordDocument.parse("contract/42/body") == RecordDocument("contract", "42", "body")
    for free in ["notes", "Contract/42/body", "a/b", "a/b/c/d", "contract//body", "x/1/Body"]:
        assert RecordDocument.parse(free) is None, free


async def test_shared_token_dev_mode() -> None:
    identify = SharedTokenIdentity("s3cret", read_token="peek")
    assert (await identify({"token": "s3cret"})).access == Access(read=True, write=True)
    assert (await identify({"token": "peek"})).access == Access(read=True, write=False)
    with pytest.raises(InvalidToken):
        await identify({"token": "guess"})
    with pytest.raises(Unauthenticated):
        await identify(None)


async def test_hub_mode_accepts_the_hubs_own_access_tokens(tmp_path: Path) -> None:
    from ray import cloudpickle

    from objectos.api.auth import build_identity
    from objectos.protocol.auth import AuthSettings

    settings = {"allowSignUp": True}
    database_url = f"sqlite+aiosqlite:///{tmp_path}/hub.db"
    identity, _ = build_identity(AuthSettings.model_validate(settings), database_url, tmp_path)
    try:
        await identity.sign_up("ada@example.com", "correct horse battery")
        session = await identity.sign_in("ada@example.com", "correct horse battery")
    finally:
        await identity.aclose()

    # What a gateway receives: configuration only, the identity opens in its process.
    authorize = cloudpickle.loads(
        cloudpickle.dumps(
            DocumentAuthorizer(HubTokenIdentity(settings, database_url, str(tmp_path)))
        )
    )
    try:
        token = session.tokens.access_token
        access = await authorize("notes", {"token": token})
        assert (access.read, access.write) == (True, True)
        assert access.expires_at is not None and access.expires_at > time.time()  # session end
        with pytest.raises(InvalidToken):
            await authorize("notes", {"token": token[:-4] + "AAAA"})
        with pytest.raises(Unauthenticated):
            await authorize("notes", {})
    finally:
        await authorize.aclose()


def test_dev_token_is_created_once_and_kept_private(tmp_path: Path) -> None:
    from deployments.realtime import dev_token, realtime_settings

    hub = {"dataDir": str(tmp_path), "database": {"url": "sqlite+aiosqlite:///x.db"}}
    assert realtime_settings(hub).auth == "hub"
    assert not (tmp_path / "realtime.token").exists()  # hub mode needs none
    token = dev_token(hub)
    assert dev_token(hub) == token
    assert (tmp_path / "realtime.token").stat().st_mode & 0o077 == 0
    assert realtime_settings(hub, auth="dev").dev_token == token


def test_unknown_realtime_settings_are_refused_with_their_key() -> None:
    from deployments.realtime import realtime_settings
    from objectos.errors import ConfigError

    hub = {"dataDir": "/tmp", "database": {"url": "sqlite+aiosqlite:///x.db"}}
    with pytest.raises(ConfigError) as bad:
        realtime_settings({**hub, "realtime": {"prot": 1}})
    assert bad.value.details["key"] == "realtime.prot"
    with pytest.raises(ConfigError) as bad:
        realtime_settings({**hub, "realtime": {"rooms": {"maxRoom": 1}}})
    assert bad.value.details["key"] == "realtime.rooms.maxRoom"
    with pytest.raises(ConfigError):
        realtime_settings({**hub, "realtime": {"devToken": "t", "rooms": {"maxRooms": 0}}})


def test_broadcast_batches_merge_runs_of_document_updates() -> None:
    from actors.room import coalesce_broadcasts

    def edit(doc: Doc[Any], text: str) -> bytes:
        before = doc.get_state()
        doc.get(FIELD, type=Text).insert(0, text)
        return doc.get_update(before)

    alice, bob = Doc(), Doc()
    a1, a2, b1 = edit(alice, "a1"), edit(alice, "a2"), edit(bob, "b1")
    batch = [
        ("sync-update", a1, "alice"),
        ("sync-update", a2, "alice"),
        ("awareness-update", b"\x00", "bob"),
        ("sync-update", b1, "bob"),
        ("sync-update", a1, "alice"),
    ]
    merged = coalesce_broadcasts(batch)
    # Runs of updates become one update; awareness keeps its place between them.
    assert [(event, sid) for event, _, sid in merged] == [
        ("sync-update", "alice"),  # one sender: its own sockets still skip it
        ("awareness-update", "bob"),
        ("sync-update", None),  # mixed senders: goes to everybody
    ]
    replica: Doc[Any] = Doc()
    for event, payload, _ in merged:
        if event == "sync-update":
            replica.apply_update(payload)
    assert sorted(str(replica.get(FIELD, type=Text))) == sorted("a1a2b1")


# Last of the tests that use the gateway: it kills it (Ray restarts it on the same port).
async def test_killed_gateway_is_restarted_and_stock_clients_reconnect_losing_nothing(
    realtime: Realtime, node_modules: Path
) -> None:
    doc = "notes/n9/content"
    document = hub_document(doc)
    edits = 30
    expected = [node_token(w, i) for w in "AB" for i in range(1, edits)] + [
        hub_token(i) for i in range(edits)
    ]
    async with StockClients.run(
        realtime.url,
        doc,
        "--token",
        WRITER,
        "--edits",
        str(edits),
        "--pause-ms",
        "60",
        "--expect",
        ",".join(hub_token(i) for i in range(edits)),
        "--timeout",
        "60000",
    ) as node:
        assert (await node.next_event())["event"] == "synced"
        async with asyncio.TaskGroup() as tg:
            result = tg.create_task(node.result(within_s=120))
            tg.create_task(hub_writer(document, random.Random(5), edits, 0.06))
            await asyncio.sleep(0.3)  # mid-typing: they type for about a second
            os.kill(realtime.gateway["pid"], signal.SIGKILL)
    outcome = result.result()
    # socket.io-client reconnected to the restarted gateway and the provider re-synced.
    assert outcome["ok"], (outcome, await node.stderr())
    text = outcome["a"]
    assert all(t in text for t in expected)
    assert await document.read_text(FIELD) == text
    assert (await _gateway_stats(realtime))["pid"] != realtime.gateway["pid"]
