"""DocumentRoom: load, apply, persist, compact -- and what happens when the store fails."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pycrdt
import pytest
from yjs_doubles import FaultyStore, SlowStore, StoreDown

from objectos.errors import ValidationError
from objectos.realtime.yjs import (
    AWARENESS_UPDATE,
    EMPTY_UPDATE,
    SYNC_UPDATE,
    AwarenessEntry,
    DocumentRoom,
    InvalidUpdate,
    MemoryUpdateStore,
    RoomState,
    RoomUnavailable,
    decode_awareness_update,
    encode_awareness_update,
)

FIXTURES = {
    f["name"]: f
    for f in json.loads((Path(__file__).parent / "fixtures" / "yjs_updates.json").read_text())[
        "fixtures"
    ]
}


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Peer:
    """A pycrdt document standing in for a client's editor."""

    def __init__(self, client_id: int) -> None:
        self.doc = pycrdt.Doc(client_id=client_id)
        self.text = self.doc.get("content", type=pycrdt.Text)

    def edit(self, change) -> bytes:  # type: ignore[no-untyped-def]
        before = self.doc.get_state()
        change(self.text)
        return self.doc.get_update(before)


async def loaded_room(store=None, **kwargs) -> DocumentRoom:  # type: ignore[no-untyped-def]
    room = DocumentRoom("doc", store if store is not None else MemoryUpdateStore(), **kwargs)
    await room.load()
    return room


def text_of(update: bytes, field: str = "content") -> str:
    doc = pycrdt.Doc()
    text = doc.get(field, type=pycrdt.Text)
    doc.apply_update(update)
    return str(text)


# ---------------------------------------------------------------- load / apply / persist


async def test_an_update_is_applied_persisted_and_returned_for_broadcast() -> None:
    store = FaultyStore()
    room = await loaded_room(store)
    update = Peer(1).edit(lambda t: t.insert(0, "hello"))

    relay = await room.apply_update(update, origin="sid-1")

    assert room.read_text("content") == "hello"
    assert text_of(relay) == "hello"
    assert store.appends == 1
    assert text_of(store.updates[0][1]) == "hello"


async def test_a_reloaded_room_has_everything_that_was_acknowledged() -> None:
    store = MemoryUpdateStore()
    room = await loaded_room(store)
    alice = Peer(1)
    await room.apply_update(alice.edit(lambda t: t.insert(0, "hello")))
    await room.apply_update(alice.edit(lambda t: t.insert(5, " world")))
    await room.apply_update(alice.edit(lambda t: t.__delitem__(slice(0, 1))))

    again = await loaded_room(store)

    assert again.read_text("content") == "ello world"


async def test_duplicates_and_empty_updates_are_neither_persisted_nor_broadcast() -> None:
    store = FaultyStore()
    room = await loaded_room(store)
    published: list[str] = []

    async def listener(event: str, payload: bytes, origin: str | None) -> None:
        published.append(event)

    await room.subscribe(listener)
    update = Peer(1).edit(lambda t: t.insert(0, "once"))
    assert await room.apply_update(update)
    assert await room.apply_update(update) == b""
    assert await room.apply_update(EMPTY_UPDATE) == b""
    assert store.appends == 1
    assert published == [SYNC_UPDATE]


async def test_only_the_change_is_persisted_not_a_clients_whole_delete_set() -> None:
    """A reconnecting client's handshake carries its full delete set; storing it each
    time would grow the log with every reconnect."""
    store = FaultyStore()
    room = await loaded_room(store)
    alice = Peer(1)
    await room.apply_update(alice.edit(lambda t: t.insert(0, "abcdef")))
    await room.apply_update(alice.edit(lambda t: t.__delitem__(slice(1, 3))))
    appends = store.appends
    # What y-socket.io's provider acks to the server's sync-step-1 after a reconnect:
    handshake = alice.doc.get_update(room_state := (await room.sync_step1()))
    assert room_state and handshake != EMPTY_UPDATE  # it does carry the delete set
    assert await room.apply_update(handshake) == b""
    assert store.appends == appends


