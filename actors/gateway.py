"""The Socket.IO gateway of one node: ``gateway:<node id>``, serving documents and records.

One detached actor per node (``num_cpus=0``) runs python-socketio under its own
uvicorn on its own port (ARCHITECTURE.md, "Where HTTP and Socket.IO run"): one
process holds each connection, so WebSocket *and* long-polling work, and a room
that emits to this gateway reaches the sockets that are really here. It serves:

* collaborative documents with the y-socket.io protocol
  (``objectos.realtime.yjs.protocol``) on namespaces ``/yjs|<doc>``; their rooms
  are Ray actors (``actors.room``), which call :meth:`GatewayActor.deliver`;
* record subscriptions and presence on ``/realtime``
  (:class:`~objectos.realtime.namespace.RealtimeNamespace` over
  :class:`~actors.realtime.RayRealtimeBackend`): record rooms
  (``room:records:<object>``) and presence trackers (``presence:<shard>``) call
  :meth:`GatewayActor.deliver_records`.

Authorization is a callable ``authorize(doc_name, auth) -> Access`` given to the
actor, normally a :class:`DocumentAuthorizer`: an identity proves who the
handshake's ``auth.token`` is -- :class:`HubTokenIdentity` (hub mode: the same hub
JWTs, provider tokens and API keys as REST) or :class:`SharedTokenIdentity` (dev
mode: a shared token, read-write, or a read token, read-only) -- and documents named
``<object>/<id>/<field>`` (a record's rich-text field, :class:`RecordDocument`) pass a
``record_access`` hook that may narrow that: :class:`HubRecordAccess` applies the
hub's record permissions. ``/realtime`` identifies its connections with the same
identity (``authorize.identify``). A token that expires while connected ends the
session on both namespaces (:mod:`objectos.realtime.expiry`).
Without an ``authorize`` the actor runs dev mode with ``settings.dev_token``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import ray
import socketio
import uvicorn
from pydantic import BaseModel, ConfigDict, Field

from actors import factory
from actors.realtime import RayRealtimeBackend, unsubscribe_records
from actors.room import RayRoomDirectory, RoomSettings, set_process_niceness
from objectos.data.actor import Actor
from objectos.errors import (
    ConfigError,
    InvalidToken,
    RecordNotFound,
    ServiceUnavailable,
    Unauthenticated,
)
from objectos.realtime.expiry import check_not_expired
from objectos.realtime.namespace import RealtimeNamespace
from objectos.realtime.permissions import HubRecordPermissions, record_field_access
from objectos.realtime.presence import PresenceBatch
from objectos.realtime.subscriptions import EventBatch
from objectos.realtime.yjs.directory import DocumentRoomLike
from objectos.realtime.yjs.protocol import Access, Authorize, YSocketIONamespace, doc_name_of
from objectos.realtime.yjs.room import SYNC_UPDATE, RoomUnavailable

logger = logging.getLogger("objectos.realtime.gateway")

EMPTY_STATE_VECTOR = b"\x00"
"""A Yjs state vector that knows no client: ``sync_step2`` of it is the whole document."""

SOCKETIO_PATH = "socket.io"


class GatewaySettings(BaseModel):
    """How a node's gateway listens and whom it lets in (one set per hub)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Address the gateway binds on its node.")
    port: int = Field(8001, ge=1, le=65535, description="Port the gateway binds on its node.")
    per_node: int = Field(
        1, ge=1, le=32, description="Gateways per node, on ports port .. port + per_node - 1."
    )
    advertise_url: str | None = Field(
        None,
        description="URL clients use (discovery); default http://<host or node IP>:<port>.",
    )
    cors_allowed_origins: list[str] | str = Field(
        "*", description="Browser origins allowed to connect ('*' = any; tokens, not cookies)."
    )
    max_payload_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest message (a whole document on first sync)."
    )
    ws_compression: bool = Field(
        False,
        description="permessage-deflate on WebSockets: costs CPU per message for keystroke-"
        "sized updates (off, like socket.io's and ws's defaults).",
    )
    niceness: int | None = Field(
        0,
        ge=-20,
        le=19,
        description="Scheduling niceness of the gateway process (Ray's default for workers "
        "is 15); None keeps Ray's. See actors.room.set_process_niceness.",
    )
    ping_interval_s: float = Field(25.0, gt=0, description="Engine.IO ping interval.")
    ping_timeout_s: float = Field(20.0, gt=0, description="Engine.IO ping timeout.")
    auth: Literal["hub", "dev"] = Field(
        "hub",
        description="hub: handshake tokens are checked like REST credentials (the authorize "
        "callable deployments.realtime builds); dev: a shared token (dev_token).",
    )
    dev_token: str | None = Field(
        None,
        description="Dev mode: the shared token giving read-write access (used when the "
        "actor gets no authorize callable).",
    )
    dev_read_token: str | None = Field(
        None, description="Dev mode: a second shared token giving read-only access."
    )
    rooms: RoomSettings = Field(description="Room actors: database, idleness, cap.")
    presence_shards: int = Field(
        1, ge=1, le=256, description="Presence tracker actors (the same on every gateway)."
    )
    presence_timeout_s: float = Field(
        30.0, gt=0, description="A presence connection not heard from for longer goes offline."
    )
    record_room_idle_s: float = Field(
        30.0, gt=0, description="A record subscription room without subscribers passivates after."
    )


