"""Hub cold start (`objectos up` -> healthy) and memory per plugin actor, against a baseline.

    python benchmarks/coldstart/bench_coldstart.py [--runs 3]

Baseline, measured in the same run: a bare `ray.init` (local, no dashboard) plus
one bare actor (`num_cpus=0`): time until the actor answers, and that actor
process's resident memory. The hub: `objectos up` on the default core plugins
(storage, metrics, example) with its own local Ray, from the command to a 200
from /api/v1/health; then the RSS of every plugin host process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BASELINE = r"""
import os, time, json
t0 = time.perf_counter()
import ray
ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False)
@ray.remote(num_cpus=0)
class Bare:
    def pid(self):
        return os.getpid()
actor = Bare.remote()
pid = ray.get(actor.pid.remote())
elapsed = time.perf_counter() - t0
time.sleep(1.0)  # let the process settle before reading its RSS
print(json.dumps({"seconds": elapsed, "pid": pid, "rss": open(f"/proc/{pid}/status").read()}))
ray.shutdown()
"""

CONFIG = """\
id: com.bench.coldstart
dataDir: data
plugins:
  com.objectos.storage: {{module: 'objectos.plugins.storage:StoragePlugin'}}
  com.objectos.metrics: {{module: 'objectos.plugins.metrics:MetricsPlugin'}}
  com.example.hello: {{module: 'objectos.plugins.example:HelloPlugin'}}
serve: {{host: 127.0.0.1, port: {port}, replicas: 2}}
"""


def rss_mib(status_text: str) -> float:
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ValueError("no VmRSS")


def baseline() -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", BASELINE], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    data = json.loads(out.strip().splitlines()[-1])
    return data["seconds"], rss_mib(data["rss"])


def objectos(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def hub(port: int) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "objectos.yaml"
        config.write_text(CONFIG.format(port=port))
        t0 = time.perf_counter()
        up = objectos("up", "--config", str(config))
        elapsed = time.perf_counter() - t0
        try:
            if up.returncode != 0:
                raise RuntimeError(up.stdout + up.stderr)
            status = json.loads(objectos("status", "--config", str(config), "--json").stdout)
            rss = []
            for plugin in status["plugins"]:
                pid = plugin["lifecycle"]["pid"]
                rss.append(rss_mib(Path(f"/proc/{pid}/status").read_text()))
        finally:
            objectos("down", "--config", str(config))
    return elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=18765)
    args = parser.parse_args()
    base_t, base_rss, hub_t, hub_rss = [], [], [], []
    for run in range(args.runs):
        t, r = baseline()
        base_t.append(t)
        base_rss.append(r)
        t, rss = hub(args.port)
        hub_t.append(t)
        hub_rss.extend(rss)
        print(
            f"run {run + 1}: baseline {base_t[-1]:.2f}s {r:.0f} MiB | hub {t:.2f}s, "
            f"plugin RSS {', '.join(f'{x:.0f}' for x in rss)} MiB",
            flush=True,
        )
    med = statistics.median
    print()
    print(
        f"cold start: hub {med(hub_t):.2f}s vs bare ray.init+actor {med(base_t):.2f}s "
        f"-> ratio {med(hub_t) / med(base_t):.2f}x (median of {args.runs})"
    )
    print(
        f"memory per plugin actor: {med(hub_rss):.0f} MiB vs bare actor {med(base_rss):.0f} MiB "
        f"-> ratio {med(hub_rss) / med(base_rss):.2f}x"
    )


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
