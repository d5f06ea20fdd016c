"""Collaborative Yjs documents: rooms, their durable store, and the y-socket.io protocol.

* :class:`DocumentRoom` -- one document in memory (pycrdt), its awareness and its log;
  the engine a Ray Room actor wraps.
* :class:`UpdateStore` -- append log + snapshot: :class:`MemoryUpdateStore`,
  :class:`SQLUpdateStore` (SQLite / PostgreSQL).
* :func:`register_yjs` -- the y-socket.io server side on a python-socketio server,
  talking to rooms through a :class:`RoomDirectory` (:class:`LocalRoomDirectory`
  in-process; a Ray-actor directory plugs in the same way).
* :class:`YSocketIOClient` -- the same protocol from Python (pycrdt), for tests,
  notebooks and hub-to-hub use.
"""

from .awareness import (
    AwarenessEntry,
    AwarenessStates,
    decode_awareness_update,
    encode_awareness_update,
)
from .client import YSocketIOClient
from .directory import DocumentRoomLike, LocalRoomDirectory, RoomDirectory
from .protocol import (
    NAMESPACE_PREFIX,
    Access,
    Authorize,
    ReadOnlyDocument,
    YSocketIONamespace,
    doc_name_of,
    register_yjs,
)
from .room import (
    AWARENESS_UPDATE,
    SYNC_UPDATE,
    DocumentRoom,
    RoomListener,
    RoomState,
    RoomUnavailable,
)
from .store import (
    MemoryUpdateStore,
    SQLUpdateStore,
    StoredDocument,
    UpdateStore,
    create_yjs_tables,
)
from .update import EMPTY_UPDATE, InvalidUpdate, UpdateInfo, decode_state_vector, inspect_update

__all__ = [
    "AWARENESS_UPDATE",
    "EMPTY_UPDATE",
    "NAMESPACE_PREFIX",
    "SYNC_UPDATE",
    "Access",
    "Authorize",
    "AwarenessEntry",
    "AwarenessStates",
    "DocumentRoom",
    "DocumentRoomLike",
    "InvalidUpdate",
    "LocalRoomDirectory",
    "MemoryUpdateStore",
    "ReadOnlyDocument",
    "RoomDirectory",
    "RoomListener",
    "RoomState",
    "RoomUnavailable",
    "SQLUpdateStore",
    "StoredDocument",
    "UpdateInfo",
    "UpdateStore",
    "YSocketIOClient",
    "YSocketIONamespace",
    "create_yjs_tables",
    "decode_awareness_update",
    "decode_state_vector",
    "doc_name_of",
    "encode_awareness_update",
    "inspect_update",
    "register_yjs",
]