# ---------------------------------------------------------------------- authorization


OBJECT_OR_FIELD = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class RecordDocument:
    """A document that is a record's rich-text field: ``<object>/<record id>/<field>``."""

    object: str
    record_id: str
    field: str

    @classmethod
    def parse(cls, doc_name: str) -> RecordDocument | None:
        """The record field a document name denotes, or None for a free document."""
        parts = doc_name.split("/")
        if len(parts) != 3:
            return None
        obj, record_id, field = parts
        if not (OBJECT_OR_FIELD.match(obj) and record_id and OBJECT_OR_FIELD.match(field)):
            return None
        return cls(obj, record_id, field)


@dataclass(frozen=True)
class Grant:
    """What a handshake proved: the access it allows, who it is (hub mode: an ``Actor``)
    and when the credential expires (epoch seconds; None: it does not)."""

    access: Access
    principal: Any = None
    expires_at: float | None = None


Identify = Callable[[dict[str, Any] | None], Awaitable[Grant]]
"""``await identify(auth)`` -> :class:`Grant` for a handshake's ``auth`` object; raises
``Unauthenticated`` / ``InvalidToken`` / ``ExpiredToken`` to refuse the connection."""

RecordAccess = Callable[[RecordDocument, Grant], Awaitable[Access]]
"""``await record_access(record, grant)`` -> what ``grant.principal`` may do with that
record's field. The hook point for record permissions (object, field and record level,
PROTOCOL.md): the result can only narrow ``grant.access``; raise ``PermissionDenied`` /
``RecordNotFound`` to refuse the connection."""


class SharedTokenIdentity:
    """Dev mode: the handshake's ``auth.token`` must be the hub's shared token.

    ``token`` gives read-write access to every document, ``read_token`` (optional)
    read-only access. Missing token: ``unauthenticated``; wrong token: ``invalid_token``.
    Not for production: everybody with the token is the same principal, ``"dev"``.
    """

    def __init__(self, token: str, read_token: str | None = None) -> None:
        if not token:
            raise ConfigError("the realtime dev token must not be empty")
        self._token = token.encode()
        self._read_token = read_token.encode() if read_token else None

    async def __call__(self, auth: dict[str, Any] | None) -> Grant:
        given = (auth or {}).get("token")
        if not isinstance(given, str) or not given:
            raise Unauthenticated("a token is required: connect with auth {token}")
        raw = given.encode()
        if hmac.compare_digest(raw, self._token):
            return Grant(Access(read=True, write=True), "dev")
        if self._read_token is not None and hmac.compare_digest(raw, self._read_token):
            return Grant(Access(read=True, write=False), "dev")
        raise InvalidToken("invalid token")


