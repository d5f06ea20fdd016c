"""The change feed: reads the log, dispatches in server order, at least once, nudged or polling."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from objectos.data import ChangeEntry, DataEngine
from objectos.realtime.feed import (
    Backoff,
    ChangeFeed,
    DispatchFailed,
    NudgeOnCommit,
    TargetGone,
)

from .doubles import WRITER, HookedLog


class Targets:
    """A dispatch that records ``(target, [seq, ...])`` and fails on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.failing: dict[str, int] = {}
        self.gone: set[str] = set()
        self.during: dict[str, Any] = {}
        self.arrived = asyncio.Event()

    async def dispatch(self, target: str, entries: Sequence[ChangeEntry]) -> None:
        if target in self.gone:
            raise TargetGone(target)
        if self.failing.get(target, 0):
            self.failing[target] -= 1
            raise ConnectionError(f"{target} is restarting")
        self.calls.append((target, [e.seq for e in entries]))
        action = self.during.pop(target, None)
        if action is not None:
            action()
        self.arrived.set()

    def seqs(self, target: str) -> list[int]:
        return [seq for t, seqs in self.calls if t == target for seq in seqs]


async def write(data: DataEngine, obj: str, n: int = 1) -> None:
    for _ in range(n):
        fields = {"subject": "Printer"} if obj == "ticket" else {"body": "Called back"}
        await data.insert(obj, fields, actor=WRITER)


async def drain(feed: ChangeFeed) -> None:
    while await feed.poll():
        pass


async def test_runs_are_dispatched_in_server_order_across_targets(data: DataEngine) -> None:
    targets = Targets()
    feed = ChangeFeed(data.change_log, targets.dispatch, cursor=0)
    feed.register("tickets", ["ticket"])
    feed.register("notes", ["note"])
    feed.register("everything", ["ticket", "note"])
    for obj in ("ticket", "ticket", "note", "ticket"):
        await write(data, obj)

    await drain(feed)

    assert targets.calls == [
        ("everything", [1, 2]),
        ("tickets", [1, 2]),
        ("everything", [3]),
        ("notes", [3]),
        ("everything", [4]),
        ("tickets", [4]),
    ]
    assert feed.cursor == 4


async def test_unwanted_objects_are_read_past(data: DataEngine) -> None:
    targets = Targets()
    feed = ChangeFeed(data.change_log, targets.dispatch, cursor=0)
    feed.register("tickets", ["ticket"])
    for obj in ("ticket", "note", "ticket"):
        await write(data, obj)

    await drain(feed)

    assert targets.calls == [("tickets", [1, 3])]  # one run: the note in between is skipped
    assert feed.cursor == 3


async def test_a_target_registered_mid_page_gets_everything_after_its_horizon(
    data: DataEngine,
) -> None:
    targets = Targets()
    log = HookedLog(data.change_log, only_replays=False)
    feed = ChangeFeed(log, targets.dispatch, cursor=0)
    feed.register("early", ["ticket"])
    await write(data, "ticket", 2)
    registrations: dict[str, Any] = {}

    # While the first page is read, and while it is being dispatched:
    async def register_during_read() -> None:
        registrations["reading"] = feed.register("reading", ["ticket"])

    log.hook = register_during_read
    targets.during["early"] = lambda: registrations.setdefault(
        "dispatching", feed.register("dispatching", ["ticket"])
    )
    await drain(feed)
    await write(data, "ticket")
    await drain(feed)

    for name in ("reading", "dispatching"):
        horizon = registrations[name].horizon
        assert targets.seqs(name) == [seq for seq in (1, 2, 3) if seq > horizon]
    assert registrations["reading"].horizon == 0
    assert registrations["dispatching"].horizon == 2


async def test_a_failed_dispatch_is_retried_with_the_whole_page(data: DataEngine) -> None:
    targets = Targets()
    feed = ChangeFeed(data.change_log, targets.dispatch, cursor=0)
    feed.register("a", ["ticket"])
    feed.register("b", ["ticket"])
    await write(data, "ticket", 2)
    targets.failing["b"] = 1

    with pytest.raises(DispatchFailed) as info:
        await feed.poll()
    assert feed.cursor == 0 and set(info.value.failures) == {"b"}
    await drain(feed)

    assert targets.seqs("a") == [1, 2, 1, 2]  # at least once: "a" drops what it has seen
    assert targets.seqs("b") == [1, 2]
    assert feed.cursor == 2


async def test_a_target_that_keeps_failing_is_dropped_and_the_feed_moves_on(
    data: DataEngine,
) -> None:
    targets = Targets()
    feed = ChangeFeed(data.change_log, targets.dispatch, cursor=0, max_attempts=2)
    feed.register("flaky", ["ticket"])
    feed.register("steady", ["ticket"])
    await write(data, "ticket")
    targets.failing["flaky"] = 10

    with pytest.raises(DispatchFailed):
        await feed.poll()
    await feed.poll()

    assert feed.targets() == {"steady": ["ticket"]}
    assert feed.cursor == 1
    assert not feed.register("flaky", ["ticket"]).known  # it must catch up by itself


async def test_a_gone_target_is_forgotten_at_once(data: DataEngine) -> None:
    targets = Targets()
    feed = ChangeFeed(data.change_log, targets.dispatch, cursor=0)
    feed.register("passivated", ["ticket"])
    targets.gone.add("passivated")
    await write(data, "ticket")

    await drain(feed)

    assert feed.targets() == {}
    assert feed.cursor == 1


