"""The client's ``/realtime`` logic against a real python-socketio peer (realtime_peer.py).

Subscribe and ack, live events, resume with ``since`` after the hub ends the
session and after the server process goes away, duplicate suppression across
per-object replays, an expired cursor, typed errors, presence and its re-join.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest
from realtime_peer import PeerServer, RealtimePeer, running_peer

from objectos.client import RealtimeClient, RecordEvent, SubscriptionGap
from objectos.client.errors import HubError
from objectos.errors import InvalidField, InvalidToken, ObjectNotFound

WITHIN = 10.0


def client_of(server: PeerServer, token: Any = "good-token") -> RealtimeClient:
    return RealtimeClient(
        server.url, token, reconnection_delay=0.05, reconnection_delay_max=0.2, ack_timeout=5
    )


async def take(subscription: Any, n: int) -> list[RecordEvent]:
    return [await subscription.next_event(WITHIN) for _ in range(n)]


async def eventually(check: Any, within: float = WITHIN) -> None:
    """Poll ``check`` (state on the peer or the client that has no event to wait on)."""
    async with asyncio.timeout(within):
        while True:
            if check():
                return
            await asyncio.sleep(0.02)


def subscribes(peer: RealtimePeer) -> list[dict[str, Any]]:
    return [payload for name, payload in peer.received if name == "subscribe"]


async def test_subscribe_acks_and_delivers_live_events_in_order() -> None:
    async with running_peer() as server:
        peer = server.peer
        await peer.write("case", "c0", status="old")  # before the subscription: not sent
        async with client_of(server) as rt:
            sub = await rt.subscribe(objects=["case"], events=["record.*", "field.changed"])
            assert sub.active and sub.cursor == 1
            sent = subscribes(peer)[0]
            assert sent["objects"] == ["case"] and "since" not in sent
            assert sent["events"] == ["record.*", "field.changed"]

            await peer.write("case", "c1", "create", status="new")
            await peer.write("case", "c1", "update", status="open", owner="ada")
            await peer.write("account", "a1", "create", name="x")  # not subscribed
            events = await take(sub, 4)
            assert [(e.event_name, e.record_id, e.cursor) for e in events] == [
                ("record.created", "c1", 2),
                ("record.updated", "c1", 3),
                ("field.changed", "c1", 3),
                ("field.changed", "c1", 3),
            ]
            assert events[1].record == {"id": "c1", "status": "open", "owner": "ada"}
            assert events[1].changed_fields == ("status", "owner")
            assert sub.cursor == 3
            with pytest.raises(TimeoutError):
                await sub.next_event(0.3)


async def test_resume_after_the_hub_ends_the_session_replays_exactly_what_was_missed() -> None:
    async with running_peer() as server:
        peer = server.peer
        async with client_of(server) as rt:
            sub = await rt.subscribe(objects=["case"])
            await peer.write("case", "c1", "create", n=1)
            assert [e.cursor for e in await take(sub, 1)] == [1]

            await peer.kick()
            await eventually(lambda: not rt.connected)
            for i in range(2, 5):
                await peer.write("case", "c1", n=i)  # missed while disconnected
            await eventually(lambda: len(subscribes(peer)) == 2)
            assert subscribes(peer)[1]["since"] == 1
            assert subscribes(peer)[1]["subscriptionId"] == sub.id
            replayed = await take(sub, 3)
            assert [e.cursor for e in replayed] == [2, 3, 4]
            assert [e.record["n"] for e in replayed] == [2, 3, 4]

            await peer.write("case", "c1", n=5)  # live again
            assert [e.cursor for e in await take(sub, 1)] == [5]
            with pytest.raises(TimeoutError):
                await sub.next_event(0.3)
            assert sub.resumes == 1 and rt.connections == 2


async def test_resume_after_the_server_process_goes_away() -> None:
    async with running_peer() as server:
        peer = server.peer
        async with client_of(server) as rt:
            sub = await rt.subscribe(objects=["case"])
            await peer.write("case", "c1", "create")
            await take(sub, 1)

            await server.stop()  # connections drop; python-socketio starts reconnecting
            await eventually(lambda: not rt.connected)
            await peer.write("case", "c2", "create")  # committed while the gateway is down
            await peer.write("case", "c3", "create")
            await server.start()

            replayed = await take(sub, 2)
            assert [(e.record_id, e.cursor) for e in replayed] == [("c2", 2), ("c3", 3)]
            assert subscribes(peer)[-1]["since"] == 1


async def test_a_multi_object_resume_starts_at_the_lowest_cursor_and_drops_duplicates() -> None:
    async with running_peer() as server:
        peer = server.peer
        async with client_of(server) as rt:
            sub = await rt.subscribe(objects=["case", "account"])
            await peer.write("account", "a1", "create")  # 1
            await peer.write("case", "c1", "create")  # 2
            await peer.write("case", "c2", "create")  # 3
            assert [e.cursor for e in await take(sub, 3)] == [1, 2, 3]

            await peer.kick()
            await eventually(lambda: not rt.connected)
            await peer.write("account", "a2", "create")  # 4
            await peer.write("case", "c3", "create")  # 5
            await eventually(lambda: len(subscribes(peer)) == 2)
            # account has seen 1, case 3: resume from 1; the peer replays case 2 and 3
            # again, and the client drops them (case had seen them).
            assert subscribes(peer)[1]["since"] == 1
            replayed = await take(sub, 2)
            assert sorted((e.object, e.cursor) for e in replayed) == [("account", 4), ("case", 5)]
            with pytest.raises(TimeoutError):
                await sub.next_event(0.3)


async def test_an_expired_cursor_restarts_from_now_and_reports_a_gap() -> None:
    gaps: list[BaseException] = []
    received: list[RecordEvent] = []

    async def on_event(event: RecordEvent) -> None:
        received.append(event)

    async with running_peer() as server:
        peer = server.peer
        async with client_of(server) as rt:
            await rt.subscribe(objects=["case"], on_event=on_event, on_error=gaps.append)
            await peer.write("case", "c1", "create")
            await eventually(lambda: len(received) == 1)

            await peer.kick()
            await eventually(lambda: not rt.connected)
            await peer.write("case", "c2", "create")
            peer.retained_from = 2  # the log no longer holds what follows cursor 1
            await eventually(lambda: len(gaps) == 1)
            assert isinstance(gaps[0], SubscriptionGap) and gaps[0].details["expired"] is True
            sent = subscribes(peer)
            assert sent[1]["since"] == 1 and "since" not in sent[2]

            await peer.write("case", "c3", "create")
            await eventually(lambda: len(received) == 2)
            assert [e.record_id for e in received] == ["c1", "c3"]


async def test_refusals_are_typed_errors() -> None:
    async with running_peer() as server:
        async with client_of(server, token="stolen") as rt:
            with pytest.raises(InvalidToken) as refused:
                await rt.subscribe(objects=["case"])
            assert isinstance(refused.value, HubError) and refused.value.reason == "bad token"

        async with client_of(server) as rt:
            with pytest.raises(ObjectNotFound) as missing:
                await rt.subscribe(objects=["no-such-object"])
            assert missing.value.details["object"] == "no-such-object"
            with pytest.raises(InvalidField) as invalid:
                await rt.subscribe(objects=[])
            assert invalid.value.field == "objects"
            assert rt.subscriptions == []


async def test_the_token_is_asked_again_on_every_connect() -> None:
    tokens = iter(["good-token", "rotated-token", "rotated-token"])

    async def token() -> str:
        return next(tokens)

    async with running_peer() as server:
        peer = server.peer
        peer.tokens.add("rotated-token")
        async with client_of(server, token=token) as rt:
            sub = await rt.subscribe(objects=["case"])
            peer.tokens.discard("good-token")  # the old token expired
            await peer.kick()
            await eventually(lambda: len(subscribes(peer)) == 2)
            assert [h["token"] for h in peer.handshakes] == ["good-token", "rotated-token"]
            await peer.write("case", "c1", "create")
            assert (await take(sub, 1))[0].record_id == "c1"


async def test_unsubscribe_ends_iteration_and_stops_delivery() -> None:
    async with running_peer() as server:
        peer = server.peer
        async with client_of(server) as rt:
            sub = await rt.subscribe(objects=["case"])
            await sub.unsubscribe()
            assert [p for n, p in peer.received if n == "unsubscribe"] == []  # not yet seen
            await eventually(lambda: any(n == "unsubscribe" for n, _ in peer.received))
            assert [e async for e in sub] == []
            await peer.write("case", "c1", "create")
            assert rt.subscriptions == []


async def test_presence_join_update_leave_and_rejoin_after_reconnect() -> None:
    async with running_peer() as server:
        peer = server.peer
        peer.tokens.add("other-token")
        async with client_of(server) as ada, client_of(server, "other-token") as bob:
            seen: list[tuple[str, list[dict[str, Any]]]] = []
            ada.presence.on_change(lambda room, users: seen.append((room, users)))
            users = await ada.presence.join("case/42")
            assert [(u["userId"], u["status"]) for u in users] == [("user-of-good-token", "online")]
            await bob.presence.join("case/42", status="busy")

            def statuses(snapshots: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
                return {u["userId"]: u["status"] for u in snapshots.get("case/42", [])}

            await ada.presence.wait_for(lambda s: len(statuses(s)) == 2, WITHIN)
            assert statuses(ada.presence.snapshots)["user-of-other-token"] == "busy"

            await bob.presence.update("case/42", "away")
            await ada.presence.wait_for(
                lambda s: statuses(s).get("user-of-other-token") == "away", WITHIN
            )
            await bob.presence.leave("case/42")
            await ada.presence.wait_for(lambda s: len(statuses(s)) == 1, WITHIN)
            assert seen and seen[-1][0] == "case/42"

            await peer.kick()  # both sessions end; both come back, ada re-joins
            await eventually(
                lambda: (
                    [p for n, p in peer.received if n == "presence:join"].count(
                        {"room": "case/42", "status": "online"}
                    )
                    == 2
                )
            )
            await ada.presence.wait_for(lambda s: len(statuses(s)) == 1, WITHIN)
            assert bob.presence.rooms == {} and ada.presence.rooms == {"case/42": "online"}

            with pytest.raises(InvalidField) as bad:
                await ada.presence.join("case/43", status="sleepy")  # type: ignore[arg-type]
            assert bad.value.field == "status"


async def test_a_subscribe_during_a_reconnect_waits_for_the_connection() -> None:
    async with running_peer() as server:
        peer = server.peer
        async with client_of(server) as rt:
            first = await rt.subscribe(objects=["case"])
            await server.stop()
            await eventually(lambda: not rt.connected)
            pending = asyncio.create_task(rt.subscribe(objects=["account"]))
            await asyncio.sleep(0.3)
            assert not pending.done()  # waiting for the connection, not failed
            await server.start()
            second = await asyncio.wait_for(pending, WITHIN)
            await peer.write("account", "a1", "create")
            await peer.write("case", "c1", "create")
            assert (await take(second, 1))[0].record_id == "a1"
            assert (await take(first, 1))[0].record_id == "c1"


async def test_a_session_ended_by_its_token_reconnects_with_a_fresh_one_and_resumes() -> None:
    tokens = iter(["good-token", "rotated-token", "rotated-token"])

    async def token() -> str:
        return next(tokens)

    async with running_peer() as server:
        peer = server.peer
        peer.tokens.add("rotated-token")
        async with client_of(server, token=token) as rt:
            sub = await rt.subscribe(objects=["case"])
            await peer.write("case", "c1", "create")
            await take(sub, 1)
            peer.tokens.discard("good-token")
            await peer.expire()  # `error {code: expired_token}`, then a disconnect
            await peer.write("case", "c2", "create")  # while the session is ended
            await eventually(lambda: len(subscribes(peer)) == 2)
            assert [e.code for e in rt.errors] == ["expired_token"]
            assert subscribes(peer)[1]["since"] == 1
            assert [e.record_id for e in await take(sub, 1)] == ["c2"]
            assert [h["token"] for h in peer.handshakes] == ["good-token", "rotated-token"]


async def test_presence_join_takes_the_list_from_its_ack_and_refusals_are_typed() -> None:
    async with running_peer() as server, client_of(server) as rt:
        users = await rt.presence.join("case/7", status="busy")
        assert [(u["userId"], u["status"]) for u in users] == [("user-of-good-token", "busy")]
        await rt.presence.update("case/7", "away")
        await rt.presence.wait_for(
            lambda s: [u["status"] for u in s.get("case/7", [])] == ["away"], WITHIN
        )
        await rt.presence.leave("case/7")
        assert rt.presence.rooms == {} and rt.errors == collections.deque()
        with pytest.raises(ValueError):
            await rt.presence.update("case/7", "online")  # left: refused before sending


async def test_a_change_cut_short_by_a_disconnect_is_completed_on_resume() -> None:
    async with running_peer() as server:
        peer = server.peer
        async with client_of(server) as rt:
            sub = await rt.subscribe(objects=["case"], events=["record.updated", "field.changed"])
            await peer.write("case", "c1", "update", status="new")  # 1: two events
            assert [e.event_name for e in await take(sub, 2)] == [
                "record.updated",
                "field.changed",
            ]
            # One change, three events; the session ends after the first one.
            peer.cut_after = 1
            await peer.write("case", "c1", "update", status="open", owner="ada")  # 2
            first = await sub.next_event(WITHIN)
            assert (first.event_name, first.cursor) == ("record.updated", 2)
            await eventually(lambda: len(subscribes(peer)) == 2)
            # One change back: cursor 2 is replayed, its record.updated dropped as seen.
            assert subscribes(peer)[1]["since"] == 1
            rest = await take(sub, 2)
            assert [(e.event_name, e.changed_fields, e.cursor) for e in rest] == [
                ("field.changed", ("status",), 2),
                ("field.changed", ("owner",), 2),
            ]
            await peer.write("case", "c1", "update", status="closed")  # 3, live
            assert [e.cursor for e in await take(sub, 2)] == [3, 3]
            with pytest.raises(TimeoutError):
                await sub.next_event(0.3)
