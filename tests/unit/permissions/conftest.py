"""Permission tests run the real engine on real databases: SQLite, and PostgreSQL when set.

``crm`` is a :class:`Hub`: the sample CRM (``configs/metadata``, objects and
permission files) in a fresh database, seeded by a system actor with
:data:`RECORDS`, a role directory of :data:`USERS`, the plain DataEngine
(``hub.data``) and the SecuredDataService in front of it (``hub.secure``).
``hub.as_(name)`` is the Actor of one of the users. Everything is the hub's
own code; nothing is faked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from unit_databases import DATABASES, empty_database

from objectos.data import Actor, DataEngine
from objectos.metadata import MetadataRegistry
from objectos.protocol.permission import SecurityConfig
from objectos.security.guard import SecuredDataService
from objectos.security.loading import load_security
from objectos.security.permissions import PermissionEngine
from objectos.security.sharing import InMemoryRoleDirectory

METADATA = Path(__file__).resolve().parents[3] / "configs" / "metadata"
SEED = Actor.system_actor("seed")

#: user id -> what their token carries (roles of the hierarchy, or a permission set).
USERS: dict[str, list[str]] = {
    "carol": ["ceo"],
    "victor": ["vp_sales"],
    "erin": ["east_manager"],
    "eve": ["east_rep"],
    "ed": ["east_rep"],
    "will": ["west_manager"],
    "wes": ["west_rep"],
    "sam": ["support_lead"],
    "sue": ["support_agent"],
    "ann": ["auditor"],
    "duty_manager": ["support"],  # a permission set held directly, no role
    "nobody": [],
}

#: object -> records the seed actor creates (with their owners), in order.
RECORDS: dict[str, list[dict[str, Any]]] = {
    "account": [
        {
            "id": "acme",
            "name": "Acme",
            "industry": "technology",
            "owner": "eve",
            "annual_revenue": 5_000_000,
            "description": "Anvils and rockets",
        },
        {
            "id": "globex",
            "name": "Globex",
            "industry": "technology",
            "owner": "wes",
            "annual_revenue": 9_000_000,
        },
        {
            "id": "initech",
            "name": "Initech",
            "industry": "finance",
            "owner": "erin",
            "annual_revenue": 1_000_000,
        },
    ],
    "contact": [
        {
            "id": "wile",
            "last_name": "Coyote",
            "first_name": "Wile",
            "account": "acme",
            "owner": "eve",
            "do_not_call": True,
        },
    ],
    "opportunity": [
        {
            "id": "o1",
            "name": "Acme renewal",
            "account": "acme",
            "owner": "eve",
            "amount": 50_000,
            "stage": "prospecting",
        },
        {
            "id": "o2",
            "name": "Acme expansion",
            "account": "acme",
            "owner": "ed",
            "amount": 200_000,
            "stage": "qualification",
        },
        {
            "id": "o3",
            "name": "Globex pilot",
            "account": "globex",
            "owner": "wes",
            "amount": 20_000,
            "stage": "closed_won",
            "close_date": "2024-05-01",
        },
        {
            "id": "o4",
            "name": "Initech deal",
            "account": "initech",
            "owner": "erin",
            "amount": 10_000,
            "stage": "prospecting",
        },
    ],
    "opportunity_line_item": [
        {
            "id": "li1",
            "opportunity": "o1",
            "product": "Anvil",
            "quantity": 2,
            "unit_price": 100,
            "owner": "eve",
        },
        {
            "id": "li2",
            "opportunity": "o3",
            "product": "Rocket",
            "quantity": 1,
            "unit_price": 900,
            "owner": "wes",
        },
    ],
    "case": [
        {
            "id": "k1",
            "subject": "Printer on fire",
            "owner": "sue",
            "status": "new",
            "priority": "medium",
            "account": "acme",
        },
        {
            "id": "k2",
            "subject": "Old question",
            "owner": "sam",
            "status": "closed",
            "priority": "low",
            "resolution": "Answered",
        },
        {
            "id": "k3",
            "subject": "Outage",
            "owner": "sam",
            "status": "escalated",
            "priority": "urgent",
        },
        {
            "id": "k4",
            "subject": "Agent closed it",
            "owner": "sue",
            "status": "closed",
            "priority": "low",
            "resolution": "Fixed",
        },
        {
            "id": "k5",
            "subject": "Agent urgent",
            "owner": "sue",
            "status": "working",
            "priority": "urgent",
        },
    ],
}


@pytest.fixture(params=DATABASES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An empty database: a SQLite file, or a schema of its own on PostgreSQL (dropped after)."""
    async with empty_database(request.param, tmp_path, "crm") as engine:
        yield engine


@dataclass
class Hub:
    """The sample CRM behind the permission engine, seeded."""

    registry: MetadataRegistry
    database: AsyncEngine
    data: DataEngine
    directory: InMemoryRoleDirectory
    permissions: PermissionEngine
    secure: SecuredDataService

    def as_(self, user: str) -> Actor:
        """The actor of one of :data:`USERS`, as their token would make it."""
        return Actor.user(user, USERS[user])

    def with_config(self, config: SecurityConfig) -> SecuredDataService:
        """Another guard over the same data, with a different security setup."""
        permissions = PermissionEngine(config, self.registry, self.directory)
        return SecuredDataService(self.data, permissions, database=self.database)

    async def stored(self, object_name: str, record_id: str) -> dict[str, Any]:
        """A record as the database holds it (read as the system, all fields)."""
        return await self.data.find_one(object_name, record_id, actor=SEED)


@pytest.fixture
def registry() -> MetadataRegistry:
    """The sample CRM's metadata, permission files included."""
    return MetadataRegistry.load([METADATA])


@pytest.fixture
async def crm(database: AsyncEngine, registry: MetadataRegistry) -> Hub:
    """The seeded CRM and its guard."""
    data = DataEngine(database, registry)
    await data.migrate()
    for object_name, records in RECORDS.items():
        for record in records:
            await data.insert(object_name, record, actor=SEED)
    directory = InMemoryRoleDirectory({user: roles for user, roles in USERS.items() if roles})
    permissions = PermissionEngine(load_security(registry), registry, directory)
    secure = SecuredDataService(data, permissions, database=database)
    return Hub(registry, database, data, directory, permissions, secure)
