"""The data engine: tables from metadata, migrations, CRUD, change log, queries."""

from objectos.data.actor import Actor
from objectos.data.changelog import ChangeEntry, ChangeLog, ChangePage
from objectos.data.engine import BatchOperation, BatchResult, DataEngine, FindResult, Scope
from objectos.data.hooks import DataHooks
from objectos.data.migrate import MigrationPlan, migrate
from objectos.data.schema import ObjectTables, create_engine

__all__ = [
    "Actor",
    "BatchOperation",
    "BatchResult",
    "ChangeEntry",
    "ChangeLog",
    "ChangePage",
    "DataEngine",
    "DataHooks",
    "FindResult",
    "MigrationPlan",
    "ObjectTables",
    "Scope",
    "create_engine",
    "migrate",
]
