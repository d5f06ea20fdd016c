"""One Ray instance and one Serve app per test session, bound to 127.0.0.1.

Ray gets an explicit free GCS port (never 6379: CI runs Redis there), the
HAProxy ingress is enabled before Ray starts (as `objectos up` does), and the
Serve app is deployed once: in HAProxy mode a redeploy waits out a 30 s drain.

The session app requires credentials on every data route. Before it is
deployed, :data:`CRM_USERS` (one account per sample-CRM role) are created in
its database the way ``objectos user create`` does; :func:`api_as` signs one
in over HTTP and returns a client carrying its bearer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests" / "integration"
INTEROP_DIR = ROOT / "tests" / "interop"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    from deployments.cli import haproxy_env

    chosen = {key: value for key, value in haproxy_env().items() if key not in os.environ}
    os.environ.update(chosen)
    import ray

    sys.path.insert(0, str(TESTS))
    ray.init(
        address="local",  # never join a cluster someone else left running
        include_dashboard=False,
        num_cpus=2,
        namespace="objectos",
        _node_ip_address="127.0.0.1",
        runtime_env={"env_vars": {"PYTHONPATH": f"{TESTS}:{ROOT}"}},
        log_to_driver=False,
    )
    # Ray's processes have their environment now. Forget the HAProxy listener
    # ports we picked, or hubs that tests start in subprocesses (`objectos up`)
    # would inherit them and collide with this session's HAProxy.
    for key in chosen:
        if key.endswith("_PORT"):
            os.environ.pop(key, None)
    yield ray
    from deployments.cli import stop_haproxy

    node_ids = [node["NodeID"] for node in ray.nodes()]
    ray.shutdown()
    stop_haproxy(node_ids)


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


CRM_METADATA = ROOT / "configs" / "metadata"
#: Identity settings of test hubs: cheap password hashing (argon2's minimum cost).
TEST_AUTH = {"passwordHashing": {"timeCost": 1, "memoryCostKib": 64, "parallelism": 1}}
#: Accounts of the session app: name -> roles (sample CRM roles, configs/metadata/security).
CRM_USERS = {
    "admin": ["ceo"],
    "east_manager": ["east_manager"],
    "east_rep": ["east_rep"],
    "west_rep": ["west_rep"],
    "nobody": [],
}
CRM_PASSWORD = "integration-test-password"


def email_of(name: str) -> str:
    """The sign-in email of a :data:`CRM_USERS` account."""
    return f"{name}@crm.test"


def hub_manifest(
    tmp: Path,
    plugins: dict[str, dict[str, Any]],
    *,
    metadata: list[str] | None = None,
    **kernel: Any,
) -> dict[str, Any]:
    from objectos.protocol.manifest import HubManifest

    settings = {
        "healthCheckIntervalS": 0.3,
        "healthCheckTimeoutS": 3,
        "hookTimeoutS": 10,
        "restart": {"maxRestarts": 2, "windowS": 60, "backoffInitialS": 0.2, "backoffMaxS": 1},
    }
    settings.update(kernel)
    hub = HubManifest.model_validate(
        {
            "id": "com.test.hub",
            "dataDir": str(tmp),
            "database": {"url": f"sqlite+aiosqlite:///{tmp}/objectos.db"},
            "plugins": plugins,
            "kernel": settings,
            "metadata": metadata or [str(CRM_METADATA)],
            "auth": TEST_AUTH,
        }
    )
    return hub.model_dump()


@pytest.fixture
def start_hub(ray_session: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start a kernel for a set of plugins; tears it (and its hosts) down after."""
    from actors.factory import get_or_create_kernel
    from actors.kernel import KV_NAMESPACE

    ray = ray_session
    kernels: list[Any] = []

    def start(plugins: dict[str, dict[str, Any]], **kernel: Any) -> Any:
        handle = get_or_create_kernel(hub_manifest(tmp_path, plugins, **kernel))
        kernels.append((handle, list(plugins)))
        return handle

    yield start

    from ray.experimental import internal_kv

    from actors.factory import get_plugin_host

    for handle, plugin_ids in kernels:
        with contextlib.suppress(Exception):
            ray.get(handle.shutdown.remote(), timeout=60)
        ray.kill(handle, no_restart=True)
        for pid in plugin_ids:
            host = get_plugin_host(pid)
            if host is not None:
                ray.kill(host, no_restart=True)
    # Forget the checkpoint only once the kernel is dead, or its loop may write
    # it again and the next test's kernel would inherit this one's history.
    wait_until(lambda: _kernel_gone(ray), timeout=30)
    for key in (b"kernel:com.test.hub", b"installed:com.test.hub"):
        internal_kv._internal_kv_del(key, namespace=KV_NAMESPACE)


