"""The HTTP surface of the hub on Ray Serve.

``APIGateway`` is a Serve deployment whose replicas each run one Starlette app
(:class:`HubHTTP`):

- kernel-facing routes (discovery, health, admin, metrics) ask the kernel actor;
- identity (``/api/v1/auth``, :mod:`objectos.api.auth`) runs in every
  replica on the hub's database and key file; every data route and
  ``/api/v1/permissions`` authenticates with its :class:`HubAuthenticator`
  (bearer JWT or API key; 401 + ``WWW-Authenticate`` without one);
- ``/api/v1/meta`` needs any authenticated caller, ``/api/v1/admin/plugins``
  the system permission ``view_setup`` (or ``modify_all_data``), ``/metrics``
  a credential unless ``serve.metricsPublic`` is set; discovery, health, the
  JWKS and the API description (``/api/v1/openapi.json``, ``/docs``: objects
  and fields, no records) stay public;
- record sharing follows the role hierarchy and role-targeted sharing rules
  of the *identity store*: every replica keeps a
  :class:`~objectos.security.directory.StoreRoleDirectory` (user -> roles),
  refreshed in the background from ``_auth_users`` and at once when this
  replica changes roles;
- the data and metadata routes (:func:`objectos.api.rest.data_routes`) run a
  DataEngine **in this process** (:class:`ReplicaData`), built from the hub's
  database URL and metadata once the data plugin has migrated the schema, so a
  REST request does not hop through actors; plugin before-hooks are the only
  actor calls on the write path, and only for hooked objects
  (:class:`actors.hooks.KernelDataHooks`). The engine is served through a
  :class:`~objectos.security.guard.SecuredDataService`: object, field and
  record permissions of ``*.permission.yml`` apply to every data route;
- ``POST /api/v1/permissions/check`` explains a decision
  (:mod:`objectos.api.permissions`);
- ``/api/v1/openapi.json`` and ``/docs`` describe the live metadata;
- record events over HTTP, ``/api/v1/realtime/sse`` and ``/realtime/poll``
  (:mod:`deployments.replica_realtime`), with REST's authentication and
  permissions; discovery adds the Socket.IO gateways' URLs while one runs.

Middleware (outermost first): request context (ids, trace, access log), CORS,
gzip (:func:`objectos.api.middleware.hub_middleware`), then what
:meth:`HubHTTP.middleware` appends (route metrics, rate limiting). Rate
limiting verifies the request's credential itself (``identify``), so an
authenticated caller has a bucket of its own wherever it connects from; the
route then reuses that verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from ray import serve
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actors.factory import get_kernel
from actors.hooks import KernelDataHooks
from actors.process import set_process_niceness
from actors.ratelimiter import RayBucketStore
from actors.realtime import FeedNudge
from actors.remote import RayServiceDirectory
from deployments.replica_realtime import (
    EVENT_ROUTES,
    GatewayRoutes,
    QueryTokenAuthenticator,
    ReplicaEvents,
)
from objectos import __version__
from objectos.api.audit import (
    AUDIT_ROUTES,
    AuditRoutes,
    permission_authorizer,
    with_request_context,
)
from objectos.api.auth import AUTH_ROUTES, AuthRoutes, build_identity
from objectos.api.discovery import API_BASE, discovery_document
from objectos.api.docs import DOCS_PATH, docs_routes
from objectos.api.envelope import error_response, exception_handlers, respond
from objectos.api.middleware import HTTPSettings, hub_middleware
from objectos.api.openapi import OPENAPI_PATH, openapi_routes
from objectos.api.permissions import PERMISSIONS_ROUTES, permission_routes
from objectos.api.ratelimit import RateLimit, verified_identity
from objectos.api.rest import DATA_BASE, META_BASE, Authenticator, data_routes
from objectos.audit import AuditedDataService, AuditStore, SQLAuditSink, auth_event_recorder
from objectos.audit.events import PERMISSION_DENIED, AuditEvent
from objectos.data.actor import Actor
from objectos.data.engine import DataEngine, FindResult
from objectos.data.schema import create_engine
from objectos.errors import ObjectOSError, PermissionDenied, ServiceUnavailable
from objectos.metadata.registry import MetadataRegistry
from objectos.plugins.audit import AUDIT_PLUGIN_ID, audit_reads_of
from objectos.plugins.data import DATA_PLUGIN_ID, metadata_fingerprint
from objectos.plugins.metrics import collect_families
from objectos.protocol.manifest import HubManifest
from objectos.protocol.permission import MODIFY_ALL_DATA, VIEW_SETUP
from objectos.realtime.feed import NudgeOnCommit
from objectos.security.directory import RoleSource, StoreRoleDirectory
from objectos.security.guard import SecuredDataService
from objectos.security.identity import AuthEvent
from objectos.security.permissions import PermissionEngine

logger = logging.getLogger("objectos.http")

Handler = Callable[[Request], Awaitable[Response]]

# Route families this app mounts, for discovery.
MOUNTED_ROUTES = {
    "discovery": f"{API_BASE}/discovery",
    "health": f"{API_BASE}/health",
    "admin": f"{API_BASE}/admin",
    "metrics": "/metrics",
    "data": DATA_BASE,
    "metadata": META_BASE,
    "openapi": OPENAPI_PATH,
    "docs": DOCS_PATH,
    **AUTH_ROUTES,
    **PERMISSIONS_ROUTES,
    **AUDIT_ROUTES,
    **EVENT_ROUTES,
}
#: Route families served by the data engine: advertised while the data plugin runs.
DATA_FAMILIES = frozenset({"data", "metadata", "openapi", "docs", "permissions", *EVENT_ROUTES})


class ReplicaData:
    """This replica's DataEngine behind its permission guard, built once the data
    plugin runs; a DataService.

    Every data call goes through a :class:`SecuredDataService` over a
    :class:`PermissionEngine` compiled from the registry's ``*.permission.yml``
    (it recompiles when the registry reloads), so callers get only what their
    roles allow; :meth:`guard` exposes it for ``/api/v1/permissions/check``.

    Until the kernel reports ``com.objectos.data`` running, every data call
    raises ServiceUnavailable (503) saying so; the kernel is asked at most
    every ``recheck_s``. Afterwards the engine stays; every ``reload_check_s``
    a task owned by this object compares the plugin's metadata fingerprint
    with ours and reloads the registry when they differ (the engine follows
    the registry's version on its own). This replica never migrates.

    ``roles`` (the replica's role directory over the identity store) is
    started with the engine; without it, only the caller's own roles count.
    """

    def __init__(
        self,
        hub: HubManifest,
        hooks: KernelDataHooks | None,
        kernel_status: Callable[[], Awaitable[dict[str, Any]]],
        *,
        roles: StoreRoleDirectory | None = None,
        recheck_s: float = 0.5,
        reload_check_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Serve ``hub``'s data; ``kernel_status`` is the kernel's ``status()``."""
        self.url = hub.database.url.replace("{dataDir}", hub.dataDir)
        self.metadata_dirs = list(hub.metadata)
        self.hooks = hooks
        self.roles = roles
        self._kernel_status = kernel_status
        self.recheck_s = recheck_s
        self.reload_check_s = reload_check_s
        self._clock = clock
        self._engine: DataEngine | None = None
        self._guard: SecuredDataService | None = None
        self._database: AsyncEngine | None = None
        self._fingerprint: str | None = None
        self._lock = asyncio.Lock()
        self._retry_at = float("-inf")
        self._last_error: ObjectOSError | None = None
        self._checked_at = float("-inf")
        self._checking: asyncio.Task[None] | None = None

    async def _data_plugin(self) -> dict[str, Any]:
        status = await self._kernel_status()
        for plugin in status["plugins"]:
            if plugin["id"] == DATA_PLUGIN_ID:
                return dict(plugin)
        raise ServiceUnavailable(
            f"this hub runs no data plugin ({DATA_PLUGIN_ID}); add it to objectos.yaml",
            details={"plugin": DATA_PLUGIN_ID},
        )

    async def engine(self) -> DataEngine:
        """The engine, or ServiceUnavailable while the data plugin is not running."""
        if self._engine is None:
            async with self._lock:
                if self._engine is None:
                    await self._build()
        else:
            self._maybe_check_metadata()
        assert self._engine is not None
        return self._engine

    async def registry(self) -> MetadataRegistry:
        """The metadata this replica serves."""
        return (await self.engine()).registry

    async def guard(self) -> SecuredDataService:
        """The permission-checking service over the engine (ServiceUnavailable until it runs)."""
        await self.engine()
        assert self._guard is not None
        return self._guard

    async def _build(self) -> None:
        if self._clock() < self._retry_at and self._last_error is not None:
            raise self._last_error
        try:
            plugin = await self._data_plugin()
            if plugin["status"] != "running":
                raise ServiceUnavailable(
                    f"the data plugin is {plugin['status']}; the data API answers once it runs",
                    details={
                        "plugin": DATA_PLUGIN_ID,
                        "status": plugin["status"],
                        "reason": plugin.get("reason"),
                    },
                )
            try:
                registry = await asyncio.to_thread(MetadataRegistry.load, self.metadata_dirs)
            except ObjectOSError as exc:
                raise ServiceUnavailable(
                    f"this replica cannot load the metadata: {exc.message}",
                    details={"dirs": self.metadata_dirs},
                ) from None
        except ServiceUnavailable as exc:
            self._last_error, self._retry_at = exc, self._clock() + self.recheck_s
            raise
        # Compiled before anything is kept: security metadata that does not fit the
        # objects fails this build (and is retried) instead of serving unguarded data.
        if self.roles is not None:
            try:
                await self.roles.start()
            except Exception as exc:
                logger.warning("cannot load the role directory", exc_info=True)
                error = ServiceUnavailable(
                    "this replica cannot read the users' roles yet; retry shortly",
                    details={"reason": type(exc).__name__},
                )
                self._last_error, self._retry_at = error, self._clock() + self.recheck_s
                raise error from None
        try:
            permissions = PermissionEngine.from_registry(registry, self.roles)
        except ObjectOSError as exc:
            error = ServiceUnavailable(
                f"this replica cannot load the permissions: {exc.message}",
                details={"problems": [e.to_dict() for e in exc.field_errors]},
            )
            self._last_error, self._retry_at = error, self._clock() + self.recheck_s
            raise error from None
        self._database = create_engine(self.url)
        # Commits nudge the realtime change feed (when one runs) so events leave at once.
        engine = DataEngine(self._database, registry, hooks=NudgeOnCommit(FeedNudge(), self.hooks))
        self._guard = SecuredDataService(engine, permissions, database=self._database)
        self._engine = engine
        self._fingerprint = metadata_fingerprint(registry)
        self._checked_at = self._clock()
        logger.info("replica data engine ready (%d objects)", len(registry.objects))

    def _maybe_check_metadata(self) -> None:
        if self._clock() - self._checked_at < self.reload_check_s:
            return
        if self._checking is not None and not self._checking.done():
            return
        self._checked_at = self._clock()
        self._checking = asyncio.create_task(self._check_metadata())

    async def _check_metadata(self) -> None:
        try:
            plugin = await self._data_plugin()
            health = (plugin.get("lifecycle") or {}).get("health") or {}
            version = health.get("metadataVersion")
            if self._engine is None or version is None or version == self._fingerprint:
                return
            registry = self._engine.registry
            changes = await asyncio.to_thread(registry.reload)
            self._fingerprint = metadata_fingerprint(registry)
            logger.info("metadata reloaded: %s", changes)
        except Exception:  # keep serving the metadata we have; try again later
            logger.warning("metadata check failed", exc_info=True)

    async def close(self) -> None:
        """Stop background work and release database connections."""
        if self._checking is not None:
            self._checking.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._checking
        if self.hooks is not None:
            await self.hooks.close()
        if self.roles is not None:
            await self.roles.aclose()
        if self._database is not None:
            database, self._database, self._engine = self._database, None, None
            self._guard = None
            await database.dispose()

    # DataService: DataEngine's methods, through the guard once the engine exists.

    async def find(self, *args: Any, **kwargs: Any) -> FindResult:
        return await (await self.guard()).find(*args, **kwargs)

    async def find_one(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await (await self.guard()).find_one(*args, **kwargs)

    async def count(self, *args: Any, **kwargs: Any) -> int:
        return await (await self.guard()).count(*args, **kwargs)

    async def aggregate(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return await (await self.guard()).aggregate(*args, **kwargs)

    async def insert(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await (await self.guard()).insert(*args, **kwargs)

    async def update(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await (await self.guard()).update(*args, **kwargs)

    async def delete(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await (await self.guard()).delete(*args, **kwargs)

    async def batch(self, *args: Any, **kwargs: Any) -> list[Any]:
        return await (await self.guard()).batch(*args, **kwargs)


class RouteMetrics:
    """ASGI middleware: request count and latency per matched route template."""

    def __init__(self, app: ASGIApp, *, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            # The template ("/api/v1/data/{object}"), never the raw path: bounded labels.
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope.get("method", "")
            self.requests.labels(route, method, str(status)).inc()
            self.latency.labels(route, method).observe(time.perf_counter() - started)


class HubHTTP:
    """The routes and their collaborators; one instance per replica.

    Identity is built here from ``hub.auth`` on the hub's database and data
    directory (:func:`objectos.api.auth.build_identity`): replicas share the
    accounts, sessions and signing keys through them, nothing else.
    """

    def __init__(
        self,
        hub: HubManifest,
        *,
        settings: HTTPSettings | None = None,
        authenticate: Authenticator | None = None,
    ) -> None:
        """``authenticate`` defaults to the hub's :class:`HubAuthenticator`; pass
        another :class:`~objectos.api.rest.Authenticator` only to test routing."""
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
        # A family without samples is left out of the exposition; start the scrape
        # route at zero so every replica's families are there from its first scrape.
        self.requests.labels("/metrics", "GET", "200")
        self.replica = _replica_id()
        # Serve's proxy already echoes X-Request-ID (and passes the id on to us).
        self.settings = settings or HTTPSettings.from_env(
            replica=self.replica, echo_request_id=False
        )
        # Audit: sign-ins, denials and audited reads go to a batched sink; writes are
        # audited from the change log by the audit plugin, with the request context
        # every actor carries (ip, user agent, request and trace ids).
        self.audit_database = create_engine(hub.database.url.replace("{dataDir}", hub.dataDir))
        self.audit_sink = SQLAuditSink(AuditStore(self.audit_database), autostart=True)
        record_auth_event = auth_event_recorder(self.audit_sink)
        self.roles: StoreRoleDirectory | None = None

        async def on_auth_event(event: AuthEvent) -> None:
            await record_auth_event(event)
            if self.roles is not None:  # a role change made here counts here at once
                await self.roles.on_auth_event(event)

        self.identity, authenticator = build_identity(
            hub.auth, hub.database.url, hub.dataDir, on_event=on_auth_event
        )
        users = self.identity.users
        assert isinstance(users, RoleSource)  # the SQL user store
        self.roles = StoreRoleDirectory(users)
        self.authenticator = authenticator
        self._setup_permissions: PermissionEngine | None = None
        trusted = hub.auth.trustedProxies
        self.authenticate: Authenticator = with_request_context(
            authenticate or authenticator, trusted
        )
        self.auth_routes = AuthRoutes(self.identity, authenticator)
        self.hooks = KernelDataHooks(timeout_s=hub.kernel.hookTimeoutS)
        self.data = ReplicaData(hub, self.hooks, self.kernel_status, roles=self.roles)
        self.audited = AuditedDataService(
            self.data, self.audit_sink, audit_reads=audit_reads_of(hub.plugins)
        )
        # Record events over HTTP; the Socket.IO gateways' URLs for discovery.
        self.events = ReplicaEvents(
            self.data,
            QueryTokenAuthenticator(
                self.authenticate, self.auth_routes.authenticator.authenticate_token, trusted
            ),
        )
        self.gateway_routes = GatewayRoutes()
        self.audit_routes = AuditRoutes(
            self.audit_database,
            self.authenticate,
            authorize=self.may_read_audit,
            sink=self.audit_sink,
            trusted_proxies=trusted,
        )

    async def may_read_audit(self, actor: Actor) -> bool:
        """Audit readers hold ``view_audit_log`` or ``view_all_data``."""
        return bool(permission_authorizer((await self.data.guard()).permissions)(actor))

    async def permissions(self) -> PermissionEngine:
        """The engine that decides system permissions.

        The data guard's while the data plugin runs (it follows metadata
        reloads); before that, one compiled here from the manifest's metadata
        directories, so the admin routes answer on a hub without data too.
        """
        try:
            return (await self.data.guard()).permissions
        except ServiceUnavailable:
            if self._setup_permissions is None:
                try:
                    registry = await asyncio.to_thread(
                        MetadataRegistry.load, list(self.hub.metadata)
                    )
                    self._setup_permissions = PermissionEngine.from_registry(registry)
                except ObjectOSError as exc:
                    raise ServiceUnavailable(
                        f"permissions are unavailable: {exc.message}",
                        details={"problems": [e.to_dict() for e in exc.field_errors]},
                    ) from None
            return self._setup_permissions

    async def require_setup_access(self, request: Request) -> Actor:
        """The caller, if it may read the hub's setup (``view_setup`` or ``modify_all_data``);
        else 401 (no credential) or 403."""
        actor = await self.authenticate(request)
        permissions = await self.permissions()
        if not (
            permissions.has_system_permission(actor, VIEW_SETUP)
            or permissions.has_system_permission(actor, MODIFY_ALL_DATA)
        ):
            with contextlib.suppress(Exception):  # auditing must not turn a 403 into a 500
                await self.audit_sink.record(
                    AuditEvent.new(
                        PERMISSION_DENIED,
                        actor=actor.user_id,
                        context=actor.context,
                        details={
                            "operation": "setup.read",
                            "path": request.url.path,
                            "code": "permission_denied",
                            "roles": sorted(actor.roles),
                        },
                    )
                )
            raise PermissionDenied(
                f"reading the hub's setup needs the system permission {VIEW_SETUP}",
                details={"permission": VIEW_SETUP},
            )
        return actor

    def route(self, path: str, handler: Handler, methods: list[str] | None = None) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                return error_response(request, exc)

        return Route(path, endpoint, methods=methods or ["GET"])

    def ok(self, request: Request, data: Any, status: int = 200, **extra: Any) -> JSONResponse:
        return respond(request, data, status=status, **extra)

    async def user_actor(self, user_id: str) -> Actor:
        """The actor of an account (its roles), for ``permissions/check``'s ``userId``."""
        user = await self.identity.get_user(user_id)
        return Actor.user(user.id, user.roles)

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
        running = {p["id"] for p in status["plugins"] if p["status"] == "running"}
        data_running = DATA_PLUGIN_ID in running
        # Families served by a plugin answer 503 until it runs: advertise them from then on.
        routes = {
            family: path
            for family, path in MOUNTED_ROUTES.items()
            if (data_running or family not in DATA_FAMILIES)
            and (family not in AUDIT_ROUTES or AUDIT_PLUGIN_ID in running)
        }
        gateways = await self.gateway_routes.get()  # {} unless a gateway runs
        routes.update(gateways)
        document = discovery_document(
            name=self.hub.name,
            version=__version__,
            environment=self.hub.environment,
            mounted_routes=routes,
            plugins=status["plugins"],
            capabilities={
                "metrics": True,
                "openapi": data_running,
                "data": data_running,
                "realtime": bool(gateways),
                "sse": data_running,
            },
        )
        return self.ok(request, document)

    async def admin_plugins(self, request: Request) -> Response:
        await self.require_setup_access(request)
        status = await self.kernel_status()
        return self.ok(
            request,
            {"ready": status["ready"], "order": status["order"], "plugins": status["plugins"]},
        )

    async def metrics(self, request: Request) -> Response:
        if not self.hub.serve.metricsPublic:
            await self.authenticate(request)  # any principal; a scraper uses a service account
        own = collect_families(self.registry, extra_labels={"replica": self.replica})
        text: str = await self.services.get("metrics").exposition(extra=[own])
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    def middleware(self) -> list[Middleware]:
        """The middleware stack, outermost first; append new middleware here."""
        return [
            *hub_middleware(self.settings),
            Middleware(RouteMetrics, requests=self.requests, latency=self.latency),
            # Limits shared by every replica through the ratelimiter actor, per verified
            # principal (else per address).
            Middleware(
                RateLimit,
                settings=self.hub.serve.rateLimit,
                store=RayBucketStore(),
                identify=verified_identity(
                    self.authenticator.remember, self.hub.serve.rateLimit.trustedProxies
                ),
            ),
        ]

    def routes(self) -> list[BaseRoute]:
        """Kernel routes, identity, data and metadata routes, permissions, OpenAPI and docs."""
        return [
            self.route(API_BASE, self.discovery),
            self.route(f"{API_BASE}/discovery", self.discovery),
            self.route(f"{API_BASE}/health", self.health),
            self.route(f"{API_BASE}/admin/plugins", self.admin_plugins),
            self.route("/metrics", self.metrics),
            *self.auth_routes.routes(),
            *data_routes(self.audited, self.data.registry, self.authenticate),
            *self.audit_routes.routes(),
            *permission_routes(self.data.guard, self.authenticate, self.user_actor),
            *self.events.routes(),
            *openapi_routes(
                self.data.registry,
                title=self.hub.name,
                version=self.hub.version,
                auth_required=True,
                permissions=True,
                realtime=True,
            ),
            *docs_routes(title=f"{self.hub.name} API"),
        ]

    def app(self) -> Starlette:
        return Starlette(
            routes=self.routes(),
            middleware=self.middleware(),
            exception_handlers=exception_handlers(),
        )


def _replica_id() -> str:
    try:
        return str(serve.get_replica_context().replica_tag)
    except Exception:
        return f"pid-{os.getpid()}"


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress()
class APIGateway:
    """Serve deployment: each replica builds the hub's Starlette app at init."""

    def __init__(self, hub: dict[str, Any]) -> None:
        manifest = HubManifest.model_validate(hub)
        set_process_niceness(manifest.serve.niceness)  # like the realtime processes
        self.http = HubHTTP(manifest)

    def __serve_build_asgi_app__(self) -> ASGIApp:
        return self.http.app()

    async def __del__(self) -> None:
        # Serve awaits an async __del__ when it stops the replica.
        await self.http.events.close()
        await self.http.data.close()
        await self.http.identity.aclose()
        await self.http.audit_sink.stop()
        await self.http.audit_database.dispose()
