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


async def rate(call: Callable[[], Awaitable[Any]], seconds: float) -> float:
    """Calls per second of ``call``, run back to back for ``seconds``."""
    done, started = 0, time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        await call()
        done += 1
    return done / (time.perf_counter() - started)


def per_call_us(call: Callable[[], Any], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat * 1e6


def _rounded(rates: list[float]) -> list[int]:
    return [round(r) for r in rates]


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

        offs, ons = [], []
        for _ in range(args.rounds):
            offs.append(await rate(off, args.seconds))
            ons.append(await rate(on, args.seconds))
        off_rps, on_rps = statistics.median(offs), statistics.median(ons)
        print(f"OFF plain DataEngine.find          : {off_rps:8.1f} req/s  rounds {_rounded(offs)}")
        print(f"ON  SecuredDataService.find (eve)  : {on_rps:8.1f} req/s  rounds {_rounded(ons)}")
        print(f"ratio ON/OFF                       : {on_rps / off_rps:8.3f}")

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
