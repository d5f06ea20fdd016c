"""``HubClient``: the hub's REST API, its realtime channel and its documents from Python.

::

    async with HubClient("http://127.0.0.1:8000") as hub:
        await hub.sign_in("ada@example.com", "secret")
        info = await hub.discovery()
        accounts = hub.objects("account")
        page = await accounts.find(filter={"industry": "retail"}, sort="-created_at", top=10)
        record = await accounts.create({"name": "Acme"})
        record = await accounts.update(record["id"], {"employees": 12}, version=record["version"])
        await accounts.delete(record["id"])

        sub = await hub.realtime.subscribe(objects=["account"], on_event=print)
        doc = await hub.document("account/42/notes")     # a live pycrdt Doc
        print(doc.text("content"))

Every call that the hub answers with an error raises a :class:`~objectos.client.HubError`
of the code's class (``RecordNotFound``, ``ConcurrentModification``...); transport
failures raise ``httpx`` errors as they are.

**Tokens.** :meth:`HubClient.sign_in` keeps the access and refresh tokens;
a call that needs the token refreshes it first when it expires within
``refresh_margin_s`` (REST calls, each realtime (re)connect and document
connect), and a 401 ``expired_token`` is retried once after a refresh. A
client made with ``token=`` (an access token or an API key) uses it as it is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from objectos.client.errors import HubError, error_from_response
from objectos.client.realtime import RealtimeClient, refusal_error
from objectos.errors import ExpiredToken, ServiceUnavailable
from objectos.realtime.yjs.client import ConnectionRefused, YSocketIOClient

API_BASE = "/api/v1"
#: How the hub's API keys begin (``objectos.api.auth.API_KEY_PREFIX``).
API_KEY_PREFIX = "oos_"
#: Refresh the access token when it expires within this many seconds.
REFRESH_MARGIN_S = 30.0


@dataclass(frozen=True)
class Page:
    """One page of ``find``: the records and the list's ``pagination`` block."""

    records: list[dict[str, Any]]
    total: int | None = None
    limit: int | None = None
    offset: int | None = None
    has_more: bool = False
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]


@dataclass
class _Tokens:
    access: str | None = None
    refresh: str | None = None
    expires_at: float | None = None
    user: dict[str, Any] | None = field(default=None)


