"""Record-event fan-out: room engine cost, batched delivery over Ray, commit-to-gateway latency.

    python benchmarks/realtime/bench_realtime.py [--skip-ray]

Each number comes with a baseline measured in the same run:

1. **fan-out (no Ray)** — ``SubscriptionRoom.push`` of 1,000 committed changes to
   200 subscribers (every other one with a filter, all with permission checks and
   field stripping) vs building the same event payloads for every subscriber
   with no checks at all.
2. **delivery over Ray** — 2,000 events handed to a gateway-like actor in
   ``EventBatch`` es of 200 (what rooms do) vs one actor call per event.
3. **commit to gateway (Ray)** — a write through the DataEngine, nudging the
   change feed actor, pushed by the room actor to the collector: median of 30
   single writes, vs one bare actor round trip; and 500 writes in batches of 50.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from objectos.data import Actor, BatchOperation, DataEngine, create_engine
from objectos.metadata import MetadataRegistry
from objectos.realtime.feed import NudgeOnCommit
from objectos.realtime.subscriptions import EventBatch, SubscriptionRoom, SubscriptionSpec

TICKET = {
    "name": "ticket",
    "fields": {
        "subject": {"type": "text"},
        "team": {"type": "text"},
        "priority": {"type": "number", "precision": 9, "scale": 0},
        "secret_note": {"type": "text"},
    },
}
WRITER = Actor.system_actor("bench")
TEAMS = ("support", "sales", "ops", "billing")


class TeamVisibility:
    """Users read their team's records; ``secret_note`` is hidden from everyone."""

    def __init__(self, fields: set[str]) -> None:
        self.fields = fields - {"secret_note"}

    def can_read(self, actor: Actor, object_name: str, record: Any) -> bool:
        return record.get("team") in actor.roles

    def readable_fields(self, actor: Actor, object_name: str) -> set[str]:
        return set(self.fields)


class Collector:
    """A gateway stand-in that counts what it is handed."""

    def __init__(self) -> None:
        self.events = 0

    def deliver_records(self, batch: Any) -> None:
        self.events += sum(1 for _ in batch.messages())

    def deliver_one(self, payload: dict[str, Any]) -> None:
        self.events += 1

    def count(self) -> int:
        return self.events

    def ping(self) -> None:
        return None


async def open_data(path: Path, hooks: Any = None) -> DataEngine:
    data = DataEngine(
        create_engine(f"sqlite+aiosqlite:///{path}"),
        MetadataRegistry.from_objects([TICKET]),
        hooks=hooks,
    )
    await data.migrate()
    return data


def rows(n: int, start: int = 0) -> list[BatchOperation]:
    return [
        BatchOperation(
            "create",
            {"subject": f"#{i}", "team": TEAMS[i % 4], "priority": i % 10, "secret_note": "x"},
        )
        for i in range(start, start + n)
    ]


async def fanout(tmp: Path, runs: int) -> None:
    data = await open_data(tmp / "fanout.db")
    columns = {"ticket": data.tables.columns("ticket")}
    visibility = TeamVisibility(set(columns["ticket"]))
    actors = [Actor.user(f"u{i}", [TEAMS[i % 4]]) for i in range(200)]

    async def nowhere(gateway: str, batch: EventBatch) -> None:
        return None

    rooms = []
    for _ in range(runs):  # one room per run: a room never takes a change twice
        room = SubscriptionRoom(
            "bench",
            log=data.change_log,
            visibility=visibility,
            deliver=nowhere,
            objects=["ticket"],
            columns=columns,
        )
        for i, actor in enumerate(actors):
            payload: dict[str, Any] = {"subscriptionId": "s", "objects": ["ticket"]}
            if i % 2:
                payload["filter"] = {"priority": {"$gte": 5}}
            await room.subscribe(
                SubscriptionSpec.parse(payload),
                connection_id=f"c{i}",
                gateway=f"gw{i % 4}",
                actor=actor,
            )
        rooms.append(room)
    for chunk in range(0, 1000, 100):
        await data.batch("ticket", rows(100, chunk), actor=WRITER)
    entries = (await data.change_log.since(0, limit=1000)).changes

    def naive() -> int:
        count = 0
        for entry in entries:
            for i in range(len(actors)):
                record = entry.record or {}
                {
                    "subscriptionId": "s",
                    "eventName": "record.created",
                    "object": entry.object,
                    "recordId": entry.record_id,
                    "record": dict(record),
                    "changedFields": list(entry.changed_fields),
                    "version": entry.version,
                    "cursor": entry.seq,
                    "timestamp": entry.at.isoformat(),
                    "connection": i,
                }
                count += 1
        return count

    bases, costs = [], []
    for room in rooms:  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        produced = naive()
        bases.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sent = await room.push(entries)
        costs.append(time.perf_counter() - t0)
    base, cost = statistics.median(bases), statistics.median(costs)
    print(
        f"fan-out: room {sent} events in {cost * 1000:.0f} ms ({sent / cost:,.0f} events/s, "
        f"{len(entries) * len(actors) / cost:,.0f} subscriber checks/s) vs naive payloads for "
        f"everyone ({produced}) in {base * 1000:.0f} ms -> time ratio {cost / base:.2f}x "
        f"(median of {runs})"
    )
    await data._engine.dispose()


