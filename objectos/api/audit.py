"""The ``/api/v1/audit`` routes, and the request context every write carries into the trail.

=============================================  ============================================
``GET /api/v1/audit/events``                   search: ``object recordId actor action from
                                               to ip requestId limit cursor order count``;
                                               envelope with ``pagination.nextCursor``
``GET /api/v1/audit/records/{object}/{id}``    one record's trail (same paging and filters)
``GET /api/v1/audit/export?format=csv|jsonl``  every matching event, streamed (filters as
                                               above, no ``limit``); ``Content-Disposition``
                                               names a file
=============================================  ============================================

The routes read ``_audit_events`` straight from the replica's database (no
actor hop); until the audit plugin has created the table they answer 503
``service_unavailable``. Bad parameters are 400 ``invalid_filter`` naming
the parameter and the reason, before anything is streamed.

**Who may read it.** Audit events hold old and new values of every field
(passwords excepted) and client addresses, so field-level security does not
apply inside them: reading the trail is a privilege of its own. ``authorize``
decides; :func:`permission_authorizer` grants it to actors whose permission
sets list the system permission ``view_audit_log`` (or ``view_all_data``),
and the default, :func:`role_authorizer`, to the roles ``admin`` and
``auditor``. With a ``sink``, every search and export is itself recorded
(``audit.searched``, ``audit.exported``), and so is a refused attempt.

**Request context.** :func:`with_request_context` wraps the authenticator
the data routes use, so the :class:`~objectos.data.actor.Actor` of every
request carries ``ip``, ``userAgent``, ``requestId`` and ``traceId`` into
the change log, and from there into the audit trail.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from objectos.api.auth import client_ip, www_authenticate
from objectos.api.discovery import API_BASE
from objectos.api.envelope import error_response, respond
from objectos.api.rest import Authenticator, query_params
from objectos.audit.events import PERMISSION_DENIED, AuditEvent
from objectos.audit.export import MEDIA_TYPES, export_format, export_stream
from objectos.audit.sink import AuditSink
from objectos.audit.store import AuditQuery, AuditStore
from objectos.data.actor import Actor
from objectos.data.schema import create_engine
from objectos.errors import (
    FieldError,
    InvalidFilter,
    PermissionDenied,
    ServiceUnavailable,
)

logger = logging.getLogger("objectos.api.audit")

AUDIT_BASE = f"{API_BASE}/audit"
AUDIT_ROUTES = {"audit": AUDIT_BASE}
"""Route family for discovery (``MOUNTED_ROUTES`` of the HTTP app)."""

VIEW_AUDIT_LOG = "view_audit_log"
"""System permission that grants reading the audit trail."""

#: Who may read the audit trail.
Authorize = Callable[[Actor], bool | Awaitable[bool]]
#: The database to read: an engine, a URL (an engine is made and owned), or a provider.
DatabaseSource = AsyncEngine | str | Callable[[], Awaitable[AsyncEngine]]

Handler = Callable[[Request], Awaitable[Response]]


# --- request context -------------------------------------------------------------------------


def request_context(request: Request, trusted_proxies: Sequence[str] = ()) -> dict[str, str]:
    """``{ip, userAgent, requestId, traceId}`` of a request (keys without a value left out).

    ``ip`` believes ``X-Forwarded-For`` only from ``trusted_proxies``
    (:func:`objectos.api.auth.client_ip`); the ids come from
    :class:`~objectos.api.middleware.RequestContext`.
    """
    values = {
        "ip": client_ip(request, trusted_proxies),
        "userAgent": request.headers.get("user-agent"),
        "requestId": getattr(request.state, "request_id", None),
        "traceId": getattr(request.state, "trace_id", None),
    }
    return {key: value for key, value in values.items() if value}


class ContextAuthenticator:
    """An Authenticator whose actors carry their request's context (:func:`request_context`)."""

    def __init__(self, authenticate: Authenticator, trusted_proxies: Sequence[str] = ()) -> None:
        self._authenticate = authenticate
        self._trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, request: Request) -> Actor:
        actor = await self._authenticate(request)
        return actor.with_context(**request_context(request, self._trusted_proxies))