class HubClient:
    """An async client of one hub: REST data, auth, discovery, realtime, Yjs documents."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        realtime_url: str | None = None,
        timeout: float = 30.0,
        refresh_margin_s: float = REFRESH_MARGIN_S,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        """A client of the hub at ``base_url`` (``http://host:port``, no ``/api/v1``).

        ``token`` is an access token or an API key to use as it is (or call
        :meth:`sign_in`). ``realtime_url`` is the Socket.IO base URL when it is not
        the one discovery advertises (``routes.realtime``). ``http`` replaces the
        ``httpx.AsyncClient`` (its base URL and auth headers are set per request).
        """
        self.base_url = base_url.rstrip("/")
        self._tokens = _Tokens(access=token)
        self._explicit_realtime_url = realtime_url
        self._refresh_margin_s = refresh_margin_s
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._refresh_lock = asyncio.Lock()
        self._discovery: dict[str, Any] | None = None
        self._documents: list[YSocketIOClient] = []
        self.realtime = RealtimeClient(self._realtime_url, self.fresh_token)

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Close the realtime connection, every document and the HTTP client."""
        await self.realtime.close()
        documents, self._documents = self._documents, []
        for document in documents:
            await document.disconnect()
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ auth

    @property
    def token(self) -> str | None:
        """The current access token (or API key), if any."""
        return self._tokens.access

    @property
    def user(self) -> dict[str, Any] | None:
        """The signed-in account as sign-in/refresh returned it."""
        return self._tokens.user

    async def sign_in(self, email: str, password: str) -> dict[str, Any]:
        """``POST /api/v1/auth/sign-in``; keeps the tokens and returns the token response."""
        session = await self._call(
            "POST",
            "/auth/sign-in",
            json_body={"email": email, "password": password},
            authenticated=False,
        )
        self._keep(session)
        return dict(session)

    async def refresh(self) -> dict[str, Any]:
        """``POST /api/v1/auth/refresh`` with the kept refresh token (it is spent)."""
        refresh_token = self._tokens.refresh
        if refresh_token is None:
            raise RuntimeError("no refresh token: sign in first")
        session = await self._call(
            "POST", "/auth/refresh", json_body={"refreshToken": refresh_token}, authenticated=False
        )
        self._keep(session)
        return dict(session)

    async def sign_out(self) -> None:
        """``POST /api/v1/auth/sign-out``: end this session (its refresh token) and forget it."""
        if self._tokens.refresh is not None:
            await self._call(
                "POST",
                "/auth/sign-out",
                json_body={"refreshToken": self._tokens.refresh},
                authenticated=False,
            )
        self._tokens = _Tokens()

    async def me(self) -> dict[str, Any]:
        """``GET /api/v1/auth/me``: the caller's account and how it authenticated."""
        return dict(await self._call("GET", "/auth/me"))

    async def fresh_token(self) -> str | None:
        """The access token, refreshed first if it expires within the margin."""
        tokens = self._tokens
        expiring = (
            tokens.refresh is not None
            and tokens.expires_at is not None
            and tokens.expires_at - time.time() <= self._refresh_margin_s
        )
        if expiring:
            async with self._refresh_lock:
                if self._tokens is tokens:  # nobody refreshed meanwhile
                    await self.refresh()
        return self._tokens.access

    def _keep(self, session: Mapping[str, Any]) -> None:
        expires_in = session.get("expiresIn")
        self._tokens = _Tokens(
            access=session.get("accessToken"),
            refresh=session.get("refreshToken"),
            expires_at=time.time() + float(expires_in) if expires_in is not None else None,
            user=session.get("user"),
        )

    # ------------------------------------------------------------------ discovery

    async def discovery(self, *, cached: bool = False) -> dict[str, Any]:
        """``GET /api/v1/discovery``: name, version, routes, services, capabilities."""
        if cached and self._discovery is not None:
            return self._discovery
        document = dict(await self._call("GET", "/discovery", authenticated=False))
        self._discovery = document
        return document

    async def health(self) -> dict[str, Any]:
        """``GET /api/v1/health`` (a 503 "not ready" is returned, not raised)."""
        response = await self._http.get(f"{self.base_url}{API_BASE}/health")
        body = _json(response)
        if isinstance(body, Mapping) and isinstance(body.get("data"), Mapping):
            return dict(body["data"])
        raise error_from_response(response.status_code, body, response.headers)

    async def _realtime_url(self) -> str:
        """The Socket.IO base URL: the explicit one, else discovery's ``routes.realtime``."""
        if self._explicit_realtime_url:
            return self._explicit_realtime_url
        routes = (await self.discovery()).get("routes") or {}
        url = routes.get("realtime")
        if not isinstance(url, str) or not url:
            raise ServiceUnavailable(
                "this hub advertises no realtime endpoint (discovery routes.realtime); "
                "pass realtime_url= to HubClient",
                details={"reason": "realtime not advertised"},
            )
        return url

    # ------------------------------------------------------------------ data

    def objects(self, name: str) -> ObjectAPI:
        """The REST data API of one object (``/api/v1/data/<name>``)."""
        return ObjectAPI(self, name)

    async def metadata(self, kind: str, name: str | None = None) -> Any:
        """``GET /api/v1/meta/<kind>[/<name>]``."""
        path = f"/meta/{quote(kind, safe='')}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        return await self._call("GET", path)

    # ------------------------------------------------------------------ documents

    async def document(
        self,
        name: str,
        *,
        awareness: dict[str, Any] | None = None,
        within_s: float = 30.0,
    ) -> YSocketIOClient:
        """A live, synced Yjs document (``/yjs|<name>`` on the realtime endpoint).

        Returns the hub's :class:`~objectos.realtime.yjs.YSocketIOClient`: ``.doc``
        is the pycrdt ``Doc``, ``.text(field)`` a ``Text``; edit inside
        ``async with doc.transact():`` (or call ``await doc.flush()``) to send.
        ``awareness`` is announced on connect. Closed by :meth:`aclose` (or
        ``await doc.disconnect()``). A refused connection raises the hub's error
        (``InvalidToken``, ``PermissionDenied``...) as a :class:`HubError`.
        """
        url = await self._realtime_url()
        token = await self.fresh_token()
        client = YSocketIOClient(
            url, name, auth={"token": token} if token else None, awareness_state=awareness
        )
        try:
            await client.connect(wait_timeout=within_s)
        except ConnectionRefused as exc:
            raise refusal_error(exc.data) from exc
        try:
            async with asyncio.timeout(within_s):
                await client.wait_synced()
        except BaseException:
            await client.disconnect()
            raise
        self._documents.append(client)
        return client

    # ------------------------------------------------------------------ plumbing

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        authenticated: bool = True,
    ) -> tuple[Any, httpx.Response]:
        """One call to ``<base>/api/v1<path>``: the envelope's ``(body, response)``.

        Raises a :class:`HubError` for any error envelope (or non-JSON error).
        An ``expired_token`` answer is retried once after a refresh.
        """
        for attempt in (1, 2):
            sent = dict(headers or {})
            tokens = self._tokens
            if authenticated:
                token = await self.fresh_token()
                tokens = self._tokens  # the set this request is sent with
                if token:
                    sent["Authorization"] = authorization(token)
            response = await self._http.request(
                method,
                f"{self.base_url}{API_BASE}{path}",
                params=_query(params),
                json=json_body,
                headers=sent,
            )
            if response.is_success or response.status_code == 304:
                return (_json(response) if response.content else None), response
            error = error_from_response(response.status_code, _json(response), response.headers)
            error.request_id = error.request_id or response.headers.get("x-request-id")
            if (
                attempt == 1
                and authenticated
                and isinstance(error, ExpiredToken)
                and self._tokens.refresh is not None
            ):
                # Concurrent requests that all got expired_token spend the refresh
                # token once: the hub treats a second use as theft (reuse detection).
                async with self._refresh_lock:
                    if self._tokens is tokens:
                        await self.refresh()
                continue
            raise error
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        body, _ = await self.request(method, path, **kwargs)
        return body.get("data") if isinstance(body, Mapping) else body


