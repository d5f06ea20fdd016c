"""``objectos``: run, inspect and stop a hub.

    objectos up [--config configs/objectos.yaml] [--host 127.0.0.1] [--port 8000]
                [--address RAY_ADDRESS] [--dev]
    objectos status [--config ...] [--address ...] [--json]   (plugins and gateways)
    objectos restart PLUGIN_ID [--config ...] [--address ...]
    objectos down [--config ...] [--address ...]
    objectos user create --email EMAIL [--password PW] [--name NAME]
                         [--roles ROLE,...] [--config ...]

Without ``--address``, ``up`` starts a local Ray head (``ray start --head
--block`` in its own session, on a free port, bound to 127.0.0.1) and records it
in ``<dataDir>/hub.json``; ``down`` stops exactly that Ray instance. With
``--address``, the hub runs on an existing ``ray start`` cluster and ``down``
leaves the cluster running.

``user create`` is how a hub gets its first administrator (and how an
operator adds accounts with any roles): it writes the account straight into
the hub's database, the same one the HTTP replicas authenticate against, so
it works whether or not the hub is running and needs no Ray. Roles must name
a role or permission set of the hub's ``*.permission.yml`` (in the sample CRM
``ceo`` or ``admin`` hold ``modify_all_data``). Without ``--password`` the
password is read from the terminal (or the first line of stdin). Sign-up, when
``auth.allowSignUp`` is on, only ever grants ``auth.defaultRoles``.

Exit codes: 0 ok, 1 the hub did not become healthy, 2 bad input (manifest,
unknown plugin, dependency cycle) — nothing was started, 3 no hub found.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deployments.ports import free_port, port_free
from objectos.errors import ObjectOSError
from objectos.kernel.loader import CheckedHub, check_hub, load_hub
from objectos.protocol.manifest import HubManifest

EXIT_OK, EXIT_UNHEALTHY, EXIT_BAD_INPUT, EXIT_NO_HUB = 0, 1, 2, 3
APP_NAME = "objectos"


def haproxy_env() -> dict[str, str]:
    """Environment that turns on Serve's HAProxy ingress; it must be set before Ray starts.

    The ingress is ~9x faster than Serve's Python proxy on the 2-core reference
    machine (ARCHITECTURE.md). Its stats and metrics listeners default to fixed
    ports (8404, 9101); free ones let several hubs share a machine.
    """
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": os.environ.get(
            "RAY_SERVE_HAPROXY_STATS_PORT", str(free_port())
        ),
        "RAY_SERVE_HAPROXY_METRICS_PORT": os.environ.get(
            "RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port())
        ),
    }


def _say(message: str) -> None:
    print(message, flush=True)


def _fail(exc: ObjectOSError) -> int:
    print(f"error: {exc.message}", file=sys.stderr)
    if len(exc.field_errors) > 1:
        for fe in exc.field_errors:
            print(f"  - {fe.field}: {fe.message}", file=sys.stderr)
    return EXIT_BAD_INPUT


class HubState:
    """``<dataDir>/hub.json``: how to reach the hub this data dir runs."""

    def __init__(self, data_dir: str) -> None:
        self.path = Path(data_dir) / "hub.json"

    def read(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            return data
        except (OSError, ValueError):
            return None

    def write(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def start_local_ray(data_dir: str, num_cpus: int | None, haproxy: bool = True) -> dict[str, Any]:
    """Start a Ray head on a free port that lives until ``objectos down``."""
    port = free_port()
    log = Path(data_dir) / "ray-head.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        _ray_bin(),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    env = {**os.environ, **haproxy_env()} if haproxy else dict(os.environ)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}; see {log}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return {"address": address, "rayPid": proc.pid, "startedRay": True}
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"ray start did not listen on {address} within 60 s; see {log}")


def stop_local_ray(pid: int, timeout_s: float = 45.0) -> None:
    """SIGTERM the ``ray start --block`` process: it stops only its own Ray."""
    if not _pid_alive(pid):
        return
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _ray_bin() -> str:
    ray_bin = Path(sys.executable).with_name("ray")
    return str(ray_bin) if ray_bin.exists() else "ray"


def ensure_token_auth() -> None:
    """Use Ray's token auth on both ends (Ray 2.60 enables it for new clusters).

    A driver joining an existing cluster only sends the token when
    RAY_AUTH_MODE=token, so set it (unless the operator chose otherwise) and
    make sure ~/.ray/auth_token exists before the head starts.
    """
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN") and not (Path.home() / ".ray" / "auth_token").exists():
        subprocess.run(
            [_ray_bin(), "get-auth-token", "--generate"], check=True, capture_output=True
        )


def stop_haproxy(node_ids: list[str]) -> int:
    """Stop the HAProxy ingress processes of the given Ray nodes.

    Serve runs HAProxy as a child of an actor; when the whole local Ray goes
    away the binary outlives it (reparented to init) and keeps the HTTP port.
    Its config lives under ``/tmp/haproxy-serve/<node id>/``, which is how we
    recognise ours and no other hub's.
    """
    stopped = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "haproxy" in cmdline and any(f"haproxy-serve/{n}" in cmdline for n in node_ids):
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)
                stopped += 1
    return stopped


def connect(address: str) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace="objectos", log_to_driver=False)


def _check(config: str) -> CheckedHub:
    hub = load_hub(config)
    return check_hub(hub, source=config)


def _plugin_table(plugins: list[dict[str, Any]]) -> str:
    rows = [("#", "PLUGIN", "VERSION", "STATUS", "RESTARTS", "REASON")]
    for p in plugins:
        rows.append(
            (
                str(p["order"]),
                p["id"],
                p["version"],
                p["status"],
                str(p["restarts"]),
                (p.get("reason") or "")[:80],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _wait_for_plugins(kernel: Any, timeout_s: float) -> list[dict[str, Any]]:
    import ray

    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    plugins: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        plugins = ray.get(kernel.plugins.remote())
        for p in plugins:
            if seen.get(p["id"]) != p["status"]:
                seen[p["id"]] = p["status"]
                reason = f" ({p['reason']})" if p.get("reason") else ""
                _say(f"  plugin {p['id']:<28} {p['status']}{reason}")
        if ray.get(kernel.settled.remote()):
            return plugins
        time.sleep(0.3)
    return plugins


def _wait_http(url: str, timeout_s: float) -> int:
    import httpx

    deadline = time.monotonic() + timeout_s
    status = 0
    while time.monotonic() < deadline:
        try:
            status = httpx.get(url, timeout=5).status_code
            if status == 200:
                return status
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return status


def cmd_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        checked = _check(args.config)
    except ObjectOSError as exc:
        return _fail(exc)
    hub = checked.hub
    host = args.host or hub.serve.host
    port = args.port or hub.serve.port
    _say(f"objectos: {len(checked.order)} plugins in order: {' -> '.join(checked.order)}")
    state_file = HubState(hub.dataDir)
    state = state_file.read() or {}
    address = args.address
    reusing = bool(state.get("startedRay") and _pid_alive(int(state.get("rayPid", 0))))
    if not reusing and not port_free(host, port):
        print(f"error: {host}:{port} is already in use (choose --port)", file=sys.stderr)
        return EXIT_BAD_INPUT
    realtime = hub.realtime
    busy = [
        realtime.port + index
        for index in range(realtime.gatewaysPerNode)
        if realtime.enabled
        and realtime.port
        and not port_free(realtime.host, realtime.port + index)
    ]
    if busy and not reusing:
        print(
            f"error: realtime.port {realtime.host}:{busy[0]} is already in use "
            "(set realtime.port in the manifest, or realtime.enabled: false)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    started_ray = False
    if address is None:
        if reusing:
            address = state["address"]
            _say(f"objectos: reusing local Ray at {address}")
        else:
            _say("objectos: starting local Ray ...")
            state = start_local_ray(hub.dataDir, args.num_cpus, hub.serve.haproxy)
            started_ray = True
            address = state["address"]
            _say(f"objectos: Ray head at {address}")
    else:
        state = {"address": address, "startedRay": False}
    state_file.write({**state, "config": str(Path(args.config).resolve())})
    try:
        kernel, status, gateways = _deploy(args, checked, address, host, port)
    except Exception as exc:
        print(f"error: the hub failed to start: {type(exc).__name__}: {exc}", file=sys.stderr)
        if started_ray:
            # Leave nothing half-started behind: this run started Ray, so stop it.
            _say("objectos: stopping the local Ray this run started ...")
            _teardown_local(state)
            state_file.clear()
        return EXIT_UNHEALTHY
    base = f"http://{host}:{port}"
    state_file.write({**state, "config": str(Path(args.config).resolve()), "url": base})
    elapsed = time.monotonic() - started
    if status != 200:
        _say(f"objectos: hub is up but NOT healthy after {elapsed:.1f}s (health {status}).")
        _say("objectos: inspect with `objectos status`; stop with `objectos down`.")
        return EXIT_UNHEALTHY
    _say(f"objectos: healthy in {elapsed:.1f}s")
    _say(f"  API        {base}/api/v1")
    _say(f"  health     {base}/api/v1/health")
    _say(f"  plugins    {base}/api/v1/admin/plugins")
    _say(f"  metrics    {base}/metrics")
    _say(f"  SSE        {base}/api/v1/realtime/sse")
    for gateway in gateways:
        _say(f"  realtime   {gateway['url']}  (Socket.IO; documents /yjs|<name>)")
    _say(f"  Ray        {address}")
    if args.dev:
        return dev_loop(args, checked, kernel)
    return EXIT_OK


def _deploy(
    args: argparse.Namespace, checked: CheckedHub, address: str, host: str, port: int
) -> tuple[Any, int, list[dict[str, Any]]]:
    """Kernel, plugins, Serve app, realtime gateways; the kernel, the health status code
    and the gateways' ``info`` (none when ``realtime.enabled`` is false)."""
    import ray
    from ray import serve

    from actors.factory import get_or_create_kernel
    from deployments.app import build_app

    connect(address)
    kernel = get_or_create_kernel(checked.hub.model_dump())
    _say("objectos: kernel started; starting plugins ...")
    _wait_for_plugins(kernel, args.timeout)
    serve.start(http_options={"host": host, "port": port})
    app = build_app({"config": args.config, "realtime": False})  # gateways follow the app
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    status = _wait_http(f"http://{host}:{port}/api/v1/health", args.timeout)
    _say(_plugin_table(ray.get(kernel.plugins.remote())))
    return kernel, status, _start_realtime(checked.hub)


