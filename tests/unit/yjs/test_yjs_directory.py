"""LocalRoomDirectory: activation, passivation of idle rooms, the LRU cap."""

from __future__ import annotations

import asyncio

import pytest
from yjs_doubles import FaultyStore
from yjs_harness import eventually

from objectos.errors import ServiceUnavailable
from objectos.realtime.yjs import LocalRoomDirectory, RoomState, RoomUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowStore(FaultyStore):
    """Load takes a while, so concurrent first users overlap."""

    loads = 0

    async def load(self):  # type: ignore[no-untyped-def]
        SlowStore.loads += 1
        await asyncio.sleep(0.05)
        return await super().load()


def directory(**options) -> tuple[LocalRoomDirectory, dict[str, FaultyStore]]:  # type: ignore[no-untyped-def]
    stores: dict[str, FaultyStore] = {}
    rooms = LocalRoomDirectory(lambda name: stores.setdefault(name, FaultyStore()), **options)
    return rooms, stores


async def test_concurrent_first_users_share_one_activation() -> None:
    # pycrdt-websocket 0.16.5 raced here: simultaneous connections to a new room
    # started it several times and some never synced (bench/yjs README).
    SlowStore.loads = 0
    rooms = LocalRoomDirectory(lambda name: SlowStore())
    got = await asyncio.gather(*(rooms.get("doc") for _ in range(20)))
    assert all(room is got[0] for room in got)
    assert SlowStore.loads == 1
    await rooms.close()


async def test_a_failed_load_is_not_cached_and_the_next_get_retries() -> None:
    rooms, stores = directory()
    stores["doc"] = store = FaultyStore()
    store.fail_load = True
    with pytest.raises(RoomUnavailable):
        await rooms.get("doc")
    assert rooms.live_rooms == []
    store.fail_load = False
    room = await rooms.get("doc")
    assert room.loaded


async def test_a_broken_room_is_replaced_by_a_fresh_load() -> None:
    rooms, stores = directory()
    room = await rooms.get("doc")
    await room.write_text("content", "durable")
    stores["doc"].fail_append = True
    with pytest.raises(RoomUnavailable):
        await room.write_text("content", "durable and not")
    stores["doc"].fail_append = False

    fresh = await rooms.get("doc")

    assert fresh is not room and room.state is RoomState.CLOSED
    assert fresh.read_text("content") == "durable"


async def test_the_cap_passivates_the_least_recently_used_room_without_members() -> None:
    rooms, stores = directory(max_rooms=2)
    a = await rooms.get("a")
    await a.write_text("content", "kept in the store")
    b = await rooms.get("b")
    await b.join("sid-1")
    await rooms.get("a")  # a becomes the most recently used...

    await rooms.get("c")  # ...but b has a member, so a is the one to go

    assert rooms.live_rooms == ["b", "c"]
    assert a.state is RoomState.CLOSED
    assert (
        stores["a"].snapshot is not None and stores["a"].updates == []
    )  # compacted on the way out
    assert (await rooms.get("b")) is b
    assert (await rooms.get("a")).read_text("content") == "kept in the store"


async def test_the_cap_refuses_when_every_room_has_members() -> None:
    rooms, _ = directory(max_rooms=1)
    await (await rooms.get("a")).join("sid-1")
    with pytest.raises(ServiceUnavailable, match="max_rooms"):
        await rooms.get("b")


async def test_idle_rooms_are_passivated_and_rooms_with_members_are_not() -> None:
    clock = Clock()
    rooms, stores = directory(clock=clock, idle_timeout=60.0)
    quiet = await rooms.get("quiet")
    await quiet.write_text("content", "zzz")
    busy = await rooms.get("busy")
    await busy.join("sid-1")

    clock.now += 59
    assert await rooms.sweep() == []
    clock.now += 2
    assert await rooms.sweep() == ["quiet"]

    assert rooms.live_rooms == ["busy"]
    assert stores["quiet"].compactions == 1


async def test_the_sweeper_runs_in_the_background_while_started() -> None:
    clock = Clock()
    rooms, _ = directory(clock=clock, idle_timeout=1.0, sweep_interval=0.01)
    async with rooms:
        await rooms.get("doc")
        clock.now += 5
        await eventually(lambda: not rooms.live_rooms)
        with pytest.raises(RuntimeError, match="already started"):
            await rooms.start()
    assert rooms.live_rooms == []
