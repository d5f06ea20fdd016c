"""Record rooms, presence shards and the change feed as Ray actors on the session Ray.

Writes go through a real DataEngine in this process (a SQLite file); the feed
actor tails that file's change log; batches land in a collector actor that plays
the gateway (``gateway:test-...``), exactly where a Socket.IO gateway would emit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from objectos.data import Actor, BatchOperation, DataEngine, create_engine
from objectos.errors import InvalidField
from objectos.metadata import MetadataRegistry
from objectos.realtime.feed import NudgeOnCommit

TICKET = {
    "name": "ticket",
    "fields": {
        "subject": {"type": "text"},
        "team": {"type": "text"},
        "secret_note": {"type": "text"},
    },
}
NOTE = {"name": "note", "fields": {"body": {"type": "text"}, "team": {"type": "text"}}}
ALICE = Actor.user("alice", ["support"])
BOB = Actor.user("bob", ["sales"])
WRITER = Actor.system_actor("writer")


class TeamVisibility:
    """Users read their team's records; nobody but managers reads ``secret_note``."""

    def can_read(self, actor: Actor, object_name: str, record: Any) -> bool:
        return "manager" in actor.roles or record.get("team") in actor.roles

    def readable_fields(self, actor: Actor, object_name: str) -> set[str]:
        fields = {"id", "subject", "team", "body", "version", "owner", "created_at", "updated_at"}
        return fields | ({"secret_note"} if "manager" in actor.roles else set())