class ObjectAPI:
    """``/api/v1/data/<object>``: find, get, create, update, delete, count, query, batch."""

    def __init__(self, hub: HubClient, name: str) -> None:
        self.hub = hub
        self.name = name
        self._path = f"/data/{quote(name, safe='')}"

    def _record(self, record_id: str) -> str:
        return f"{self._path}/{quote(str(record_id), safe='')}"

    async def find(
        self,
        filter: Mapping[str, Any] | Sequence[Any] | None = None,
        *,
        sort: str | Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
        top: int | None = None,
        skip: int | None = None,
        cursor: str | None = None,
        expand: Sequence[str] | None = None,
        search: str | None = None,
        count: bool = False,
    ) -> Page:
        """``GET /data/<object>``: one page of records.

        ``filter`` is Mongo-style (``{"amount": {"$gt": 100}}``) or the legacy array
        form; ``sort`` is ``"name,-created_at"`` or a list of such keys; ``count``
        asks for ``total``. Page on with ``cursor=page.next_cursor``.
        """
        params: dict[str, Any] = {
            "filter": json.dumps(filter) if filter is not None else None,
            "sort": sort if sort is None or isinstance(sort, str) else ",".join(sort),
            "select": ",".join(fields) if fields else None,
            "top": top,
            "skip": skip,
            "cursor": cursor,
            "expand": ",".join(expand) if expand else None,
            "search": search,
            "count": "true" if count else None,
        }
        body, _ = await self.hub.request("GET", self._path, params=params)
        return _page(body)

    async def count(self, filter: Mapping[str, Any] | Sequence[Any] | None = None) -> int:
        """How many records match ``filter`` (that the caller may read)."""
        page = await self.find(filter, top=0, count=True)
        if page.total is None:
            raise HubError("the hub did not return a total", details={"reason": "no total"})
        return page.total

    async def get(
        self,
        record_id: str,
        *,
        fields: Sequence[str] | None = None,
        expand: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """``GET /data/<object>/<id>``; ``RecordNotFound`` when it does not exist."""
        params = {
            "select": ",".join(fields) if fields else None,
            "expand": ",".join(expand) if expand else None,
        }
        return dict(await self.hub._call("GET", self._record(record_id), params=params))

    async def create(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /data/<object>``: the created record (with ``id`` and ``version``)."""
        return dict(await self.hub._call("POST", self._path, json_body=dict(data)))

    async def update(
        self, record_id: str, changes: Mapping[str, Any], *, version: int | None = None
    ) -> dict[str, Any]:
        """``PATCH /data/<object>/<id>``; with ``version``, only if the record is still at it
        (else ``ConcurrentModification``)."""
        headers = {"If-Match": f'"{version}"'} if version is not None else None
        return dict(
            await self.hub._call(
                "PATCH", self._record(record_id), json_body=dict(changes), headers=headers
            )
        )

    async def delete(self, record_id: str, *, version: int | None = None) -> dict[str, Any]:
        """``DELETE /data/<object>/<id>``: ``{object, id, deleted, version}``."""
        headers = {"If-Match": f'"{version}"'} if version is not None else None
        return dict(await self.hub._call("DELETE", self._record(record_id), headers=headers))

    async def query(self, ast: Mapping[str, Any]) -> Any:
        """``POST /data/<object>/query`` with a QueryAST body (records, or aggregate rows)."""
        body, _ = await self.hub.request("POST", f"{self._path}/query", json_body=dict(ast))
        data = body.get("data") if isinstance(body, Mapping) else body
        return _page(body) if isinstance(body, Mapping) and "pagination" in body else data

    async def batch(
        self, operations: Sequence[Mapping[str, Any]], *, all_or_none: bool = True
    ) -> dict[str, Any]:
        """``POST /data/<object>/batch`` with ``{operations, allOrNone}``."""
        body = {"operations": [dict(op) for op in operations], "allOrNone": all_or_none}
        return dict(await self.hub._call("POST", f"{self._path}/batch", json_body=body))


def authorization(credential: str) -> str:
    """The ``Authorization`` header of a credential: ``ApiKey`` for an API key, else
    ``Bearer`` (the Socket.IO handshake takes either as ``auth.token``)."""
    scheme = "ApiKey" if credential.startswith(API_KEY_PREFIX) else "Bearer"
    return f"{scheme} {credential}"


def _page(body: Any) -> Page:
    if not isinstance(body, Mapping):
        raise HubError("unexpected list response", details={"reason": "not an envelope"})
    pagination = body.get("pagination") or {}
    return Page(
        records=list(body.get("data") or []),
        total=pagination.get("total"),
        limit=pagination.get("limit"),
        offset=pagination.get("offset"),
        has_more=bool(pagination.get("hasMore")),
        next_cursor=pagination.get("nextCursor"),
    )


def _query(params: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not params:
        return None
    return {key: str(value) for key, value in params.items() if value is not None}


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


__all__ = ["API_BASE", "API_KEY_PREFIX", "HubClient", "ObjectAPI", "Page", "authorization"]
