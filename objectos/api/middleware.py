"""ASGI middleware of the HTTP surface: request/trace ids, access log, CORS, gzip.

:class:`RequestContext` gives every request an id and a trace:

- ``X-Request-ID`` from the client is kept when it is 1-128 safe characters
  (letters, digits, ``. _ : -``), otherwise a fresh one is made; it is echoed
  on the response and lands in ``request.state.request_id``, the envelope's
  ``meta.requestId`` and the access log.
- A valid W3C ``traceparent`` continues the caller's trace (its trace id and
  flags); otherwise a new trace starts. The response carries a ``traceparent``
  naming this server's span, and ``request.state.trace_id`` the trace id.
- One structured JSON line per request goes to the ``objectos.access`` logger:
  method, path (never the query string: it may carry filters with personal
  data), status, duration in ms, request id, trace id, replica.

:func:`hub_middleware` returns the stack in order (outermost first): request
context, CORS (only when origins are configured), gzip. The HTTP app appends
its own (rate limiting, ...) after these, so they see request ids.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

access_logger = logging.getLogger("objectos.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

#: Response headers a browser script may read across origins.
EXPOSED_HEADERS = ("ETag", "Location", "Retry-After", "X-Request-ID", "traceparent")


@dataclass(frozen=True)
class Trace:
    """The W3C trace context of one request: the caller's trace, our span."""

    trace_id: str
    span_id: str
    flags: str = "00"

    def traceparent(self) -> str:
        """``traceparent`` naming this server's span as the parent of what follows."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse_traceparent(header: str | None) -> Trace | None:
    """The trace of a valid ``traceparent`` header (with a new span id), else None.

    Per W3C Trace Context: version ``ff`` and all-zero trace or parent ids are
    invalid; a future version's extra fields are ignored.
    """
    if not header:
        return None
    value = header.strip().lower()
    match = _TRACEPARENT.match(value[:55])
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return Trace(trace_id, secrets.token_hex(8), flags)


def new_trace() -> Trace:
    """A fresh trace (not sampled) for a request that brought none."""
    return Trace(secrets.token_hex(16), secrets.token_hex(8))


def request_id_from(header: str | None) -> str:
    """The client's request id when it is safe to log and echo, else a new one."""
    if header and _REQUEST_ID.match(header):
        return header
    return secrets.token_hex(16)


class RequestContext:
    """ASGI middleware: request id, trace context, timing and the access log line."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        replica: str = "",
        access_log: bool = True,
        echo_request_id: bool = True,
    ) -> None:
        """Wrap ``app``; ``replica`` names this process in the access log.

        ``echo_request_id=False`` leaves the ``X-Request-ID`` response header to a
        server in front that already sets it (Ray Serve does), so it is not doubled.
        """
        self.app = app
        self.replica = replica
        self.access_log = access_log
        self.echo_request_id = echo_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers") or []}
        request_id = request_id_from(headers.get(b"x-request-id", b"").decode("latin-1"))
        trace = parse_traceparent(headers.get(b"traceparent", b"").decode("latin-1"))
        trace = trace or new_trace()
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["trace_id"] = trace.trace_id
        state["started"] = started
        status = 500

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                extra = [(b"traceparent", trace.traceparent().encode("latin-1"))]
                if self.echo_request_id:
                    extra.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        finally:
            if self.access_log:
                self._log(scope, status, started, request_id, trace.trace_id)

    def _log(
        self, scope: Scope, status: int, started: float, request_id: str, trace_id: str
    ) -> None:
        line: dict[str, Any] = {
            "event": "http.access",
            "method": scope.get("method"),
            "path": scope.get("path"),
            "status": status,
            "durationMs": round((time.perf_counter() - started) * 1000, 3),
            "requestId": request_id,
            "traceId": trace_id,
            "replica": self.replica,
        }
        access_logger.info(json.dumps(line, separators=(",", ":")))


@dataclass(frozen=True)
class HTTPSettings:
    """How the HTTP surface's middleware behaves.

    ``from_env()`` reads ``OBJECTOS_CORS_ORIGINS`` (comma-separated origins, or
    ``*``), ``OBJECTOS_ACCESS_LOG`` (``0``/``false``/``off`` disables it) and
    ``OBJECTOS_GZIP_MIN_BYTES``.
    """

    cors_origins: tuple[str, ...] = ()
    access_log: bool = True
    gzip_minimum_size: int = 1024
    replica: str = ""
    echo_request_id: bool = True
    extra_exposed_headers: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, *, replica: str = "", echo_request_id: bool = True) -> HTTPSettings:
        """Settings from the process environment (see the class docstring)."""
        origins = tuple(
            o.strip() for o in os.environ.get("OBJECTOS_CORS_ORIGINS", "").split(",") if o.strip()
        )
        access = os.environ.get("OBJECTOS_ACCESS_LOG", "1").strip().lower()
        return cls(
            cors_origins=origins,
            access_log=access not in ("0", "false", "off", "no"),
            gzip_minimum_size=int(os.environ.get("OBJECTOS_GZIP_MIN_BYTES", "1024")),
            replica=replica,
            echo_request_id=echo_request_id,
        )


def hub_middleware(settings: HTTPSettings | None = None) -> list[Middleware]:
    """The middleware stack, outermost first: context, CORS (if configured), gzip."""
    settings = settings or HTTPSettings()
    stack = [
        Middleware(
            RequestContext,
            replica=settings.replica,
            access_log=settings.access_log,
            echo_request_id=settings.echo_request_id,
        ),
    ]
    if settings.cors_origins:
        stack.append(cors_middleware(settings.cors_origins, settings.extra_exposed_headers))
    stack.append(Middleware(GZipMiddleware, minimum_size=settings.gzip_minimum_size))
    return stack


def cors_middleware(origins: Sequence[str], exposed: Sequence[str] = ()) -> Middleware:
    """CORS for ``origins`` (``*`` for any): the REST methods, any request header."""
    return Middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        # Credentialed requests are refused for "*": browsers forbid that combination.
        allow_credentials="*" not in origins,
        expose_headers=[*EXPOSED_HEADERS, *exposed],
        max_age=600,
    )


__all__ = [
    "EXPOSED_HEADERS",
    "HTTPSettings",
    "RequestContext",
    "Trace",
    "cors_middleware",
    "hub_middleware",
    "new_trace",
    "parse_traceparent",
    "request_id_from",
]