def _start_realtime(hub: HubManifest) -> list[dict[str, Any]]:
    """Start (or find) every node's gateway unless ``realtime.enabled`` is false."""
    from deployments.realtime import ensure_gateways

    if not hub.realtime.enabled:
        _say("objectos: realtime is disabled (realtime.enabled: false)")
        return []
    _say("objectos: starting realtime gateways ...")
    return ensure_gateways(hub.model_dump())


def _teardown_local(state: dict[str, Any]) -> None:
    import ray

    node_ids = [node["NodeID"] for node in ray.nodes()] if ray.is_initialized() else []
    ray.shutdown()
    stop_local_ray(int(state["rayPid"]))
    stop_haproxy(node_ids)


def dev_loop(args: argparse.Namespace, checked: CheckedHub, kernel: Any) -> int:
    """Watch plugin code and the config; reload what changed."""
    import ray
    from watchfiles import watch

    from deployments.realtime import ensure_gateways
    from objectos.kernel.loader import plugin_module_file

    files: dict[Path, str] = {}
    for pid, entry in checked.hub.plugins.items():
        path = plugin_module_file(entry.module)
        if path is not None:
            files[path.resolve()] = pid
    config = Path(args.config).resolve()
    _say(f"objectos: --dev: watching {len(files)} plugin files and {config.name}; Ctrl-C to stop")
    try:
        for changes in watch(config, *files, debounce=300):
            changed = {Path(p).resolve() for _, p in changes}
            if config in changed:
                _say("objectos: config changed; re-checking")
                try:
                    _check(args.config)
                except ObjectOSError as exc:
                    _fail(exc)
                    continue
                _say(
                    "objectos: config is valid; restart the hub to apply plugin-set "
                    "or realtime changes"
                )
            for path in changed:
                plugin_id = files.get(path)
                if plugin_id is not None:
                    _say(f"objectos: {path.name} changed; reloading {plugin_id}")
                    row = ray.get(kernel.reload_plugin.remote(plugin_id))
                    _say(f"  plugin {plugin_id} {row['status']} {row.get('reason') or ''}")
            if checked.hub.realtime.enabled:
                # Reloads leave the gateways alone; this restarts one that died meanwhile.
                ensure_gateways(checked.hub.model_dump())
    except KeyboardInterrupt:
        _say("objectos: dev mode stopped; the hub keeps running (`objectos down` stops it)")
    return EXIT_OK


