"""A y-socket.io client in Python: what the browser's ``SocketIOProvider`` does, on pycrdt.

For tests, notebooks and hub-to-hub use. It speaks exactly the provider's wire
protocol (see ``protocol.py``): answers the server's ``sync-step-1`` with what the
server lacks, sends its own ``sync-step-1`` on every connect, applies
``sync-update``/``awareness-update`` from the server.

One difference from the JavaScript provider, on purpose: local edits are not sent
from inside pycrdt's (synchronous) observer. They are collected, and sent by
:meth:`flush` -- or on leaving ``async with client.transact():`` -- so that no
send runs as an unowned background task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

import socketio
from pycrdt import Awareness, Doc, Text, TransactionEvent

from .protocol import ERROR_EVENT, NAMESPACE_PREFIX, SYNC_STEP_1
from .room import AWARENESS_UPDATE, SYNC_UPDATE, new_client_id


class ConnectionRefused(ConnectionError):
    """The server refused the namespace connection; ``data`` is what it said (``{code}``)."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


class YSocketIOClient:
    """One pycrdt document kept in sync with ``<url>/yjs|<doc_name>``."""

    def __init__(
        self,
        url: str,
        doc_name: str,
        *,
        doc: Doc | None = None,
        auth: dict[str, Any] | None = None,
        awareness_state: dict[str, Any] | None = None,
    ) -> None:
        """Prepare a client; nothing connects until :meth:`connect` (or ``async with``).

        A new ``doc`` gets a 32-bit client id, like every Yjs peer.
        ``awareness_state`` (e.g. ``{"user": {"name": ...}}``) is announced on connect.
        """
        self.url = url
        self.doc_name = doc_name
        self.namespace = NAMESPACE_PREFIX + doc_name
        self.doc = doc if doc is not None else Doc(client_id=new_client_id())
        self.awareness = Awareness(self.doc)
        if awareness_state is not None:
            self.awareness.set_local_state(awareness_state)
        self.errors: list[dict[str, Any]] = []
        self._auth = auth or {}
        self._outbox: list[bytes] = []
        self._applying_remote = False
        self._changed = asyncio.Event()
        self._synced = asyncio.Event()  # we answered the server's sync-step-1
        self._received = asyncio.Event()  # the server answered ours
        self._refusal: Any = None
        self._subscription = self.doc.observe(self._on_transaction)
        self._sio = socketio.AsyncClient(reconnection=False)
        ns = self.namespace
        self._sio.on("connect", self._on_connect, namespace=ns)
        self._sio.on("connect_error", self._on_connect_error, namespace=ns)
        self._sio.on(SYNC_STEP_1, self._on_sync_step1, namespace=ns)
        self._sio.on(SYNC_UPDATE, self._on_sync_update, namespace=ns)
        self._sio.on(AWARENESS_UPDATE, self._on_awareness_update, namespace=ns)
        self._sio.on(ERROR_EVENT, self._on_error, namespace=ns)

    # ------------------------------------------------------------------ lifecycle

    async def connect(self, wait_timeout: float = 10.0) -> None:
        """Connect over WebSocket (as the provider does); raises :class:`ConnectionRefused`."""
        try:
            await self._sio.connect(
                self.url,
                namespaces=[self.namespace],
                auth=self._auth,
                transports=["websocket"],
                wait_timeout=wait_timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            if self._refusal is not None:
                message = self._refusal.get("message") if isinstance(self._refusal, dict) else None
                raise ConnectionRefused(message or str(exc), self._refusal) from exc
            raise

    async def wait_synced(self) -> None:
        """Wait until both halves of the handshake are done (bound it with ``asyncio.timeout``).

        Stricter than the provider's ``synced`` (which only means "answered the
        server"): the server's answer to our ``sync-step-1`` has been applied too,
        so the document holds everything the server had at connect time.
        """
        await self._synced.wait()
        await self._received.wait()

    async def disconnect(self) -> None:
        await self._sio.disconnect()

    async def __aenter__(self) -> Self:
        await self.connect()
        async with asyncio.timeout(10.0):
            await self.wait_synced()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    @property
    def socket(self) -> socketio.AsyncClient:
        """The underlying Socket.IO client (as ``SocketIOProvider.socket`` in JavaScript)."""
        return self._sio

    @property
    def synced(self) -> bool:
        return self._synced.is_set() and self._received.is_set()

    # ------------------------------------------------------------------ editing

    def text(self, field: str) -> Text:
        """The ``Y.Text`` named ``field`` (pycrdt indexes it by UTF-8 byte offset)."""
        return self.doc.get(field, type=Text)

    async def flush(self) -> None:
        """Send the local edits made since the last flush as ``sync-update`` events."""
        updates, self._outbox = self._outbox, []
        for update in updates:
            await self._sio.emit(SYNC_UPDATE, update, namespace=self.namespace)

    @contextlib.asynccontextmanager
    async def transact(self) -> AsyncIterator[Doc]:
        """``async with client.transact() as doc:`` edit in one transaction, then send it."""
        with self.doc.transaction():
            yield self.doc
        await self.flush()

    async def set_awareness(self, state: dict[str, Any] | None) -> None:
        """Announce (or, with None, withdraw) this client's awareness state."""
        self.awareness.set_local_state(state)
        update = self.awareness.encode_awareness_update([self.doc.client_id])
        await self._sio.emit(AWARENESS_UPDATE, update, namespace=self.namespace)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, re-checking after every message from the server.

        Bound it with ``asyncio.timeout``.
        """
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    # ------------------------------------------------------------------ wire events

    def _on_transaction(self, event: TransactionEvent) -> None:
        if not self._applying_remote:
            self._outbox.append(event.update)

    def _apply_remote(self, update: Any) -> None:
        self._applying_remote = True
        try:
            self.doc.apply_update(bytes(update))
        finally:
            self._applying_remote = False
        self._changed.set()

    async def _on_connect(self) -> None:
        self._received.clear()
        # Handlers run inside the client's read loop: emit with a callback, never
        # ``call`` (waiting for an ack here would wait for ourselves).
        await self._sio.emit(
            SYNC_STEP_1, self.doc.get_state(), namespace=self.namespace, callback=self._apply_ack
        )
        if self.awareness.get_local_state() is not None:
            update = self.awareness.encode_awareness_update([self.doc.client_id])
            await self._sio.emit(AWARENESS_UPDATE, update, namespace=self.namespace)

    def _apply_ack(self, update: Any = None, *_: Any) -> None:
        if update:
            self._apply_remote(update)
        self._received.set()
        self._changed.set()

    def _on_connect_error(self, data: Any = None) -> None:
        self._refusal = data

    def _on_sync_step1(self, state_vector: Any) -> bytes:
        missing = self.doc.get_update(bytes(state_vector))
        self._synced.set()
        self._changed.set()
        return missing

    def _on_sync_update(self, update: Any) -> None:
        self._apply_remote(update)

    def _on_awareness_update(self, update: Any) -> None:
        self.awareness.apply_awareness_update(bytes(update), "remote")
        self._changed.set()

    def _on_error(self, payload: Any) -> None:
        self.errors.append(payload if isinstance(payload, dict) else {"message": str(payload)})
        self._changed.set()