class Collector:
    """A stand-in gateway actor: keeps every batch it is handed."""

    def __init__(self) -> None:
        self.batches: list[Any] = []

    def deliver_records(self, batch: Any) -> None:
        self.batches.append(batch)

    def messages(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [m for batch in self.batches for m in batch.messages()]

    def batch_sizes(self) -> list[int]:
        return [len(list(batch.messages())) for batch in self.batches]


async def eventually(probe: Callable[[], Awaitable[Any]], within_s: float = 60.0) -> Any:
    """Await ``probe()`` until it returns something truthy; fail after ``within_s``."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached within {within_s}s (last: {last!r})")


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('realtime') / 'hub.db'}"


@pytest.fixture(scope="module")
def feed(ray_session: Any, database: str) -> Iterator[Any]:
    """The change feed actor of this module (idle polling capped at 1 s)."""
    from actors.factory import get_named_actor, get_or_create_change_feed

    handle = get_or_create_change_feed(database, idle_max_s=1.0)
    yield handle
    for name in ("feed:changes", "room:records:ticket", "room:records:note", "presence:0"):
        actor = get_named_actor(name)
        if actor is not None:
            ray_session.kill(actor, no_restart=True)


@pytest.fixture
async def data(feed: Any, database: str) -> AsyncIterator[DataEngine]:
    """A DataEngine on the module's database whose commits nudge the feed actor."""
    engine = create_engine(database)
    data = DataEngine(
        engine,
        MetadataRegistry.from_objects([TICKET, NOTE]),
        hooks=NudgeOnCommit(lambda: feed.nudge.remote()),
    )
    await data.migrate()
    yield data
    await engine.dispose()


@pytest.fixture
def gateway(ray_session: Any) -> Iterator[tuple[str, Any]]:
    """A collector actor registered under a gateway name: ``(name, handle)``."""
    name = f"gateway:test-{uuid.uuid4().hex[:8]}"
    handle = (
        ray_session.remote(Collector).options(name=name, namespace="objectos", num_cpus=0).remote()
    )
    yield name, handle
    ray_session.kill(handle)


async def test_a_subscriber_gets_batches_of_what_the_data_engine_commits(
    data: DataEngine, gateway: tuple[str, Any]
) -> None:
    from actors.factory import get_record_room
    from actors.realtime import subscribe_records

    name, collector = gateway
    columns = {"ticket": data.tables.columns("ticket")}
    subscribe = {"subscriptionId": "mine", "objects": ["ticket"], "events": ["record.*"]}
    ack = await subscribe_records(
        subscribe,
        connection_id="c-alice",
        gateway=name,
        actor=ALICE,
        visibility=TeamVisibility(),
        columns=columns,
    )
    await subscribe_records(
        subscribe,
        connection_id="c-bob",
        gateway=name,
        actor=BOB,
        visibility=TeamVisibility(),
        columns=columns,
    )
    assert ack["ok"] and ack["rooms"] == ["room:records:ticket"]

    await data.batch(
        "ticket",
        [
            BatchOperation(
                "create", {"subject": f"Printer {n}", "team": "support", "secret_note": "x"}
            )
            for n in range(3)
        ],
        actor=WRITER,
        all_or_none=True,
    )

    async def three_events() -> list[Any]:
        messages = await collector.messages.remote()
        return messages if len(messages) == 3 else []

    messages = await eventually(three_events)
    assert {connection for connection, _, _ in messages} == {"c-alice"}  # bob: not his team
    assert [payload["cursor"] for _, _, payload in messages] == [
        ack["cursor"] + n for n in (1, 2, 3)
    ]
    assert all("secret_note" not in payload["record"] for _, _, payload in messages)
    assert await collector.batch_sizes.remote() == [3]  # one transaction, one batch

    room = get_record_room("ticket")
    status = await room.status.remote()
    assert {s["connectionId"] for s in status["subscriptions"]} == {"c-alice", "c-bob"}


async def test_a_reconnect_with_since_replays_through_the_room_actor(
    data: DataEngine, gateway: tuple[str, Any]
) -> None:
    from actors.realtime import subscribe_records, unsubscribe_records

    name, collector = gateway
    payload = {"subscriptionId": "s", "objects": ["ticket"]}
    first = await subscribe_records(
        payload, connection_id="before", gateway=name, actor=ALICE, visibility=TeamVisibility()
    )
    assert await unsubscribe_records(first["rooms"], connection_id="before") == 1  # disconnect
    missed = [
        await data.insert("ticket", {"subject": f"While away {n}", "team": "support"}, actor=WRITER)
        for n in range(2)
    ]

    again = await subscribe_records(
        {**payload, "since": first["cursor"]},
        connection_id="after",
        gateway=name,
        actor=ALICE,
        visibility=TeamVisibility(),
    )
    live = await data.insert("ticket", {"subject": "Live", "team": "support"}, actor=WRITER)

    async def three_for_after() -> list[str]:
        ids = [p["recordId"] for c, _, p in await collector.messages.remote() if c == "after"]
        return ids if len(ids) == 3 else []

    assert await eventually(three_for_after) == [missed[0]["id"], missed[1]["id"], live["id"]]
    assert again["cursor"] == first["cursor"] + 2


async def test_bad_subscriptions_fail_with_the_protocol_error(
    data: DataEngine, gateway: tuple[str, Any]
) -> None:
    from actors.factory import get_or_create_record_room

    name, _ = gateway
    room = get_or_create_record_room("ticket", visibility=TeamVisibility())

    with pytest.raises(InvalidField) as info:
        await room.subscribe.remote(
            {"subscriptionId": "s", "objects": ["ticket"], "filter": {"secret_note": "x"}},
            "c1",
            name,
            ALICE,
        )

    assert info.value.details["field"] == "secret_note"
    assert info.value.code == "invalid_field"


async def test_an_idle_room_passivates_and_comes_back_on_the_next_subscribe(
    data: DataEngine, gateway: tuple[str, Any], feed: Any
) -> None:
    from actors.factory import get_record_room
    from actors.realtime import subscribe_records, unsubscribe_records

    name, collector = gateway
    payload = {"subscriptionId": "s", "objects": ["note"]}
    ack = await subscribe_records(
        payload,
        connection_id="c1",
        gateway=name,
        actor=ALICE,
        visibility=TeamVisibility(),
        idle_s=0.5,
        attach_interval_s=0.2,
    )
    assert await unsubscribe_records(ack["rooms"], connection_id="c1", subscription_id="s") == 1

    async def room_gone() -> bool:
        targets = (await feed.status.remote())["targets"]
        return get_record_room("note") is None and "room:records:note" not in targets

    await eventually(room_gone)
    await subscribe_records(
        payload, connection_id="c2", gateway=name, actor=ALICE, visibility=TeamVisibility()
    )
    note = await data.insert("note", {"body": "Called back", "team": "support"}, actor=WRITER)

    async def delivered() -> list[str]:
        return [p["recordId"] for c, _, p in await collector.messages.remote() if c == "c2"]

    assert await eventually(delivered) == [note["id"]]


async def test_rooms_catch_up_after_the_feed_restarts(
    ray_session: Any, data: DataEngine, gateway: tuple[str, Any], feed: Any
) -> None:
    from actors.factory import get_record_room
    from actors.realtime import subscribe_records

    name, collector = gateway
    await subscribe_records(
        {"subscriptionId": "s", "objects": ["ticket"]},
        connection_id="steady",
        gateway=name,
        actor=ALICE,
        visibility=TeamVisibility(),
    )
    await get_record_room("ticket").status.remote()
    ray_session.kill(feed, no_restart=False)  # Ray restarts it: it forgets its rooms
    written = await data.insert(
        "ticket", {"subject": "During restart", "team": "support"}, actor=WRITER
    )  # its nudge may hit the dead feed: fine

    async def delivered() -> list[str]:
        return [p["recordId"] for c, _, p in await collector.messages.remote() if c == "steady"]

    # The room re-registers every few seconds, learns the feed forgot it, reads the log.
    assert await eventually(delivered, within_s=90) == [written["id"]]


async def test_presence_counts_two_connections_of_one_user_once_and_times_out(
    ray_session: Any, feed: Any
) -> None:
    from actors.factory import get_or_create_presence, presence_shard

    gateways = []
    for _ in range(2):
        name = f"gateway:test-{uuid.uuid4().hex[:8]}"
        gateways.append(
            (
                name,
                ray_session.remote(Collector)
                .options(name=name, namespace="objectos", num_cpus=0)
                .remote(),
            )
        )
    (gw_alice, _), (gw_bob, bob_sees) = gateways
    room = "ticket/42"
    presence = get_or_create_presence(presence_shard(room, 1), timeout_s=1.5, sweep_interval_s=0.2)

    async def bob_list() -> list[tuple[str, str]]:
        snapshots = [p for c, n, p in await bob_sees.messages.remote() if n == "presence"]
        return [(u["userId"], u["status"]) for u in snapshots[-1]["users"]] if snapshots else []

    try:
        await presence.join.remote(room, "bob-1", "bob", gw_bob)
        await presence.join.remote(room, "alice-tab1", "alice", gw_alice)
        await presence.join.remote(room, "alice-tab2", "alice", gw_alice, "away")
        assert await bob_list() == [("alice", "online"), ("bob", "online")]
        await presence.leave.remote(room, "alice-tab1")
        assert await bob_list() == [("alice", "away"), ("bob", "online")]
        users = await presence.users_on_object.remote("ticket")
        assert [u["userId"] for u in users] == ["alice", "bob"]

        # alice's last tab falls silent; bob keeps beating and sees her go.
        async def alice_gone() -> bool:
            unknown = await presence.heartbeat.remote(["bob-1"])
            assert unknown == []
            return await bob_list() == [("bob", "online")]

        await eventually(alice_gone)
        assert await presence.heartbeat.remote(["alice-tab2"]) == ["alice-tab2"]
    finally:
        for _, handle in gateways:
            ray_session.kill(handle)
