"""Searching the trail: filters, keyset pages, per-record trails, pruning, bad input."""

from __future__ import annotations

import datetime as dt

import pytest

from objectos.audit import AuditEvent, AuditQuery, AuditStore
from objectos.errors import InvalidFilter

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def event(
    minutes: float,
    action: str = "auth.signed_in",
    *,
    actor: str = "alice",
    object: str | None = None,
    record_id: str | None = None,
    ip: str = "203.0.113.7",
    request_id: str | None = None,
) -> AuditEvent:
    return AuditEvent.new(
        action,
        actor=actor,
        object=object,
        record_id=record_id,
        context={"ip": ip, **({"requestId": request_id} if request_id else {})},
        at=T0 + dt.timedelta(minutes=minutes),
    )


@pytest.fixture
async def filled(store: AuditStore) -> list[AuditEvent]:
    events = [
        event(0, "auth.signed_in"),
        event(1, "auth.sign_in_failed", actor="mallory", ip="198.51.100.9"),
        event(2, "record.read", object="account", record_id="acme", request_id="r1"),
        event(3, "permission.denied", actor="bob", object="account", record_id="acme"),
        event(4, "record.read", object="case", record_id="k1", request_id="r2"),
        event(5, "auth.signed_in", actor="bob"),
    ]
    assert await store.append(events) == 6
    return events


async def ids(store: AuditStore, **params: object) -> list[str]:
    return [e.id for e in (await store.search(AuditQuery.from_params(params))).events]


async def test_filters_combine_and_newest_come_first(
    store: AuditStore, filled: list[AuditEvent]
) -> None:
    e = filled
    assert await ids(store) == [x.id for x in reversed(e)]
    assert await ids(store, actor="bob") == [e[5].id, e[3].id]
    assert await ids(store, object="account", recordId="acme") == [e[3].id, e[2].id]
    assert await ids(store, action="auth.*") == [e[5].id, e[1].id, e[0].id]
    assert await ids(store, action="record.read,permission.denied", order="asc") == [
        e[2].id,
        e[3].id,
        e[4].id,
    ]
    assert await ids(store, ip="198.51.100.9") == [e[1].id]
    assert await ids(store, requestId="r2") == [e[4].id]
    # from is inclusive, to exclusive; a bare date is its midnight UTC.
    assert await ids(store, **{"from": "2024-05-01T12:01:00Z", "to": "2024-05-01T12:03:00Z"}) == [
        e[2].id,
        e[1].id,
    ]
    assert await ids(store, **{"from": "2024-05-02"}) == []


async def test_keyset_pages_visit_every_event_once_in_both_orders(store: AuditStore) -> None:
    # Many events in the same instant: the id breaks the tie, so no page repeats or skips one.
    same_time = [event(0) for _ in range(7)] + [event(1) for _ in range(3)]
    await store.append(same_time)
    for order in ("desc", "asc"):
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, "order": order, **({"cursor": cursor} if cursor else {})}
            page = await store.search(AuditQuery.from_params(params))
            seen += [x.id for x in page.events]
            assert page.has_more == (page.next_cursor is not None)
            if not page.has_more:
                break
            cursor = page.next_cursor
        assert sorted(seen) == sorted(x.id for x in same_time)
        assert len(seen) == len(set(seen))


async def test_events_arriving_while_paging_do_not_shift_the_pages(store: AuditStore) -> None:
    await store.append([event(i) for i in range(4)])
    first = await store.search(AuditQuery(limit=2))

    await store.append([event(10), event(11)])  # newer than anything paged so far
    second = await store.search(AuditQuery(limit=2, cursor=first.next_cursor))

    assert [x.at for x in [*first.events, *second.events]] == [
        T0 + dt.timedelta(minutes=m) for m in (3, 2, 1, 0)
    ]


async def test_the_total_is_counted_only_on_request(
    store: AuditStore, filled: list[AuditEvent]
) -> None:
    query = AuditQuery.from_params({"actor": "alice", "limit": 1})
    assert (await store.search(query)).total is None
    page = await store.search(query, count=True)
    assert page.total == 3
    assert page.pagination() == {
        "total": 3,
        "limit": 1,
        "offset": 0,
        "hasMore": True,
        "nextCursor": page.next_cursor,
    }


async def test_a_record_trail_lists_only_that_record(
    store: AuditStore, filled: list[AuditEvent]
) -> None:
    page = await store.trail("account", "acme", AuditQuery(order="asc"))

    assert [x.action for x in page.events] == ["record.read", "permission.denied"]


async def test_prune_removes_only_older_events_in_small_batches(
    store: AuditStore, filled: list[AuditEvent]
) -> None:
    removed = await store.prune(T0 + dt.timedelta(minutes=3), batch=2)

    assert removed == 3
    assert await ids(store, order="asc") == [x.id for x in filled[3:]]


async def test_storing_an_event_twice_keeps_one(store: AuditStore) -> None:
    once = event(0)
    assert await store.append([once]) == 1
    assert await store.append([once, once]) == 0
    assert len(await ids(store)) == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2024-05-02", "to": "2024-05-01"}, "to"),
        ({"order": "sideways"}, "order"),
        ({"action": "auth.*.x*"}, "action"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"actor": ""}, "actor"),
        ({"object": "a\x00b"}, "object"),
    ],
)
def test_bad_filters_name_the_parameter_and_the_reason(params: dict, field: str) -> None:
    with pytest.raises(InvalidFilter) as caught:
        AuditQuery.from_params(params)

    assert caught.value.code == "invalid_filter"
    assert caught.value.details["field"] == field
    assert caught.value.field_errors[0].field == field
    assert caught.value.details["reason"]


async def test_a_cursor_only_continues_the_order_it_came_from(store: AuditStore) -> None:
    await store.append([event(0), event(1), event(2)])
    page = await store.search(AuditQuery(limit=1, order="desc"))

    with pytest.raises(InvalidFilter) as caught:
        AuditQuery.from_params({"order": "asc", "cursor": page.next_cursor})
    assert caught.value.details["field"] == "cursor"


def test_a_query_survives_a_round_trip_through_its_parameters() -> None:
    params = {
        "object": "account",
        "recordId": "acme",
        "actor": "alice",
        "action": "record.*,auth.signed_in",
        "from": "2024-05-01T00:00:00Z",
        "to": "2024-06-01T00:00:00Z",
        "ip": "203.0.113.7",
        "requestId": "r1",
        "limit": 20,
        "order": "asc",
    }
    query = AuditQuery.from_params(params)

    assert AuditQuery.from_params(query.to_params()) == query


async def test_tables_are_created_once_and_left_alone(store: AuditStore) -> None:
    await store.append([event(0)])

    assert await store.create() is False
    assert await store.exists()
    assert len(await ids(store)) == 1