def _address(args: argparse.Namespace) -> tuple[str | None, dict[str, Any]]:
    if args.address:
        return args.address, {}
    try:
        hub = load_hub(args.config)
    except ObjectOSError:
        return None, {}
    state = HubState(hub.dataDir).read() or {}
    return state.get("address"), state


def cmd_status(args: argparse.Namespace) -> int:
    address, _ = _address(args)
    if address is None:
        print("error: no hub is running for this config (no hub.json)", file=sys.stderr)
        return EXIT_NO_HUB
    import ray

    from actors.factory import get_kernel

    try:
        connect(address)
        kernel = get_kernel()
    except (ValueError, ConnectionError) as exc:
        print(f"error: no hub at {address}: {exc}", file=sys.stderr)
        return EXIT_NO_HUB
    status = ray.get(kernel.status.remote())
    gateways = _gateway_stats()
    if args.json:
        print(json.dumps({**status, "gateways": gateways}, indent=2, default=str))
    else:
        _say(f"hub {status['hub']['id']} ({'ready' if status['ready'] else 'NOT ready'})")
        _say(_plugin_table(status["plugins"]))
        _say(_gateway_table(gateways) if gateways else "no realtime gateways")
    return EXIT_OK if status["ready"] else EXIT_UNHEALTHY


