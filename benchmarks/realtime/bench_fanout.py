"""Realtime fan-out and connection capacity of the hub, each against plain python-socketio.

    python benchmarks/realtime/bench_fanout.py [--clients 1000] [--writes 100] [--rate 10]
        [--gateways 2] [--hold 10000] [--skip-fanout] [--skip-hold] [--json out.json]

Both sides face the same load generator (``loadgen.mjs``: stock ``socket.io-client``
sockets over WebSocket, in one Node process) and the same record bodies:

(a) **write -> event latency**: ``--clients`` sockets subscribe to ``record.created``
    of ``case`` (all with one ``subscriptionId``, as one app's clients would, or one
    each with ``--subscription-ids perClient``: then every socket's packet is encoded
    on its own); ``--writes`` cases are created over HTTP at ``--rate`` per second.
    Every socket times every event from the moment the load generator sent the
    write that caused it (one clock). The hub: REST on Serve (HAProxy, 2 replicas,
    SQLite) commits, the change feed actor reads the log, the record room actor
    checks each subscriber's permissions and hands one batch per gateway to
    ``--gateways`` gateway processes (``gatewaysPerNode``), sockets spread
    round-robin over them. The baseline: ``baseline_server.py``, one python-socketio
    process that emits each event to a room as the HTTP request arrives (no
    database, no permissions, no Ray).
(b) **connections held**: ``--hold`` sockets connect (handshake token checked) and
    stay; memory per connection = growth of the server processes' RSS
    (the gateways, or the baseline process) divided by the sockets held.

Ray runs on a free port with the HAProxy ingress, like ``objectos up``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "rest"))

OBJECT = "case"
EXTRA = {"status": "new"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for {pid}")


def npm_install() -> None:
    if not (HERE / "node_modules" / "socket.io-client").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)


def loadgen(config: dict[str, Any], on_connected: Any = None) -> dict[str, Any]:
    """Run loadgen.mjs; ``on_connected(info)`` is called at its ``connected`` line (hold)."""
    process = subprocess.Popen(
        ["node", str(HERE / "loadgen.mjs"), json.dumps(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    result: dict[str, Any] = {}
    for line in process.stdout:
        message = json.loads(line)
        if message.get("phase") == "connected":
            if on_connected is not None:
                on_connected(message)
        else:
            result = message
    process.wait()
    if "error" in result or process.returncode != 0:
        raise RuntimeError(f"load generator failed: {result}")
    return result


# -- the baseline -----------------------------------------------------------------------------


@contextlib.contextmanager
def baseline_server() -> Iterator[tuple[str, str, int]]:
    port, token = free_port(), secrets.token_urlsafe(16)
    process = subprocess.Popen(
        [sys.executable, str(HERE / "baseline_server.py"), "--port", str(port), "--token", token]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_port(port)
        yield url, token, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_port(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


# -- the hub ----------------------------------------------------------------------------------


@contextlib.contextmanager
def hub(gateways: int) -> Iterator[dict[str, Any]]:
    """The sample hub on its own Ray: REST on Serve and ``gateways`` realtime gateways."""
    import bench_rest
    import ray

    from deployments.realtime import ensure_gateways, realtime_settings, stop_realtime

    with tempfile.TemporaryDirectory(prefix="objectos-fanout-") as tmp:
        workdir = Path(tmp)
        with bench_rest.ray_cluster(workdir, haproxy=True):
            payload = bench_rest.hub_payload(workdir, ratelimit=False)
            bench_rest.create_bench_user(payload)
            kernel = bench_rest.start_kernel(payload)
            try:
                url = bench_rest.deploy_serve(
                    payload, bench_rest.ServeVariant("haproxy x2"), free_port()
                )
                settings = realtime_settings(payload, port=0, per_node=gateways)
                infos = ensure_gateways(payload, settings=settings)
                token = bench_rest.bearer(url).removeprefix("Bearer ")
                yield {"url": url, "token": token, "gateways": infos}
            finally:
                stop_realtime()
                with contextlib.suppress(Exception):
                    ray.get(kernel.shutdown.remote(), timeout=60)


# -- the measurements -------------------------------------------------------------------------


def fanout(urls: list[str], token: str, write_url: str, opts: argparse.Namespace) -> dict[str, Any]:
    return loadgen(
        {
            "mode": "fanout",
            "urls": urls,
            "clients": opts.clients,
            "token": token,
            "object": OBJECT,
            "writeUrl": write_url,
            "writeToken": token,
            "writes": opts.writes,
            "rate": opts.rate,
            "extra": EXTRA,
            "subscriptionIds": opts.subscription_ids,
        }
    )


def hold(urls: list[str], token: str, pids: list[int], clients: int) -> dict[str, Any]:
    before = sum(rss_mib(pid) for pid in pids)
    measured: dict[str, float] = {}

    def connected(info: dict[str, Any]) -> None:
        time.sleep(3.0)  # let the servers settle (ping tasks started, buffers allocated)
        measured["after"] = sum(rss_mib(pid) for pid in pids)

    result = loadgen(
        {
            "mode": "hold",
            "urls": urls,
            "clients": clients,
            "token": token,
            "object": OBJECT,
            "holdS": 8,
            "subscribe": False,
            "connectBatch": 250,
        },
        on_connected=connected,
    )
    grown = measured["after"] - before
    return {
        **result,
        "rssBeforeMiB": before,
        "rssAfterMiB": measured["after"],
        "kibPerConnection": grown * 1024 / max(1, result["held"]),
    }


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-key medians of numeric results over rounds (counts summed: delivered, expected)."""
    out: dict[str, Any] = dict(rounds[0])
    for key, value in rounds[0].items():
        if key in ("delivered", "expected", "writeErrorCount"):
            out[key] = sum(r[key] for r in rounds)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = statistics.median(r[key] for r in rounds)
    out["rounds"] = len(rounds)
    return out


