"""Presence: users counted once across tabs, statuses, heartbeats, snapshots on change."""

from __future__ import annotations

from typing import Any

import pytest

from objectos.errors import InvalidField
from objectos.realtime.presence import PresenceTracker

from .doubles import Gateways, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def gateways() -> Gateways:
    return Gateways()


@pytest.fixture
def tracker(gateways: Gateways, clock: ManualClock) -> PresenceTracker:
    return PresenceTracker(gateways.deliver, clock=clock, timeout_s=30)


def listed(tracker: PresenceTracker, room: str) -> list[tuple[str, str]]:
    return [(u.user_id, u.status) for u in tracker.snapshot(room).users]


def received(gateways: Gateways, connection: str) -> list[list[tuple[str, str]]]:
    """Each presence snapshot ``connection`` got, as ``[(userId, status), ...]``."""
    return [
        [(u["userId"], u["status"]) for u in payload["users"]]
        for name, payload in gateways.messages(connection)
        if name == "presence"
    ]


async def join(tracker: PresenceTracker, room: str, connection: str, user: str, **kw: Any) -> Any:
    return await tracker.join(
        room, connection_id=connection, user_id=user, gateway=kw.pop("gateway", "gw1"), **kw
    )


async def test_joining_users_see_each_other(tracker: PresenceTracker, gateways: Gateways) -> None:
    first = await join(tracker, "case/42", "a1", "alice")
    await join(tracker, "case/42", "b1", "bob", gateway="gw2")

    assert first.to_dict()["users"][0] == {
        "userId": "alice",
        "status": "online",
        "since": "2023-11-14T22:13:20.000Z",
    }
    assert received(gateways, "a1") == [
        [("alice", "online")],
        [("alice", "online"), ("bob", "online")],
    ]
    assert received(gateways, "b1") == [[("alice", "online"), ("bob", "online")]]
    assert [gateway for gateway, _ in gateways.calls] == ["gw1", "gw1", "gw2"]


async def test_a_user_with_several_tabs_counts_once_and_leaves_with_the_last(
    tracker: PresenceTracker, gateways: Gateways
) -> None:
    await join(tracker, "case/42", "watcher", "bob")
    await join(tracker, "case/42", "tab1", "alice")
    await join(tracker, "case/42", "tab2", "alice")

    assert listed(tracker, "case/42") == [("alice", "online"), ("bob", "online")]
    assert await tracker.leave("case/42", connection_id="tab1")
    assert listed(tracker, "case/42") == [("alice", "online"), ("bob", "online")]
    assert await tracker.disconnect("tab2") == 1
    assert listed(tracker, "case/42") == [("bob", "online")]
    # bob saw alice arrive once and leave once: her second tab changed nothing for him.
    assert received(gateways, "watcher") == [
        [("bob", "online")],
        [("alice", "online"), ("bob", "online")],
        [("bob", "online")],
    ]
    assert received(gateways, "tab2") == [[("alice", "online"), ("bob", "online")]]


async def test_the_most_present_status_of_a_users_tabs_is_shown(
    tracker: PresenceTracker, clock: ManualClock
) -> None:
    await join(tracker, "case", "tab1", "alice", status="away")
    await join(tracker, "case", "tab2", "alice", status="busy")
    assert listed(tracker, "case") == [("alice", "busy")]
    busy_since = tracker.snapshot("case").users[0].since

    clock.advance(5)
    await tracker.update("case", connection_id="tab1", status="online")
    assert listed(tracker, "case") == [("alice", "online")]
    assert tracker.snapshot("case").users[0].since > busy_since

    await tracker.update("case", connection_id="tab1", status="offline")
    assert listed(tracker, "case") == [("alice", "busy")]
    await tracker.update("case", connection_id="tab2", status="offline")
    assert listed(tracker, "case") == []  # invisible everywhere: not listed


async def test_snapshots_go_out_only_when_the_list_changes(
    tracker: PresenceTracker, gateways: Gateways, clock: ManualClock
) -> None:
    await join(tracker, "case", "a1", "alice")
    gateways.clear()

    clock.advance(1)
    await tracker.update("case", connection_id="a1", status="online")
    await tracker.heartbeat("a1")
    assert gateways.calls == []

    await tracker.update("case", connection_id="a1", status="away")
    assert received(gateways, "a1") == [[("alice", "away")]]


