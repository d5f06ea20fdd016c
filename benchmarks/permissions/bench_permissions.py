"""Filtered-list throughput with sharing + RLS ON (SecuredDataService) vs OFF (plain DataEngine).

    python benchmarks/permissions/bench_permissions.py [--records N] [--seconds S] [--rounds R]

(defaults: 20000 records, 3 s per round, 3 rounds; --url U for another empty database)

Same database, same data, same process, same query: ``GET /data/opportunity
?filter={"stage": "proposal"}&sort=-amount&top=50`` as parsed by the REST
layer. OFF is ``DataEngine.find`` without a scope (what a hub without the
permission engine would run); ON is ``SecuredDataService.find`` as a sales
rep, so the sharing predicate (own records, the east team's owner-based
rule) AND an RLS policy (added for the benchmark) go into the SQL, the
projection is narrowed to readable fields and results are stripped. ON and
OFF alternate for ``--rounds`` rounds of ``--seconds`` each; the medians are
printed with their ratio. Then the cost of one compiled permission check
(``record_condition``, ``object_access``): cached, and rebuilt from scratch.
The database is a SQLite file in a temporary directory unless ``--url``
names another (e.g. a PostgreSQL database: it must be empty).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from objectos.data import Actor, DataEngine, create_engine  # noqa: E402
from objectos.data.query import parse_list_params  # noqa: E402
from objectos.metadata import MetadataRegistry  # noqa: E402
from objectos.protocol.permission import RLSPolicy  # noqa: E402
from objectos.security.guard import SecuredDataService  # noqa: E402
from objectos.security.loading import load_security  # noqa: E402
from objectos.security.permissions import PermissionEngine  # noqa: E402
from objectos.security.sharing import InMemoryRoleDirectory  # noqa: E402

SEED = Actor.system_actor("seed")
USERS = {
    "erin": ["east_manager"],
    "eve": ["east_rep"],
    "ed": ["east_rep"],
    "emma": ["east_rep"],
    "will": ["west_manager"],
    "wes": ["west_rep"],
    "wanda": ["west_rep"],
    "walt": ["west_rep"],
}
STAGES = ["prospecting", "qualification", "proposal", "negotiation", "closed_lost"]
QUERY = {"filter": '{"stage": "proposal"}', "sort": "-amount", "top": "50"}
BENCH_POLICY = RLSPolicy(
    name="reps_see_live_pipeline",
    object="opportunity",
    operation="select",
    roles=["east_rep", "west_rep"],
    using={"$or": [{"stage": {"$ne": "closed_lost"}}, {"owner": "$user.id"}]},
)


async def seed(data: DataEngine, records: int) -> None:
    rng = random.Random(7)
    accounts = [
        {"operation": "create", "data": {"id": f"a{i}", "name": f"Account {i}"}} for i in range(50)
    ]
    await data.batch("account", accounts, actor=SEED)
    owners = sorted(USERS)
    for start in range(0, records, 500):
        ops = [
            {
                "operation": "create",
                "data": {
                    "name": f"Deal {n}",
                    "account": f"a{n % 50}",
                    "owner": owners[n % len(owners)],
                    "amount": rng.randint(1_000, 500_000),
                    "stage": STAGES[rng.randrange(len(STAGES))],
                },
            }
            for n in range(start, min(start + 500, records))
        ]
        results = await data.batch("opportunity", ops, actor=SEED)
        failed = [r for r in results if not r.success]
        if failed:
            raise SystemExit(f"seeding failed: {failed[0].error}")


async def paired_rates(
    off: Callable[[], Awaitable[Any]],
    on: Callable[[], Awaitable[Any]],
    seconds: float,
    batch: int = 5,
) -> dict[str, tuple[float, float]]:
    """``{side: (calls per wall second, CPU ms per call)}`` of ``off`` and ``on``.

    The two run interleaved in small batches for ``seconds``, so both see the
    same background load (the machine is shared). CPU time is this process's
    (every thread, so SQLite's too): it does not grow when other processes
    take the cores, which makes it the steadier of the two on a busy machine.
    """
    wall = {"off": 0.0, "on": 0.0}
    cpu = {"off": 0.0, "on": 0.0}
    calls = {"off": 0, "on": 0}
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for side, call in (("off", off), ("on", on)):
            started, started_cpu = time.perf_counter(), time.process_time()
            for _ in range(batch):
                await call()
            wall[side] += time.perf_counter() - started
            cpu[side] += time.process_time() - started_cpu
            calls[side] += batch
    return {side: (calls[side] / wall[side], cpu[side] / calls[side] * 1000) for side in wall}


def per_call_us(call: Callable[[], Any], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--url", default=None, help="database URL (default: a temporary SQLite file)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        database = create_engine(url)
        registry = MetadataRegistry.load([ROOT / "configs" / "metadata"])
        data = DataEngine(database, registry)
        await data.migrate()
        started = time.perf_counter()
        await seed(data, args.records)
        took = time.perf_counter() - started
        print(f"seeded {args.records} opportunities in {took:.1f}s ({url.split(':')[0]})")

        config = load_security(registry)
        config.sharing[0].rowLevelSecurity.append(BENCH_POLICY)
        directory = InMemoryRoleDirectory(USERS)
        permissions = PermissionEngine(config, registry, directory)
        secure = SecuredDataService(data, permissions, database=database)
        eve = Actor.user("eve", USERS["eve"])

        async def off() -> Any:
            return await data.find("opportunity", parse_list_params(QUERY), actor=eve)

        async def on() -> Any:
            return await secure.find("opportunity", parse_list_params(QUERY), actor=eve)

        plain, secured = (await off()).records, (await on()).records
        visible = await secure.count("opportunity", actor=eve)
        print(
            f"page sizes: OFF {len(plain)}, ON {len(secured)}; eve sees {visible} of {args.records}"
        )

        rounds = [await paired_rates(off, on, args.seconds) for _ in range(args.rounds)]

        def median(side: str, item: int) -> float:
            return statistics.median(r[side][item] for r in rounds)

        for side, label in (
            ("off", "OFF plain DataEngine.find        "),
            ("on", "ON  SecuredDataService.find (eve)"),
        ):
            print(
                f"{label}: {median(side, 0):8.1f} req/s  {median(side, 1):6.2f} CPU ms/req  "
                f"rounds {[round(r[side][0]) for r in rounds]} req/s"
            )
        wall_ratio = statistics.median(r["on"][0] / r["off"][0] for r in rounds)
        cpu_ratio = statistics.median(r["on"][1] / r["off"][1] for r in rounds)
        print(f"ratio ON/OFF throughput (wall)    : {wall_ratio:8.3f}")
        print(f"ratio ON/OFF CPU per request      : {cpu_ratio:8.3f}")

        table = data.table("opportunity")
        cached = per_call_us(
            lambda: permissions.record_condition(eve, "opportunity", "read", table), 20_000
        )
        access = per_call_us(lambda: permissions.object_access(eve, "opportunity"), 20_000)

        def rebuilt() -> None:
            directory.assign("eve", USERS["eve"])  # a directory change drops every cache
            permissions.record_condition(eve, "opportunity", "read", table)

        cold = per_call_us(rebuilt, 2_000)
        print(f"record_condition cached            : {cached:8.2f} us/check")
        print(f"object_access cached               : {access:8.2f} us/check")
        print(f"record_condition rebuilt (no cache): {cold:8.2f} us/check ({cold / cached:.0f}x)")
        await database.dispose()


if __name__ == "__main__":
    asyncio.run(main())
