"""The Python client's ``/realtime`` path: event throughput and resume latency.

    python benchmarks/client/bench_client.py

Against the protocol test peer of the unit tests (``tests/unit/client/realtime_peer.py``:
python-socketio under uvicorn on 127.0.0.1), each number with a baseline from the
same run:

1. **throughput** — 3,000 ``record.created`` events written by the peer and consumed
   through ``objectos.client`` (``async for event in subscription``: parsing,
   per-object cursors, duplicate check, queue) vs a bare ``socketio.AsyncClient``
   that only counts them. Best of 3 runs each, alternating.
2. **resume** — the peer ends the session, commits 100 changes while the client is
   away; time until all 100 are replayed to the consumer (reconnect with a fresh
   token, ``subscribe`` with ``since``), median of 5.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import socketio

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "unit" / "client"))
from realtime_peer import PeerServer, running_peer

from objectos.client import RealtimeClient

EVENTS = 3000
MISSED = 100


async def bare(server: PeerServer) -> float:
    done, count = asyncio.Event(), 0
    sio = socketio.AsyncClient()

    async def on_event(payload: object) -> None:
        nonlocal count
        count += 1
        if count == EVENTS:
            done.set()

    sio.on("event", on_event, namespace="/realtime")
    await sio.connect(
        server.url, namespaces=["/realtime"], auth={"token": "good-token"}, transports=["websocket"]
    )
    await sio.call("subscribe", {"subscriptionId": "b", "objects": ["case"]}, namespace="/realtime")
    started = time.perf_counter()
    for i in range(EVENTS):
        await server.peer.write("case", f"r{i}", "create")
    await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - started
    await sio.disconnect()
    return elapsed


async def client(server: PeerServer) -> tuple[float, list[float]]:
    async with RealtimeClient(
        server.url, "good-token", reconnection_delay=0.05, reconnection_delay_max=0.2
    ) as rt:
        sub = await rt.subscribe(objects=["case"])
        started = time.perf_counter()
        for i in range(EVENTS):
            await server.peer.write("case", f"r{i}", "create")
        received = 0
        async for _ in sub:
            received += 1
            if received == EVENTS:
                break
        elapsed = time.perf_counter() - started
        resumes = []
        for _ in range(5):
            kicked = time.perf_counter()
            await server.peer.kick()
            for i in range(MISSED):
                await server.peer.write("case", f"m{i}", "create")
            for _ in range(MISSED):
                await sub.next_event(60)
            resumes.append(time.perf_counter() - kicked)
        return elapsed, resumes


async def main() -> None:
    bare_runs, client_runs, resumes = [], [], []
    for _ in range(3):
        async with running_peer() as server:
            elapsed, resumed = await client(server)
            client_runs.append(elapsed)
            resumes += resumed
        async with running_peer() as server:
            bare_runs.append(await bare(server))
    print(
        f"throughput, {EVENTS} events (best of 3): objectos.client "
        f"{EVENTS / min(client_runs):,.0f} ev/s | bare python-socketio "
        f"{EVENTS / min(bare_runs):,.0f} ev/s"
    )
    print(
        f"resume, {MISSED} missed events replayed after the session ended: median "
        f"{statistics.median(resumes) * 1000:.0f} ms, max {max(resumes) * 1000:.0f} ms "
        "(reconnection delay 0.05 s)"
    )


if __name__ == "__main__":
    asyncio.run(main())