async def test_silent_connections_time_out(
    tracker: PresenceTracker, clock: ManualClock, gateways: Gateways
) -> None:
    await join(tracker, "case/42", "alive", "alice")
    await join(tracker, "case/42", "silent", "bob")
    await join(tracker, "case/7", "silent", "bob")

    clock.advance(20)
    await tracker.heartbeat("alive")
    clock.advance(20)  # alive was heard 20 s ago, silent 40 s ago
    assert await tracker.expire() == 1

    assert listed(tracker, "case/42") == [("alice", "online")]
    assert listed(tracker, "case/7") == []
    assert received(gateways, "alive")[-1] == [("alice", "online")]
    assert not await tracker.heartbeat("silent")  # unknown now: its gateway must join again
    assert await tracker.expire() == 0


async def test_active_users_per_object_and_per_record(tracker: PresenceTracker) -> None:
    await join(tracker, "case", "a1", "alice", status="away")
    await join(tracker, "case/42", "a2", "alice")
    await join(tracker, "case/7", "b1", "bob", status="busy")
    await join(tracker, "account/1", "c1", "carol")

    on_cases = [(u.user_id, u.status) for u in tracker.users_on_object("case")]
    on_42 = [(u.user_id, u.status) for u in tracker.users_on_record("case", "42")]

    assert on_cases == [("alice", "online"), ("bob", "busy")]
    assert on_42 == [("alice", "online")]
    assert tracker.rooms() == {"account/1": 1, "case": 1, "case/42": 1, "case/7": 1}
    await tracker.disconnect("c1")
    assert tracker.users_on_object("account") == []


async def test_a_gone_gateway_takes_its_connections_along(
    tracker: PresenceTracker, gateways: Gateways
) -> None:
    await join(tracker, "case", "a1", "alice", gateway="gw1")
    await join(tracker, "case", "b1", "bob", gateway="gw2")
    gateways.gone.add("gw2")

    await join(tracker, "case", "c1", "carol", gateway="gw1")

    assert listed(tracker, "case") == [("alice", "online"), ("carol", "online")]
    assert received(gateways, "a1")[-1] == [("alice", "online"), ("carol", "online")]
    assert tracker.connection_count() == 2


async def test_a_failing_publish_does_not_break_presence(
    tracker: PresenceTracker, gateways: Gateways
) -> None:
    gateways.failures["gw1"] = 1

    await join(tracker, "case", "a1", "alice")
    await join(tracker, "case", "b1", "bob")

    assert received(gateways, "a1") == [[("alice", "online"), ("bob", "online")]]


@pytest.mark.parametrize(
    ("room", "status", "connection", "user", "field"),
    [
        ("Case", "online", "c1", "alice", "room"),
        ("case/", "online", "c1", "alice", "room"),
        ("case/42/x", "online", "c1", "alice", "room"),
        (42, "online", "c1", "alice", "room"),
        ("case", "sleeping", "c1", "alice", "status"),
        ("case", "online", "", "alice", "connectionId"),
        ("case", "online", "c1", None, "userId"),
    ],
)
async def test_bad_presence_requests_name_the_field(
    tracker: PresenceTracker, room: Any, status: Any, connection: Any, user: Any, field: str
) -> None:
    with pytest.raises(InvalidField) as info:
        await tracker.join(
            room, connection_id=connection, user_id=user, gateway="gw1", status=status
        )

    assert info.value.details["field"] == field
    assert tracker.connection_count() == 0


async def test_a_connection_cannot_change_user_or_update_a_room_it_did_not_join(
    tracker: PresenceTracker,
) -> None:
    await join(tracker, "case", "c1", "alice")

    with pytest.raises(InvalidField) as other_user:
        await join(tracker, "case", "c1", "mallory")
    with pytest.raises(InvalidField) as not_joined:
        await tracker.update("account", connection_id="c1", status="away")

    assert other_user.value.details["field"] == "userId"
    assert not_joined.value.details["field"] == "room"
    assert listed(tracker, "case") == [("alice", "online")]
