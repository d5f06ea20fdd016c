"""Audit events as CSV or JSON lines, streamed in chunks of text with constant memory.

::

    async for text in export_stream(store, query, "csv"):
        await response.send(text)

Events are read from the store a few hundred at a time
(:meth:`AuditStore.iterate`) and rendered into chunks of about
``chunk_bytes``; memory stays flat however many events match.

- **JSON lines** (``application/x-ndjson``): one
  :meth:`AuditEvent.to_dict` object per line.
- **CSV** (``text/csv``, RFC 4180, UTF-8, a header row): one row per event;
  ``changes`` and ``details`` are JSON text in their cells. A cell that
  starts with ``= + - @``, a tab or a carriage return gets a leading ``'``
  so a spreadsheet never runs it as a formula (OWASP "CSV injection"); that
  is the only change made to any value.

For callers in another actor, :func:`export_chunk` renders one bounded chunk
and a cursor to continue from (the ``audit`` service's ``export_chunk``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import replace
from typing import Any, Literal

from objectos.audit.events import AuditEvent, iso
from objectos.audit.store import AuditQuery, AuditStore, encode_cursor
from objectos.errors import FieldError, InvalidFilter

ExportFormat = Literal["csv", "jsonl"]

MEDIA_TYPES: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
}
"""Media type of each export format."""

CSV_COLUMNS = (
    "id",
    "at",
    "action",
    "actor",
    "object",
    "recordId",
    "ip",
    "userAgent",
    "requestId",
    "traceId",
    "seq",
    "changes",
    "details",
)

DEFAULT_CHUNK_BYTES = 64 * 1024
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def export_format(value: Any) -> ExportFormat:
    """``csv`` or ``jsonl`` (also ``ndjson``); InvalidFilter naming ``format`` otherwise."""
    if value in ("csv", "jsonl"):
        return "csv" if value == "csv" else "jsonl"
    if value == "ndjson":
        return "jsonl"
    raise InvalidFilter(
        "format must be csv or jsonl",
        details={"field": "format", "reason": "must be csv or jsonl"},
        field_errors=[FieldError("format", "invalid_filter", "must be csv or jsonl")],
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(event: AuditEvent) -> list[str]:
    """One CSV row (in :data:`CSV_COLUMNS` order), neutralised against formula injection."""
    return [
        _cell(event.id),
        iso(event.at),
        _cell(event.action),
        _cell(event.actor),
        _cell(event.object),
        _cell(event.record_id),
        _cell(event.ip),
        _cell(event.user_agent),
        _cell(event.request_id),
        _cell(event.trace_id),
        "" if event.seq is None else str(event.seq),
        _cell(_json([c.to_dict() for c in event.changes])) if event.changes else "",
        _cell(_json(dict(event.details))) if event.details else "",
    ]


async def export_csv(
    events: AsyncIterable[AuditEvent],
    *,
    header: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> AsyncIterator[str]:
    """CSV text in chunks of about ``chunk_bytes`` (a header row first, unless told not to)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    async for event in events:
        writer.writerow(csv_row(event))
        if buffer.tell() >= chunk_bytes:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


async def export_jsonl(
    events: AsyncIterable[AuditEvent], *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> AsyncIterator[str]:
    """JSON lines in chunks of about ``chunk_bytes``."""
    parts: list[str] = []
    size = 0
    async for event in events:
        line = _json(event.to_dict()) + "\n"
        parts.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield "".join(parts)
            parts, size = [], 0
    if parts:
        yield "".join(parts)


def export_stream(
    store: AuditStore,
    query: AuditQuery,
    format: ExportFormat,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> AsyncIterator[str]:
    """Every event matching ``query`` (its ``limit`` ignored) rendered as ``format``."""
    events = store.iterate(query)
    if format == "csv":
        return export_csv(events, chunk_bytes=chunk_bytes)
    return export_jsonl(events, chunk_bytes=chunk_bytes)


async def export_chunk(
    store: AuditStore,
    query: AuditQuery,
    format: ExportFormat,
    *,
    max_events: int = 1000,
) -> dict[str, Any]:
    """One chunk of an export: ``{data, cursor, done}``; pass ``cursor`` back for the next.

    The first chunk (a query without cursor) of a CSV export starts with the
    header row. ``max_events`` bounds the chunk (1-10000).
    """
    max_events = max(1, min(int(max_events), 10_000))
    page = await store.search(replace(query, limit=min(max_events, 1000)))
    events: list[AuditEvent] = list(page.events)
    # Larger chunks than one search page: keep paging inside this call.
    while page.has_more and len(events) < max_events:
        page = await store.search(
            replace(query, cursor=page.next_cursor, limit=min(max_events - len(events), 1000))
        )
        events.extend(page.events)

    async def items() -> AsyncIterator[AuditEvent]:
        for event in events:
            yield event

    if format == "csv":
        chunks = export_csv(items(), header=query.cursor is None, chunk_bytes=1 << 62)
    else:
        chunks = export_jsonl(items(), chunk_bytes=1 << 62)
    data = "".join([chunk async for chunk in chunks])
    cursor = encode_cursor(events[-1], query.order) if page.has_more and events else None
    return {"data": data, "cursor": cursor, "done": cursor is None}


__all__ = [
    "CSV_COLUMNS",
    "MEDIA_TYPES",
    "ExportFormat",
    "csv_row",
    "export_chunk",
    "export_csv",
    "export_format",
    "export_jsonl",
    "export_stream",
]