async def test_a_v2_update_is_refused_and_the_document_is_unchanged() -> None:
    store = FaultyStore()
    room = await loaded_room(store)
    await room.apply_update(Peer(1).edit(lambda t: t.insert(0, "keep")))
    with pytest.raises(InvalidUpdate) as refused:
        await room.apply_update(bytes.fromhex(FIXTURES["deleted-gc"]["v2"]))
    assert refused.value.details["format"] == "v2"
    assert room.read_text("content") == "keep"
    assert store.appends == 1


async def test_an_update_yrs_cannot_decode_is_refused_without_side_effects() -> None:
    store = FaultyStore()
    room = await loaded_room(store)
    with pytest.raises(InvalidUpdate, match="could not be applied"):
        await room.apply_update(bytes.fromhex(FIXTURES["xml-hook"]["v1"]))
    assert store.appends == 0
    assert room.state is RoomState.LOADED


async def test_sync_steps_give_a_peer_exactly_what_it_lacks() -> None:
    room = await loaded_room()
    alice, bob = Peer(1), Peer(2)
    await room.apply_update(alice.edit(lambda t: t.insert(0, "from alice")))

    bob.doc.apply_update(await room.sync_step2(bob.doc.get_state()))
    assert str(bob.text) == "from alice"
    assert await room.sync_step1() == bob.doc.get_state()
    with pytest.raises(InvalidUpdate):
        await room.sync_step2(b"\x05")


async def test_the_hubs_own_client_id_fits_in_32_bits() -> None:
    for _ in range(20):
        room = await loaded_room()
        assert 0 <= room.client_id < 2**32
    # The default pycrdt id is 53 bits -- the reason this matters (y-py truncates).
    assert any(pycrdt.Doc().client_id >= 2**32 for _ in range(20))


# ---------------------------------------------------------------- failures


async def test_a_failed_load_leaves_a_room_that_refuses_everything() -> None:
    store = FaultyStore()
    original = await loaded_room(store)
    await original.apply_update(Peer(1).edit(lambda t: t.insert(0, "precious")))
    await original.close()

    store.fail_load = True
    room = DocumentRoom("doc", store)
    with pytest.raises(RoomUnavailable, match="could not be loaded"):
        await room.load()

    update = Peer(2).edit(lambda t: t.insert(0, "overwrite?"))
    with pytest.raises(RoomUnavailable, match="not loaded"):
        await room.apply_update(update)
    with pytest.raises(RoomUnavailable):
        await room.sync_step1()
    with pytest.raises(RoomUnavailable):
        await room.compact()
    with pytest.raises(RoomUnavailable):
        await room.write_text("content", "")
    await room.close()  # closing an unloaded room writes nothing
    assert store.snapshot is not None and text_of(store.snapshot) == "precious"

    store.fail_load = False  # the database is back
    fixed = await loaded_room(store)
    assert fixed.read_text("content") == "precious"


async def test_a_corrupt_stored_update_fails_the_load_instead_of_being_skipped() -> None:
    store = MemoryUpdateStore()
    await store.append(Peer(1).edit(lambda t: t.insert(0, "ok")))
    await store.append(bytes.fromhex(FIXTURES["string"]["v2"]))
    room = DocumentRoom("doc", store)
    with pytest.raises(RoomUnavailable, match=r"logged update #2 .* is corrupt"):
        await room.load()
    assert room.state is RoomState.NEW