def _gateway_stats(timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every live gateway's ``stats()`` (connections, documents); ``error`` if it won't say."""
    import ray

    from actors.factory import get_gateway, live_gateways

    rows = []
    for name in live_gateways():
        handle = get_gateway(name)
        if handle is None:
            continue
        try:
            rows.append(dict(ray.get(handle.stats.remote(), timeout=timeout_s)))
        except Exception as exc:  # dead or stuck: show it rather than hide it
            rows.append({"name": name, "error": f"{type(exc).__name__}: {exc}"[:200]})
    return rows


def _gateway_table(gateways: list[dict[str, Any]]) -> str:
    rows = [("GATEWAY", "URL", "CONNECTIONS", "DOCUMENTS", "PID")]
    for g in gateways:
        rows.append(
            (
                str(g["name"]),
                str(g.get("url") or g.get("error") or ""),
                str(g.get("connections", "-")),
                str(len(g["documents"]) if isinstance(g.get("documents"), list | dict) else "-"),
                str(g.get("pid", "-")),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def cmd_restart(args: argparse.Namespace) -> int:
    address, _ = _address(args)
    if address is None:
        print("error: no hub is running for this config", file=sys.stderr)
        return EXIT_NO_HUB
    import ray

    from actors.factory import get_kernel

    connect(address)
    try:
        row = ray.get(get_kernel().restart_plugin.remote(args.plugin))
    except ObjectOSError as exc:
        return _fail(exc)
    _say(f"plugin {row['id']}: {row['status']} {row.get('reason') or ''}")
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    address, state = _address(args)
    if address is None:
        print("error: no hub is running for this config", file=sys.stderr)
        return EXIT_NO_HUB
    try:
        hub = load_hub(args.config)
    except ObjectOSError as exc:
        return _fail(exc)
    if state.get("startedRay") and not _pid_alive(int(state.get("rayPid", 0))):
        HubState(hub.dataDir).clear()
        _say("objectos: the local Ray instance is already gone")
        return EXIT_OK
    import ray
    from ray import serve

    from actors.factory import get_kernel
    from deployments.realtime import stop_realtime

    connect(address)
    stopped = stop_realtime()
    if stopped["gateways"]:
        _say(f"objectos: stopped realtime gateways: {', '.join(stopped['gateways'])}")
    try:
        kernel = get_kernel()
    except ValueError:
        kernel = None
    if kernel is not None:
        _say("objectos: stopping plugins (reverse dependency order) ...")
        errors = ray.get(kernel.shutdown.remote())
        for error in errors:
            _say(f"  warning: {error}")
        ray.kill(kernel, no_restart=True)
        _wait_gone(get_kernel)
    if not state.get("startedRay"):
        # On a shared cluster remove only our app. (A local Ray we started goes
        # away whole below, which spares the HAProxy ingress's 30 s drain.)
        try:
            serve.delete(APP_NAME)
        except Exception as exc:  # Serve may not be running
            _say(f"  note: {exc}")
    _forget_kernel_state(hub.id)
    if state.get("startedRay"):
        _say("objectos: stopping local Ray ...")
        _teardown_local(state)
    else:
        ray.shutdown()
    HubState(hub.dataDir).clear()
    _say("objectos: down")
    return EXIT_OK


def _wait_gone(lookup: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            lookup()
        except ValueError:
            return
        time.sleep(0.1)


def _forget_kernel_state(hub_id: str) -> None:
    from ray.experimental import internal_kv

    from actors.kernel import KV_NAMESPACE

    for key in (f"kernel:{hub_id}", f"installed:{hub_id}"):
        internal_kv._internal_kv_del(key.encode(), namespace=KV_NAMESPACE)


def _known_roles(metadata_dirs: list[str]) -> set[str]:
    """Role and permission set names of the hub's security metadata (what a token may name)."""
    from objectos.metadata.registry import MetadataRegistry
    from objectos.security.loading import load_security

    security = load_security(MetadataRegistry.load(metadata_dirs))
    return {role.name for role in security.roles()} | {ps.name for ps in security.permissionSets}


def _read_password() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


async def _create_user(
    hub: HubManifest, email: str, password: str | None, name: str | None, roles: list[str]
) -> dict[str, Any]:
    from objectos.api.auth import build_identity

    identity, _ = build_identity(hub.auth, hub.database.url, hub.dataDir)
    try:
        user = await identity.create_user(email, password, name, roles)
    finally:
        await identity.aclose()
    public: dict[str, Any] = user.public()
    return public


def cmd_user_create(args: argparse.Namespace) -> int:
    """Create an account with the given roles in the hub's database; print it as JSON."""
    import asyncio

    try:
        hub = load_hub(args.config)
        roles = _roles_argument(hub, args.roles)
        password = args.password if args.password is not None else _read_password()
        Path(hub.dataDir).mkdir(parents=True, exist_ok=True)  # the signing key file lives here
        user = asyncio.run(_create_user(hub, args.email, password, args.name, roles))
    except ObjectOSError as exc:
        return _fail(exc)
    _say(json.dumps(user, indent=2, sort_keys=True))
    return EXIT_OK


async def _create_service_account(hub: HubManifest, name: str, roles: list[str]) -> dict[str, Any]:
    from objectos.api.auth import build_identity

    identity, _ = build_identity(hub.auth, hub.database.url, hub.dataDir)
    try:
        account = await identity.create_service_account(name, roles)
        record, key = await identity.create_api_key(account.id, name=name)
    finally:
        await identity.aclose()
    return {**account.public(), "keyId": record.key_id, "apiKey": key}


def _roles_argument(hub: HubManifest, given: str | None) -> list[str]:
    from objectos.errors import FieldError, InvalidField

    roles = [r.strip() for r in (given or "").split(",") if r.strip()]
    unknown = sorted(set(roles) - _known_roles(hub.metadata))
    if unknown:
        # A misspelt role would make an account that silently holds nothing.
        raise InvalidField(
            f"unknown role(s): {', '.join(unknown)}",
            field_errors=[
                FieldError("roles", "unknown_role", f"{role!r} is no role or permission set")
                for role in unknown
            ],
        )
    return roles


def cmd_service_account_create(args: argparse.Namespace) -> int:
    """Create a service account with one API key; print both as JSON (the key only now).

    The key authenticates machine clients, e.g. a Prometheus scrape of
    ``/metrics``: ``Authorization: Bearer <apiKey>``.
    """
    import asyncio

    try:
        hub = load_hub(args.config)
        roles = _roles_argument(hub, args.roles)
        Path(hub.dataDir).mkdir(parents=True, exist_ok=True)
        created = asyncio.run(_create_service_account(hub, args.name, roles))
    except ObjectOSError as exc:
        return _fail(exc)
    _say(json.dumps(created, indent=2, sort_keys=True))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="objectos", description="Run an ObjectOS hub on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="configs/objectos.yaml", help="hub manifest")
        p.add_argument("--address", default=None, help="Ray address of a running cluster")

    up = sub.add_parser("up", help="start the hub and wait until it is healthy")
    common(up)
    up.add_argument("--host", default=None, help="HTTP bind address (default from config)")
    up.add_argument("--port", type=int, default=None, help="HTTP port (default from config)")
    up.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray head")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for health")
    up.add_argument("--dev", action="store_true", help="watch plugin code and config, reload")
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="print the plugin table")
    common(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    restart = sub.add_parser("restart", help="restart one plugin")
    common(restart)
    restart.add_argument("plugin", help="plugin id")
    restart.set_defaults(func=cmd_restart)

    down = sub.add_parser("down", help="stop the hub (and the local Ray it started)")
    common(down)
    down.set_defaults(func=cmd_down)

    user = sub.add_parser("user", help="manage accounts in the hub's database")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    create = user_sub.add_parser("create", help="create an account (e.g. the first admin)")
    create.add_argument("--config", default="configs/objectos.yaml", help="hub manifest")
    create.add_argument("--email", required=True, help="sign-in email")
    create.add_argument(
        "--password", default=None, help="password (default: asked for, or read from stdin)"
    )
    create.add_argument("--name", default=None, help="display name")
    create.add_argument(
        "--roles", default="", help="comma-separated roles or permission sets, e.g. ceo"
    )
    create.set_defaults(func=cmd_user_create)

    service = sub.add_parser(
        "service-account", help="manage service accounts (machine clients with API keys)"
    )
    service_sub = service.add_subparsers(dest="service_command", required=True)
    make = service_sub.add_parser(
        "create", help="create a service account and an API key (e.g. for a metrics scraper)"
    )
    make.add_argument("--config", default="configs/objectos.yaml", help="hub manifest")
    make.add_argument("--name", required=True, help="what the account is for, e.g. prometheus")
    make.add_argument(
        "--roles", default="", help="comma-separated roles or permission sets (default: none)"
    )
    make.set_defaults(func=cmd_service_account_create)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("user", "service-account"):  # these touch only the database
        # Ray reads its auth mode when it is first imported: settle it before that.
        ensure_token_auth()
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