def _kernel_gone(ray: Any) -> bool:
    try:
        ray.get_actor("kernel", namespace="objectos")
    except ValueError:
        return True
    return False


@pytest.fixture(scope="session")
def serve_hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The hub manifest the Serve app is deployed with: the sample CRM, a session database.

    Its replicas serve the data API once a kernel runs ``com.objectos.data``;
    give that plugin this manifest's ``database.url`` and ``metadata``
    (:func:`data_plugin_entry`) so both work on the same database.
    """
    return hub_manifest(tmp_path_factory.mktemp("serve"), {})


@pytest.fixture(scope="session")
def crm_users(serve_hub: dict[str, Any]) -> dict[str, str]:
    """:data:`CRM_USERS` created in the session app's database: name -> user id."""
    from objectos.api.auth import build_identity
    from objectos.protocol.manifest import HubManifest

    hub = HubManifest.model_validate(serve_hub)

    async def create() -> dict[str, str]:
        identity, _ = build_identity(hub.auth, hub.database.url, hub.dataDir)
        try:
            return {
                name: (await identity.create_user(email_of(name), CRM_PASSWORD, name, roles)).id
                for name, roles in CRM_USERS.items()
            }
        finally:
            await identity.aclose()

    return asyncio.run(create())


@pytest.fixture(scope="session")
def service_key(serve_hub: dict[str, Any], crm_users: dict[str, str]) -> str:
    """An API key of a role-less service account in the session app's database (what a
    Prometheus scraper of ``/metrics`` uses, as ``Authorization: Bearer <key>``)."""
    from objectos.api.auth import build_identity
    from objectos.protocol.manifest import HubManifest

    hub = HubManifest.model_validate(serve_hub)

    async def create() -> str:
        identity, _ = build_identity(hub.auth, hub.database.url, hub.dataDir)
        try:
            account = await identity.create_service_account("scraper")
            return (await identity.create_api_key(account.id, name="scraper"))[1]
        finally:
            await identity.aclose()

    return asyncio.run(create())


def sign_in(url: str, name: str) -> str:
    """An access token of a :data:`CRM_USERS` account, through ``POST /api/v1/auth/sign-in``."""
    response = httpx.post(
        f"{url}/api/v1/auth/sign-in",
        json={"email": email_of(name), "password": CRM_PASSWORD},
        timeout=20,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["data"]["accessToken"]
    return token


def api_as(url: str, name: str) -> httpx.Client:
    """A client of ``<url>/api/v1`` signed in as a :data:`CRM_USERS` account."""
    return httpx.Client(
        base_url=f"{url}/api/v1",
        headers={"Authorization": f"Bearer {sign_in(url, name)}"},
        timeout=20,
    )


def data_plugin_entry(hub: dict[str, Any]) -> dict[str, Any]:
    """The data plugin's entry, pointed at ``hub``'s database and metadata."""
    return {
        "module": "objectos.plugins.data:DataPlugin",
        "config": {"url": hub["database"]["url"], "metadata": hub["metadata"]},
    }


@pytest.fixture(scope="session")
def serve_url(
    ray_session: Any, serve_hub: dict[str, Any], crm_users: dict[str, str]
) -> Iterator[str]:
    """The hub's HTTP app on Ray Serve (HAProxy ingress), deployed once.

    Its accounts (``crm_users``) exist before the replicas start, so the
    signing key file is written once, by the test process.
    """
    from ray import serve

    from deployments.api import APIGateway

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = APIGateway.options(num_replicas=2).bind(serve_hub)
    serve.run(app, name="objectos", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/v1/discovery", timeout=5).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=90, interval=0.5)
    # No serve.shutdown(): in HAProxy mode it waits out a 30 s drain, and
    # ray.shutdown() at the end of the session stops Serve with everything else.
    yield url


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``tests/interop/node_modules`` with the stock npm clients (``npm ci`` once); skips
    without Node."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not found on PATH: the stock-client tests need Node 20+")
    modules = INTEROP_DIR / "node_modules"
    if not all(
        (modules / pkg / "package.json").exists() for pkg in ("socket.io-client", "y-socket.io")
    ):
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=INTEROP_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {INTEROP_DIR}:\n{result.stdout}\n{result.stderr}")
    return modules
