"""REST throughput and latency of the hub: Ray Serve vs the same ASGI app under plain uvicorn.

    python benchmarks/rest/bench_rest.py compare [--duration 10] [--repeat 3]
    python benchmarks/rest/bench_rest.py search  [--duration 10] [--repeat 2]

``compare`` starts its own Ray head (``ray start`` on a free port, HAProxy
ingress enabled as ``objectos up`` does), runs the hub of
``configs/objectos.yaml`` (kernel, plugins, data plugin on a fresh SQLite file
in a temp dir), seeds accounts, and measures with ``wrk`` (50 connections):

    get     GET  /api/v1/data/account/{random seeded id}
    list    GET  /api/v1/data/account?filter={"industry":"retail"}&top=20
    create  POST /api/v1/data/account

against (a) the hub through Ray Serve (HAProxy ingress, 2 replicas) and (b)
the very same ASGI app (``HubHTTP(hub).app()``) under ``uvicorn --workers 2``
joined to the same Ray (kernel, data plugin, rate-limit actor) — alternating
(a) and (b) ``--repeat`` times in the same run, and prints req/s, p50/p95/p99
and the ratio (a)/(b). A ``ceiling`` row (wrk against a hello-world Starlette
app under uvicorn, 2 workers) shows how much the load generator itself can do
on this machine.

``search`` measures Serve configurations against each other: the default
Python proxy vs the HAProxy ingress, 1/2/3 replicas, access logs on/off and
``max_ongoing_requests`` — each on a fresh Ray instance.

The rate limiter is on in every run, with limits far above the load (so its
cost is measured, and nothing is refused); ``--no-ratelimit`` turns it off.
Needs ``wrk`` (Debian: ``apt-get install wrk``). Run it when ``uptime``
shows a quiet machine; the load average is printed with every result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIG = ROOT / "configs" / "objectos.yaml"
HAPROXY_ENV = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")
SEED_ACCOUNTS = 2000
INDUSTRIES = ("technology", "finance", "healthcare", "retail", "other")
LIST_PATH = "/api/v1/data/account?filter=%7B%22industry%22%3A%22retail%22%7D&top=20"

# -- wrk scripts ---------------------------------------------------------------------------------

WRK_AUTH = r"""
local bearer = os.getenv("BENCH_AUTHORIZATION")
if bearer and bearer ~= "" then wrk.headers["Authorization"] = bearer end
"""

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"status_errors":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p95_us":%d,' ..
    '"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""

WRK_GET = r"""
local ids = {}
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
init = function(args)
  for line in io.lines(args[1]) do ids[#ids + 1] = line end
  math.randomseed(tid * 7919)
end
request = function()
  return wrk.format("GET", "/api/v1/data/account/" .. ids[math.random(#ids)])
end
"""

WRK_CREATE = r"""
local counter = 0
local threads = 0
local tag = ""
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
init = function(args)
  tag = args[1] .. "-" .. tid
end
request = function()
  counter = counter + 1
  local body = string.format(
    '{"name":"Bench %s-%d","industry":"retail","employees":%d}', tag, counter, counter % 500)
  -- Explicit headers replace wrk.headers, so carry the Authorization over.
  local headers = {["Content-Type"] = "application/json",
                   ["Authorization"] = wrk.headers["Authorization"]}
  return wrk.format("POST", "/api/v1/data/account", headers, body)
end
"""


@dataclass
class Route:
    """One thing a benchmark client does over and over."""

    name: str
    path: str
    script: str = ""
    needs_ids: bool = False


ROUTES = {
    "get": Route("get", "/", WRK_GET, needs_ids=True),
    "list": Route("list", LIST_PATH),
    "create": Route("create", "/", WRK_CREATE),
    "health": Route("health", "/api/v1/health"),
    "discovery": Route("discovery", "/api/v1/discovery"),
    "hello": Route("hello", "/hello"),
}


@dataclass
class Result:
    """One wrk run."""

    target: str
    route: str
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    errors: int
    load: float
    #: CPU time the server side (Ray session: replicas, HAProxy, actors; uvicorn
    #: session: workers) spent per request, less its idle burn; much less
    #: sensitive to other load on the machine than req/s.
    server_cpu_ms: float = 0.0
    #: CPU time wrk itself spent per request.
    wrk_cpu_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


#: Session ids whose processes count as "the server" (the Ray head this script
#: started and every process under it; the uvicorn server and its workers).
SERVER_SESSIONS: set[int] = set()
UVICORN_SESSIONS: set[int] = set()
_TICKS = os.sysconf("SC_CLK_TCK")


def _category(pid: str, sid: int, ray_sessions: set[int]) -> str:
    if sid not in ray_sessions:
        return "uvicorn"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "ray"
    if cmdline.startswith(b"ray::ServeReplica"):
        return "replicas"
    if b"haproxy" in cmdline:
        return "haproxy"
    return "ray"  # gcs, raylet, Serve controller/proxy, kernel, plugins, ratelimiter


def server_cpu_s() -> dict[str, float]:
    """CPU seconds (user + system) of the server's live processes, by category:
    ``replicas`` (Serve replicas), ``haproxy``, ``ray`` (everything else of the
    Ray session) and ``uvicorn`` (the uvicorn server and its workers)."""
    ray_sessions = SERVER_SESSIONS - UVICORN_SESSIONS
    ticks: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name; sid is field 6, utime/stime 14/15.
        fields = stat[stat.rindex(")") + 2 :].split()
        sid = int(fields[3])
        if sid in SERVER_SESSIONS:
            category = _category(proc.name, sid, ray_sessions)
            ticks[category] = ticks.get(category, 0) + int(fields[11]) + int(fields[12])
    return {k: v / _TICKS for k, v in ticks.items()}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> float:
    return os.getloadavg()[0]


def run_wrk(
    url: str,
    route: Route,
    workdir: Path,
    *,
    duration: float,
    connections: int,
    threads: int,
    args: list[str],
    authorization: str = "",
) -> dict[str, Any]:
    script = workdir / f"wrk_{route.name}.lua"
    script.write_text(WRK_AUTH + route.script + WRK_DONE)
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url.rstrip("/") + route.path,
    ]
    if args:
        cmd += ["--", *args]
    env = {**os.environ, "BENCH_AUTHORIZATION": authorization}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            data: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            return data
    raise RuntimeError(f"wrk printed no summary:\n{out}")


def measure(
    target: str,
    url: str,
    route: Route,
    workdir: Path,
    opts: argparse.Namespace,
    tag: str,
) -> Result:
    """A short warm-up, then one measured wrk run, as the bench user (fresh token)."""
    args = {"get": [str(workdir / "ids.txt")], "create": [tag]}.get(route.name, [])
    warm = {"create": [tag + "w"]}.get(route.name, args)
    authorization = "" if route.name in ("hello", "health", "discovery") else bearer(url)
    common = {
        "connections": opts.connections,
        "threads": opts.threads,
        "authorization": authorization,
    }
    run_wrk(url, route, workdir, duration=opts.warmup, args=warm, **common)
    # What the server burns with no requests at all (Ray's own heartbeats,
    # health checks, idle replicas) is not the cost of a request: measure it
    # first and take it out.
    idle_before = server_cpu_s()
    time.sleep(opts.idle)
    idle = {k: v / opts.idle for k, v in cpu_delta(idle_before, server_cpu_s()).items()}
    load = load_average()
    before, wrk_cpu, started = server_cpu_s(), children_cpu_s(), time.monotonic()
    data = run_wrk(url, route, workdir, duration=opts.duration, args=args, **common)
    used = cpu_delta(before, server_cpu_s())
    elapsed = time.monotonic() - started
    wrk_cpu = children_cpu_s() - wrk_cpu
    per_request = {
        k: 1000 * max(0.0, v - idle.get(k, 0.0) * elapsed) / max(1, data["requests"])
        for k, v in used.items()
    }
    errors = sum(
        data[k]
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    result = Result(
        target=target,
        route=route.name,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        requests=data["requests"],
        errors=errors,
        load=load,
        server_cpu_ms=sum(per_request.values()),
        wrk_cpu_ms=1000 * wrk_cpu / max(1, data["requests"]),
        extra={"cpu_ms_by_process": per_request, "idle_cores": idle},
    )
    flag = "" if errors == 0 else f"  !! {errors} errors"
    print(
        f"  {target:<34} {route.name:<9} {result.rps:9.0f} req/s  p50 {result.p50_ms:7.1f}  "
        f"p95 {result.p95_ms:7.1f}  p99 {result.p99_ms:7.1f} ms  "
        f"cpu/req {result.server_cpu_ms:.2f} ms "
        f"({' '.join(f'{k} {v:.2f}' for k, v in sorted(per_request.items()))})  "
        f"(load {load:.2f}){flag}",
        flush=True,
    )
    return result


# -- the hub on its own Ray ----------------------------------------------------------------------


@contextlib.contextmanager
def ray_cluster(workdir: Path, *, haproxy: bool) -> Iterator[str]:
    """A Ray head started for this run (``ray start`` on a free port), stopped after."""
    import ray

    from deployments.cli import start_local_ray, stop_haproxy, stop_local_ray

    state = start_local_ray(str(workdir / ("ray-haproxy" if haproxy else "ray-proxy")), 2, haproxy)
    SERVER_SESSIONS.add(int(state["rayPid"]))
    try:
        ray.init(address=state["address"], namespace="objectos", log_to_driver=False)
        yield str(state["address"])
    finally:
        SERVER_SESSIONS.discard(int(state["rayPid"]))
        node_ids = [n["NodeID"] for n in ray.nodes()] if ray.is_initialized() else []
        ray.shutdown()
        stop_local_ray(int(state["rayPid"]))
        stop_haproxy(node_ids)


def hub_payload(workdir: Path, ratelimit: bool, without: list[str] | None = None) -> dict[str, Any]:
    """configs/objectos.yaml on a fresh SQLite file, limits far above the load,
    less the plugins in ``without``."""
    from objectos.kernel.loader import load_hub

    hub = load_hub(CONFIG)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    payload = hub.model_dump()
    for plugin_id in without or ():
        del payload["plugins"][plugin_id]
    payload["dataDir"] = str(data_dir)
    payload["database"]["url"] = f"sqlite+aiosqlite:///{data_dir}/objectos.db"
    payload["serve"]["rateLimit"] = {
        "enabled": ratelimit,
        "default": {"rate": 1_000_000, "burst": 1_000_000},
    }
    return payload


BENCH_EMAIL = "bench@bench.test"
BENCH_PASSWORD = "load-generator-not-secret-1"


def create_bench_user(payload: dict[str, Any]) -> None:
    """A ``ceo`` (sees and edits every account) in the hub's database, created
    before any replica starts, as ``objectos user create`` does (this also
    writes the signing keys once, instead of racing replicas)."""
    from objectos.api.auth import build_identity
    from objectos.protocol.manifest import HubManifest

    hub = HubManifest.model_validate(payload)

    async def create() -> None:
        identity, _ = build_identity(hub.auth, hub.database.url, hub.dataDir)
        try:
            await identity.create_user(BENCH_EMAIL, BENCH_PASSWORD, "bench", ["ceo"])
        finally:
            await identity.aclose()

    asyncio.run(create())


def bearer(url: str, timeout_s: float = 120) -> str:
    """``Bearer <access token>`` of the bench user, signed in over HTTP."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = httpx.post(
                f"{url}/api/v1/auth/sign-in",
                json={"email": BENCH_EMAIL, "password": BENCH_PASSWORD},
                timeout=30,
            )
            if response.status_code == 200:
                return "Bearer " + str(response.json()["data"]["accessToken"])
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not sign in at {url}")
        time.sleep(0.5)


def start_kernel(payload: dict[str, Any], timeout_s: float = 180) -> Any:
    import ray

    from actors.factory import get_or_create_kernel

    kernel = get_or_create_kernel(payload)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.get(kernel.ready.remote()):
            return kernel
        time.sleep(0.5)
    raise RuntimeError(f"plugins not ready: {ray.get(kernel.plugins.remote())}")


@dataclass(frozen=True)
class ServeVariant:
    """One Serve configuration under test."""

    name: str
    haproxy: bool = True
    replicas: int = 2
    access_log: bool = True
    max_ongoing: int | None = None  # None: the deployment's own default


def deploy_serve(payload: dict[str, Any], variant: ServeVariant, port: int) -> str:
    from ray import serve

    from deployments.api import APIGateway

    options: dict[str, Any] = {"num_replicas": variant.replicas}
    if variant.max_ongoing is not None:
        options["max_ongoing_requests"] = variant.max_ongoing
    if not variant.access_log:
        # Both access logs: Serve's per-request line and the hub's JSON line.
        options["logging_config"] = {"enable_access_log": False}
        options["ray_actor_options"] = {
            "num_cpus": 0,
            "runtime_env": {"env_vars": {"OBJECTOS_ACCESS_LOG": "0"}},
        }
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = APIGateway.options(**options).bind(payload)  # type: ignore[attr-defined]
    serve.run(app, name="objectos", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return url


def wait_ready(url: str, timeout_s: float = 180) -> None:
    """Until the data routes answer 200 on every replica (20 in a row, new connections)."""
    import httpx

    headers = {"Authorization": bearer(url, timeout_s)}
    deadline = time.monotonic() + timeout_s
    streak = 0
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/api/v1/data/account?top=1", headers=headers, timeout=10)
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        streak = streak + 1 if ok else 0
        if streak >= 20:
            return
        time.sleep(0.05 if ok else 0.5)
    raise RuntimeError(f"{url} did not serve the data routes within {timeout_s}s")


async def _seed(url: str, count: int) -> list[str]:
    import httpx

    gate = asyncio.Semaphore(16)
    headers = {"Authorization": bearer(url)}
    async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as client:

        async def one(i: int) -> str:
            body = {"name": f"Seed {i:06d}", "industry": INDUSTRIES[i % len(INDUSTRIES)]}
            async with gate:
                response = await client.post("/api/v1/data/account", json=body)
            response.raise_for_status()
            return str(response.json()["data"]["id"])

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def seed(url: str, workdir: Path, count: int) -> None:
    ids = asyncio.run(_seed(url, count))
    (workdir / "ids.txt").write_text("\n".join(ids) + "\n")
    print(f"  seeded {len(ids)} accounts", flush=True)


# -- the same app under uvicorn ------------------------------------------------------------------


def uvicorn_app() -> Any:
    """``uvicorn --factory bench_rest:uvicorn_app``: the hub's ASGI app, joined to the bench Ray."""
    from deployments.cli import ensure_token_auth

    ensure_token_auth()
    import ray

    from deployments.api import HubHTTP
    from objectos.protocol.manifest import HubManifest

    ray.init(address=os.environ["OBJECTOS_BENCH_RAY"], namespace="objectos", log_to_driver=False)
    payload = json.loads(Path(os.environ["OBJECTOS_BENCH_HUB"]).read_text())
    return HubHTTP(HubManifest.model_validate(payload)).app()


def hello_app() -> Any:
    """``uvicorn --factory bench_rest:hello_app``: the load generator's ceiling."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route as StarletteRoute

    async def hello(request: Any) -> JSONResponse:
        return JSONResponse({"success": True, "data": "hello"})

    return Starlette(routes=[StarletteRoute("/hello", hello)])


@contextlib.contextmanager
def uvicorn_server(factory: str, env: dict[str, str], workers: int = 2) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"bench_rest:{factory}",
        "--app-dir",
        str(Path(__file__).resolve().parent),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    SERVER_SESSIONS.add(proc.pid)
    UVICORN_SESSIONS.add(proc.pid)
    try:
        yield url
    finally:
        SERVER_SESSIONS.discard(proc.pid)
        UVICORN_SESSIONS.discard(proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_http(url: str, timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s}s")


# -- reports -------------------------------------------------------------------------------------


def summarize(results: list[Result], baseline: str | None) -> str:
    """Medians per (target, route), the req/s spread, and ratios to ``baseline``.

    ``ratio`` is req/s against the baseline's; ``cpu x`` is server CPU per
    request against the baseline's (the steadier number on a shared machine).
    """
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.target, r.route), []).append(r)
    lines = [
        f"{'target':<38} {'route':<7} {'req/s median (min-max, n)':>27} "
        f"{'p50':>7} {'p95':>7} {'p99':>7} ms {'cpu/req':>8} {'ratio':>6} {'cpu x':>6} errors",
    ]
    for (target, route), runs in groups.items():
        rps = [r.rps for r in runs]
        med = statistics.median(rps)
        cpu = statistics.median(r.server_cpu_ms for r in runs)
        ratio = cpu_ratio = ""
        if baseline and target != baseline and (baseline, route) in groups:
            base = groups[(baseline, route)]
            ratio = f"{med / statistics.median(r.rps for r in base):.2f}"
            cpu_ratio = f"{cpu / statistics.median(r.server_cpu_ms for r in base):.2f}"
        lines.append(
            f"{target:<38} {route:<7} {med:8.0f} ({min(rps):6.0f}-{max(rps):6.0f}, {len(rps)}) "
            f"{statistics.median(r.p50_ms for r in runs):7.1f} "
            f"{statistics.median(r.p95_ms for r in runs):7.1f} "
            f"{statistics.median(r.p99_ms for r in runs):7.1f}    {cpu:5.2f}ms "
            f"{ratio:>6} {cpu_ratio:>6} {sum(r.errors for r in runs)}"
        )
    return "\n".join(lines)


def save(results: list[Result], opts: argparse.Namespace, kind: str) -> None:
    if not opts.json:
        return
    record = {
        "kind": kind,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "options": {k: v for k, v in vars(opts).items() if k != "func"},
        "cpus": os.cpu_count(),
        "results": [asdict(r) for r in results],
    }
    Path(opts.json).write_text(json.dumps(record, indent=2))


# -- commands ------------------------------------------------------------------------------------


def routes_of(opts: argparse.Namespace) -> list[Route]:
    return [ROUTES[name] for name in opts.routes.split(",")]


def cmd_compare(opts: argparse.Namespace) -> list[Result]:
    """(a) Serve + HAProxy, 2 replicas vs (b) the same app under uvicorn, 2 workers."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp:
        workdir = Path(tmp)
        if opts.ceiling:
            with uvicorn_server("hello_app", {}) as url:
                wait_http(f"{url}/hello")
                for i in range(opts.repeat):
                    results.append(measure("ceiling: hello, uvicorn x2", url, ROUTES["hello"],
                                           workdir, opts, f"c{i}"))  # fmt: skip
        payload = hub_payload(workdir, opts.ratelimit, opts.without)
        (workdir / "hub.json").write_text(json.dumps(payload))
        variant = ServeVariant("serve: haproxy, 2 replicas", replicas=opts.replicas)
        serve_name = f"(a) serve haproxy x{opts.replicas}"
        uvicorn_name = f"(b) uvicorn x{opts.workers}"
        create_bench_user(payload)
        with ray_cluster(workdir, haproxy=True) as address:
            start_kernel(payload)
            serve_url = deploy_serve(payload, variant, free_port())
            seed(serve_url, workdir, opts.seed)
            env = {"OBJECTOS_BENCH_RAY": address, "OBJECTOS_BENCH_HUB": str(workdir / "hub.json")}
            with uvicorn_server("uvicorn_app", env, workers=opts.workers) as uvicorn_url:
                wait_ready(uvicorn_url)
                for i in range(opts.repeat):
                    for route in routes_of(opts):
                        for name, url in ((serve_name, serve_url), (uvicorn_name, uvicorn_url)):
                            tag = f"{name[1]}{i}{time.time_ns() % 1_000_000}"
                            results.append(measure(name, url, route, workdir, opts, tag))
    print()
    print(summarize(results, baseline=uvicorn_name))
    save(results, opts, "compare")
    return results


SEARCH = [
    ServeVariant("python proxy, 2 replicas", haproxy=False),
    ServeVariant("haproxy, 1 replica", replicas=1),
    ServeVariant("haproxy, 2 replicas"),
    ServeVariant("haproxy, 3 replicas", replicas=3),
    ServeVariant("haproxy, 2 replicas, no access logs", access_log=False),
    ServeVariant("haproxy, 2 replicas, max_ongoing 32", max_ongoing=32),
    ServeVariant("haproxy, 2 replicas, max_ongoing 1000", max_ongoing=1000),
]


def cmd_search(opts: argparse.Namespace) -> list[Result]:
    """Each Serve configuration on a fresh Ray; rounds interleave the configurations."""
    chosen = [v for v in SEARCH if not opts.only or any(s in v.name for s in opts.only)]
    results: list[Result] = []
    for round_ in range(opts.repeat):
        for variant in chosen:
            print(f"-- {variant.name} (round {round_ + 1}/{opts.repeat})", flush=True)
            with tempfile.TemporaryDirectory(prefix="bench-rest-") as tmp:
                workdir = Path(tmp)
                payload = hub_payload(workdir, opts.ratelimit, opts.without)
                create_bench_user(payload)
                with ray_cluster(workdir, haproxy=variant.haproxy):
                    start_kernel(payload)
                    url = deploy_serve(payload, variant, free_port())
                    seed(url, workdir, opts.seed)
                    for route in routes_of(opts):
                        tag = f"s{round_}{time.time_ns() % 1_000_000}"
                        results.append(measure(variant.name, url, route, workdir, opts, tag))
    print()
    print(summarize(results, baseline="haproxy, 2 replicas"))
    save(results, opts, "search")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func in (("compare", cmd_compare), ("search", cmd_search)):
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("--duration", type=float, default=10, help="seconds per measured run")
        p.add_argument("--warmup", type=float, default=3, help="seconds of warm-up per run")
        p.add_argument("--idle", type=float, default=2, help="seconds of idle CPU sampling")
        p.add_argument("--connections", type=int, default=50, help="concurrent clients")
        p.add_argument("--threads", type=int, default=2, help="wrk threads")
        p.add_argument("--repeat", type=int, default=3, help="rounds")
        p.add_argument(
            "--routes", default="get,list,create", help="comma-separated: " + ",".join(ROUTES)
        )
        p.add_argument("--seed", type=int, default=SEED_ACCOUNTS, help="accounts to seed")
        p.add_argument("--no-ratelimit", dest="ratelimit", action="store_false")
        p.add_argument(
            "--without", action="append", metavar="PLUGIN_ID", help="drop a plugin of the config"
        )
        p.add_argument("--json", default=None, help="write all results to this file")
    compare = sub.choices["compare"]
    compare.add_argument("--replicas", type=int, default=2)
    compare.add_argument("--workers", type=int, default=2)
    compare.add_argument("--no-ceiling", dest="ceiling", action="store_false")
    sub.choices["search"].add_argument(
        "--only", action="append", help="run the variants whose name contains this (repeatable)"
    )
    opts = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    # Which ingress runs is decided per Ray instance below, never by the caller's shell.
    for key in HAPROXY_ENV:
        os.environ.pop(key, None)
    from deployments.cli import ensure_token_auth

    ensure_token_auth()
    print(f"{opts.command}: {os.cpu_count()} CPUs, load {load_average():.2f}", flush=True)
    opts.func(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