async def ray_parts(tmp: Path) -> None:
    import ray

    from actors.factory import get_or_create_change_feed
    from actors.realtime import RayGatewayDelivery, subscribe_records
    from objectos.realtime.subscriptions import Delivery, RecordEvent

    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=2,
        namespace="objectos",
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        name = f"gateway:bench-{uuid.uuid4().hex[:6]}"
        collector = (
            ray.remote(Collector).options(name=name, namespace="objectos", num_cpus=0).remote()
        )
        await collector.ping.remote()

        # 2. batched delivery vs one call per event
        event = RecordEvent(
            "s",
            "record.created",
            "ticket",
            "id",
            {"subject": "x"},
            ("subject",),
            1,
            1,
            "2024-01-01T00:00:00Z",
        )
        n = 2000
        t0 = time.perf_counter()
        await asyncio.gather(*(collector.deliver_one.remote(event.to_dict()) for _ in range(n)))
        one_by_one = time.perf_counter() - t0
        deliver = RayGatewayDelivery()
        batch = EventBatch("bench", tuple(Delivery(f"c{i}", (event,) * 10) for i in range(20)), 1)
        await deliver(name, batch)  # warm-up: the collector imports the event classes once
        t0 = time.perf_counter()
        for _ in range(n // batch.event_count):
            await deliver(name, batch)
        batched = time.perf_counter() - t0
        print(
            f"delivery over Ray: batches of {batch.event_count}: {n / batched:,.0f} events/s vs "
            f"one call per event (concurrent): {n / one_by_one:,.0f} events/s -> "
            f"{one_by_one / batched:.1f}x faster"
        )

        # 3. commit -> gateway through feed and room actors
        url = f"sqlite+aiosqlite:///{tmp / 'e2e.db'}"
        feed = get_or_create_change_feed(url, idle_max_s=1.0)
        data = await open_data(tmp / "e2e.db", NudgeOnCommit(lambda: feed.nudge.remote()))
        visibility = TeamVisibility(set(data.tables.columns("ticket")))
        await subscribe_records(
            {"subscriptionId": "s", "objects": ["ticket"]},
            connection_id="c1",
            gateway=name,
            actor=Actor.user("u", TEAMS),
            visibility=visibility,
            columns={"ticket": data.tables.columns("ticket")},
        )

        async def arrived(target: int) -> None:
            for _ in range(600_000):  # ~10 minutes at most
                if await collector.count.remote() >= target:
                    return
                await asyncio.sleep(0.001)
            raise TimeoutError(f"only {await collector.count.remote()} of {target} events")

        base_count = await collector.count.remote()
        latencies = []
        for i in range(30):
            t0 = time.perf_counter()
            await data.insert("ticket", {"subject": f"l{i}", "team": "ops"}, actor=WRITER)
            await arrived(base_count + i + 1)
            latencies.append(time.perf_counter() - t0)
        round_trips = []
        for _ in range(30):
            t0 = time.perf_counter()
            await collector.ping.remote()
            round_trips.append(time.perf_counter() - t0)
        write_only = []
        for i in range(30):
            t0 = time.perf_counter()
            await data.insert("ticket", {"subject": f"w{i}", "team": "ops"}, actor=WRITER)
            write_only.append(time.perf_counter() - t0)
        await arrived(base_count + 60)
        med = statistics.median
        print(
            f"commit to gateway: median {med(latencies) * 1000:.1f} ms per write (the write "
            f"itself {med(write_only) * 1000:.1f} ms) vs one bare actor round trip "
            f"{med(round_trips) * 1000:.2f} ms -> {med(latencies) / med(round_trips):.1f}x"
        )
        start = await collector.count.remote()
        t0 = time.perf_counter()
        for chunk in range(0, 500, 50):
            await data.batch("ticket", rows(50, chunk), actor=WRITER)
        written = time.perf_counter() - t0
        await arrived(start + 500)
        elapsed = time.perf_counter() - t0
        print(
            f"sustained: 500 writes in batches of 50 committed in {written:.2f} s, delivered "
            f"in {elapsed:.2f} s ({500 / elapsed:,.0f} events/s end to end) -> "
            f"ratio {elapsed / written:.2f}x the writing time"
        )
        await data._engine.dispose()
    finally:
        ray.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        await fanout(Path(tmp), args.runs)
        if not args.skip_ray:
            await ray_parts(Path(tmp))


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    asyncio.run(main())
