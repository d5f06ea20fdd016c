"""Yjs document updates: check that bytes are a well-formed *V1* update, and what they cover.

Why the hub parses updates itself instead of handing them straight to pycrdt:

* pycrdt (Yrs) decodes only V1 and stops reading as soon as the V1 structure is
  complete. A Yjs **V2** update (``encodeStateAsUpdateV2``, ``'updateV2'``) starts
  with a zero feature flag, which V1 reads as "no structs"; the next bytes then read as
  a delete set and the rest is silently ignored. The result is a no-op at best, and
  at worst deletions nobody asked for. Only a parse that must consume every byte
  tells the two formats apart, so :func:`inspect_update` does exactly that and
  reports V2 by name.
* The room must know which clock ranges an update covers, to notice updates that
  Yrs keeps *pending* (their dependencies have not arrived). Yrs leaves pending
  structs out of ``Doc.get_update()``, so a snapshot would lose them unless the room
  keeps the raw update (see ``room.py``).

The format (Yjs ``UpdateEncoderV1``): ``varuint n`` client blocks, each ``varuint
structs, varuint client, varuint first clock`` and the structs; then the delete set,
``varuint n`` clients, each ``varuint client, varuint ranges`` and ``(clock, len)``
pairs. Lengths are in UTF-16 code units, as in JavaScript.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from objectos.errors import ValidationError

from ._lib0 import EncodingError, Reader, encode_var_uint

EMPTY_UPDATE = b"\x00\x00"
"""A V1 update with no structs and no deletions (what an in-sync peer sends)."""

# Struct info byte (Yjs structs/Item.js): low five bits select the content,
# the top bits flag which origin/parent fields follow.
_BITS5 = 0x1F
_HAS_PARENT_SUB = 0x20
_HAS_RIGHT_ORIGIN = 0x40
_HAS_ORIGIN = 0x80
_GC = 0
_SKIP = 10
# ContentType type refs that carry a name (YXmlElement, YXmlHook).
_NAMED_TYPE_REFS = (3, 5)
_TYPE_REF_COUNT = 7


class InvalidUpdate(ValidationError):
    """The bytes are not a well-formed Yjs V1 update (or state vector, or awareness update).

    ``details["format"]`` is ``"v2"`` when the bytes are a Yjs V2 update, so a client
    author sees at once to use ``encodeStateAsUpdate``/``'update'`` instead of the V2
    variants.
    """


@dataclass(frozen=True)
class UpdateInfo:
    """What one V1 update contains, without applying it.

    ``struct_ends``/``delete_ends`` map each client id to the clock just past the
    last struct / deleted range the update mentions; a document whose state vector
    is behind either of them cannot have integrated the whole update yet.
    """

    struct_count: int
    delete_range_count: int
    struct_ends: dict[int, int] = field(default_factory=dict)
    delete_ends: dict[int, int] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        """True when applying the update can change nothing (no structs, no deletions)."""
        return self.struct_count == 0 and self.delete_range_count == 0

    def covered_by(self, state: dict[int, int]) -> bool:
        """Whether a document at ``state`` (client -> next clock) already has all of it.

        False means Yrs holds (part of) the update as pending: structs or deletions
        that refer to clocks the document has not seen.
        """
        return all(state.get(client, 0) >= end for client, end in self.struct_ends.items()) and all(
            state.get(client, 0) >= end for client, end in self.delete_ends.items()
        )


def inspect_update(update: bytes) -> UpdateInfo:
    """Parse ``update`` as a Yjs V1 update and report what it covers.

    Raises :class:`InvalidUpdate` for anything else (truncated, trailing bytes,
    unknown content, a V2 update) -- never returns for bytes pycrdt would misread.
    """
    if not isinstance(update, bytes | bytearray | memoryview):
        raise InvalidUpdate(
            f"a Yjs update must be binary, got {type(update).__name__}",
            details={"format": "not-binary"},
        )
    data = bytes(update)
    try:
        info = _parse_v1(Reader(data))
    except EncodingError as exc:
        if _looks_like_v2(data):
            raise InvalidUpdate(
                "this is a Yjs V2 update; the hub speaks V1 only "
                "(use Y.encodeStateAsUpdate / the 'update' event, not the V2 variants)",
                details={"format": "v2"},
            ) from exc
        raise InvalidUpdate(
            f"malformed Yjs V1 update: {exc}", details={"format": "invalid", "size": len(data)}
        ) from exc
    return info


def decode_state_vector(state_vector: bytes) -> dict[int, int]:
    """Decode a Yjs state vector (``varuint n``, then n x ``client, clock``).

    Raises :class:`InvalidUpdate` if the bytes are not exactly one state vector.
    """
    if not isinstance(state_vector, bytes | bytearray | memoryview):
        raise InvalidUpdate(
            f"a state vector must be binary, got {type(state_vector).__name__}",
            details={"format": "not-binary"},
        )
    reader = Reader(bytes(state_vector))
    try:
        result: dict[int, int] = {}
        for _ in range(reader.read_var_uint()):
            client = reader.read_var_uint()
            result[client] = reader.read_var_uint()
        if not reader.at_end:
            raise EncodingError(f"{reader.remaining} trailing bytes")
    except EncodingError as exc:
        raise InvalidUpdate(
            f"malformed state vector: {exc}", details={"format": "invalid"}
        ) from exc
    return result


def encode_state_vector(state: dict[int, int]) -> bytes:
    """Encode client -> clock as a Yjs state vector (the inverse of :func:`decode_state_vector`)."""
    parts = [encode_var_uint(len(state))]
    for client, clock in state.items():
        parts.append(encode_var_uint(client))
        parts.append(encode_var_uint(clock))
    return b"".join(parts)


def _parse_v1(reader: Reader) -> UpdateInfo:
    struct_count = 0
    struct_ends: dict[int, int] = {}
    for _ in range(reader.read_var_uint()):
        structs = reader.read_var_uint()
        client = reader.read_var_uint()
        clock = reader.read_var_uint()
        if structs > reader.remaining:
            raise EncodingError(
                f"{structs} structs announced but only {reader.remaining} bytes left"
            )
        for _ in range(structs):
            clock += _read_struct_length(reader)
        struct_count += structs
        if structs:
            struct_ends[client] = max(struct_ends.get(client, 0), clock)

    delete_range_count = 0
    delete_ends: dict[int, int] = {}
    for _ in range(reader.read_var_uint()):
        client = reader.read_var_uint()
        ranges = reader.read_var_uint()
        if ranges > reader.remaining:
            raise EncodingError(
                f"{ranges} delete ranges announced but only {reader.remaining} left"
            )
        for _ in range(ranges):
            start = reader.read_var_uint()
            length = reader.read_var_uint()
            if length:
                delete_ends[client] = max(delete_ends.get(client, 0), start + length)
        delete_range_count += ranges

    if not reader.at_end:
        raise EncodingError(f"{reader.remaining} bytes left after the delete set")
    return UpdateInfo(struct_count, delete_range_count, struct_ends, delete_ends)


def _read_struct_length(reader: Reader) -> int:
    """Read one struct and return how many clock ticks it spans."""
    info = reader.read_uint8()
    kind = info & _BITS5
    if kind in (_GC, _SKIP):
        return reader.read_var_uint()
    if info & _HAS_ORIGIN:
        reader.read_var_uint()  # origin client
        reader.read_var_uint()  # origin clock
    if info & _HAS_RIGHT_ORIGIN:
        reader.read_var_uint()
        reader.read_var_uint()
    if not info & (_HAS_ORIGIN | _HAS_RIGHT_ORIGIN):
        # Without origins the parent cannot be inferred: it is written out, either
        # as a root type name (flag 1) or as the id of the parent item.
        if reader.read_var_uint() == 1:
            reader.read_var_string()
        else:
            reader.read_var_uint()
            reader.read_var_uint()
        if info & _HAS_PARENT_SUB:
            reader.read_var_string()
    return _read_content_length(reader, kind)


def _read_content_length(reader: Reader, kind: int) -> int:
    if kind == 1:  # ContentDeleted
        return reader.read_var_uint()
    if kind == 2:  # ContentJSON: n JSON strings
        count = reader.read_var_uint()
        for _ in range(count):
            reader.read_var_string()
        return count
    if kind == 3:  # ContentBinary
        reader.read_var_bytes()
        return 1
    if kind == 4:  # ContentString: clock length is the JavaScript (UTF-16) length
        text = reader.read_var_string()
        return len(text.encode("utf-16-le", "surrogatepass")) // 2
    if kind == 5:  # ContentEmbed (JSON string)
        reader.read_var_string()
        return 1
    if kind == 6:  # ContentFormat: key, JSON value
        reader.read_var_string()
        reader.read_var_string()
        return 1
    if kind == 7:  # ContentType
        type_ref = reader.read_var_uint()
        if type_ref >= _TYPE_REF_COUNT:
            raise EncodingError(f"unknown shared type ref {type_ref}")
        if type_ref in _NAMED_TYPE_REFS:
            reader.read_var_string()
        return 1
    if kind == 8:  # ContentAny: n lib0 values
        count = reader.read_var_uint()
        if count > reader.remaining:
            raise EncodingError(f"{count} values announced but only {reader.remaining} bytes left")
        for _ in range(count):
            reader.skip_any()
        return count
    if kind == 9:  # ContentDoc: guid, options
        reader.read_var_string()
        reader.skip_any()
        return 1
    raise EncodingError(f"unknown struct content kind {kind}")


def _looks_like_v2(data: bytes) -> bool:
    """Whether ``data`` has the frame of a Yjs V2 update (``UpdateEncoderV2.toUint8Array``).

    V2: a zero feature flag, nine length-prefixed column buffers, then the rest
    encoder's bytes. Only used to name the mistake once V1 parsing has failed.
    """
    reader = Reader(data)
    try:
        if reader.read_var_uint() != 0:
            return False
        for _ in range(9):
            reader.read_var_bytes()
    except EncodingError:
        return False
    return reader.remaining >= 2
