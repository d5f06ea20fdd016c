"""A help desk for the realtime tests: a real DataEngine on a real database, a real feed.

The database is a SQLite file, and also a PostgreSQL schema of its own (dropped
after the test) when ``OBJECTOS_TEST_POSTGRES_URL`` is set.

``desk`` gives the data engine (objects ``ticket`` and ``note``), the column
metadata, a :class:`~.doubles.TeamVisibility`, recording :class:`~.doubles.Gateways`
and a :class:`~objectos.realtime.feed.ChangeFeed` that is *not* running: tests
call ``await desk.sync()`` to let it read and dispatch everything committed, so
each step happens exactly when the test says.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from unit_databases import DATABASES, empty_database

from objectos.data import ChangeEntry, DataEngine
from objectos.data.filter import ColumnInfo
from objectos.metadata import MetadataRegistry
from objectos.realtime.feed import ChangeFeed, ChangeSource, Registration, TargetGone
from objectos.realtime.subscriptions import SubscriptionRoom

from .doubles import Gateways, TeamVisibility

TICKET: dict[str, Any] = {
    "name": "ticket",
    "fields": {
        "subject": {"type": "text", "required": True},
        "status": {
            "type": "select",
            "options": [
                {"label": "New", "value": "new"},
                {"label": "Open", "value": "open"},
                {"label": "Closed", "value": "closed"},
            ],
        },
        "team": {"type": "text"},
        "priority": {"type": "number", "precision": 9, "scale": 0},
        "amount": {"type": "currency", "precision": 12, "scale": 2},
        "due": {"type": "date"},
        "opened_at": {"type": "datetime"},
        "tags": {"type": "tags"},
        "secret_note": {"type": "text"},
        "pin": {"type": "password"},
    },
}
NOTE: dict[str, Any] = {
    "name": "note",
    "fields": {"body": {"type": "text"}, "team": {"type": "text"}},
}


@pytest.fixture(params=DATABASES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema."""
    async with empty_database(request.param, tmp_path, "realtime") as engine:
        yield engine


@pytest.fixture
async def data(database: AsyncEngine) -> DataEngine:
    """A migrated DataEngine with ``ticket`` and ``note`` on a fresh database."""
    data = DataEngine(database, MetadataRegistry.from_objects([TICKET, NOTE]))
    await data.migrate()
    return data


@dataclass
class Desk:
    """The engines under test, wired like the actors wire them, minus Ray."""

    data: DataEngine
    log: ChangeSource
    columns: dict[str, dict[str, ColumnInfo]]
    visibility: TeamVisibility
    gateways: Gateways
    feed: ChangeFeed = field(init=False)
    rooms: dict[str, SubscriptionRoom] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.feed = ChangeFeed(self.data.change_log, self.dispatch, cursor=0)

    async def dispatch(self, target: str, entries: Sequence[ChangeEntry]) -> None:
        room = self.rooms.get(target)
        if room is None:
            raise TargetGone(target)
        await room.push(entries)

    def room(
        self,
        name: str = "room:records:ticket",
        objects: Sequence[str] | None = ("ticket",),
        **options: Any,
    ) -> SubscriptionRoom:
        """A room registered with the feed under ``name`` (serving ``objects``; None: any)."""

        async def register(wanted: frozenset[str]) -> Registration:
            return self.feed.register(name, wanted)

        room = SubscriptionRoom(
            name,
            log=options.pop("log", self.log),
            visibility=self.visibility,
            deliver=self.gateways.deliver,
            objects=objects,
            columns=self.columns,
            register=register,
            **options,
        )
        self.rooms[name] = room
        return room

    async def sync(self) -> None:
        """Let the feed read and dispatch everything committed so far."""
        while await self.feed.poll():
            pass


@pytest.fixture
def desk(data: DataEngine) -> Desk:
    columns = {name: dict(data.tables.columns(name)) for name in ("ticket", "note")}
    return Desk(data, data.change_log, columns, TeamVisibility(columns), Gateways())