async def test_a_failed_append_breaks_the_room_and_nothing_unsaved_is_served() -> None:
    store = FaultyStore()
    room = await loaded_room(store)
    published: list[bytes] = []

    async def listener(event: str, payload: bytes, origin: str | None) -> None:
        published.append(payload)

    await room.subscribe(listener)
    alice = Peer(1)
    await room.apply_update(alice.edit(lambda t: t.insert(0, "saved ")))
    store.fail_append = True

    with pytest.raises(RoomUnavailable, match="could not persist"):
        await room.apply_update(alice.edit(lambda t: t.insert(6, "lost?")))

    assert room.state is RoomState.BROKEN
    assert len(published) == 1  # the unsaved change was never relayed
    with pytest.raises(RoomUnavailable, match="must be loaded again"):
        await room.sync_step2(b"\x00")
    # Reloading gives the durable view; the author still has the rest and re-sends it.
    store.fail_append = False
    await room.load()
    assert room.read_text("content") == "saved "
    await room.apply_update(alice.doc.get_update(await room.sync_step1()))
    assert room.read_text("content") == "saved lost?"


async def test_a_crash_between_snapshot_and_log_deletion_loses_nothing() -> None:
    store = FaultyStore()
    room = await loaded_room(store)
    alice = Peer(1)
    for word in ["one ", "two ", "three "]:
        await room.apply_update(alice.edit(lambda t, w=word: t.insert(len(t), w)))
    store.crash_after_snapshot = True

    with pytest.raises(StoreDown):
        await room.compact()
    await room.apply_update(alice.edit(lambda t: t.insert(len(t), "four")))

    assert store.snapshot is not None and len(store.updates) == 4  # both halves present
    reloaded = await loaded_room(store)
    assert reloaded.read_text("content") == "one two three four"
    store.crash_after_snapshot = False
    await reloaded.compact()
    assert store.updates == []
    assert (await loaded_room(store)).read_text("content") == "one two three four"


async def test_compaction_runs_every_n_updates_and_keeps_the_content() -> None:
    store = FaultyStore()
    room = await loaded_room(store, compact_every=3)
    alice = Peer(1)
    for i in range(7):
        await room.apply_update(alice.edit(lambda t, i=i: t.insert(len(t), str(i))))
    assert store.compactions == 2
    assert len(store.updates) == 1
    assert room.log_length == 1
    assert (await loaded_room(store)).read_text("content") == "0123456"


async def test_pending_updates_survive_compaction_and_restart() -> None:
    """Yrs leaves not-yet-integrable structs out of get_update(); the room must not."""
    store = MemoryUpdateStore()
    room = await loaded_room(store)
    alice, bob = Peer(1), Peer(2)
    base = alice.edit(lambda t: t.insert(0, "base"))
    bob.doc.apply_update(base)
    on_top = bob.edit(lambda t: t.insert(4, "+bob"))

    assert await room.apply_update(on_top) == b""  # depends on `base`: held pending
    assert room.pending_updates == 1
    await room.compact()
    restarted = await loaded_room(store)
    assert restarted.pending_updates == 1

    relay = await restarted.apply_update(base)
    assert restarted.read_text("content") == "base+bob"
    assert text_of(relay) == "base+bob"  # the relay carries the released structs too
    assert restarted.pending_updates == 0


async def test_pending_deletions_survive_restart() -> None:
    store = MemoryUpdateStore()
    room = await loaded_room(store)
    alice, bob = Peer(1), Peer(2)
    base = alice.edit(lambda t: t.insert(0, "abcdef"))
    bob.doc.apply_update(base)
    deletion = bob.edit(lambda t: t.__delitem__(slice(0, 3)))

    await room.apply_update(deletion)  # deletes structs the room has never seen
    await room.close()
    restarted = await loaded_room(store)
    await restarted.apply_update(base)
    assert restarted.read_text("content") == "def"


# ---------------------------------------------------------------- hub edits


async def test_hub_edits_are_persisted_and_published_like_a_clients() -> None:
    store = FaultyStore()
    room = await loaded_room(store)
    seen: list[tuple[str, bytes, str | None]] = []

    async def listener(event: str, payload: bytes, origin: str | None) -> None:
        seen.append((event, payload, origin))

    await room.subscribe(listener)
    client = Peer(1)
    client.doc.apply_update(await room.sync_step2(client.doc.get_state()))

    await room.write_text("content", "Hello from the hub")
    await room.insert_text("content", 5, ",")
    await room.delete_text("content", 0, 7)

    assert room.read_text("content") == "from the hub"
    assert [event for event, _, _ in seen] == [SYNC_UPDATE] * 3
    assert all(origin is None for _, _, origin in seen)
    for _, payload, _ in seen:
        client.doc.apply_update(payload)
    assert str(client.text) == "from the hub"
    assert store.appends == 3
    assert (await loaded_room(store)).read_text("content") == "from the hub"


