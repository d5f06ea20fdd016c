"""The HTTP surface of the hub on Ray Serve.

``APIGateway`` is a Serve deployment whose replicas each run one Starlette app.
Kernel-facing routes (health, discovery, admin, metrics) ask the kernel actor;
the data routes (issue 3) will run the data engine in-process here, so a REST
request does not hop through actors.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from ray import serve
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.factory import get_kernel
from actors.ratelimiter import RayBucketStore
from actors.remote import RayServiceDirectory
from objectos import __version__
from objectos.api.discovery import API_BASE, discovery_document
from objectos.api.envelope import failure, success
from objectos.api.ratelimit import RateLimit
from objectos.errors import ServiceUnavailable
from objectos.plugins.metrics import collect_families
from objectos.protocol.manifest import HubManifest

logger = logging.getLogger("objectos.http")

Handler = Callable[[Request], Awaitable[Response]]

# Route families this app mounts, for discovery.
MOUNTED_ROUTES = {
    "discovery": f"{API_BASE}/discovery",
    "health": f"{API_BASE}/health",
    "admin": f"{API_BASE}/admin",
    "metrics": "/metrics",
}


class RequestIds:
    """ASGI middleware: a request id per request (honouring X-Request-ID) and timing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 128 else uuid.uuid4().hex
        scope.setdefault("state", {})
        scope["state"]["request_id"] = request_id
        scope["state"]["started"] = time.perf_counter()

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"].append((b"x-request-id", request_id.encode("latin-1")))
            await send(message)

        await self.app(scope, receive, send_with_id)


class HubHTTP:
    """The routes and their collaborators; one instance per replica."""

    def __init__(self, hub: HubManifest) -> None:
        self.hub = hub
        self.services = RayServiceDirectory(caller="http")
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "objectos_http_requests",
            "HTTP requests handled by this replica.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "objectos_http_request_duration_seconds",
            "HTTP request latency in this replica.",
            ["route", "method"],
            registry=self.registry,
        )
        self.replica = _replica_id()

    def route(self, path: str, handler: Handler, methods: list[str] | None = None) -> Route:
        async def endpoint(request: Request) -> Response:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except Exception as exc:
                code, body, headers = failure(exc, request_id=request.state.request_id)
                status = code
                return JSONResponse(body, status_code=code, headers=headers)
            finally:
                self.requests.labels(path, request.method, str(status)).inc()
                self.latency.labels(path, request.method).observe(time.perf_counter() - started)

        return Route(path, endpoint, methods=methods or ["GET"])

    def ok(self, request: Request, data: Any, status: int = 200, **extra: Any) -> JSONResponse:
        body = success(
            data,
            request_id=request.state.request_id,
            started=request.state.started,
            **extra,
        )
        return JSONResponse(body, status_code=status)

    async def kernel_status(self) -> dict[str, Any]:
        try:
            kernel = get_kernel()
        except ValueError:
            raise ServiceUnavailable("the kernel is not running") from None
        status: dict[str, Any] = await kernel.status.remote()
        return status

    # -- handlers --------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        status = await self.kernel_status()
        plugins = [
            {
                "id": p["id"],
                "status": p["status"],
                "ready": p["ready"],
                "reason": p["reason"],
                "restarts": p["restarts"],
            }
            for p in status["plugins"]
        ]
        data = {
            "status": "ok" if status["ready"] else "degraded",
            "live": True,
            "ready": status["ready"],
            "version": __version__,
            "replica": self.replica,
            "plugins": plugins,
        }
        return self.ok(request, data, status=200 if status["ready"] else 503)

    async def discovery(self, request: Request) -> Response:
        status = await self.kernel_status()
        document = discovery_document(
            name=self.hub.name,
            version=__version__,
            environment=self.hub.environment,
            mounted_routes=MOUNTED_ROUTES,
            plugins=status["plugins"],
            capabilities={"metrics": True},
        )
        return self.ok(request, document)

    async def admin_plugins(self, request: Request) -> Response:
        status = await self.kernel_status()
        return self.ok(
            request,
            {"ready": status["ready"], "order": status["order"], "plugins": status["plugins"]},
        )

    async def metrics(self, request: Request) -> Response:
        own = collect_families(self.registry, extra_labels={"replica": self.replica})
        text: str = await self.services.get("metrics").exposition(extra=[own])
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def app(self) -> Starlette:
        routes = [
            self.route(API_BASE, self.discovery),
            self.route(f"{API_BASE}/discovery", self.discovery),
            self.route(f"{API_BASE}/health", self.health),
            self.route(f"{API_BASE}/admin/plugins", self.admin_plugins),
            self.route("/metrics", self.metrics),
        ]
        return Starlette(
            routes=routes,
            middleware=[
                Middleware(RequestIds),
                # Limits shared by every replica through the ratelimiter actor.
                Middleware(RateLimit, settings=self.hub.serve.rateLimit, store=RayBucketStore()),
                Middleware(GZipMiddleware, minimum_size=1024),
            ],
        )


def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_tag)
    except Exception:
        return f"pid-{__import__('os').getpid()}"


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress()
class APIGateway:
    """Serve deployment: each replica builds the hub's Starlette app at init."""

    def __init__(self, hub: dict[str, Any]) -> None:
        self.http = HubHTTP(HubManifest.model_validate(hub))

    def __serve_build_asgi_app__(self) -> ASGIApp:
        return self.http.app()
