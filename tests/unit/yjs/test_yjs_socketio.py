"""The y-socket.io protocol end to end: real server, real sockets, pycrdt clients."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import socketio
from yjs_harness import Hub, authorize_by_token, eventually, running_hub, serve_asgi

from objectos.realtime.yjs import (
    Access,
    LocalRoomDirectory,
    MemoryUpdateStore,
    YSocketIOClient,
    register_yjs,
)
from objectos.realtime.yjs.client import ConnectionRefused


async def test_two_clients_converge_after_concurrent_edits(hub: Hub) -> None:
    async with hub.client("notes") as alice, hub.client("notes") as bob:
        # Both edit before seeing each other's change: a real concurrent edit.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_type(alice, "content", ["A1", "A2", "A3"]))
            tg.create_task(_type(bob, "content", ["B1", "B2", "B3"]))
        expected = {"A1", "A2", "A3", "B1", "B2", "B3"}
        async with asyncio.timeout(5):
            await alice.wait_until(lambda: _tokens(alice) == expected)
            await bob.wait_until(lambda: str(bob.text("content")) == str(alice.text("content")))
        room = hub.rooms.peek("notes")
        assert room is not None
        assert room.read_text("content") == str(alice.text("content"))


async def _type(client, field: str, tokens: list[str]) -> None:
    for token in tokens:
        async with client.transact():
            client.text(field).insert(0, f"[{token}]")
        await asyncio.sleep(0)


def _tokens(client) -> set[str]:
    text = str(client.text("content"))
    return {part for part in text.replace("[", " ").replace("]", " ").split()}


async def test_bad_token_is_refused_at_connect(hub: Hub) -> None:
    client = hub.client("notes", token="forged")
    with pytest.raises(ConnectionRefused) as refused:
        await client.connect()
    assert "invalid or missing token" in str(refused.value)
    assert refused.value.data["data"] == {"code": "invalid_token"}


async def test_a_read_only_clients_update_is_refused_and_the_document_is_unchanged(
    hub: Hub,
) -> None:
    async with hub.client("notes") as writer, hub.client("notes", token="reader-token") as reader:
        async with writer.transact():
            writer.text("content").insert(0, "official")
        await reader.wait_until(lambda: str(reader.text("content")) == "official")

        async with reader.transact():
            reader.text("content").insert(0, "graffiti ")
        async with asyncio.timeout(5):
            await reader.wait_until(lambda: bool(reader.errors))

        assert reader.errors[0]["code"] == "permission_denied"
        assert reader.errors[0]["event"] == "sync-update"
        room = hub.rooms.peek("notes")
        assert room is not None and room.read_text("content") == "official"
        # The writer never saw it either: write something and check what arrives.
        async with writer.transact():
            writer.text("content").insert(8, "!")
        await reader.wait_until(lambda: "!" in str(reader.text("content")))
        assert str(writer.text("content")) == "official!"


async def test_a_reader_can_connect_and_follow_edits(hub: Hub) -> None:
    async with hub.client("notes", token="reader-token") as reader:
        assert reader.errors == []  # its empty handshake answer is not an "edit"
        room = await hub.rooms.get("notes")
        await room.write_text("content", "news")
        async with asyncio.timeout(5):
            await reader.wait_until(lambda: str(reader.text("content")) == "news")


async def test_a_late_joiner_gets_the_full_state(hub: Hub) -> None:
    async with hub.client("notes") as early:
        for word in ["alpha ", "beta ", "gamma"]:
            async with early.transact():
                early.text("content").insert(len(early.text("content")), word)
        async with early.transact():
            del early.text("content")[0:6]
        room = hub.rooms.peek("notes")
        await eventually(lambda: room is not None and room.read_text("content") == "beta gamma")

    async with hub.client("notes") as late:
        assert late.synced
        assert str(late.text("content")) == "beta gamma"


async def test_hub_written_text_arrives_at_every_client(hub: Hub) -> None:
    async with hub.client("notes") as alice, hub.client("notes") as bob:
        room = await hub.rooms.get("notes")
        await room.write_text("content", "Agenda: ")
        await room.insert_text("content", 8, "ship it")
        async with asyncio.timeout(5):
            for client in (alice, bob):
                await client.wait_until(
                    lambda c=client: str(c.text("content")) == "Agenda: ship it"
                )
        assert hub.stores["notes"].appends == 2


async def test_awareness_is_relayed_and_removed_when_a_client_drops(hub: Hub) -> None:
    async with hub.client("notes", awareness_state={"user": "alice"}) as alice:
        bob = hub.client("notes", awareness_state={"user": "bob"})
        await bob.connect()
        async with asyncio.timeout(5):
            await bob.wait_synced()
            await alice.wait_until(lambda: bob.doc.client_id in alice.awareness.states)
            # Bob learns about Alice from the server's greeting.
            await bob.wait_until(lambda: alice.doc.client_id in bob.awareness.states)
        assert alice.awareness.states[bob.doc.client_id] == {"user": "bob"}

        await bob.disconnect()  # without announcing anything itself

        async with asyncio.timeout(5):
            await alice.wait_until(lambda: bob.doc.client_id not in alice.awareness.states)
        room = hub.rooms.peek("notes")
        assert room is not None and set(room.awareness_states) == {alice.doc.client_id}


async def test_a_v2_update_over_the_wire_is_refused_with_an_error_event(hub: Hub) -> None:
    v2_update = bytes.fromhex(
        "000009b1aea607c7da960102020004010007440004008100840905587468"
        "6c6f410102010100010202010003000187ad4b010101"
    )  # Y.encodeStateAsUpdateV2 of a small Y.Text, generated by yjs 13.6
    async with hub.client("notes") as client:
        await client.socket.emit("sync-update", v2_update, namespace=client.namespace)
        async with asyncio.timeout(5):
            await client.wait_until(lambda: bool(client.errors))
    assert client.errors[0]["details"]["format"] == "v2"
    assert client.errors[0]["code"] == "validation_error"
    assert hub.stores["notes"].appends == 0


async def test_a_store_outage_heals_without_losing_the_edit_that_hit_it(hub: Hub) -> None:
    async with hub.client("notes") as alice, hub.client("notes") as bob:
        async with alice.transact():
            alice.text("content").insert(0, "before ")
        await bob.wait_until(lambda: str(bob.text("content")) == "before ")
        hub.stores["notes"].fail_append = True

        async with alice.transact():
            alice.text("content").insert(7, "during")
        async with asyncio.timeout(5):
            await alice.wait_until(lambda: bool(alice.errors))
        assert alice.errors[0]["code"] == "service_unavailable"
        assert str(bob.text("content")) == "before "  # not relayed: it was not durable

        hub.stores["notes"].fail_append = False
        async with alice.transact():  # the next message rebinds and re-syncs everyone
            alice.text("content").insert(0, "[after] ")
        async with asyncio.timeout(5):
            await bob.wait_until(lambda: str(bob.text("content")) == "[after] before during")
        reloaded = await hub.rooms.get("notes")
        assert reloaded.read_text("content") == "[after] before during"
        await hub.rooms.passivate("notes")
        assert (await hub.rooms.get("notes")).read_text("content") == "[after] before during"


async def test_clients_are_refused_without_read_access_or_outside_yjs_namespaces(
    hub: Hub,
) -> None:
    with pytest.raises(ConnectionRefused, match="no read access"):
        await hub.client("notes", token="blind-token").connect()
    with pytest.raises(ConnectionRefused, match="invalid or missing token"):
        await hub.client("notes", token=None).connect()

    sio = socketio.AsyncClient(reconnection=False)
    refusals: list[object] = []
    sio.on("connect_error", refusals.append, namespace="/admin")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(hub.url, namespaces=["/admin"], transports=["websocket"])
    assert refusals and "unknown namespace" in str(refusals[0])


async def test_a_room_passivates_after_the_last_client_leaves_and_keeps_the_text() -> None:
    clock = Clock()
    async with running_hub(clock=clock, idle_timeout=10.0) as hub:
        async with hub.client("notes") as client:
            async with client.transact():
                client.text("content").insert(0, "persist me")
            await eventually(
                lambda: hub.stores.get("notes") is not None and hub.stores["notes"].appends == 1
            )
        await eventually(lambda: hub.handler.connection_count == 0)
        clock.now += 11
        assert await hub.rooms.sweep() == ["notes"]
        assert hub.stores["notes"].updates == []  # folded into the snapshot

        async with hub.client("notes") as again:
            assert str(again.text("content")) == "persist me"


def test_register_yjs_needs_a_server_that_accepts_every_namespace() -> None:
    rooms = LocalRoomDirectory(lambda name: MemoryUpdateStore())
    with pytest.raises(ValueError, match="namespaces='\\*'"):
        register_yjs(socketio.AsyncServer(async_mode="asgi"), rooms, authorize_by_token)
    sio = socketio.AsyncServer(async_mode="asgi", namespaces="*")
    register_yjs(sio, rooms, authorize_by_token)
    with pytest.raises(ValueError, match="catch-all"):
        register_yjs(sio, rooms, authorize_by_token)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_a_client_that_gives_up_during_authorization_leaves_no_member_behind() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def slow_authorize(doc_name: str, auth: dict | None) -> Access:
        entered.set()
        await gate.wait()
        return Access(read=True, write=True)

    rooms = LocalRoomDirectory(lambda name: MemoryUpdateStore())
    sio = socketio.AsyncServer(async_mode="asgi", namespaces="*")
    handler = register_yjs(sio, rooms, slow_authorize)
    async with serve_asgi(socketio.ASGIApp(sio)) as url:
        client = YSocketIOClient(url, "notes", auth={"token": "t"})
        connecting = asyncio.create_task(client.connect(wait_timeout=5))
        await entered.wait()
        # The browser tab closes mid-handshake: the transport goes away while the
        # server is still inside its connect handler.
        connecting.cancel()
        with contextlib.suppress(asyncio.CancelledError, socketio.exceptions.ConnectionError):
            await connecting
        await client.socket.eio.disconnect(abort=True)
        await asyncio.sleep(0.1)
        gate.set()
        await eventually(lambda: handler.connection_count == 0)
        await asyncio.sleep(0.1)  # a late registration would show up now
        assert handler.connection_count == 0
        room = rooms.peek("notes")
        assert room is None or room.connections == frozenset()
    await rooms.close()