async def test_write_text_touches_only_the_differing_span() -> None:
    room = await loaded_room()
    await room.write_text("content", "The quick brown fox")
    before = await room.sync_step1()
    update = await room.write_text("content", "The quick red fox")
    # A peer that typed at the end concurrently keeps its text.
    peer = Peer(9)
    peer.doc.apply_update(await room.sync_step2(b"\x00"))
    peer.doc.apply_update(update)
    assert str(peer.text) == "The quick red fox"
    assert before != await room.sync_step1()
    assert await room.write_text("content", "The quick red fox") == b""  # nothing to change


@pytest.mark.parametrize(
    ("start", "target"),
    [("a😀b", "a😀Xb"), ("ééé", "éXé"), ("😀😀", "😀"), ("", "日本語"), ("日本語", "")],
)
async def test_hub_edits_use_python_character_indices(start: str, target: str) -> None:
    # pycrdt indexes by UTF-8 byte; an unconverted index lands mid-character and
    # pycrdt silently puts the text somewhere else.
    room = await loaded_room()
    await room.write_text("content", start)
    await room.write_text("content", target)
    assert room.read_text("content") == target
    await room.insert_text("content", 1, "|")
    assert room.read_text("content") == target[:1] + "|" + target[1:]


async def test_the_hub_never_writes_text_into_a_map_or_rich_text_root() -> None:
    # Yjs sends no root types: the room must find out before its first edit, or
    # it would write characters into a client's Y.Map / ProseMirror XmlFragment.
    room = await loaded_room()
    client = pycrdt.Doc(client_id=3)
    client.get("props", type=pycrdt.Map)["title"] = "T"
    prosemirror = client.get("prosemirror", type=pycrdt.XmlFragment)
    prosemirror.children.append(pycrdt.XmlElement("paragraph"))
    styled = client.get("styled", type=pycrdt.Text)
    styled += "text with an embed "
    styled.insert_embed(5, {"image": "x.png"})
    await room.apply_update(client.get_update())

    for field, what in [("props", "Y.Map"), ("prosemirror", "shared types")]:
        with pytest.raises(ValidationError, match=what):
            await room.write_text(field, "oops")
        with pytest.raises(ValidationError):
            room.read_text(field)
    await room.insert_text("styled", 0, ">")  # text with embeds is still text
    assert room.read_text("styled").startswith(">text")


# ---------------------------------------------------------------- awareness, lifecycle


async def test_awareness_is_tracked_per_connection_and_removed_on_leave() -> None:
    clock = Clock()
    room = await loaded_room(clock=clock)
    seen: list[tuple[str, bytes, str | None]] = []

    async def listener(event: str, payload: bytes, origin: str | None) -> None:
        seen.append((event, payload, origin))

    await room.subscribe(listener)
    await room.join("sid-a")
    await room.join("sid-b")
    ada = encode_awareness_update([AwarenessEntry(11, 1, '{"name":"Ada"}')])
    bob = encode_awareness_update([AwarenessEntry(22, 1, '{"name":"Bob"}')])
    assert await room.apply_awareness(ada, "sid-a") == ada
    await room.apply_awareness(bob, "sid-b")
    assert room.awareness_states == {11: {"name": "Ada"}, 22: {"name": "Bob"}}
    assert {e.client_id for e in decode_awareness_update(await room.awareness_update())} == {
        11,
        22,
    }

    removal = await room.leave("sid-a")

    assert [e.client_id for e in decode_awareness_update(removal)] == [11]
    assert decode_awareness_update(removal)[0].removed
    assert room.awareness_states == {22: {"name": "Bob"}}
    assert seen[-1] == (AWARENESS_UPDATE, removal, "sid-a")
    assert room.connections == {"sid-b"}