class HubTokenIdentity:
    """Hub mode: ``auth.token`` is what REST accepts -- a hub access token (JWT), a
    configured OIDC provider's token, or an API key (``HubAuthenticator.authenticate_token``).

    Built from the manifest's ``auth`` section, database URL and data directory (the
    signing keys live there); the identity service is opened in the gateway process
    on first use, so this object pickles as plain configuration.
    """

    def __init__(self, auth_settings: dict[str, Any], database_url: str, data_dir: str) -> None:
        self.auth_settings = auth_settings
        self.database_url = database_url
        self.data_dir = data_dir
        self._identity: Any = None
        self._authenticator: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_identity": None, "_authenticator": None}

    async def __call__(self, auth: dict[str, Any] | None) -> Grant:
        authentication = await self._build().authenticate_token((auth or {}).get("token"))
        return Grant(Access(read=True, write=True), authentication.actor, authentication.expires_at)

    async def aclose(self) -> None:
        identity, self._identity, self._authenticator = self._identity, None, None
        if identity is not None:
            await identity.aclose()

    def _build(self) -> Any:
        if self._authenticator is None:
            # Imported here: the HTTP identity stack is only needed in hub mode.
            from objectos.api.auth import build_identity
            from objectos.protocol.auth import AuthSettings

            self._identity, self._authenticator = build_identity(
                AuthSettings.model_validate(self.auth_settings), self.database_url, self.data_dir
            )
        return self._authenticator


class DocumentAuthorizer:
    """The gateway's ``authorize(doc_name, auth)``: identify the handshake, then let
    ``record_access`` narrow what it may do with a record's field.

    Free documents get what the identity grants; ``<object>/<id>/<field>`` documents
    (:class:`RecordDocument`) go through ``record_access`` when one is given.
    """

    def __init__(self, identify: Identify, record_access: RecordAccess | None = None) -> None:
        self.identify = identify
        self.record_access = record_access

    async def __call__(self, doc_name: str, auth: dict[str, Any] | None) -> Access:
        grant = await self.identify(auth)
        check_not_expired(grant.expires_at)
        granted = Access(grant.access.read, grant.access.write, grant.expires_at)
        record = RecordDocument.parse(doc_name)
        if record is None or self.record_access is None or not grant.access.read:
            return granted
        narrowed = await self.record_access(record, grant)
        return Access(
            read=granted.read and narrowed.read,
            write=granted.write and narrowed.write,
            expires_at=grant.expires_at,
        )

    async def aclose(self) -> None:
        for part in (self.identify, self.record_access):
            close = getattr(part, "aclose", None)
            if close is not None:
                await close()


