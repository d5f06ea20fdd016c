"""The data engine's read path in process (no server): one-hop reads vs a bare async select.

    python benchmarks/rest/bench_engine.py [--calls 2000]

On one SQLite file with the sample CRM, sequential calls, median of 3 rounds:

* baseline: the bare SQLAlchemy async select of one account by id through
  aiosqlite (``async with engine.connect(): execute(...).all()``), what every
  read of the engine cost before reads ran in one hop;
* ``DataEngine.find_one`` and ``DataEngine.find`` (filter, top 20): the whole
  engine path (plan, hooks check, select, JSON values) with its reads run by
  :class:`objectos.data.reads.ReadRunner`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from objectos.data import Actor, DataEngine, create_engine
from objectos.data.query import parse_query_ast
from objectos.metadata import MetadataRegistry

ROOT = Path(__file__).resolve().parents[2]
SYSTEM = Actor.system_actor("bench")


async def per_call_us(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    for _ in range(min(200, calls)):
        await call()
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        rounds.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(rounds)


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = create_engine(f"sqlite+aiosqlite:///{tmp}/bench.db")
        data = DataEngine(database, MetadataRegistry.load([ROOT / "configs" / "metadata"]))
        await data.migrate()
        ids = [
            (await data.insert("account", {"name": f"A{i}", "industry": "retail"}, actor=SYSTEM))[
                "id"
            ]
            for i in range(200)
        ]
        table = data.table("account")
        select = sa.select(table).where(table.c.id == ids[0])

        async def bare() -> Any:
            async with database.connect() as conn:
                return (await conn.execute(select)).all()

        query = parse_query_ast({"filter": {"industry": "retail"}, "top": 20})
        results = {
            "bare async select (baseline)": await per_call_us(bare, calls),
            "DataEngine.find_one": await per_call_us(
                lambda: data.find_one("account", ids[0], actor=SYSTEM), calls
            ),
            "DataEngine.find (top 20)": await per_call_us(
                lambda: data.find("account", query, actor=SYSTEM), calls
            ),
        }
        await database.dispose()
    baseline = results["bare async select (baseline)"]
    for name, us in results.items():
        print(f"{name:32s} {us:8.1f} us/call   {us / baseline:5.2f}x baseline")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    asyncio.run(main(parser.parse_args().calls))
