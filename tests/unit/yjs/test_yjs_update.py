"""The V1 update parser, checked against updates produced by stock yjs.

The fixtures (``fixtures/yjs_updates.json``) come from
``tests/interop/make_yjs_fixtures.mjs``: every struct content kind, each as V1 and V2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pycrdt
import pytest

from objectos.realtime.yjs import (
    EMPTY_UPDATE,
    InvalidUpdate,
    decode_state_vector,
    inspect_update,
)
from objectos.realtime.yjs.update import encode_state_vector

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "yjs_updates.json").read_text())[
    "fixtures"
]


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_every_yjs_v1_update_parses_to_its_last_byte(fixture: dict) -> None:
    update = bytes.fromhex(fixture["v1"])
    info = inspect_update(update)
    assert info.struct_count > 0
    if fixture["yrs_decodes"]:
        doc = pycrdt.Doc()
        text = doc.get("text", type=pycrdt.Text)
        doc.apply_update(update)
        assert str(text) == fixture["text"]


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_every_yjs_v2_update_is_refused_by_name(fixture: dict) -> None:
    with pytest.raises(InvalidUpdate) as refused:
        inspect_update(bytes.fromhex(fixture["v2"]))
    assert refused.value.details["format"] == "v2"
    assert "V1 only" in refused.value.message


def test_pycrdt_really_ignores_v2_which_is_why_we_parse() -> None:
    """The trap the parser exists for: pycrdt applies a V2 update as a silent no-op."""
    v2 = bytes.fromhex(next(f for f in FIXTURES if f["name"] == "string")["v2"])
    doc = pycrdt.Doc()
    text = doc.get("text", type=pycrdt.Text)
    doc.apply_update(v2)  # no error...
    assert str(text) == ""  # ...and no content


def test_clock_ranges_count_utf16_units_like_javascript() -> None:
    # 'héllo 😀 wörld' is 13 Python characters, 14 UTF-16 units (the emoji is two).
    info = inspect_update(bytes.fromhex(next(f for f in FIXTURES if f["name"] == "string")["v1"]))
    assert info.struct_ends == {1001: 14}


def test_deletions_are_reported_with_their_ranges() -> None:
    info = inspect_update(
        bytes.fromhex(next(f for f in FIXTURES if f["name"] == "deleted-gc")["v1"])
    )
    assert info.delete_range_count == 1
    assert info.delete_ends == {1006: 5}  # 'cde' = clocks 2..4


def test_an_update_with_a_gap_is_not_covered_until_the_gap_arrives() -> None:
    gap = bytes.fromhex(next(f for f in FIXTURES if f["name"] == "merged-with-skip")["v1"])
    info = inspect_update(gap)
    doc = pycrdt.Doc()
    doc.apply_update(gap)
    assert not info.covered_by(decode_state_vector(doc.get_state()))
    assert info.covered_by({2003: 11})


def test_the_empty_update_is_empty() -> None:
    assert inspect_update(EMPTY_UPDATE).is_empty
    assert inspect_update(pycrdt.Doc().get_update()).is_empty


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (b"", "unexpected end"),
        (b"\x01", "unexpected end"),
        (EMPTY_UPDATE + b"\x00", "bytes left after the delete set"),
        (b"\x01\x05\x01\x00", "5 structs announced"),  # five promised, none there
        # info 0x9f: has an origin (client 1, clock 0), content kind 31 does not exist
        (b"\x01\x01\x07\x00\x9f\x01\x00", "unknown struct content kind 31"),
        (b"\xff" * 11, "longer than 64 bits"),
    ],
)
def test_malformed_bytes_are_refused_with_the_reason(bad: bytes, why: str) -> None:
    with pytest.raises(InvalidUpdate) as refused:
        inspect_update(bad)
    assert why in refused.value.message
    assert refused.value.code == "validation_error"


def test_truncating_a_real_update_anywhere_is_detected() -> None:
    update = bytes.fromhex(next(f for f in FIXTURES if f["name"] == "any-binary-types")["v1"])
    for cut in range(1, len(update)):
        with pytest.raises(InvalidUpdate):
            inspect_update(update[:cut])


def test_deeply_nested_any_values_fail_as_bad_input_not_recursion() -> None:
    # One struct (info 8 = ContentAny, parent by root name "m") holding 100,000
    # nested one-element arrays and nothing inside the last: truncated on purpose.
    nesting = b"\x75\x01" * 100_000
    update = b"\x01\x01\x07\x00\x08\x01\x01m\x01" + nesting
    with pytest.raises(InvalidUpdate, match="exceeds the remaining data"):
        inspect_update(update)


def test_non_binary_payloads_are_refused() -> None:
    with pytest.raises(InvalidUpdate, match="must be binary"):
        inspect_update("0000")  # type: ignore[arg-type]


def test_state_vectors_round_trip_and_reject_garbage() -> None:
    doc = pycrdt.Doc(client_id=77)
    doc.get("t", type=pycrdt.Text).insert(0, "abc")
    state = decode_state_vector(doc.get_state())
    assert state == {77: 3}
    assert decode_state_vector(encode_state_vector(state)) == state
    with pytest.raises(InvalidUpdate, match="state vector"):
        decode_state_vector(doc.get_state() + b"\x00")