def with_request_context(
    authenticate: Authenticator, trusted_proxies: Sequence[str] = ()
) -> Authenticator:
    """Wrap ``authenticate`` so every write it authorises is audited with its request."""
    return ContextAuthenticator(authenticate, trusted_proxies)


# --- who may read the trail ------------------------------------------------------------------


def role_authorizer(roles: Iterable[str] = ("admin", "auditor")) -> Authorize:
    """Readers are system actors and actors holding one of ``roles``."""
    allowed = frozenset(roles)

    def authorize(actor: Actor) -> bool:
        return actor.system or bool(allowed & actor.roles)

    return authorize


def permission_authorizer(permissions: Any) -> Authorize:
    """Readers hold ``view_audit_log`` or ``view_all_data`` in the permission engine.

    ``permissions`` is a :class:`~objectos.security.permissions.PermissionEngine`
    (anything with ``has_system_permission(actor, name)``).
    """

    def authorize(actor: Actor) -> bool:
        return bool(
            permissions.has_system_permission(actor, VIEW_AUDIT_LOG)
            or permissions.has_system_permission(actor, "view_all_data")
        )

    return authorize


# --- the routes ------------------------------------------------------------------------------


class AuditRoutes:
    """The audit endpoints over one database; see the module docstring."""

    def __init__(
        self,
        database: DatabaseSource,
        authenticate: Authenticator,
        *,
        authorize: Authorize | None = None,
        sink: AuditSink | None = None,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        """``authorize`` defaults to :func:`role_authorizer`; ``sink`` audits the auditors
        (``trusted_proxies``: whose ``X-Forwarded-For`` names the client)."""
        self._source = database
        self._owned: AsyncEngine | None = None
        self._store: AuditStore | None = None
        self._ready = False
        self.authenticate = authenticate
        self.authorize = authorize or role_authorizer()
        self.sink = sink
        self.trusted_proxies = tuple(trusted_proxies)

    async def store(self) -> AuditStore:
        """The store, once the audit tables exist (ServiceUnavailable before)."""
        if self._store is None:
            source = self._source
            if isinstance(source, AsyncEngine):
                engine = source
            elif isinstance(source, str):
                engine = self._owned = create_engine(source)
            else:
                engine = await source()
            self._store = AuditStore(engine)
        if not self._ready:
            self._ready = await self._store.exists()
            if not self._ready:
                raise ServiceUnavailable(
                    "the audit trail is not available yet: the audit plugin has not "
                    "created its tables (is com.objectos.audit in objectos.yaml?)",
                    details={"plugin": "com.objectos.audit"},
                )
        return self._store

    async def close(self) -> None:
        """Release the engine this object made from a URL (a given engine stays open)."""
        if self._owned is not None:
            engine, self._owned, self._store = self._owned, None, None
            await engine.dispose()

    def endpoints(self) -> list[tuple[str, Handler, list[str]]]:
        """``(path, handler, methods)`` of every route."""
        return [
            (f"{AUDIT_BASE}/events", self._guarded(self.events), ["GET"]),
            (f"{AUDIT_BASE}/records/{{object}}/{{id}}", self._guarded(self.trail), ["GET"]),
            (f"{AUDIT_BASE}/export", self._guarded(self.export), ["GET"]),
        ]

    def routes(self) -> list[Route]:
        """Starlette routes for :meth:`endpoints`."""
        return [
            Route(path, handler, methods=methods) for path, handler, methods in self.endpoints()
        ]

    def _guarded(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # every error leaves as the protocol's envelope
                response = error_response(request, exc)
                response.headers.update(www_authenticate(exc))
                return response

        return endpoint

    async def _reader(self, request: Request) -> Actor:
        actor = await self.authenticate(request)
        if not actor.context:  # so the auditors' own trail says where they came from
            actor = actor.with_context(**request_context(request, self.trusted_proxies))
        allowed = self.authorize(actor)
        if inspect.isawaitable(allowed):
            allowed = await allowed
        if not allowed:
            await self._record(
                actor,
                PERMISSION_DENIED,
                {"operation": "audit.read", "path": request.url.path, "code": "permission_denied"},
            )
            raise PermissionDenied(
                f"reading the audit trail needs the {VIEW_AUDIT_LOG} permission",
                details={"permission": VIEW_AUDIT_LOG},
            )
        return actor

    async def _record(self, actor: Actor, action: str, details: Mapping[str, Any]) -> None:
        if self.sink is None:
            return
        try:
            await self.sink.record(
                AuditEvent.new(action, actor=actor.user_id, context=actor.context, details=details)
            )
        except Exception:  # auditing the auditors must not fail their request
            logger.exception("could not record %s", action)

    @staticmethod
    def _params(request: Request, *, refuse: Iterable[str] = ()) -> tuple[dict[str, str], bool]:
        params = query_params(request)
        for name in refuse:
            if name in params:
                raise InvalidFilter(
                    f"{name} is not accepted here",
                    details={"field": name, "reason": "not accepted here"},
                    field_errors=[FieldError(name, "invalid_filter", "not accepted here")],
                )
        count = params.pop("count", "false")
        if count not in ("true", "false"):
            raise InvalidFilter(
                "count must be true or false",
                details={"field": "count", "reason": "must be true or false"},
                field_errors=[FieldError("count", "invalid_filter", "must be true or false")],
            )
        return params, count == "true"

    async def events(self, request: Request) -> Response:
        actor = await self._reader(request)
        params, count = self._params(request)
        query = AuditQuery.from_params(params)
        page = await (await self.store()).search(query, count=count)
        await self._record(actor, "audit.searched", {"query": query.to_params()})
        return respond(
            request, [event.to_dict() for event in page.events], pagination=page.pagination()
        )

    async def trail(self, request: Request) -> Response:
        actor = await self._reader(request)
        params, count = self._params(request, refuse=("object", "recordId"))
        query = AuditQuery.from_params(
            {
                **params,
                "object": request.path_params["object"],
                "recordId": request.path_params["id"],
            }
        )
        page = await (await self.store()).search(query, count=count)
        await self._record(actor, "audit.searched", {"query": query.to_params()})
        return respond(
            request, [event.to_dict() for event in page.events], pagination=page.pagination()
        )

    async def export(self, request: Request) -> Response:
        actor = await self._reader(request)
        params, _ = self._params(request, refuse=("limit", "count"))
        format = export_format(params.pop("format", "jsonl"))
        query = AuditQuery.from_params(params)
        store = await self.store()
        await self._record(actor, "audit.exported", {"format": format, "query": query.to_params()})
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        filename = f"audit-{stamp}.{format}"
        request_id = getattr(request.state, "request_id", None)
        return StreamingResponse(
            _logged(export_stream(store, query, format), request_id),
            media_type=MEDIA_TYPES[format],
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


async def _logged(chunks: AsyncIterator[str], request_id: str | None) -> AsyncIterator[str]:
    """Pass ``chunks`` on; a failure mid-stream is logged and aborts the response.

    The status line is already sent then, so the only honest signal left is
    an incomplete chunked body, which every HTTP client reports as an error.
    """
    try:
        async for chunk in chunks:
            yield chunk
    except Exception:
        logger.exception("audit export failed mid-stream (request %s)", request_id)
        raise


def audit_routes(
    database: DatabaseSource,
    authenticate: Authenticator,
    *,
    authorize: Authorize | None = None,
    sink: AuditSink | None = None,
    trusted_proxies: Sequence[str] = (),
) -> list[Route]:
    """The ``/api/v1/audit`` routes (see :class:`AuditRoutes`)."""
    routes = AuditRoutes(
        database, authenticate, authorize=authorize, sink=sink, trusted_proxies=trusted_proxies
    )
    return routes.routes()


__all__ = [
    "AUDIT_BASE",
    "AUDIT_ROUTES",
    "VIEW_AUDIT_LOG",
    "AuditRoutes",
    "Authorize",
    "ContextAuthenticator",
    "DatabaseSource",
    "audit_routes",
    "permission_authorizer",
    "request_context",
    "role_authorizer",
    "with_request_context",
]
