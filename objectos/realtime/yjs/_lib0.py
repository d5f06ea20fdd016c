"""The lib0 binary encoding that Yjs and y-protocols are written in (the subset we read).

lib0 is Yjs' own serialisation library; updates, state vectors and awareness updates
are all sequences of its primitives. Only what the hub has to *check* or *produce* is
here: variable-length unsigned integers, length-prefixed byte arrays and UTF-8
strings, and a skip-over for lib0's self-describing ``any`` values.
"""

from __future__ import annotations


class EncodingError(ValueError):
    """The bytes are not what the lib0 encoding promised (truncated, overlong, bad tag)."""


# lib0 writes JS numbers (<= 53 bits) and Yrs writes u64; ten 7-bit groups cover both.
_MAX_VAR_UINT_BYTES = 10


class Reader:
    """A cursor over one encoded buffer; every read checks bounds instead of trusting lengths."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def at_end(self) -> bool:
        return self.pos == len(self.data)

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def read_uint8(self) -> int:
        if self.pos >= len(self.data):
            raise EncodingError(f"unexpected end of data at byte {self.pos}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def read_var_uint(self) -> int:
        value = 0
        shift = 0
        for _ in range(_MAX_VAR_UINT_BYTES):
            byte = self.read_uint8()
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise EncodingError(f"variable-length integer longer than 64 bits at byte {self.pos}")

    def skip_var_int(self) -> None:
        # lib0's signed varint: the first byte holds sign + 6 bits; the continuation
        # bit is 0x80 in every byte, so skipping does not need to decode the value.
        for _ in range(_MAX_VAR_UINT_BYTES):
            if self.read_uint8() < 0x80:
                return
        raise EncodingError(f"variable-length integer longer than 64 bits at byte {self.pos}")

    def read_bytes(self, length: int) -> bytes:
        if length > self.remaining:
            raise EncodingError(
                f"length {length} at byte {self.pos} runs past the end ({self.remaining} left)"
            )
        chunk = self.data[self.pos : self.pos + length]
        self.pos += length
        return chunk

    def read_var_bytes(self) -> bytes:
        return self.read_bytes(self.read_var_uint())

    def read_var_string(self) -> str:
        raw = self.read_var_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError(f"string before byte {self.pos} is not UTF-8") from exc

    def skip_any(self) -> None:
        """Skip one lib0 ``writeAny`` value (ContentAny, subdocument options)."""
        # An explicit stack instead of recursion: a hostile update can nest arrays
        # thousands deep and must fail as bad input, not as RecursionError.
        # Each frame is [values still to read, whether each value has a key first].
        stack: list[list[int | bool]] = [[1, False]]
        while stack:
            frame = stack[-1]
            if frame[0] == 0:
                stack.pop()
                continue
            frame[0] = int(frame[0]) - 1
            if frame[1]:
                self.read_var_string()
            tag = self.read_uint8()
            if tag in (127, 126, 121, 120):  # undefined, null, false, true
                continue
            if tag == 125:  # integer
                self.skip_var_int()
            elif tag == 124:  # float32
                self.read_bytes(4)
            elif tag in (123, 122):  # float64, bigint64
                self.read_bytes(8)
            elif tag == 119:  # string
                self.read_var_string()
            elif tag in (118, 117):  # object (key, value)*, array value*
                count = self.read_var_uint()
                self._check_count(count)
                stack.append([count, tag == 118])
            elif tag == 116:  # Uint8Array
                self.read_var_bytes()
            else:
                raise EncodingError(f"unknown lib0 'any' tag {tag} at byte {self.pos - 1}")

    def _check_count(self, count: int) -> None:
        # Every encoded value takes at least one byte: a count larger than what is
        # left is a lie, and would otherwise keep the loop busy for nothing.
        if count > self.remaining:
            raise EncodingError(f"count {count} at byte {self.pos} exceeds the remaining data")


def encode_var_uint(value: int) -> bytes:
    if value < 0:
        raise ValueError("var uint must be >= 0")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_var_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return encode_var_uint(len(raw)) + raw
