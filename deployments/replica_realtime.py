"""Realtime in each HTTP replica: record events over SSE and long polling, gateway discovery.

:class:`ReplicaEvents` mounts ``GET /api/v1/realtime/sse`` and ``/api/v1/realtime/poll``
(:mod:`objectos.api.sse`) on the replica's own data engine, built once the data plugin
runs (until then both answer 503 like the data routes):

- the change feed tails the replica's change log and is nudged by the replica's own
  commits (another replica's commits are seen at the feed's next idle poll,
  ``IDLE_MAX_S`` = 0.25 s at most);
- callers authenticate like REST (bearer token or API key; ``access_token`` in the
  query for ``EventSource``, which cannot send headers);
- each subscriber gets only the records and fields it may read, decided by
  :class:`~objectos.realtime.permissions.RecordPermissions` from the same
  permission engine as the replica's SecuredDataService.

:class:`GatewayRoutes` is what discovery adds for the Socket.IO gateways: their
advertised URL read from Ray's GCS KV off the event loop, cached briefly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from objectos.api.audit import request_context
from objectos.api.envelope import error_response
from objectos.api.rest import Authenticator
from objectos.api.sse import POLL_PATH, SSE_PATH, RealtimeSSE
from objectos.data.actor import Actor
from objectos.data.engine import DataEngine
from objectos.errors import InvalidToken
from objectos.realtime.feed import Backoff, NudgeOnCommit
from objectos.realtime.permissions import RecordPermissions
from objectos.security.guard import SecuredDataService

logger = logging.getLogger("objectos.http.realtime")

#: Route families of the HTTP realtime routes, for discovery.
#: Longest wait between two looks at the change log when nothing was committed here.
IDLE_MAX_S = 0.25

EVENT_ROUTES = {"realtimeSse": SSE_PATH, "realtimePoll": POLL_PATH}
TOKEN_PARAM = "access_token"


class ReplicaDataLike(Protocol):
    """What the event routes need of :class:`deployments.api.ReplicaData`."""

    async def engine(self) -> DataEngine: ...

    async def guard(self) -> SecuredDataService: ...


class QueryTokenAuthenticator:
    """REST's authenticator, plus a token in the ``access_token`` query parameter.

    Only for the event routes: ``EventSource`` cannot send headers. A request with a
    header credential *and* the parameter is refused (one credential at a time, as
    REST does). ``authenticate_token`` is ``HubAuthenticator.authenticate_token``.
    """

    def __init__(
        self,
        authenticate: Authenticator,
        authenticate_token: Callable[[str], Awaitable[Any]],
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self._authenticate = authenticate
        self._authenticate_token = authenticate_token
        self._trusted_proxies = tuple(trusted_proxies)

    async def __call__(self, request: Request) -> Actor:
        token = request.query_params.get(TOKEN_PARAM)
        if token is None:
            return await self._authenticate(request)
        if "authorization" in request.headers or "x-api-key" in request.headers:
            raise InvalidToken(
                "send exactly one credential", details={"reason": "more than one credential"}
            )
        authentication = await self._authenticate_token(token)
        actor: Actor = authentication.actor
        return actor.with_context(**request_context(request, self._trusted_proxies))


class ReplicaEvents:
    """The SSE and long-polling routes of one replica (see the module docstring).

    ``data`` is the replica's :class:`deployments.api.ReplicaData`.
    """

    def __init__(self, data: ReplicaDataLike, authenticate: Authenticator) -> None:
        self.data = data
        self.authenticate = authenticate
        self._sse: RealtimeSSE | None = None
        self._lock = asyncio.Lock()

    async def sse(self) -> RealtimeSSE:
        """The endpoint engine, built on first use once the data engine runs."""
        if self._sse is None:
            async with self._lock:
                if self._sse is None:
                    guard = await self.data.guard()
                    engine = await self.data.engine()
                    sse = RealtimeSSE(
                        engine.change_log,
                        authenticate=self.authenticate,
                        visibility=RecordPermissions(guard.permissions),
                        columns=engine.tables.columns,
                        auth_params=(TOKEN_PARAM,),
                        # Other replicas' commits do not nudge this feed: it looks at
                        # least every 250 ms (one indexed query) while streams are idle.
                        idle=Backoff(0.05, IDLE_MAX_S),
                        require_read=partial(guard.permissions.require, action="read"),
                    )
                    # This replica's commits make its feed look at once.
                    engine.hooks = NudgeOnCommit(sse.nudge, engine.hooks)
                    self._sse = sse
        return self._sse

    async def stream(self, request: Request) -> Response:
        try:
            sse = await self.sse()
        except Exception as exc:
            return error_response(request, exc)
        return await sse.endpoint(request)

    async def poll(self, request: Request) -> Response:
        try:
            sse = await self.sse()
            return await sse.poll(request)
        except Exception as exc:
            return error_response(request, exc)

    def routes(self) -> list[Route]:
        return [
            Route(SSE_PATH, self.stream, methods=["GET"], name="realtime_sse"),
            Route(POLL_PATH, self.poll, methods=["GET"], name="realtime_poll"),
        ]

    @property
    def open_streams(self) -> int:
        return self._sse.open_streams if self._sse is not None else 0

    async def close(self) -> None:
        """Stop the feed and end every open stream."""
        if self._sse is not None:
            await self._sse.stop()


class GatewayRoutes:
    """Discovery's ``realtime`` and ``yjs`` routes: only while a gateway runs.

    ``lookup`` (default :func:`deployments.realtime.realtime_routes`) reads Ray's GCS
    KV, a blocking call: it runs in a thread, at most once per ``ttl_s``.
    """

    def __init__(
        self, lookup: Callable[[], dict[str, str]] | None = None, *, ttl_s: float = 2.0
    ) -> None:
        if lookup is None:
            from deployments.realtime import realtime_routes

            lookup = realtime_routes
        self._lookup = lookup
        self.ttl_s = ttl_s
        self._routes: dict[str, str] = {}
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, str]:
        if time.monotonic() - self._at < self.ttl_s:
            return dict(self._routes)
        async with self._lock:
            if time.monotonic() - self._at >= self.ttl_s:
                try:
                    self._routes = dict(await asyncio.to_thread(self._lookup))
                except Exception:  # GCS hiccup: advertise nothing rather than fail discovery
                    logger.warning("reading the realtime gateways failed", exc_info=True)
                    self._routes = {}
                self._at = time.monotonic()
        return dict(self._routes)


__all__ = ["EVENT_ROUTES", "GatewayRoutes", "QueryTokenAuthenticator", "ReplicaEvents"]
