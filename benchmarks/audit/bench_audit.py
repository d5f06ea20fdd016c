"""Audit costs, each as a ratio against a baseline measured in the same run.

    python benchmarks/audit/bench_audit.py [--seconds S] [--rounds R] [--events N] [--url U]

(defaults: 3 s per round, 3 rounds, 20000 events; a SQLite file in a temporary
directory unless ``--url`` names an empty database, e.g. PostgreSQL)

1. **Write path.** Insert + update pairs through ``DataEngine`` (one
   transaction each), in rounds of rotating order: the baseline (an actor
   without request context, no projection), an actor with a full request
   context (what every REST write now logs), and the baseline actor while
   the projection tails the change log *in another process* (as the audit
   plugin does). Medians of writes/s and their ratios to the baseline.
2. **Projection catch-up.** N change-log entries projected into
   ``_audit_events`` (batches of 500) vs only reading them (``ChangeLog.since``).
3. **Sink.** ``SQLAuditSink.record`` (buffered) per call vs one
   ``AuditStore.append`` per event (what an unbatched sink would do).
4. **Search depth.** The last keyset page of N events vs the first page.
5. **Export memory.** Peak traced memory of a CSV export of N events vs N/5.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from objectos.audit import (  # noqa: E402
    AuditEvent,
    AuditProjection,
    AuditQuery,
    AuditStore,
    SQLAuditSink,
    export_stream,
)
from objectos.audit.store import encode_cursor  # noqa: E402
from objectos.data import Actor, ChangeLog, DataEngine, create_engine  # noqa: E402
from objectos.metadata import MetadataRegistry  # noqa: E402

CRM = ROOT / "configs" / "metadata"
PLAIN = Actor.user("alice", ["sales_rep"])
IN_REQUEST = PLAIN.with_context(
    ip="203.0.113.7",
    userAgent="Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
    requestId="0123456789abcdef0123456789abcdef",
    traceId="4bf92f3577b34da6a3ce929d0e0e4736",
)


def tail_forever(url: str, ready: Any, stop: Any) -> None:
    """The audit plugin's projection, in its own process."""

    async def main() -> None:
        database = create_engine(url)
        projection = AuditProjection(ChangeLog.open(database), AuditStore(database))
        async with projection:
            ready.set()
            await asyncio.to_thread(stop.wait)
        await database.dispose()

    asyncio.run(main())


async def write_round(data: DataEngine, actor: Actor, seconds: float, tag: str) -> float:
    n = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        record = await data.insert("account", {"name": f"{tag} {n}"}, actor=actor)
        await data.update("account", record["id"], {"phone": "+1 555 0100"}, actor=actor)
        n += 2
    return n / (time.perf_counter() - started)


async def bench_writes(
    url: str, data: DataEngine, store: AuditStore, args: argparse.Namespace
) -> None:
    context = multiprocessing.get_context("spawn")
    modes = ("baseline", "context", "projection")
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    for r in range(args.rounds):
        # Rotate the order: the table grows as rounds go on, no mode always goes last.
        for mode in modes[r % 3 :] + modes[: r % 3]:
            tag = f"{mode[0]}{r}"
            if mode != "projection":
                actor = IN_REQUEST if mode == "context" else PLAIN
                results[mode].append(await write_round(data, actor, args.seconds, tag))
                continue
            # Steady state, not a backlog: the tailer starts with nothing to catch up.
            await AuditProjection(data.change_log, store, batch_size=500).catch_up()
            ready, stop = context.Event(), context.Event()
            tailer = context.Process(target=tail_forever, args=(url, ready, stop))
            tailer.start()
            ready.wait(60)
            results[mode].append(await write_round(data, PLAIN, args.seconds, tag))
            stop.set()
            tailer.join(60)
    base = statistics.median(results["baseline"])
    print("1. write path (insert+update, writes/s, median of rounds)")
    print(f"   baseline (no context, no projection): {base:7.0f}")
    for name, label in (
        ("context", "full request context on the actor:   "),
        ("projection", "projection tailing in another process:"),
    ):
        value = statistics.median(results[name])
        print(f"   {label} {value:7.0f}   ratio {value / base:.2f}")


