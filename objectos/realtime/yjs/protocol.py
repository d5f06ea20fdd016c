"""The server half of the y-socket.io protocol, as a python-socketio namespace handler.

Wire protocol (y-socket.io 1.1.3, ``src/server/y-socket-io.ts`` and
``src/client/provider.ts``), one Socket.IO namespace per document, ``/yjs|<doc>``:

* connect (handshake ``auth: {token}``) -> server emits ``sync-step-1(stateVector,
  ack)``; the client acks with one argument, ``encodeStateAsUpdate(doc,
  stateVector)``, which the server applies; the server then emits
  ``awareness-update`` with every known awareness state.
* client emits ``sync-step-1(stateVector, ack)`` on every (re)connect -> the server
  acks with one argument, the update the client is missing.
* ``sync-update(update)`` and ``awareness-update(update)`` travel both ways,
  without acks. Payloads are binary V1 updates / y-protocols awareness updates.
* ``sync-step-2`` and ``query-awareness`` exist only on the provider's
  BroadcastChannel between browser tabs, never on the socket.

Differences from the stock y-socket.io server, on purpose: connections are
authorised per document (read, write); a read-only connection's updates are refused
with an ``error`` event (``{code, message, category, details, fieldErrors, event}``,
the envelope's error object) and the document stays unchanged; updates are relayed
to the *other* sockets only after the room made them durable; awareness of a
dropped connection is removed for everybody.

python-socketio has no namespace patterns (y-socket.io uses ``io.of(/^\\/yjs\\|.*$/)``):
the handler is registered on the catch-all namespace ``'*'``, so the server must be
created with ``namespaces='*'``; connections to namespaces nobody handles are
refused here, except python-socketio's default ``'/'``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import socketio

from objectos.errors import ObjectOSError, PermissionDenied, ServiceUnavailable

from ..expiry import SessionExpiry, expired_payload
from .directory import DocumentRoomLike, RoomDirectory
from .room import AWARENESS_UPDATE, SYNC_UPDATE
from .update import EMPTY_UPDATE, InvalidUpdate, inspect_update

logger = logging.getLogger(__name__)

NAMESPACE_PREFIX = "/yjs|"
"""y-socket.io connects to ``<url>/yjs|<roomName>``."""
SYNC_STEP_1 = "sync-step-1"
ERROR_EVENT = "error"
MAX_DOC_NAME_LENGTH = 512  # the width of the store's ``doc`` column


@dataclass(frozen=True)
class Access:
    """What one connection may do with one document, and until when.

    ``expires_at`` (epoch seconds) is when the credential stops working: the
    session ends then (:class:`~objectos.realtime.expiry.SessionExpiry`).
    """

    read: bool
    write: bool
    expires_at: float | None = None


Authorize = Callable[[str, dict[str, Any] | None], Awaitable[Access]]
"""``await authorize(doc_name, auth)`` -> :class:`Access`; ``auth`` is the handshake's
``auth`` object (``{token}``). Raise an :class:`~objectos.errors.ObjectOSError`
(``InvalidToken``, ``PermissionDenied``, ...) to refuse with its code and message."""


class ReadOnlyDocument(PermissionDenied):
    """The connection may read this document but not change it."""


def doc_name_of(namespace: str) -> str | None:
    """The document name of a ``/yjs|<doc>`` namespace, or None for any other namespace."""
    if not namespace.startswith(NAMESPACE_PREFIX):
        return None
    name = namespace[len(NAMESPACE_PREFIX) :]
    return name or None


@dataclass(eq=False)
class _Binding:
    """This process's link to one document's room: one subscription, many sockets."""

    doc_name: str
    namespace: str
    room: DocumentRoomLike
    sids: set[str] = field(default_factory=set)
    unsubscribe: Callable[[], Awaitable[None]] | None = None
    stale: bool = False  # the room reported itself unavailable; rebind before use


@dataclass(eq=False)
class _Connection:
    sid: str
    namespace: str
    doc_name: str
    access: Access
    binding: _Binding


class YSocketIONamespace(socketio.AsyncNamespace):
    """python-socketio handler for every ``/yjs|<doc>`` namespace (see the module docstring).

    It knows rooms only through ``rooms`` (a :class:`RoomDirectory`), so the same
    handler serves in-process rooms and Ray Room actors.
    """

    def __init__(self, rooms: RoomDirectory, authorize: Authorize) -> None:
        super().__init__("*")
        self._rooms = rooms
        self._authorize = authorize
        self._connections: dict[str, _Connection] = {}
        self._bindings: dict[str, _Binding] = {}
        # Single flight per document: two first connections must share one room
        # subscription, or every update would be relayed twice.
        self._binding: dict[str, asyncio.Future[None]] = {}
        self.expiry = SessionExpiry(self._end_session)
        self._events: dict[str, Callable[..., Awaitable[Any]]] = {
            "connect": self._on_connect,
            "disconnect": self._on_disconnect,
            SYNC_STEP_1: self._on_sync_step1,
            SYNC_UPDATE: self._on_sync_update,
            AWARENESS_UPDATE: self._on_awareness_update,
        }

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def trigger_event(self, event: str, *args: Any) -> Any:
        # Event names contain dashes, so python-socketio's ``on_<event>`` lookup
        # cannot reach them; dispatch explicitly. ``args`` = (namespace, sid, ...).
        handler = self._events.get(event)
        if handler is None:
            return None
        return await handler(*args)

    # ------------------------------------------------------------------ events

    async def _on_connect(
        self, namespace: str, sid: str, environ: dict[str, Any], auth: Any = None
    ) -> bool:
        if namespace == "/":
            return True  # python-socketio's default namespace stays as open as it was
        doc_name = doc_name_of(namespace)
        if doc_name is None:
            raise socketio.exceptions.ConnectionRefusedError(
                f"unknown namespace {namespace!r}; documents are at {NAMESPACE_PREFIX}<name>",
                {"code": "not_found"},
            )
        if len(doc_name) > MAX_DOC_NAME_LENGTH:
            raise socketio.exceptions.ConnectionRefusedError(
                f"document name longer than {MAX_DOC_NAME_LENGTH} characters",
                {"code": "validation_error"},
            )
        access = await self._check_access(doc_name, auth if isinstance(auth, dict) else None)
        try:
            binding = await self._bind(doc_name, namespace)
            connection = _Connection(sid, namespace, doc_name, access, binding)
            self._connections[sid] = connection
            binding.sids.add(sid)
            await binding.room.join(sid)
            await self._start_sync(connection)
            self.expiry.watch(namespace, sid, access.expires_at)
        except Exception as exc:
            await self._forget(sid)
            logger.warning("yjs %r: refusing %s: %r", doc_name, sid, exc)
            error = exc if isinstance(exc, ObjectOSError) else ServiceUnavailable("internal error")
            raise socketio.exceptions.ConnectionRefusedError(
                f"document {doc_name!r} is unavailable: {error.message}", {"code": error.code}
            ) from exc
        return True

    async def _on_disconnect(self, namespace: str, sid: str, reason: Any = None) -> None:
        await self._forget(sid)

    async def _on_sync_step1(self, namespace: str, sid: str, state_vector: Any = None) -> bytes:
        connection = self._connections.get(sid)
        if connection is None:
            return EMPTY_UPDATE
        try:
            room = await self._room(connection)
            return await room.sync_step2(_binary(state_vector))
        except ObjectOSError as exc:
            await self._report(connection, SYNC_STEP_1, exc)
            # The stock client applies whatever the ack carries; an empty update
            # keeps it alive, the error event says what went wrong.
            return EMPTY_UPDATE

    async def _on_sync_update(self, namespace: str, sid: str, update: Any = None) -> None:
        connection = self._connections.get(sid)
        if connection is not None:
            await self._apply(connection, update, SYNC_UPDATE)

    async def _on_awareness_update(self, namespace: str, sid: str, update: Any = None) -> None:
        connection = self._connections.get(sid)
        if connection is None:
            return
        try:
            room = await self._room(connection)
            await room.apply_awareness(_binary(update), sid)
        except ObjectOSError as exc:
            await self._report(connection, AWARENESS_UPDATE, exc)

    async def _on_client_sync_step2(self, sid: str, update: Any = None, *_: Any) -> None:
        """The client's ack to our ``sync-step-1``: what it has that the room lacks."""
        connection = self._connections.get(sid)
        if connection is not None:
            await self._apply(connection, update, SYNC_STEP_1)

    # ------------------------------------------------------------------ helpers

    async def _check_access(self, doc_name: str, auth: dict[str, Any] | None) -> Access:
        try:
            access = await self._authorize(doc_name, auth)
        except ObjectOSError as exc:
            raise socketio.exceptions.ConnectionRefusedError(
                exc.message, {"code": exc.code}
            ) from exc
        except Exception as exc:
            logger.exception("yjs %r: authorize failed", doc_name)
            raise socketio.exceptions.ConnectionRefusedError(
                "authorization failed", {"code": "internal_error"}
            ) from exc
        if not access.read:
            raise socketio.exceptions.ConnectionRefusedError(
                f"no read access to document {doc_name!r}", {"code": "permission_denied"}
            )
        return access

    async def _apply(self, connection: _Connection, payload: Any, event: str) -> None:
        if not connection.access.write:
            # The initial handshake ack of a reader is normally empty; only real
            # changes are refused (and reported), so readers can still connect.
            try:
                if inspect_update(_binary(payload)).is_empty:
                    return
            except InvalidUpdate:
                pass
            await self._report(
                connection,
                event,
                ReadOnlyDocument(
                    f"read-only access to document {connection.doc_name!r}: update refused",
                    details={"doc": connection.doc_name},
                ),
            )
            return
        try:
            update = _binary(payload)
            room = await self._room(connection)
            # The room relays what changed to the other sockets through our
            # subscription, once it is durable; nothing to emit here.
            await room.apply_update(update, connection.sid)
        except ObjectOSError as exc:
            await self._report(connection, event, exc)
            if isinstance(exc, ServiceUnavailable):
                connection.binding.stale = True
                await self._recover(connection)

    async def _start_sync(self, connection: _Connection) -> None:
        room = connection.binding.room
        state_vector = await room.sync_step1()
        await self.server.emit(
            SYNC_STEP_1,
            state_vector,
            to=connection.sid,
            namespace=connection.namespace,
            callback=partial(self._on_client_sync_step2, connection.sid),
        )
        awareness = await room.awareness_update()
        if awareness:
            await self.server.emit(
                AWARENESS_UPDATE, awareness, to=connection.sid, namespace=connection.namespace
            )

    async def _room(self, connection: _Connection) -> DocumentRoomLike:
        if connection.binding.stale:
            await self._recover(connection)
        return connection.binding.room

    async def _recover(self, connection: _Connection) -> None:
        """Move every socket of a stale binding to a freshly loaded room and re-sync them.

        The server half of the handshake (``sync-step-1``) makes each client send
        what the new room lacks -- including an update whose write failed, which
        only its author still has.
        """
        try:
            await self._bind(connection.doc_name, connection.namespace)
        except ObjectOSError as exc:
            await self._report(connection, SYNC_STEP_1, exc)

    async def _bind(self, doc_name: str, namespace: str) -> _Binding:
        while True:
            binding = self._bindings.get(doc_name)
            if binding is not None and not binding.stale:
                return binding
            pending = self._binding.get(doc_name)
            if pending is not None:
                await asyncio.wait([pending])
                continue
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._binding[doc_name] = done
            try:
                try:
                    room = await self._rooms.get(doc_name)
                except ObjectOSError:
                    raise
                except Exception as exc:
                    # Whatever the directory's store raised, the client sees 503.
                    raise ServiceUnavailable(
                        f"document {doc_name!r} could not be loaded",
                        details={"doc": doc_name, "cause": type(exc).__name__},
                    ) from exc
                fresh = _Binding(doc_name, namespace, room)
                fresh.unsubscribe = await room.subscribe(partial(self._relay, fresh))
                self._bindings[doc_name] = fresh
                if binding is not None:
                    await self._migrate(binding, fresh)
                return fresh
            finally:
                del self._binding[doc_name]
                done.set_result(None)

    async def _migrate(self, old: _Binding, new: _Binding) -> None:
        if old.unsubscribe is not None:
            await _quietly(old.unsubscribe())
        for sid in sorted(old.sids):
            connection = self._connections.get(sid)
            if connection is None:
                continue
            connection.binding = new
            new.sids.add(sid)
            try:
                await new.room.join(sid)
                await self._start_sync(connection)
            except ObjectOSError as exc:
                await self._report(connection, SYNC_STEP_1, exc)
        old.sids.clear()

    async def _relay(
        self, binding: _Binding, event: str, payload: bytes, origin: str | None
    ) -> None:
        """Room subscriber: send a durable update to this process's sockets of the document."""
        skip = origin if origin in binding.sids else None
        await self.server.emit(event, payload, namespace=binding.namespace, skip_sid=skip)

    async def _end_session(self, namespace: str, sid: str) -> None:
        """The connection's token expired: say so and disconnect it."""
        await _quietly(
            self.server.emit(ERROR_EVENT, expired_payload(), to=sid, namespace=namespace)
        )
        await self.server.disconnect(sid, namespace=namespace)
        await self._forget(sid)

    async def _forget(self, sid: str) -> None:
        connection = self._connections.pop(sid, None)
        if connection is None:
            return
        self.expiry.forget(connection.namespace, sid)
        binding = connection.binding
        binding.sids.discard(sid)
        # Leave first: the room publishes the awareness removal through the
        # binding's subscription, which must still be there.
        await _quietly(binding.room.leave(sid))
        if not binding.sids and self._bindings.get(connection.doc_name) is binding:
            del self._bindings[connection.doc_name]
            if binding.unsubscribe is not None:
                await _quietly(binding.unsubscribe())

    async def _report(self, connection: _Connection, event: str, exc: ObjectOSError) -> None:
        logger.info(
            "yjs %r: %s from %s refused: %s", connection.doc_name, event, connection.sid, exc
        )
        payload = {**exc.to_dict(), "event": event}
        await _quietly(
            self.server.emit(
                ERROR_EVENT, payload, to=connection.sid, namespace=connection.namespace
            )
        )


def register_yjs(
    sio: socketio.AsyncServer, rooms: RoomDirectory, authorize: Authorize
) -> YSocketIONamespace:
    """Serve y-socket.io documents on ``sio``; returns the registered handler.

    ``sio`` must be created with ``namespaces='*'`` (see the module docstring) and
    must not have another catch-all namespace handler.
    """
    if sio.namespaces != "*":
        raise ValueError(
            "register_yjs needs socketio.AsyncServer(namespaces='*'): python-socketio "
            "accepts /yjs|<doc> namespaces only when all namespaces are accepted"
        )
    if "*" in sio.namespace_handlers or "*" in sio.handlers:
        raise ValueError("the server already has a catch-all ('*') namespace handler")
    handler = YSocketIONamespace(rooms, authorize)
    sio.register_namespace(handler)
    return handler


def _binary(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    raise InvalidUpdate(
        f"expected a binary payload, got {type(payload).__name__}", details={"format": "not-binary"}
    )


async def _quietly(awaitable: Awaitable[Any]) -> None:
    # Cleanup and error reporting must not fail the path that is cleaning up.
    try:
        await awaitable
    except Exception:
        logger.warning("yjs cleanup step failed", exc_info=True)
