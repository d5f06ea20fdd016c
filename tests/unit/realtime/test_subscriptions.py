"""Record subscriptions: who gets which event, with which fields, in which order, once."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from objectos.errors import InvalidField, InvalidFilter, ObjectNotFound
from objectos.realtime.subscriptions import SubscriptionRoom, SubscriptionSpec

from .conftest import Desk
from .doubles import ALICE, BOB, MANAGER, WRITER, HookedLog

PROTOCOL_KEYS = {
    "subscriptionId",
    "eventName",
    "object",
    "recordId",
    "record",
    "changedFields",
    "version",
    "cursor",
    "timestamp",
}


def spec(**payload: Any) -> SubscriptionSpec:
    return SubscriptionSpec.parse({"subscriptionId": "s1", "objects": ["ticket"], **payload})


async def subscribe(
    room: SubscriptionRoom,
    connection: str,
    actor: Any = ALICE,
    *,
    gateway: str = "gw1",
    **payload: Any,
) -> int:
    return await room.subscribe(
        spec(**payload), connection_id=connection, gateway=gateway, actor=actor
    )


async def new_ticket(desk: Desk, **fields: Any) -> dict[str, Any]:
    return await desk.data.insert(
        "ticket", {"subject": "Printer", "team": "support", **fields}, actor=WRITER
    )


async def test_a_subscriber_gets_each_change_once_in_order_in_the_protocol_shape(
    desk: Desk,
) -> None:
    room = desk.room()
    start = await subscribe(room, "c1")
    ticket = await new_ticket(desk, secret_note="vip")
    await desk.data.update("ticket", ticket["id"], {"status": "open"}, actor=WRITER)
    await desk.data.delete("ticket", ticket["id"], actor=WRITER)

    await desk.sync()

    assert desk.gateways.summary("c1") == [
        ("record.created", ticket["id"], start + 1),
        ("record.updated", ticket["id"], start + 2),
        ("record.deleted", ticket["id"], start + 3),
    ]
    created, updated, deleted = desk.gateways.events("c1")
    assert set(created) == PROTOCOL_KEYS
    assert created["subscriptionId"] == "s1" and created["object"] == "ticket"
    assert [created["version"], updated["version"], deleted["version"]] == [1, 2, 2]
    assert updated["changedFields"] == ["status"] and updated["record"]["status"] == "open"
    assert deleted["changedFields"] == [] and deleted["record"]["subject"] == "Printer"
    assert dt.datetime.fromisoformat(created["timestamp"]).tzinfo is not None


async def test_records_carry_only_fields_the_subscriber_may_read(desk: Desk) -> None:
    room = desk.room()
    await subscribe(room, "alice")
    await subscribe(room, "maria", MANAGER)

    await new_ticket(desk, secret_note="vip", pin="1234")
    await desk.sync()

    (for_alice,) = desk.gateways.events("alice")
    (for_maria,) = desk.gateways.events("maria")
    assert "secret_note" not in for_alice["record"]
    assert "secret_note" not in for_alice["changedFields"]
    assert for_maria["record"]["secret_note"] == "vip"
    assert "pin" not in for_maria["record"]  # passwords never leave the engine


async def test_a_subscriber_sees_only_records_it_may_read(desk: Desk) -> None:
    room = desk.room()
    await subscribe(room, "alice", ALICE)
    await subscribe(room, "bob", BOB)
    await subscribe(room, "maria", MANAGER)

    support = await new_ticket(desk, team="support")
    sales = await new_ticket(desk, team="sales")
    await desk.sync()

    assert [e["recordId"] for e in desk.gateways.events("alice")] == [support["id"]]
    assert [e["recordId"] for e in desk.gateways.events("bob")] == [sales["id"]]
    assert [e["recordId"] for e in desk.gateways.events("maria")] == [support["id"], sales["id"]]


async def test_a_delete_goes_only_to_those_who_could_read_the_record_before_it(
    desk: Desk,
) -> None:
    room = desk.room()
    ticket = await new_ticket(desk, team="support")
    await desk.data.update("ticket", ticket["id"], {"team": "sales"}, actor=WRITER)
    await subscribe(room, "alice", ALICE)
    await subscribe(room, "bob", BOB)

    await desk.data.delete("ticket", ticket["id"], actor=WRITER)
    await desk.sync()

    assert desk.gateways.summary("alice") == []
    assert [e["eventName"] for e in desk.gateways.events("bob")] == ["record.deleted"]


async def test_only_the_events_asked_for_with_one_field_changed_per_readable_field(
    desk: Desk,
) -> None:
    room = desk.room()
    ticket = await new_ticket(desk)
    await subscribe(room, "alice", events=["field.changed"])
    await subscribe(room, "maria", MANAGER, events=["record.updated", "field.changed"])

    changes = {"subject": "Printer (2nd floor)", "status": "open", "secret_note": "vip"}
    await desk.data.update("ticket", ticket["id"], changes, actor=WRITER)
    await desk.data.delete("ticket", ticket["id"], actor=WRITER)
    await desk.sync()

    alice = desk.gateways.events("alice")
    assert [(e["eventName"], e["changedFields"]) for e in alice] == [
        ("field.changed", ["status"]),
        ("field.changed", ["subject"]),
    ]
    maria = desk.gateways.events("maria")
    assert [(e["eventName"], e["changedFields"]) for e in maria] == [
        ("record.updated", ["secret_note", "status", "subject"]),
        ("field.changed", ["secret_note"]),
        ("field.changed", ["status"]),
        ("field.changed", ["subject"]),
    ]
    assert len({e["cursor"] for e in maria}) == 1  # one change, one cursor


async def test_an_update_of_only_unreadable_fields_is_not_sent(desk: Desk) -> None:
    room = desk.room()
    ticket = await new_ticket(desk)
    await subscribe(room, "alice")
    await subscribe(room, "maria", MANAGER)

    await desk.data.update("ticket", ticket["id"], {"secret_note": "vip"}, actor=WRITER)
    await desk.sync()

    assert desk.gateways.events("alice") == []
    assert [e["changedFields"] for e in desk.gateways.events("maria")] == [["secret_note"]]


async def test_each_subscriber_has_its_own_filter(desk: Desk) -> None:
    room = desk.room()
    await subscribe(room, "open", MANAGER, filter={"status": "open"})
    await subscribe(
        room, "urgent", MANAGER, filter=[["priority", ">=", 5], "or", ["tags", "=", "urgent"]]
    )

    quiet = await new_ticket(desk, status="open", priority=1)
    loud = await new_ticket(desk, status="new", priority=9)
    tagged = await new_ticket(desk, status="new", tags=["urgent"])
    await desk.sync()

    assert [e["recordId"] for e in desk.gateways.events("open")] == [quiet["id"]]
    assert [e["recordId"] for e in desk.gateways.events("urgent")] == [loud["id"], tagged["id"]]


async def test_a_filter_may_not_name_a_field_the_subscriber_may_not_read(desk: Desk) -> None:
    room = desk.room()

    with pytest.raises(InvalidField) as info:
        await subscribe(room, "alice", filter={"secret_note": {"$contains": "vip"}})
    await subscribe(room, "maria", MANAGER, filter={"secret_note": {"$contains": "vip"}})

    assert info.value.details["field"] == "secret_note"
    assert room.subscriber_count == 1


async def test_events_for_one_gateway_travel_in_one_batch(desk: Desk) -> None:
    room = desk.room()
    for connection in ("a", "b", "c"):
        await subscribe(room, connection, gateway="gw1")
    await subscribe(room, "d", gateway="gw2")

    for n in range(3):
        await new_ticket(desk, subject=f"Ticket {n}")
    await desk.sync()

    assert [gateway for gateway, _ in desk.gateways.calls] == ["gw1", "gw2"]
    gw1 = desk.gateways.calls[0][1]
    assert [d.connection_id for d in gw1.deliveries] == ["a", "b", "c"]
    assert [len(d.events) for d in gw1.deliveries] == [3, 3, 3]
    assert gw1.cursor == max(e.cursor for e in gw1.deliveries[0].events)


async def test_without_since_a_subscription_starts_at_the_newest_version(desk: Desk) -> None:
    room = desk.room()
    await new_ticket(desk, subject="Before")
    await desk.sync()

    cursor = await subscribe(room, "c1")
    later = await new_ticket(desk, subject="After")
    await desk.sync()

    assert cursor == 1
    assert desk.gateways.summary("c1") == [("record.created", later["id"], 2)]


async def test_a_reconnect_with_since_gets_what_it_missed_then_live_events(desk: Desk) -> None:
    log = HookedLog(desk.data.change_log)
    room = desk.room(log=log)
    await subscribe(room, "first")
    one = await new_ticket(desk, subject="one")
    await desk.sync()
    last_seen = desk.gateways.events("first")[-1]["cursor"]
    room.disconnect("first")
    two = await new_ticket(desk, subject="two")
    three = await new_ticket(desk, subject="three")
    await desk.sync()

    async def commit_during_replay() -> None:
        # Lands after the replay read its page: only the push brings it.
        desk.extra = await new_ticket(desk, subject="four")  # type: ignore[attr-defined]
        await desk.sync()

    log.hook = commit_during_replay
    acknowledged = await subscribe(room, "again", since=last_seen)
    five = await new_ticket(desk, subject="five")
    await desk.sync()

    four = desk.extra  # type: ignore[attr-defined]
    assert [e["recordId"] for e in desk.gateways.events("first")] == [one["id"]]
    assert desk.gateways.summary("again") == [
        ("record.created", two["id"], 2),
        ("record.created", three["id"], 3),
        ("record.created", four["id"], 4),
        ("record.created", five["id"], 5),
    ]
    assert acknowledged == 4


async def test_a_change_both_replayed_and_pushed_is_delivered_once(desk: Desk) -> None:
    log = HookedLog(desk.data.change_log, before=True)
    room = desk.room(log=log)
    await subscribe(room, "watcher")  # keeps the room registered with the feed
    missed = await new_ticket(desk, subject="missed")

    async def commit_before_the_replay_reads() -> None:
        # Pushed to the room (backlog) *and* read by the replay that follows.
        desk.extra = await new_ticket(desk, subject="both ways")  # type: ignore[attr-defined]
        await desk.sync()

    log.hook = commit_before_the_replay_reads
    await subscribe(room, "again", since=0)
    await desk.sync()

    both = desk.extra  # type: ignore[attr-defined]
    assert desk.gateways.summary("again") == [
        ("record.created", missed["id"], 1),
        ("record.created", both["id"], 2),
    ]


async def test_one_room_for_several_objects_replays_and_streams_in_server_order(
    desk: Desk,
) -> None:
    room = desk.room("sse", objects=None)
    await room.subscribe(
        SubscriptionSpec.parse({"subscriptionId": "s", "objects": ["ticket", "note"]}),
        connection_id="live",
        gateway="sse",
        actor=ALICE,
    )
    await new_ticket(desk)
    await desk.data.insert("note", {"body": "called back", "team": "support"}, actor=WRITER)
    await new_ticket(desk)
    await desk.sync()
    await room.subscribe(
        SubscriptionSpec.parse({"subscriptionId": "s", "objects": ["ticket", "note"], "since": 0}),
        connection_id="replayed",
        gateway="sse",
        actor=ALICE,
    )

    expected = [("ticket", 1), ("note", 2), ("ticket", 3)]
    for connection in ("live", "replayed"):
        events = desk.gateways.events(connection)
        assert [(e["object"], e["cursor"]) for e in events] == expected


@pytest.mark.parametrize("since", [99, "99"])
async def test_a_since_ahead_of_the_server_is_refused(desk: Desk, since: Any) -> None:
    room = desk.room()
    await new_ticket(desk)

    with pytest.raises(InvalidField) as info:
        await subscribe(room, "c1", since=since)

    assert info.value.details["field"] == "since"
    assert room.subscriber_count == 0


async def test_a_since_older_than_the_retained_log_is_refused(desk: Desk) -> None:
    room = desk.room()
    await new_ticket(desk)
    await new_ticket(desk)
    await desk.data.change_log.prune(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))

    with pytest.raises(InvalidField) as info:
        await subscribe(room, "c1", since=0)
    cursor = await subscribe(room, "c1", since=2)  # nothing after it is missing

    assert info.value.details["field"] == "since" and info.value.details["expired"]
    assert cursor == 2


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], "subscription"),
        ({"objects": ["ticket"]}, "subscriptionId"),
        ({"subscriptionId": "", "objects": ["ticket"]}, "subscriptionId"),
        ({"subscriptionId": "s", "objects": []}, "objects"),
        ({"subscriptionId": "s", "objects": ["Ticket; drop"]}, "objects"),
        ({"subscriptionId": "s", "objects": ["ticket"], "events": ["record.moved"]}, "events"),
        ({"subscriptionId": "s", "objects": ["ticket"], "events": []}, "events"),
        ({"subscriptionId": "s", "objects": ["ticket"], "since": -1}, "since"),
        ({"subscriptionId": "s", "objects": ["ticket"], "since": True}, "since"),
        ({"subscriptionId": "s", "objects": ["ticket"], "since": "later"}, "since"),
        ({"subscriptionId": "s", "objects": ["ticket"], "sinse": 3}, "sinse"),
    ],
)
def test_a_bad_subscribe_payload_names_the_field(payload: Any, field: str) -> None:
    with pytest.raises(InvalidField) as info:
        SubscriptionSpec.parse(payload)

    assert info.value.details["field"] == field
    assert info.value.field_errors[0].field == field
    assert info.value.status == 400


def test_a_bad_filter_in_a_payload_is_an_invalid_filter() -> None:
    with pytest.raises(InvalidFilter):
        SubscriptionSpec.parse({"subscriptionId": "s", "objects": ["ticket"], "filter": {"$or": 1}})


async def test_objects_the_room_does_not_serve_or_that_do_not_exist_are_refused(
    desk: Desk,
) -> None:
    ticket_room = desk.room()
    any_room = desk.room("any", objects=None)

    with pytest.raises(InvalidField) as info:
        await subscribe(ticket_room, "c1", objects=["note"])
    with pytest.raises(ObjectNotFound):
        await subscribe(any_room, "c1", objects=["invoice"])

    assert info.value.details["field"] == "objects"


async def test_unsubscribe_and_disconnect_stop_the_events(desk: Desk) -> None:
    room = desk.room()
    await subscribe(room, "c1")
    await room.subscribe(spec(subscriptionId="s2"), connection_id="c1", gateway="gw1", actor=ALICE)
    await subscribe(room, "c2")
    await new_ticket(desk)
    await desk.sync()

    assert await room.unsubscribe("c1", "s2")
    assert not await room.unsubscribe("c1", "s2")
    assert room.disconnect("c2") == 1
    await new_ticket(desk)
    await desk.sync()

    assert [e["subscriptionId"] for e in desk.gateways.events("c1")] == ["s1", "s2", "s1"]
    assert len(desk.gateways.events("c2")) == 1


async def test_a_gone_gateway_loses_its_subscribers_and_a_busy_one_is_retried(desk: Desk) -> None:
    room = desk.room(retry_delay_s=0)
    await subscribe(room, "c1", gateway="gw1")
    await subscribe(room, "c2", gateway="gw2")
    desk.gateways.gone.add("gw2")
    desk.gateways.failures["gw1"] = 2

    ticket = await new_ticket(desk)
    await desk.sync()

    assert desk.gateways.summary("c1") == [("record.created", ticket["id"], 1)]
    assert [s["connectionId"] for s in room.subscriptions()] == ["c1"]


async def test_a_gateway_that_keeps_failing_loses_its_subscribers(desk: Desk) -> None:
    room = desk.room(retry_delay_s=0, delivery_attempts=3)
    await subscribe(room, "c1", gateway="gw1")
    desk.gateways.failures["gw1"] = 3

    await new_ticket(desk)
    await desk.sync()

    assert room.subscriber_count == 0
    assert desk.gateways.events() == []


async def test_pushes_seen_before_are_ignored(desk: Desk) -> None:
    room = desk.room()
    await subscribe(room, "c1")
    await new_ticket(desk)
    entries = (await desk.data.change_log.since(0)).changes

    await room.push(entries)
    await room.push(entries)  # an at-least-once feed may send a page again

    assert len(desk.gateways.events("c1")) == 1


async def test_a_room_the_feed_forgot_reads_what_it_missed_from_the_log(desk: Desk) -> None:
    room = desk.room()
    await subscribe(room, "c1")
    desk.feed.unregister(room.name)  # as after a feed restart
    missed = await new_ticket(desk, subject="missed")
    await desk.sync()
    assert desk.gateways.events("c1") == []

    registration = await room.attach()
    later = await new_ticket(desk, subject="later")
    await desk.sync()

    assert registration is not None and not registration.known
    assert desk.gateways.summary("c1") == [
        ("record.created", missed["id"], 1),
        ("record.created", later["id"], 2),
    ]
    assert (await room.attach()).known  # type: ignore[union-attr]