async def bench_projection(data: DataEngine, store: AuditStore, n: int) -> None:
    for start in range(0, n, 500):
        ops = [
            {"operation": "create", "data": {"name": f"bulk {i}"}}
            for i in range(start, min(start + 500, n))
        ]
        await data.batch("account", ops, actor=IN_REQUEST)
    log = data.change_log
    first = await store.cursor()
    started = time.perf_counter()
    cursor = first
    while True:
        page = await log.since(cursor, limit=500)
        cursor = page.cursor
        if not page.has_more:
            break
    read_only = (cursor - first) / (time.perf_counter() - started)
    projection = AuditProjection(log, store, batch_size=500)
    started = time.perf_counter()
    projected = await projection.catch_up()
    rate = projected / (time.perf_counter() - started)
    print(f"2. projection catch-up of {projected} entries (entries/s)")
    print(f"   read the change log only:           {read_only:9.0f}")
    print(f"   project into _audit_events:         {rate:9.0f}   ratio {rate / read_only:.2f}")


def denial(n: int) -> AuditEvent:
    return AuditEvent.new(
        "permission.denied",
        actor="bob",
        object="account",
        record_id=f"a{n}",
        context=IN_REQUEST.context,
        details={"code": "permission_denied", "operation": "update"},
    )


async def bench_sink(store: AuditStore, n: int) -> None:
    n = min(n, 2000)
    started = time.perf_counter()
    for i in range(n):
        await store.append([denial(i)])
    direct = (time.perf_counter() - started) / n
    async with SQLAuditSink(store) as sink:
        started = time.perf_counter()
        for i in range(n):
            await sink.record(denial(i))
        buffered = (time.perf_counter() - started) / n
        await sink.flush()
    print(f"3. recording a non-write event (µs per call, {n} calls)")
    print(f"   one INSERT per event:               {direct * 1e6:9.1f}")
    ratio = buffered / direct
    print(f"   SQLAuditSink.record (buffered):     {buffered * 1e6:9.1f}   ratio {ratio:.4f}")


async def bench_search(store: AuditStore) -> None:
    async def timed(query: AuditQuery) -> float:
        samples = []
        for _ in range(20):
            started = time.perf_counter()
            await store.search(query)
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    first = AuditQuery(limit=50)
    # Newest first, starting after the 51st oldest event: the deepest page there is.
    oldest = await store.search(AuditQuery(limit=51, order="asc"))
    deep = AuditQuery(limit=50, cursor=encode_cursor(oldest.events[-1], "desc"))
    shallow_s, deep_s = await timed(first), await timed(deep)
    total = (await store.search(AuditQuery(limit=1), count=True)).total
    print(f"4. search page of 50 among {total} events (ms, median of 20)")
    print(f"   first page:                          {shallow_s * 1e3:9.2f}")
    ratio = deep_s / shallow_s
    print(f"   deepest page (keyset):               {deep_s * 1e3:9.2f}   ratio {ratio:.2f}")


async def bench_export_memory(store: AuditStore, n: int) -> None:
    async def peak(limit: int) -> tuple[float, int]:
        query = AuditQuery(order="asc")
        tracemalloc.start()
        size = 0
        count = 0
        async for chunk in export_stream(store, query, "csv"):
            size += len(chunk)
            count += chunk.count("\n")
            if count >= limit:
                break
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top / 1e6, size

    small_peak, small_size = await peak(n // 5)
    big_peak, big_size = await peak(n)
    print("5. CSV export, peak traced memory (MB)")
    print(f"   {n // 5:6d} events ({small_size / 1e6:5.1f} MB of CSV):  {small_peak:9.2f}")
    print(
        f"   {n:6d} events ({big_size / 1e6:5.1f} MB of CSV):  {big_peak:9.2f}"
        f"   ratio {big_peak / small_peak:.2f}"
    )


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        database = create_engine(url)
        data = DataEngine(database, MetadataRegistry.load([CRM]))
        await data.migrate()
        store = AuditStore(database)
        await store.create()
        print(f"database: {database.dialect.name}")
        await bench_writes(url, data, store, args)
        await AuditProjection(data.change_log, store, batch_size=500).catch_up()
        await bench_projection(data, store, args.events)
        await bench_sink(store, args.events)
        await bench_search(store)
        await bench_export_memory(store, args.events)
        await database.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--url", default=None)
    asyncio.run(main(parser.parse_args()))
