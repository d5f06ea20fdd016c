"""Collaborative editing under load: the hub's gateway + Room actors vs Hocuspocus, in one run.

    python benchmarks/yjs/run.py [--rates 500,1000] [--duration 10] [--editors 20]
                                 [--servers hub,hocuspocus,inprocess] [--repeat 1]
                                 [--bench /work/shared/bench/yjs] [--work /tmp/objectos-yjs-bench]
                                 [--json results.json] [--ray-niceness]

The load generator is the steering repo's (``bench/yjs/client/run-load.mjs``, read
its README.txt): N stock editors (``yjs`` + their provider) on one fresh document,
spread over 4 Node processes, each inserting 1-3 letters at a fixed total rate;
latency is insert-on-one-editor to integrated-on-every-other-editor, for all pairs.
The client directory (and Hocuspocus) are copied to ``--work`` and installed from
their lock files (``npm ci``), because the bench directory is read-only.

Servers, one after the other for every rate, in the same run:

* ``hub``        -- this hub: a gateway actor (python-socketio under uvicorn) and a
                    ``room:yjs:<doc>`` actor persisting every update to SQLite, on a
                    local Ray started here (y-socket.io protocol, dev token).
* ``hocuspocus`` -- @hocuspocus/server 4.7.0, in memory (the bench's server A): the baseline.
* ``inprocess``  -- the same handler and rooms as ``hub`` in one plain Python process
                    (``inprocess_server.py``): what the actor split costs.

The hub's actors lower their niceness to 0 (Ray starts workers at 15; see
``actors.room.set_process_niceness``); ``--ray-niceness`` measures them at Ray's 15.

Printed per run: achieved updates/s (inserts integrated by every editor / s), p50 and
p99 latency, CPU of the server processes, and the ratios against Hocuspocus. Every run
waits (up to 120 s) for a quiet machine first and prints the foreign CPU load it saw,
because the 2 cores are shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy(window_s: float = 2.0) -> float:
    """Busy share of all cores over ``window_s`` (0..1)."""

    def sample() -> tuple[float, float]:
        values = [float(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:9]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)

    busy0, total0 = sample()
    time.sleep(window_s)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(total1 - total0, 1e-9)


def wait_for_quiet(limit: float = 0.3, max_wait_s: float = 120.0) -> float:
    deadline = time.monotonic() + max_wait_s
    busy = machine_busy()
    while busy > limit and time.monotonic() < deadline:
        busy = machine_busy()
    return busy


def prepare(bench: Path, work: Path) -> None:
    """Copy the load generator and Hocuspocus to ``work`` and install them from lock files."""
    for src, dst in [
        (bench / "client", work / "client"),
        (bench / "servers/hocuspocus", work / "hocuspocus"),
    ]:
        if not dst.exists():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("node_modules"))
        if not (dst / "node_modules").exists():
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=dst, check=True, timeout=600
            )


# ---------------------------------------------------------------------- servers


class Server:
    """One server under test: how to reach it and which processes to charge CPU to."""

    def __init__(self, key: str, protocol: str, url: str, pids: list[int]) -> None:
        self.key, self.protocol, self.url, self.pids = key, protocol, url, pids

    def prepare(self, room: str) -> list[int]:
        """Processes that will serve ``room`` besides ``pids`` (started now, not during the run)."""
        return []

    def room_status(self, room: str) -> dict[str, Any] | None:
        return None


class HubServer(Server):
    def prepare(self, room: str) -> list[int]:
        # Activate the document's room before the run, so that starting its process
        # (importing Ray, pycrdt, SQLAlchemy: seconds of CPU) is not charged to the run.
        status = self.room_status(room, activate=True)
        return [status["pid"]] if status else []

    def room_status(self, room: str, activate: bool = False) -> dict[str, Any] | None:
        import ray

        from actors.factory import get_yjs_room

        if activate:
            from actors.factory import get_room_directory

            directory = get_room_directory()
            assert directory is not None
            ray.get(ray.get(directory.activate.remote(room)).status.remote())
        handle = get_yjs_room(room)
        return ray.get(handle.status.remote()) if handle is not None else None


@contextlib.contextmanager
def hub_server(tmp: Path, niceness: int | None) -> Iterator[Server]:
    import ray

    from deployments.realtime import ensure_gateways, realtime_settings, stop_realtime

    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        namespace="objectos",
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        log_to_driver=False,
    )
    try:
        hub = {"dataDir": str(tmp), "database": {"url": f"sqlite+aiosqlite:///{tmp}/hub.db"}}
        settings = realtime_settings(
            hub,
            port=0,
            auth="dev",
            dev_token=TOKEN,
            niceness=niceness,
            rooms={"niceness": niceness},
        )
        (gateway,) = ensure_gateways(hub, settings=settings)
        # The room actor's CPU is added per run (HubServer.room_status); the directory
        # only works at activation and is left out.
        yield HubServer("hub", "ysocketio", gateway["url"], [gateway["pid"]])
        stop_realtime()
    finally:
        ray.shutdown()


@contextlib.contextmanager
def process_server(
    key: str, protocol: str, cmd: list[str], cwd: Path, env: dict[str, str], ready: str, url: str
) -> Iterator[Server]:
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{key} exited before it was ready")
            if line.startswith(ready):
                break
        yield Server(key, protocol, url, [proc.pid])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---------------------------------------------------------------------- runs


def run_load(
    work: Path, server: Server, rate: int, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    busy = wait_for_quiet()
    room = f"bench-{server.key}-{rate}-{int(time.time() * 1000)}"
    pids = server.pids + server.prepare(room)
    before = {pid: cpu_seconds(pid) for pid in pids}
    started = time.monotonic()
    cmd = [
        "node", "run-load.mjs", "--protocol", server.protocol, "--url", server.url,
        "--editors", str(args.editors), "--procs", str(args.procs), "--rate", str(rate),
        "--duration", str(args.duration), "--label", server.key, "--out", str(out),
        "--server-pid", str(server.pids[0]), "--room", room, "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "YJS_BENCH_TOKEN": TOKEN}
    subprocess.run(
        cmd,
        cwd=work / "client",
        env=env,
        timeout=args.duration * 20 + 240,
        stdout=subprocess.DEVNULL,
        check=False,
    )
    wall = time.monotonic() - started
    result: dict[str, Any] = json.loads(out.read_text())
    cpu = 0.0
    for pid, start in before.items():
        end = cpu_seconds(pid)
        if start is not None and end is not None:
            cpu += end - start
    status = server.room_status(room)
    result["bench"] = {
        "server": server.key,
        "quietBefore": round(busy, 3),
        "loadavg": os.getloadavg(),
        # Every server process (gateway + room actor for the hub) over the whole
        # run-load (connect, send, converge, late join); divided by the send window.
        "serverCpuS": round(cpu, 2),
        # Broadcast calls from the room to the gateway: inserts per call = batching.
        "deliverCalls": status["deliver_calls"] if status else None,
        "wallS": round(wall, 1),
    }
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    lat = result.get("latencyMs") or {}
    send_window = result.get("sendWindowS") or 0
    bench = result["bench"]
    return {
        "server": bench["server"],
        "rate": result.get("offeredRate"),
        "achieved": result.get("achievedRate"),
        "p50": lat.get("p50"),
        "p99": lat.get("p99"),
        "converged": result.get("converged"),
        "lateJoin": (result.get("lateJoin") or {}).get("sameText"),
        # CPU of every server process (gateway + room actor + directory for the hub) per
        # second of sending, in % of one core.
        "cpuPct": round(100 * bench["serverCpuS"] / send_window, 1) if send_window else None,
        "insertsPerDeliver": (
            round(result["inserts"] / bench["deliverCalls"], 1)
            if bench.get("deliverCalls") and result.get("inserts")
            else None
        ),
        "otherCpuPct": result.get("otherProcessesCpuPct"),
        "error": result.get("error"),
    }


def ratio(a: Any, b: Any) -> str:
    return (
        f"{a / b:.2f}" if isinstance(a, int | float) and isinstance(b, int | float) and b else "-"
    )


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'rate':>5} {'server':<11} {'updates/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU %':>6} {'conv':>5} {'other CPU %':>11}"
    )
    for row in rows:
        print(
            f"{row['rate']:>5} {row['server']:<11} {row['achieved'] or '-':>9} "
            f"{row['p50'] or '-':>8} {row['p99'] or '-':>8} {row['cpuPct'] or '-':>6} "
            f"{'yes' if row['converged'] else 'NO':>5} {row['otherCpuPct'] or '-':>11}"
            + (f"  error: {row['error'][:80]}" if row["error"] else "")
        )

    # Ratios of medians over the repeats (same rate, same run).
    def median(rate: int, server: str, key: str) -> float | None:
        values = [
            r[key]
            for r in rows
            if r["rate"] == rate and r["server"] == server and isinstance(r[key], int | float)
        ]
        return statistics.median(values) if values else None

    for rate in sorted({r["rate"] for r in rows}):
        if median(rate, "hocuspocus", "achieved") is None:
            continue
        for key in ("hub", "inprocess"):
            if median(rate, key, "achieved") is None:
                continue
            parts = [
                f"{label} {ratio(median(rate, key, field), median(rate, 'hocuspocus', field))}"
                for label, field in [
                    ("updates/s", "achieved"),
                    ("p50", "p50"),
                    ("p99", "p99"),
                    ("CPU", "cpuPct"),
                ]
            ]
            print(f"ratio {key}/hocuspocus at {rate}/s (medians): " + ", ".join(parts))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="500,1000")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--editors", type=int, default=20)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--servers", default="hub,hocuspocus,inprocess")
    parser.add_argument("--bench", type=Path, default=Path("/work/shared/bench/yjs"))
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "objectos-yjs-bench"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--ray-niceness",
        action="store_true",
        help="leave the hub's actors at Ray's worker niceness (15) instead of 0",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    args.work.mkdir(parents=True, exist_ok=True)
    prepare(args.bench, args.work)
    rates = [int(r) for r in args.rates.split(",")]
    wanted = args.servers.split(",")
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="yjs-bench-") as tmp_name:
        tmp = Path(tmp_name)
        hocus_port, inproc_port = free_port(), free_port()
        servers = []
        with contextlib.ExitStack() as stack:
            if "hub" in wanted:
                niceness = None if args.ray_niceness else 0
                servers.append(stack.enter_context(hub_server(tmp, niceness)))
            if "hocuspocus" in wanted:
                servers.append(
                    stack.enter_context(
                        process_server(
                            "hocuspocus",
                            "hocuspocus",
                            ["node", "server.mjs"],
                            args.work / "hocuspocus",
                            {"PORT": str(hocus_port)},
                            "hocuspocus",
                            f"ws://127.0.0.1:{hocus_port}",
                        )
                    )
                )
            if "inprocess" in wanted:
                servers.append(
                    stack.enter_context(
                        process_server(
                            "inprocess",
                            "ysocketio",
                            [
                                sys.executable,
                                str(HERE / "inprocess_server.py"),
                                "--port",
                                str(inproc_port),
                                "--token",
                                TOKEN,
                                "--database-url",
                                f"sqlite+aiosqlite:///{tmp}/inprocess.db",
                            ],
                            ROOT,
                            {"PYTHONPATH": str(ROOT)},
                            "ready",
                            f"http://127.0.0.1:{inproc_port}",
                        )
                    )
                )
            for repeat in range(args.repeat):
                for rate in rates:
                    for server in servers:
                        out = tmp / f"{server.key}-{rate}-{repeat}.json"
                        result = run_load(args.work, server, rate, args, out)
                        raw.append(result)
                        rows.append(summary(result))
                        print(json.dumps(rows[-1]), flush=True)
    print()
    print(
        f"{args.editors} editors, {args.duration:g} s per run, load generator: {args.bench}/client"
    )
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "raw": raw}, indent=2))
    return 0 if all(r["converged"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
