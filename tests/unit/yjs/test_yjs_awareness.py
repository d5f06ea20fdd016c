"""Server-side awareness: the y-protocols update format and who owns which client."""

from __future__ import annotations

import pycrdt
import pytest

from objectos.realtime.yjs import (
    AwarenessEntry,
    AwarenessStates,
    InvalidUpdate,
    decode_awareness_update,
    encode_awareness_update,
)


def client_awareness(client_id: int, state: dict | None) -> tuple[pycrdt.Awareness, bytes]:
    """A real pycrdt Awareness (what a Python peer sends) and its update for ``state``."""
    awareness = pycrdt.Awareness(pycrdt.Doc(client_id=client_id))
    awareness.set_local_state(state)
    return awareness, awareness.encode_awareness_update([client_id])


def test_decodes_what_pycrdt_encodes_and_back() -> None:
    _, update = client_awareness(11, {"user": {"name": "Ada"}, "cursor": 3})
    entries = decode_awareness_update(update)
    assert [(e.client_id, e.clock) for e in entries] == [(11, 1)]
    assert not entries[0].removed
    assert encode_awareness_update(entries) == update


def test_applies_accepted_entries_and_relays_them() -> None:
    states = AwarenessStates()
    _, update = client_awareness(11, {"name": "Ada"})
    relay = states.apply(update, "conn-a", now=0.0)
    assert relay == update
    assert states.states == {11: {"name": "Ada"}}
    assert states.clients_of("conn-a") == {11}


def test_stale_clocks_are_not_relayed() -> None:
    states = AwarenessStates()
    newer = encode_awareness_update([AwarenessEntry(11, 5, '{"v":5}')])
    older = encode_awareness_update([AwarenessEntry(11, 4, '{"v":4}')])
    assert states.apply(newer, "a", 0.0)
    assert states.apply(older, "a", 1.0) == b""
    assert states.states == {11: {"v": 5}}


def test_a_dropped_connection_removes_its_clients_for_everyone() -> None:
    states = AwarenessStates()
    states.apply(client_awareness(11, {"name": "Ada"})[1], "conn-a", 0.0)
    states.apply(client_awareness(22, {"name": "Bob"})[1], "conn-b", 0.0)

    removal = states.remove_connection("conn-a", now=1.0)

    assert states.states == {22: {"name": "Bob"}}
    # A peer that knew Ada accepts the removal (same clock, null state).
    peer, _ = client_awareness(99, {"me": True})
    peer.apply_awareness_update(client_awareness(11, {"name": "Ada"})[1], "server")
    assert 11 in peer.states
    peer.apply_awareness_update(removal, "server")
    assert 11 not in peer.states


def test_ownership_follows_the_latest_sender_so_a_late_disconnect_keeps_a_reconnected_client() -> (
    None
):
    states = AwarenessStates()
    states.apply(encode_awareness_update([AwarenessEntry(11, 1, "{}")]), "old", 0.0)
    states.apply(encode_awareness_update([AwarenessEntry(11, 2, "{}")]), "new", 1.0)
    assert states.remove_connection("old", now=2.0) == b""
    assert 11 in states.states


def test_silent_clients_expire_and_are_forgotten_later() -> None:
    states = AwarenessStates()
    states.apply(encode_awareness_update([AwarenessEntry(11, 1, "{}")]), "a", 0.0)
    states.apply(encode_awareness_update([AwarenessEntry(22, 1, "{}")]), "b", 20.0)

    removal = states.expire(now=31.0, max_silence=30.0)

    assert [e.client_id for e in decode_awareness_update(removal)] == [11]
    assert set(states.states) == {22}
    # A delayed copy of 11's old state is refused while its removal is remembered...
    assert states.apply(encode_awareness_update([AwarenessEntry(11, 1, "{}")]), "a", 32.0) == b""
    # ...and the removal itself is forgotten one timeout later.
    states.expire(now=62.0, max_silence=30.0)
    assert states.apply(encode_awareness_update([AwarenessEntry(11, 1, "{}")]), "a", 63.0)


def test_encode_all_lists_present_clients_only() -> None:
    states = AwarenessStates()
    states.apply(encode_awareness_update([AwarenessEntry(11, 1, '{"a":1}')]), "a", 0.0)
    states.apply(encode_awareness_update([AwarenessEntry(22, 1, '{"b":2}')]), "b", 0.0)
    states.remove_connection("b", now=1.0)
    assert decode_awareness_update(states.encode_all()) == [AwarenessEntry(11, 1, '{"a":1}')]
    assert AwarenessStates().encode_all() == b""


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01\x0b\x01", b"\x01\x0b\x01\x03{x}", b"\x00\x00", b"\x05"],
    ids=["empty", "truncated", "not-json", "trailing", "count-lies"],
)
def test_malformed_awareness_updates_are_refused(bad: bytes) -> None:
    with pytest.raises(InvalidUpdate, match="awareness"):
        decode_awareness_update(bad)