async def test_unregistering_some_objects_keeps_the_others(data: DataEngine) -> None:
    feed = ChangeFeed(data.change_log, Targets().dispatch, cursor=0)
    feed.register("sse", ["ticket", "note"])

    assert feed.unregister("sse", ["note"])
    assert feed.targets() == {"sse": ["ticket"]}
    assert feed.unregister("sse")
    assert not feed.unregister("sse")


async def test_a_started_feed_begins_at_the_newest_change_and_starts_once(
    data: DataEngine,
) -> None:
    targets = Targets()
    await write(data, "ticket")
    feed = ChangeFeed(data.change_log, targets.dispatch)
    feed.register("t", ["ticket"])

    async with feed:
        assert feed.cursor == 1
        with pytest.raises(RuntimeError):
            await feed.start()
        await write(data, "ticket")
        feed.nudge()
        await asyncio.wait_for(targets.arrived.wait(), 10)

    assert targets.calls == [("t", [2])]
    assert not feed.running


async def test_an_idle_feed_looks_at_once_when_nudged(data: DataEngine) -> None:
    targets = Targets()
    hour = Backoff(3600, 3600)
    feed = ChangeFeed(data.change_log, targets.dispatch, cursor=0, idle=hour)
    feed.register("t", ["ticket"])

    async with feed:
        await asyncio.sleep(0)  # let it poll once and settle into its hour-long wait
        await write(data, "ticket")
        feed.nudge()
        await asyncio.wait_for(targets.arrived.wait(), 10)

    assert targets.seqs("t") == [1]


async def test_after_commit_hooks_nudge_the_feed(data: DataEngine) -> None:
    targets = Targets()
    feed = ChangeFeed(data.change_log, targets.dispatch, cursor=0, idle=Backoff(3600, 3600))
    feed.register("t", ["ticket"])
    data.hooks = NudgeOnCommit(feed.nudge)

    async with feed:
        await asyncio.sleep(0)
        await write(data, "ticket")
        await asyncio.wait_for(targets.arrived.wait(), 10)

    assert targets.seqs("t") == [1]


async def test_nudge_on_commit_wraps_other_hooks_and_ignores_reads() -> None:
    seen: list[str] = []
    nudges: list[str] = []

    class Inner:
        async def run_before(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
            seen.append(event)
            return {**payload, "touched": True}

        async def run_after(self, event: str, payload: dict[str, Any]) -> None:
            seen.append(event)

        async def close(self) -> None:
            seen.append("closed")

    async def nudge() -> None:
        nudges.append("nudge")

    hooks = NudgeOnCommit(nudge, Inner())
    payload = await hooks.run_before("data.beforeInsert.ticket", {})
    await hooks.run_after("data.afterFind.ticket", {})
    await hooks.run_after("data.afterInsert.ticket", {})
    await hooks.run_after("data.afterDelete.ticket", {})
    await hooks.close()

    assert payload == {"touched": True}
    assert seen == [
        "data.beforeInsert.ticket",
        "data.afterFind.ticket",
        "data.afterInsert.ticket",
        "data.afterDelete.ticket",
        "closed",
    ]
    assert nudges == ["nudge", "nudge"]


async def test_nudges_that_arrive_while_one_is_in_flight_coalesce_into_one_more() -> None:
    release = asyncio.Event()
    nudges: list[int] = []

    async def slow_nudge() -> None:
        nudges.append(len(nudges))
        await release.wait()

    hooks = NudgeOnCommit(slow_nudge)
    first = asyncio.create_task(hooks.run_after("data.afterInsert.ticket", {}))
    await asyncio.sleep(0)
    for _ in range(5):
        await hooks.run_after("data.afterUpdate.ticket", {})
    release.set()
    await first
    await hooks.close()  # waits for the nudge in flight and the one it owes

    assert nudges == [0, 1]


async def test_the_nudge_does_not_wait_behind_inner_after_hooks() -> None:
    room = asyncio.Event()  # the inner hooks' queue is full until this is set
    queued: list[str] = []
    nudged = asyncio.Event()

    class Backpressure:
        async def run_before(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
            return payload

        async def run_after(self, event: str, payload: dict[str, Any]) -> None:
            await room.wait()
            queued.append(event)

    hooks = NudgeOnCommit(nudged.set, Backpressure())
    write = asyncio.create_task(hooks.run_after("data.afterInsert.ticket", {}))

    await asyncio.wait_for(nudged.wait(), 5)  # nudged while the inner hooks still wait
    assert queued == [] and not write.done()
    room.set()
    await write
    assert queued == ["data.afterInsert.ticket"]


async def test_a_nudge_in_flight_never_delays_the_write() -> None:
    release = asyncio.Event()
    nudges: list[str] = []

    async def slow_nudge() -> None:
        nudges.append("nudge")
        await release.wait()

    hooks = NudgeOnCommit(slow_nudge)
    await asyncio.wait_for(hooks.run_after("data.afterInsert.ticket", {}), 5)
    await asyncio.sleep(0)
    assert nudges == ["nudge"]  # sent, still in flight, and the write went on
    release.set()
    await hooks.close()


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = Backoff(0.05, 0.3)

    delays = [backoff.next() for _ in range(5)]
    backoff.reset()

    assert delays == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert backoff.next() == 0.05
    with pytest.raises(ValueError):
        Backoff(0, 1)