async def test_awareness_of_silent_clients_expires() -> None:
    clock = Clock()
    room = await loaded_room(clock=clock)
    await room.apply_awareness(encode_awareness_update([AwarenessEntry(11, 1, "{}")]), "a")
    clock.now += 31
    removal = await room.expire_awareness(30.0)
    assert [e.client_id for e in decode_awareness_update(removal)] == [11]
    assert room.awareness_states == {}


async def test_idleness_counts_only_without_connections() -> None:
    clock = Clock()
    room = await loaded_room(clock=clock)
    await room.join("sid")
    clock.now += 100
    assert room.idle_for() == 0.0
    await room.leave("sid")
    clock.now += 5
    assert room.idle_for() == 5.0


async def test_close_compacts_and_the_room_refuses_afterwards() -> None:
    store = FaultyStore()
    room = await loaded_room(store)
    await room.apply_update(Peer(1).edit(lambda t: t.insert(0, "bye")))
    await room.close()
    assert store.compactions == 1 and store.updates == []
    with pytest.raises(RoomUnavailable, match="closed"):
        await room.apply_update(Peer(2).edit(lambda t: t.insert(0, "x")))
    with pytest.raises(RoomUnavailable):
        await room.load()
    assert await room.leave("anyone") == b""  # leaving never fails


# ---------------------------------------------------------------- group commit


async def test_concurrent_writers_share_store_writes_and_each_waits_for_its_own() -> None:
    store = SlowStore(delay=0.02)
    room = await loaded_room(store)
    published: list[bytes] = []

    async def listener(event: str, payload: bytes, origin: str | None) -> None:
        published.append(payload)

    await room.subscribe(listener)
    peers = [Peer(100 + i) for i in range(20)]
    updates = [p.edit(lambda t, i=i: t.insert(0, f"<{i}>")) for i, p in enumerate(peers)]

    async def write(update: bytes) -> None:
        relay = await room.apply_update(update)
        # Acknowledged only once the change is in the store (and relayed).
        assert any(stored == relay for _, stored in store.updates)
        assert relay in published

    await asyncio.gather(*(write(u) for u in updates))

    assert store.appends == 20
    assert store.batches < 20  # one write per batch, not per keystroke
    assert all(f"<{i}>" in room.read_text("content") for i in range(20))
    assert (await loaded_room(store)).read_text("content") == room.read_text("content")


async def test_a_failed_batch_fails_every_writer_in_it_and_leaks_nothing() -> None:
    store = SlowStore(delay=0.02)
    room = await loaded_room(store)
    published: list[bytes] = []

    async def listener(event: str, payload: bytes, origin: str | None) -> None:
        published.append(payload)

    await room.subscribe(listener)
    store.fail_append = True
    updates = [Peer(200 + i).edit(lambda t, i=i: t.insert(0, str(i))) for i in range(5)]
    results = await asyncio.gather(*(room.apply_update(u) for u in updates), return_exceptions=True)
    assert all(isinstance(r, RoomUnavailable) for r in results)
    assert published == [] and store.updates == []
    assert room.state is RoomState.BROKEN


async def test_a_write_that_waited_through_close_is_refused_not_appended_late() -> None:
    store = SlowStore(delay=0.02)
    room = await loaded_room(store)
    await room.apply_update(Peer(1).edit(lambda t: t.insert(0, "kept")))
    closing = asyncio.create_task(room.close())
    await asyncio.sleep(0)  # close holds the flush lock, compacting
    with pytest.raises(RoomUnavailable, match="closed"):
        await room.apply_update(Peer(2).edit(lambda t: t.insert(0, "late")))
    await closing
    assert store.snapshot is not None and text_of(store.snapshot) == "kept"
    assert store.updates == []
