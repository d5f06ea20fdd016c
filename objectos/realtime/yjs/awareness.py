"""Awareness (cursors, names, presence inside a document) as the server keeps it.

The y-protocols awareness update is ``varuint n`` entries of ``(clientID varuint,
clock varuint, state JSON string)``; the JSON ``null`` means "this client left".
A receiver accepts an entry when its clock is newer than the one it knows, or
equal and the entry is a removal (y-protocols ``applyAwarenessUpdate``).

The server has no awareness state of its own (y-socket.io sets its local state to
``null``); it relays, and it remembers which *connection* announced which Yjs client
ids, so that a dropped connection's cursors disappear for everybody else -- the
browser that vanished cannot send its own removal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ._lib0 import EncodingError, Reader, encode_var_string, encode_var_uint
from .update import InvalidUpdate

_REMOVED = "null"


@dataclass(frozen=True)
class AwarenessEntry:
    """One client's awareness as it travels: ``state_json`` is ``"null"`` for a removal."""

    client_id: int
    clock: int
    state_json: str

    @property
    def removed(self) -> bool:
        return self.state_json == _REMOVED


def decode_awareness_update(update: bytes) -> list[AwarenessEntry]:
    """Decode a y-protocols awareness update; :class:`InvalidUpdate` if it is not one."""
    if not isinstance(update, bytes | bytearray | memoryview):
        raise InvalidUpdate(
            f"an awareness update must be binary, got {type(update).__name__}",
            details={"format": "not-binary"},
        )
    reader = Reader(bytes(update))
    entries = []
    try:
        count = reader.read_var_uint()
        if count > reader.remaining:
            raise EncodingError(f"{count} entries announced but only {reader.remaining} bytes")
        for _ in range(count):
            client_id = reader.read_var_uint()
            clock = reader.read_var_uint()
            state_json = reader.read_var_string()
            json.loads(state_json)  # relayed verbatim, so it must be JSON for every peer
            entries.append(AwarenessEntry(client_id, clock, state_json))
        if not reader.at_end:
            raise EncodingError(f"{reader.remaining} trailing bytes")
    except (EncodingError, ValueError) as exc:
        raise InvalidUpdate(
            f"malformed awareness update: {exc}", details={"format": "invalid-awareness"}
        ) from exc
    return entries


def encode_awareness_update(entries: list[AwarenessEntry]) -> bytes:
    """Encode entries as a y-protocols awareness update (``b""`` for no entries)."""
    if not entries:
        return b""
    parts = [encode_var_uint(len(entries))]
    for entry in entries:
        parts.append(encode_var_uint(entry.client_id))
        parts.append(encode_var_uint(entry.clock))
        parts.append(encode_var_string(entry.state_json))
    return b"".join(parts)


@dataclass
class _Client:
    clock: int
    state_json: str | None  # None once removed; the clock is kept to refuse stale re-adds
    connection: str | None
    updated_at: float


class AwarenessStates:
    """The awareness of one document: every client's latest state and its connection.

    Ownership follows the latest sender: a client that reconnects under a new
    connection moves its ids there, and the old connection's late disconnect then
    removes nothing that is still alive.
    """

    def __init__(self) -> None:
        self._clients: dict[int, _Client] = {}

    @property
    def states(self) -> dict[int, Any]:
        """Client id -> decoded state, for present clients only."""
        return {
            cid: json.loads(c.state_json)
            for cid, c in self._clients.items()
            if c.state_json is not None
        }

    def clients_of(self, connection: str) -> set[int]:
        """Yjs client ids whose awareness the connection currently owns."""
        return {
            cid
            for cid, c in self._clients.items()
            if c.connection == connection and c.state_json is not None
        }

    def apply(self, update: bytes, connection: str, now: float) -> bytes:
        """Apply a client's awareness update; return the accepted entries to relay.

        Entries that are stale (an older clock) are dropped, so peers never see a
        state go backwards. ``b""`` means nothing to relay.
        """
        accepted: list[AwarenessEntry] = []
        for entry in decode_awareness_update(update):
            known = self._clients.get(entry.client_id)
            current_clock = -1 if known is None else known.clock
            present = known is not None and known.state_json is not None
            if not (
                current_clock < entry.clock
                or (current_clock == entry.clock and entry.removed and present)
            ):
                continue
            self._clients[entry.client_id] = _Client(
                clock=entry.clock,
                state_json=None if entry.removed else entry.state_json,
                connection=connection,
                updated_at=now,
            )
            accepted.append(entry)
        return encode_awareness_update(accepted)

    def remove_connection(self, connection: str, now: float) -> bytes:
        """Forget the connection's clients; return the removal update for the others."""
        return self._remove(sorted(self.clients_of(connection)), now)

    def expire(self, now: float, max_silence: float) -> bytes:
        """Remove clients silent for ``max_silence`` seconds (y-protocols' ``outdatedTimeout``).

        Live clients renew their state every 15 s; one that stopped without a
        disconnect (a frozen tab behind a half-open socket) would otherwise linger.
        """
        # Removed clients are remembered (their clock refuses a delayed, stale re-add)
        # for one more ``max_silence``, then forgotten so the table does not grow forever.
        for cid in [
            cid
            for cid, c in self._clients.items()
            if c.state_json is None and now - c.updated_at >= max_silence
        ]:
            del self._clients[cid]
        stale = [
            cid
            for cid, c in self._clients.items()
            if c.state_json is not None and now - c.updated_at >= max_silence
        ]
        return self._remove(stale, now)

    def encode_all(self) -> bytes:
        """Every present client's state, for a connection that just joined."""
        return encode_awareness_update(
            [
                AwarenessEntry(cid, c.clock, c.state_json)
                for cid, c in self._clients.items()
                if c.state_json is not None
            ]
        )

    def _remove(self, client_ids: list[int], now: float) -> bytes:
        # Same clock + null state: y-protocols accepts that as a removal of a
        # present client (what y-websocket's server sends when a socket closes).
        removed = []
        for cid in client_ids:
            client = self._clients[cid]
            removed.append(AwarenessEntry(cid, client.clock, _REMOVED))
            client.state_json = None
            client.connection = None
            client.updated_at = now
        return encode_awareness_update(removed)
