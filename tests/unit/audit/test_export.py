"""Exports: CSV and JSON lines, streamed in bounded chunks, resumable through the service."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from objectos.audit import AuditEvent, AuditQuery, AuditStore, FieldChange
from objectos.audit.export import CSV_COLUMNS, export_chunk, export_format, export_stream
from objectos.errors import InvalidFilter

T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def write_event(n: int, **extra: object) -> AuditEvent:
    values: dict = {
        "id": f"chg-{n:019d}",
        "at": T0 + dt.timedelta(seconds=n),
        "action": "record.updated",
        "actor": "alice",
        "object": "account",
        "record_id": f"a{n}",
        "changes": (FieldChange("phone", "1", "2"),),
        "ip": "203.0.113.7",
        "seq": n,
        "details": {"version": 2},
    }
    values.update(extra)
    return AuditEvent(**values)


@pytest.fixture
async def many(store: AuditStore) -> list[AuditEvent]:
    events = [write_event(n) for n in range(1, 301)]
    await store.append(events)
    return events


async def text(chunks) -> str:
    return "".join([chunk async for chunk in chunks])


async def test_json_lines_hold_one_event_each_in_bounded_chunks(
    store: AuditStore, many: list[AuditEvent]
) -> None:
    chunks = [
        c async for c in export_stream(store, AuditQuery(order="asc"), "jsonl", chunk_bytes=4096)
    ]

    assert len(chunks) > 5
    # A chunk closes once it passes the bound: never more than one line over it.
    assert max(len(c) for c in chunks) < 4096 + 1024
    lines = "".join(chunks).splitlines()
    assert [json.loads(line) for line in lines] == [e.to_dict() for e in many]


async def test_csv_has_a_header_and_one_row_per_event(
    store: AuditStore, many: list[AuditEvent]
) -> None:
    rows = list(csv.reader(io.StringIO(await text(export_stream(store, AuditQuery(), "csv")))))

    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 301
    newest = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert newest["id"] == many[-1].id and newest["seq"] == "300"
    assert newest["at"] == "2024-05-01T12:05:00Z"
    assert json.loads(newest["changes"]) == [{"field": "phone", "old": "1", "new": "2"}]
    assert json.loads(newest["details"]) == {"version": 2}


async def test_csv_cells_cannot_become_spreadsheet_formulas(store: AuditStore) -> None:
    await store.append(
        [write_event(1, actor='=HYPERLINK("http://evil")', record_id="+1", ip="-2", object="@x")]
    )

    [_, row] = list(csv.reader(io.StringIO(await text(export_stream(store, AuditQuery(), "csv")))))
    values = dict(zip(CSV_COLUMNS, row, strict=True))

    assert values["actor"] == '\'=HYPERLINK("http://evil")'
    assert (values["recordId"], values["ip"], values["object"]) == ("'+1", "'-2", "'@x")


async def test_an_export_follows_the_filters(store: AuditStore, many: list[AuditEvent]) -> None:
    query = AuditQuery.from_params({"recordId": "a7"})

    lines = (await text(export_stream(store, query, "jsonl"))).splitlines()

    assert [json.loads(line)["recordId"] for line in lines] == ["a7"]


async def test_chunks_with_cursors_add_up_to_the_whole_export(
    store: AuditStore, many: list[AuditEvent]
) -> None:
    whole = await text(export_stream(store, AuditQuery(), "csv"))
    parts = []
    query = AuditQuery()
    while True:
        chunk = await export_chunk(store, query, "csv", max_events=70)
        parts.append(chunk["data"])
        if chunk["done"]:
            break
        query = AuditQuery(cursor=chunk["cursor"])

    assert len(parts) == 5
    assert "".join(parts) == whole


def test_only_known_formats_are_accepted() -> None:
    assert export_format("ndjson") == "jsonl"
    with pytest.raises(InvalidFilter) as caught:
        export_format("xlsx")
    assert caught.value.details["field"] == "format"