def report(name: str, result: dict[str, Any], baseline: dict[str, Any], keys: list[str]) -> str:
    parts = [f"{name:28s}"]
    for key in keys:
        ours, theirs = result.get(key), baseline.get(key)
        if isinstance(ours, (int, float)) and isinstance(theirs, (int, float)) and theirs:
            parts.append(f"{key} {ours:9.1f} vs {theirs:9.1f} ({ours / theirs:5.2f}x)")
    return "  ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--hold", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1, help="fan-out rounds per side")
    parser.add_argument(
        "--subscription-ids",
        choices=["shared", "perClient"],
        default="shared",
        help="one subscriptionId for every client (as one app would), or one each",
    )
    parser.add_argument("--skip-fanout", action="store_true")
    parser.add_argument("--skip-hold", action="store_true")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import bench_rest

    from deployments.cli import ensure_token_auth

    for key in bench_rest.HAPROXY_ENV:  # ray_cluster decides the ingress, not the shell
        os.environ.pop(key, None)
    ensure_token_auth()
    npm_install()
    results: dict[str, Any] = {"options": vars(opts) | {"json": str(opts.json)}}

    with baseline_server() as (url, token, pid):
        if not opts.skip_fanout:
            rounds = [
                fanout([url], token, f"{url}/api/v1/data/{OBJECT}", opts)
                for _ in range(opts.repeat)
            ]
            results["baseline_fanout"] = medians(rounds)
            print("baseline fan-out", json.dumps(rounds), flush=True)
        if not opts.skip_hold:
            results["baseline_hold"] = hold([url], token, [pid], opts.hold)
            print("baseline hold", json.dumps(results["baseline_hold"]), flush=True)

    with hub(opts.gateways) as running:
        urls = [str(g["url"]) for g in running["gateways"]]
        pids = [int(g["pid"]) for g in running["gateways"]]
        if not opts.skip_fanout:
            write_url = f"{running['url']}/api/v1/data/{OBJECT}"
            rounds = [fanout(urls, running["token"], write_url, opts) for _ in range(opts.repeat)]
            results["hub_fanout"] = medians(rounds)
            print("hub fan-out", json.dumps(rounds), flush=True)
        if not opts.skip_hold:
            results["hub_hold"] = hold(urls, running["token"], pids, opts.hold)
            print("hub hold", json.dumps(results["hub_hold"]), flush=True)

    print()
    if "hub_fanout" in results:
        print(
            report(
                f"(a) fan-out, {opts.clients} subs",
                results["hub_fanout"],
                results["baseline_fanout"],
                ["p50Ms", "p99Ms", "eventsPerS"],
            )
        )
        print(
            f"    delivered {results['hub_fanout']['delivered']}/"
            f"{results['hub_fanout']['expected']} (hub), "
            f"{results['baseline_fanout']['delivered']}/"
            f"{results['baseline_fanout']['expected']} (baseline)"
        )
    if "hub_hold" in results:
        print(
            report(
                f"(b) {opts.hold} connections",
                results["hub_hold"],
                results["baseline_hold"],
                ["held", "kibPerConnection", "connectS"],
            )
        )
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