class HubRecordAccess:
    """The :data:`RecordAccess` hook of a hub: record permissions over the hub's data.

    For ``<object>/<id>/<field>`` documents it reads the record (as the system,
    through a DataEngine on the hub's database opened in the gateway process on
    first use) and asks the permission engine
    (:func:`~objectos.realtime.permissions.record_field_access`): no read
    permission on the object, record or field refuses the connection; read
    without edit (of the field or the record) is read-only; edit is read-write.
    Dev-mode principals (a shared token, not a user) keep what the token grants.
    Pickles as configuration. The gateway hands it its own ``records`` (one
    engine, role directory and metadata check per gateway, see
    :meth:`GatewayActor.__init__`); :meth:`aclose` closes them.
    """

    def __init__(self, records: HubRecordPermissions, database_url: str) -> None:
        self.records = records
        self.database_url = database_url
        self._database: Any = None
        self._data: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_database": None, "_data": None}

    async def __call__(self, record: RecordDocument, grant: Grant) -> Access:
        actor = grant.principal
        if not isinstance(actor, Actor):
            return grant.access
        await self.records.ready()
        return await record_field_access(
            self.records.permissions,
            self._read,
            actor,
            record.object,
            record.record_id,
            record.field,
        )

    async def read(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        """The record as stored (read as the system), or None if there is none."""
        await self.records.ready()
        return await self._read(object_name, record_id)

    async def _read(self, object_name: str, record_id: str) -> dict[str, Any] | None:
        if self._data is None:
            # Imported here: only hub-mode gateways with record documents read data.
            from objectos.data.engine import DataEngine
            from objectos.data.schema import create_engine

            self._database = create_engine(self.database_url)
            self._data = DataEngine(self._database, self.records.registry)
        try:
            found: dict[str, Any] = await self._data.find_one(object_name, record_id, actor=READER)
        except RecordNotFound:
            return None
        return found

    async def aclose(self) -> None:
        """Release the database and the record permissions (idempotent)."""
        database, self._database, self._data = self._database, None, None
        if database is not None:
            await database.dispose()
        await self.records.aclose()


def share_records(authorize: Any, records: HubRecordPermissions | None) -> bool:
    """Hand ``records`` to the :class:`HubRecordAccess` of ``authorize``, if it has one.

    The gateway and its authorizer arrive as separate Ray arguments, so each
    holds its own copy of the hub's record permissions; sharing one means one
    engine, role directory, database engine and metadata check per gateway.
    True when shared: the authorizer's ``aclose`` then closes ``records``.
    """
    access = getattr(authorize, "record_access", None)
    if records is None or not isinstance(access, HubRecordAccess):
        return False
    access.records = records
    return True


READER = Actor.system_actor("realtime")
"""Who reads records for document permission checks (never a client)."""


def principal_actor(grant: Any) -> Actor:
    """The :class:`Actor` a ``/realtime`` connection acts for.

    Hub mode: the token's user. Dev mode: the shared token is trusted server
    access (``Actor.system_actor("dev")``): every record, every field.
    """
    principal = getattr(grant, "principal", None)
    if isinstance(principal, Actor):
        return principal
    if principal == "dev":
        return Actor.system_actor("dev")
    raise Unauthenticated("this credential does not identify a user")


# ---------------------------------------------------------------------- protocol handler


class GatewayNamespace(YSocketIONamespace):
    """The y-socket.io handler plus recovery from a room actor that died under its sockets."""

    CONNECT_ATTEMPTS = 3

    async def _on_connect(
        self, namespace: str, sid: str, environ: dict[str, Any], auth: Any = None
    ) -> bool:
        # A room can passivate (or die) between its activation and this socket's
        # join: then the join is refused as "closed"/"lost". Binding again waits for
        # the passivation to finish and loads what it wrote, so retry instead of
        # refusing a client that did nothing wrong.
        for attempt in range(1, self.CONNECT_ATTEMPTS + 1):
            try:
                return await super()._on_connect(namespace, sid, environ, auth)
            except socketio.exceptions.ConnectionRefusedError as exc:
                cause = exc.__cause__
                retry = isinstance(cause, RoomUnavailable) and cause.details.get("state") in (
                    "closed",
                    "lost",
                )
                if not retry or attempt == self.CONNECT_ATTEMPTS:
                    raise
                binding = self._bindings.get(doc_name_of(namespace) or "")
                if binding is not None:
                    binding.stale = True
                logger.info("yjs %s: room went away during connect; binding again", namespace)
        raise AssertionError("unreachable")

    async def recover_document(self, doc_name: str, lost: DocumentRoomLike) -> None:
        """Move ``doc_name``'s sockets off ``lost`` to a freshly activated room.

        The re-bind re-joins every socket and sends each the server ``sync-step-1``
        (clients push what the new room lacks); then every socket gets the whole
        document, because a room can die after storing an update but before
        broadcasting it. Raises (an ``ObjectOSError``) when activation fails; the
        caller retries.
        """
        # The handler keeps its bindings private; this subclass is the one place that
        # reaches into them, to reuse the handler's own re-bind (single flight, migrate).
        binding = self._bindings.get(doc_name)
        if binding is None:
            return
        if binding.room is lost:
            binding.stale = True
        fresh = await self._bind(doc_name, binding.namespace)
        catch_up = await fresh.room.sync_step2(EMPTY_STATE_VECTOR)
        if catch_up:
            await self.server.emit(SYNC_UPDATE, catch_up, namespace=fresh.namespace)
        logger.info("yjs %r: re-activated after its room was lost", doc_name)


# ---------------------------------------------------------------------- the actor


class _ActorServer(uvicorn.Server):
    """uvicorn without signal handlers: the process belongs to Ray, not to us."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _health(scope: dict[str, Any], receive: Any, send: Any, info: dict[str, Any]) -> None:
    if scope["type"] != "http":
        return
    found = scope.get("path") in ("/", "/health")
    body = json.dumps(info if found else {"error": "not found"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200 if found else 404,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GatewayActor:
    """``gateway:<node id>``: Socket.IO server of one node (see the module docstring).

    Starts listening in the constructor (so a restart by Ray listens again on the
    same port); :meth:`ready` waits for it. Rooms call :meth:`deliver` and
    :meth:`holds`; operators :meth:`info` and :meth:`stats`.
    """

    def __init__(
        self,
        node_id: str,
        settings: dict[str, Any],
        authorize: Authorize | None = None,
        records: HubRecordPermissions | None = None,
        index: int = 0,
    ) -> None:
        """``authorize`` defaults to dev mode with ``settings.dev_token`` (required then).

        ``index``: which of the node's ``per_node`` gateways this is; it listens on
        ``settings.port + index``.

        ``records``: the hub's record permissions, for ``/realtime`` subscriptions
        (without them subscribing is refused; presence still works). A
        :class:`HubRecordAccess` in ``authorize`` is given these same ``records``
        (they arrived as a separate copy), so the gateway builds one engine.
        """
        self.node_id = node_id
        self.name = factory.gateway_actor_name(node_id, index)
        self.settings = GatewaySettings.model_validate(settings)
        self.port = self.settings.port + index
        set_process_niceness(self.settings.niceness)
        self.started_at = time.time()
        if authorize is None:
            if self.settings.auth != "dev" or not self.settings.dev_token:
                raise ConfigError(
                    "the realtime gateway needs an authorize callable (hub mode: "
                    "deployments.realtime builds it) or dev mode with a dev token",
                    details={"setting": "realtime.auth"},
                )
            authorize = DocumentAuthorizer(
                SharedTokenIdentity(self.settings.dev_token, self.settings.dev_read_token)
            )
        #: Whether the authorizer's HubRecordAccess owns (and closes) ``records``.
        self._records_shared = share_records(authorize, records)
        self.authorize = authorize
        self.rooms = RayRoomDirectory(
            self.name, ray.get_runtime_context().current_actor, self.settings.rooms
        )
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            namespaces="*",  # y-socket.io uses one namespace per document
            cors_allowed_origins=self.settings.cors_allowed_origins,
            max_http_buffer_size=self.settings.max_payload_bytes,
            ping_interval=self.settings.ping_interval_s,
            ping_timeout=self.settings.ping_timeout_s,
        )
        self.namespace = GatewayNamespace(self.rooms, authorize)
        self.sio.register_namespace(self.namespace)
        self.rooms.on_room_lost = self.namespace.recover_document
        # /realtime: record subscriptions and presence, same identities as documents.
        self.records = records
        self.realtime = RealtimeNamespace(
            getattr(authorize, "identify", None),
            RayRealtimeBackend(
                self.name,
                records,
                # Presence in "<object>/<id>" needs read access to that record.
                read_record=getattr(getattr(authorize, "record_access", None), "read", None),
                presence_shards=self.settings.presence_shards,
                presence_timeout_s=self.settings.presence_timeout_s,
                room_options={"idle_s": self.settings.record_room_idle_s},
            ),
            actor_of=principal_actor,
            heartbeat_s=self.settings.presence_timeout_s / 3,
        )
        self.sio.register_namespace(self.realtime)
        self.app = socketio.ASGIApp(
            self.sio,
            other_asgi_app=lambda scope, receive, send: _health(scope, receive, send, self.info()),
            socketio_path=SOCKETIO_PATH,
        )
        self._background: set[asyncio.Task[None]] = set()
        self._server: _ActorServer | None = None
        self._failure: BaseException | None = None
        self._serving = asyncio.get_running_loop().create_task(self._serve(), name="gateway")

    @property
    def url(self) -> str:
        if self.settings.advertise_url:
            return self.settings.advertise_url.rstrip("/")
        host = self.settings.host
        if host in ("0.0.0.0", "::", ""):
            host = ray.util.get_node_ip_address()
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    async def ready(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Wait until the gateway accepts connections; its :meth:`info`.

        Raises ``ServiceUnavailable`` naming the address when it cannot listen.
        """
        deadline = time.monotonic() + timeout_s
        while self._server is None or not self._server.started:
            if self._serving.done():
                failure = self._failure or RuntimeError("the server stopped")
                raise ServiceUnavailable(
                    f"gateway {self.name} cannot listen on "
                    f"{self.settings.host}:{self.port}: {failure}",
                    details={"host": self.settings.host, "port": self.port},
                )
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"gateway {self.name} did not start within {timeout_s}s",
                    details={"host": self.settings.host, "port": self.port},
                )
            await asyncio.sleep(0.02)
        return self.info()

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node": self.node_id,
            "url": self.url,
            "pid": os.getpid(),
            "host": self.settings.host,
            "port": self.port,
            "socketioPath": f"/{SOCKETIO_PATH}",
            "startedAt": self.started_at,
        }

    async def stats(self) -> dict[str, Any]:
        return {
            **self.info(),
            "connections": self.namespace.connection_count,
            "realtimeConnections": self.realtime.connection_count,
            "realtime": dict(self.realtime.stats),
            "documents": self.rooms.documents,
            "recoveries": self.rooms.recoveries,
        }

    async def deliver(self, doc_name: str, events: list[tuple[str, bytes, str | None]]) -> None:
        """A room's broadcast batch for this gateway's sockets of ``doc_name``."""
        await self.rooms.deliver(doc_name, events)

    async def deliver_records(self, batch: EventBatch | PresenceBatch) -> None:
        """A record room's events or a presence tracker's snapshots for ``/realtime`` sockets.

        Connections that are not here any more (closed, or held by this gateway
        before it restarted) are unsubscribed from the sending room in the
        background, so the room stops sending for them.
        """
        unknown = await self.realtime.deliver(batch)
        room = getattr(batch, "room", None)
        if unknown and room:
            task = asyncio.get_running_loop().create_task(self._drop_unknown(room, unknown))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _drop_unknown(self, room: str, connection_ids: list[str]) -> None:
        for connection_id in connection_ids:
            try:
                await unsubscribe_records([room], connection_id=connection_id)
            except Exception as exc:
                logger.info("could not drop %s from %s: %r", connection_id, room, exc)

    def realtime_session(self, sid: str) -> dict[str, Any] | None:
        """What a ``/realtime`` connection holds (subscriptions, presence), or None."""
        return self.realtime.session_of(sid)

    async def holds(self, doc_name: str) -> list[str]:
        """This gateway's sockets that are members of ``doc_name`` (rooms reconcile with it)."""
        return self.rooms.holds(doc_name)

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Close every connection and stop listening (the actor stays until killed)."""
        if self._server is not None:
            self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._serving), timeout_s)
        await self.rooms.close()
        await self.realtime.close()
        if self.records is not None and not self._records_shared:
            await self.records.aclose()
        close = getattr(self.authorize, "aclose", None)  # closes shared ``records``
        if close is not None:
            await close()

    async def _serve(self) -> None:
        try:
            family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            # A restarted gateway must get its port back while old connections linger.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.settings.host, self.port))
        except OSError as exc:
            self._failure = exc
            logger.error("gateway %s: cannot listen: %s", self.name, exc)
            return
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ws_max_size=self.settings.max_payload_bytes,
            ws_per_message_deflate=self.settings.ws_compression,
            timeout_graceful_shutdown=5,
        )
        self._server = _ActorServer(config)
        try:
            await self._server.serve(sockets=[sock])
        except BaseException as exc:
            self._failure = exc
            raise
        finally:
            sock.close()


__all__ = [
    "EMPTY_STATE_VECTOR",
    "DocumentAuthorizer",
    "GatewayActor",
    "GatewayNamespace",
    "GatewaySettings",
    "Grant",
    "HubRecordAccess",
    "HubTokenIdentity",
    "Identify",
    "RecordAccess",
    "RecordDocument",
    "SharedTokenIdentity",
    "principal_actor",
    "share_records",
]
