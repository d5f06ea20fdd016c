"""The identity layer's tables, on SQLAlchemy async Core (SQLite and PostgreSQL).

:class:`AuthDatabase` owns six tables, all prefixed ``_auth_`` so they never
collide with object tables (the data engine's migrations only ever touch
tables it created itself):

==========================  =================================================================
table                       holds
==========================  =================================================================
``_auth_users``             accounts: id (UUIDv7), email + ``email_key`` (case-folded,
                            unique), name, password_hash, roles (JSON), kind, active, times
``_auth_identities``        links (issuer, subject) of external OIDC identities -> account
``_auth_refresh_families``  one row per session (refresh-token family): user, revocation
``_auth_refresh_tokens``    SHA-256 of refresh tokens, family, user, roles, expiry, rotation
``_auth_api_keys``          API key id, SHA-256 of the secret, owner, scopes, expiry, revocation
``_auth_counters``          sign-in failure times (JSON list) and lockout, one row per key
``_auth_user_changes``      one row: a counter bumped by every write that adds an account or
                            changes its roles (the role directories' change marker)
==========================  =================================================================

Its four stores implement the Protocols the identity layer is written
against: :class:`SQLUserStore` (:class:`~objectos.security.identity.UserStore`),
:class:`SQLRefreshTokenStore`, :class:`SQLCounterStore`, :class:`SQLApiKeyStore`.

Atomicity where the Protocols ask for it:

- ``mark_rotated`` is one conditional ``UPDATE ... WHERE rotated_at IS NULL
  AND revoked_at IS NULL``; of two concurrent refreshes with one token
  exactly one sees a row count of 1 (PostgreSQL re-checks the condition
  after waiting for the row lock; SQLite runs one writer at a time).
- a revoked family stays revoked: ``add`` and ``revoke_family`` both lock
  the family's row, so a successor token inserted while a reuse is being
  detected is either revoked with its family or inserted already revoked.
  (Without this, the winner of two racing refreshes keeps a live token
  although the loser's reuse detection "revoked the family".)
- ``add_event`` / ``set_lockout`` lock the counter row (``SELECT ... FOR
  UPDATE`` on PostgreSQL; on SQLite every write transaction starts with
  ``BEGIN IMMEDIATE``), so replicas counting failures for one account at
  once never lose one and never miss the threshold.
- account provisioning for a new external identity inserts the account and
  its link in one transaction; the loser of a race reads the winner's link.

Tables are created on first use (``CREATE TABLE IF NOT EXISTS`` semantics,
under the same migration lock as the data engine takes: ``BEGIN IMMEDIATE``
on SQLite, an advisory lock on PostgreSQL), so every replica may start first.
Times in token, key and counter rows are float seconds since the epoch (the
injected clock's unit); account times are UTC timestamps.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from objectos.data.schema import NAMING_CONVENTION, WRITE_OPTION, UTCDateTime, create_engine
from objectos.errors import ConcurrentModification, ConfigError, ServiceUnavailable
from objectos.security.apikeys import ApiKeyRecord
from objectos.security.identity import UserRecord, duplicate_email, normalize_email
from objectos.security.throttle import Lockout
from objectos.security.tokens import RefreshTokenRecord

USERS_TABLE = "_auth_users"
IDENTITIES_TABLE = "_auth_identities"
REFRESH_FAMILIES_TABLE = "_auth_refresh_families"
REFRESH_TOKENS_TABLE = "_auth_refresh_tokens"
API_KEYS_TABLE = "_auth_api_keys"
COUNTERS_TABLE = "_auth_counters"
USER_CHANGES_TABLE = "_auth_user_changes"
AUTH_TABLES = (
    USERS_TABLE,
    IDENTITIES_TABLE,
    REFRESH_FAMILIES_TABLE,
    REFRESH_TOKENS_TABLE,
    API_KEYS_TABLE,
    COUNTERS_TABLE,
    USER_CHANGES_TABLE,
)

#: pg_advisory_xact_lock key serialising table creation (distinct from the data engine's).
_PG_LOCK_KEY = 0x0A07_5EC0
#: Counter keys longer than this are stored by their SHA-256 (an email can be long).
_MAX_COUNTER_KEY = 200
_SUPPORTED_DIALECTS = ("sqlite", "postgresql")


class AuthTables:
    """The ``_auth_*`` tables as SQLAlchemy Core objects (no database access)."""

    def __init__(self) -> None:
        self.metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
        self.users = sa.Table(
            USERS_TABLE,
            self.metadata,
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("email", sa.String(320), nullable=True),
            sa.Column("email_key", sa.String(320), nullable=True, comment="Case-folded email."),
            sa.Column("name", sa.String(200), nullable=True),
            sa.Column("password_hash", sa.String(512), nullable=True),
            sa.Column("roles", sa.JSON(), nullable=False),
            sa.Column("active", sa.Boolean(create_constraint=False), nullable=False),
            sa.Column("created_at", UTCDateTime(), nullable=False),
            sa.Column("updated_at", UTCDateTime(), nullable=False),
            # NULLs never collide in a unique index (both dialects), so service
            # accounts and external users without an email coexist.
            sa.Index("uq__auth_users_email_key", "email_key", unique=True),
        )
        self.identities = sa.Table(
            IDENTITIES_TABLE,
            self.metadata,
            sa.Column("issuer", sa.String(512), primary_key=True),
            sa.Column("subject", sa.String(255), primary_key=True),
            sa.Column(
                "user_id",
                sa.String(36),
                sa.ForeignKey(f"{USERS_TABLE}.id", ondelete="CASCADE"),
                nullable=False,
                index=True,
            ),
            sa.Column("created_at", UTCDateTime(), nullable=False),
        )
        self.refresh_families = sa.Table(
            REFRESH_FAMILIES_TABLE,
            self.metadata,
            sa.Column("family_id", sa.String(64), primary_key=True),
            sa.Column("user_id", sa.String(255), nullable=False, index=True),
            sa.Column("created_at", sa.Double(), nullable=False),
            sa.Column("revoked_at", sa.Double(), nullable=True),
        )
        self.refresh_tokens = sa.Table(
            REFRESH_TOKENS_TABLE,
            self.metadata,
            sa.Column("token_hash", sa.String(64), primary_key=True),
            sa.Column("family_id", sa.String(64), nullable=False, index=True),
            sa.Column("user_id", sa.String(255), nullable=False, index=True),
            sa.Column("roles", sa.JSON(), nullable=False),
            sa.Column("extra_claims", sa.JSON(), nullable=False),
            sa.Column("issued_at", sa.Double(), nullable=False),
            sa.Column("expires_at", sa.Double(), nullable=False, index=True),
            sa.Column("rotated_at", sa.Double(), nullable=True),
            sa.Column("revoked_at", sa.Double(), nullable=True),
        )
        self.api_keys = sa.Table(
            API_KEYS_TABLE,
            self.metadata,
            sa.Column("key_id", sa.String(32), primary_key=True),
            sa.Column("secret_hash", sa.String(64), nullable=False),
            sa.Column("owner", sa.String(255), nullable=False, index=True),
            sa.Column("scopes", sa.JSON(), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("created_at", sa.Double(), nullable=False),
            sa.Column("expires_at", sa.Double(), nullable=True),
            sa.Column("revoked_at", sa.Double(), nullable=True),
        )
        self.counters = sa.Table(
            COUNTERS_TABLE,
            self.metadata,
            sa.Column("key", sa.String(_MAX_COUNTER_KEY), primary_key=True),
            sa.Column("events", sa.JSON(), nullable=False, comment="Failure times, oldest first."),
            sa.Column("lockout_started_at", sa.Double(), nullable=True),
            sa.Column("lockout_until", sa.Double(), nullable=True),
            sa.Column("lockout_level", sa.Integer(), nullable=True),
            sa.Column("forget_lockout_at", sa.Double(), nullable=True),
            sa.Column("updated_at", sa.Double(), nullable=False, index=True),
        )
        # One row (id 1). A table of its own, not a column: ``create_tables``
        # never alters, so hubs whose tables predate it get it on their next start.
        self.user_changes = sa.Table(
            USER_CHANGES_TABLE,
            self.metadata,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
            sa.Column("version", sa.BigInteger(), nullable=False),
        )


class AuthDatabase:
    """The identity tables in one database, and the stores over them.

    Pass a URL (an engine is created and owned: :meth:`aclose` disposes it)
    or an existing :class:`~sqlalchemy.ext.asyncio.AsyncEngine` (for example
    the data engine's, to share its pool; it is left open). SQLite engines
    must come from :func:`objectos.data.schema.create_engine`, which sets the
    pragmas and ``BEGIN IMMEDIATE`` handling these stores rely on.
    """

    def __init__(self, database: str | sa.URL | AsyncEngine) -> None:
        if isinstance(database, AsyncEngine):
            _check_dialect(database.dialect.name)
            self.engine = database
            self._owns_engine = False
        else:
            try:
                url = sa.make_url(database)
            except sa.exc.ArgumentError:
                raise ConfigError(
                    "the database URL is not a SQLAlchemy URL",
                    details={"reason": "unparseable database url"},
                ) from None
            # Checked before creating the engine, which would first try to
            # import the driver of whatever database the URL names.
            _check_dialect(url.get_backend_name())
            self.engine = create_engine(url)
            self._owns_engine = True
        self.dialect = self.engine.dialect.name
        self.tables = AuthTables()
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self.users = SQLUserStore(self)
        self.refresh_tokens = SQLRefreshTokenStore(self)
        self.counters = SQLCounterStore(self)
        self.api_keys = SQLApiKeyStore(self)

    async def create_tables(self) -> None:
        """Create the tables that are missing (never alters or drops one); idempotent."""
        async with self._ready_lock:
            if self._ready:
                return
            async with self._write_engine.begin() as conn:
                if self.dialect == "postgresql":
                    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_LOCK_KEY)))
                await conn.run_sync(self.tables.metadata.create_all, checkfirst=True)
                await conn.execute(
                    self.insert_ignoring_conflicts(
                        self.tables.user_changes, {"id": 1, "version": 0}
                    )
                )
            self._ready = True

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads (tables created first if needed)."""
        if not self._ready:
            await self.create_tables()
        try:
            async with self.engine.connect() as conn:
                yield conn
        except sa.exc.DBAPIError as exc:
            mapped = _contention_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success."""
        if not self._ready:
            await self.create_tables()
        try:
            async with self._write_engine.begin() as conn:
                yield conn
        except sa.exc.IntegrityError:
            raise  # the stores map constraint violations themselves
        except sa.exc.DBAPIError as exc:
            mapped = _contention_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def insert_ignoring_conflicts(self, table: sa.Table, values: Mapping[str, Any]) -> Any:
        """``INSERT ... ON CONFLICT DO NOTHING`` for this database's dialect."""
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        return insert(table).values(**values).on_conflict_do_nothing()

    async def purge_expired(self, now: float, *, counter_horizon_s: float) -> dict[str, int]:
        """Forget refresh tokens and API keys past their expiry, and counters untouched
        for ``counter_horizon_s`` whose lockout memory is over. Returns counts."""
        return {
            "refreshTokens": await self.refresh_tokens.delete_expired(now),
            "counters": await self.counters.delete_stale(now - counter_horizon_s, now),
        }

    async def aclose(self) -> None:
        """Dispose the engine if this object created it."""
        if self._owns_engine:
            await self.engine.dispose()


def _check_dialect(name: str) -> None:
    if name not in _SUPPORTED_DIALECTS:
        raise ConfigError(
            f"the identity store supports SQLite and PostgreSQL, not {name}",
            details={"dialect": name},
        )


def _contention_error(exc: sa.exc.DBAPIError) -> Exception | None:
    """A busy database as a protocol error the client may retry (None: something else)."""
    state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if state in ("40P01", "40001"):
        return ConcurrentModification(
            "the write collided with a concurrent one and was rolled back; retry it",
            details={"reason": "deadlock" if state == "40P01" else "serialization"},
        )
    if "database is locked" in str(exc.orig):
        return ServiceUnavailable(
            "the database stayed locked by other writers; retry later",
            details={"reason": "database is locked"},
        )
    return None


def _timestamp(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _seconds(value: dt.datetime) -> float:
    return value.timestamp()


class SQLUserStore:
    """Accounts and external identity links (:class:`~objectos.security.identity.UserStore`).

    Also the source of :class:`~objectos.security.directory.StoreRoleDirectory`
    (:meth:`role_memberships`, :meth:`role_marker`): every write that adds an
    account or sets roles bumps ``_auth_user_changes`` in its own transaction,
    so a replica learns that its copy is stale with one primary-key read.
    """

    def __init__(self, db: AuthDatabase) -> None:
        self._db = db
        self._users = db.tables.users
        self._identities = db.tables.identities
        self._changes = db.tables.user_changes

    async def _bump(self, conn: AsyncConnection) -> None:
        changes = self._changes
        await conn.execute(
            changes.update().where(changes.c.id == 1).values(version=changes.c.version + 1)
        )

    async def role_marker(self) -> int:
        """A number that changes whenever an account is added or its roles change."""
        async with self._db.read() as conn:
            version = (
                await conn.execute(
                    sa.select(self._changes.c.version).where(self._changes.c.id == 1)
                )
            ).scalar()
        return int(version or 0)

    async def role_memberships(self) -> dict[str, tuple[str, ...]]:
        """user id -> roles of every account holding at least one role (disabled ones too:
        their records still belong to their place in the hierarchy)."""
        users = self._users
        async with self._db.read() as conn:
            rows = await conn.execute(sa.select(users.c.id, users.c.roles))
            return {row.id: tuple(row.roles) for row in rows if row.roles}

    def _row(self, user: UserRecord) -> dict[str, Any]:
        return {
            "id": user.id,
            "kind": user.kind,
            "email": user.email,
            "email_key": normalize_email(user.email) if user.email else None,
            "name": user.name,
            "password_hash": user.password_hash,
            "roles": list(user.roles),
            "active": user.active,
            "created_at": _timestamp(user.created_at),
            "updated_at": _timestamp(user.updated_at),
        }

    @staticmethod
    def _record(row: Any) -> UserRecord:
        return UserRecord(
            id=row.id,
            email=row.email,
            name=row.name,
            roles=tuple(row.roles or ()),
            kind=row.kind,
            active=bool(row.active),
            password_hash=row.password_hash,
            created_at=_seconds(row.created_at),
            updated_at=_seconds(row.updated_at),
        )

    async def add(self, user: UserRecord) -> None:
        try:
            async with self._db.write() as conn:
                await conn.execute(self._users.insert().values(**self._row(user)))
                await self._bump(conn)
        except sa.exc.IntegrityError:
            # The only unique columns are the id (UUIDv7, never reused) and the email.
            raise duplicate_email() from None

    async def _one(self, where: sa.ColumnElement[bool]) -> UserRecord | None:
        async with self._db.read() as conn:
            row = (await conn.execute(sa.select(self._users).where(where))).first()
        return self._record(row) if row is not None else None

    async def get(self, user_id: str) -> UserRecord | None:
        return await self._one(self._users.c.id == user_id)

    async def find_by_email(self, email: str) -> UserRecord | None:
        return await self._one(self._users.c.email_key == normalize_email(email))

    async def replace_password_hash(
        self, user_id: str, new_hash: str, *, expected: str | None, at: float
    ) -> bool:
        users = self._users
        condition = (
            users.c.password_hash.is_(None)
            if expected is None
            else users.c.password_hash == expected
        )
        async with self._db.write() as conn:
            result = await conn.execute(
                users.update()
                .where(users.c.id == user_id, condition)
                .values(password_hash=new_hash, updated_at=_timestamp(at))
            )
        return result.rowcount == 1

    async def update(
        self,
        user_id: str,
        *,
        at: float,
        roles: Iterable[str] | None = None,
        active: bool | None = None,
        name: str | None = None,
    ) -> UserRecord | None:
        values: dict[str, Any] = {"updated_at": _timestamp(at)}
        if roles is not None:
            values["roles"] = list(roles)
        if active is not None:
            values["active"] = active
        if name is not None:
            values["name"] = name
        async with self._db.write() as conn:
            result = await conn.execute(
                self._users.update().where(self._users.c.id == user_id).values(values)
            )
            if roles is not None and result.rowcount:
                await self._bump(conn)
            row = (
                await conn.execute(sa.select(self._users).where(self._users.c.id == user_id))
            ).first()
        return self._record(row) if row is not None else None

    async def find_linked(self, issuer: str, subject: str) -> UserRecord | None:
        users, links = self._users, self._identities
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(users)
                    .join(links, links.c.user_id == users.c.id)
                    .where(links.c.issuer == issuer, links.c.subject == subject)
                )
            ).first()
        return self._record(row) if row is not None else None

    async def link(self, issuer: str, subject: str, user_id: str, *, at: float) -> bool:
        statement = self._db.insert_ignoring_conflicts(
            self._identities,
            {
                "issuer": issuer,
                "subject": subject,
                "user_id": user_id,
                "created_at": _timestamp(at),
            },
        )
        async with self._db.write() as conn:
            result = await conn.execute(statement)
        return result.rowcount == 1

    async def provision(
        self, issuer: str, subject: str, user: UserRecord, *, at: float
    ) -> tuple[UserRecord, bool]:
        users, links = self._users, self._identities
        try:
            async with self._db.write() as conn:
                linked = (
                    await conn.execute(
                        sa.select(links.c.user_id).where(
                            links.c.issuer == issuer, links.c.subject == subject
                        )
                    )
                ).scalar()
                if linked is None:
                    if user.email is not None:
                        taken = (
                            await conn.execute(
                                sa.select(users.c.id).where(
                                    users.c.email_key == normalize_email(user.email)
                                )
                            )
                        ).scalar()
                        if taken is not None:
                            user = replace(user, email=None)
                    await conn.execute(users.insert().values(**self._row(user)))
                    await self._bump(conn)
                    await conn.execute(
                        links.insert().values(
                            issuer=issuer,
                            subject=subject,
                            user_id=user.id,
                            created_at=_timestamp(at),
                        )
                    )
                    return user, True
        except sa.exc.IntegrityError:
            pass  # another replica provisioned this identity (or took the email) just now
        existing = await self.find_linked(issuer, subject)
        if existing is None:
            # Not a link race, so the email was taken in between: retry without it.
            if user.email is None:
                raise ConcurrentModification(
                    "could not provision the account; retry", details={"issuer": issuer}
                )
            return await self.provision(issuer, subject, replace(user, email=None), at=at)
        return existing, False


class SQLRefreshTokenStore:
    """Refresh tokens (:class:`~objectos.security.tokens.RefreshTokenStore`).

    Families have a row of their own (``_auth_refresh_families``) that
    ``add`` and the revocations lock: see the module docstring.
    """

    def __init__(self, db: AuthDatabase) -> None:
        self._db = db
        self._table = db.tables.refresh_tokens
        self._families = db.tables.refresh_families

    async def add(self, record: RefreshTokenRecord) -> None:
        families = self._families
        async with self._db.write() as conn:
            await conn.execute(
                self._db.insert_ignoring_conflicts(
                    families,
                    {
                        "family_id": record.family_id,
                        "user_id": record.user_id,
                        "created_at": record.issued_at,
                    },
                )
            )
            # FOR SHARE: waits for a revocation in flight, and makes one that
            # starts now wait for this insert, so it sees (and revokes) the token.
            family_revoked_at = (
                await conn.execute(
                    sa.select(families.c.revoked_at)
                    .where(families.c.family_id == record.family_id)
                    .with_for_update(read=True)
                )
            ).scalar()
            revoked_at = record.revoked_at
            if revoked_at is None and family_revoked_at is not None:
                revoked_at = family_revoked_at
            await conn.execute(
                self._table.insert().values(
                    token_hash=record.token_hash,
                    family_id=record.family_id,
                    user_id=record.user_id,
                    roles=list(record.roles),
                    extra_claims=dict(record.extra_claims),
                    issued_at=record.issued_at,
                    expires_at=record.expires_at,
                    rotated_at=record.rotated_at,
                    revoked_at=revoked_at,
                )
            )

    async def get(self, token_hash: str) -> RefreshTokenRecord | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(self._table).where(self._table.c.token_hash == token_hash)
                )
            ).first()
        if row is None:
            return None
        return RefreshTokenRecord(
            token_hash=row.token_hash,
            family_id=row.family_id,
            user_id=row.user_id,
            roles=tuple(row.roles or ()),
            extra_claims=dict(row.extra_claims or {}),
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            rotated_at=row.rotated_at,
            revoked_at=row.revoked_at,
        )

    async def mark_rotated(self, token_hash: str, at: float) -> bool:
        table = self._table
        async with self._db.write() as conn:
            result = await conn.execute(
                table.update()
                .where(
                    table.c.token_hash == token_hash,
                    table.c.rotated_at.is_(None),
                    table.c.revoked_at.is_(None),
                )
                .values(rotated_at=at)
            )
        return result.rowcount == 1

    async def _revoke(self, column: str, value: str, at: float) -> int:
        table, families = self._table, self._families
        async with self._db.write() as conn:
            # The family rows first: this takes their locks (see ``add``).
            await conn.execute(
                families.update()
                .where(families.c[column] == value, families.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            result = await conn.execute(
                table.update()
                .where(table.c[column] == value, table.c.revoked_at.is_(None))
                .values(revoked_at=at)
                .returning(table.c.rotated_at)
            )
            # "Live" as in the Protocol: neither revoked before nor spent.
            return sum(1 for (rotated_at,) in result if rotated_at is None)

    async def revoke_family(self, family_id: str, at: float) -> int:
        return await self._revoke("family_id", family_id, at)

    async def revoke_user(self, user_id: str, at: float) -> int:
        return await self._revoke("user_id", user_id, at)

    async def delete_expired(self, before: float) -> int:
        table, families = self._table, self._families
        async with self._db.write() as conn:
            result = await conn.execute(table.delete().where(table.c.expires_at < before))
            # A family outlives its tokens only until the next purge.
            await conn.execute(
                families.delete().where(
                    ~sa.exists().where(table.c.family_id == families.c.family_id)
                )
            )
        return int(result.rowcount)


def _counter_key(key: str) -> str:
    if len(key) <= _MAX_COUNTER_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class SQLCounterStore:
    """Sign-in failures and lockouts, shared by replicas (a ``CounterStore``).

    One row per key with the recent failure times as a JSON list (at most
    ``keep`` of them, so a row stays small), locked for the duration of each
    update.
    """

    def __init__(self, db: AuthDatabase) -> None:
        self._db = db
        self._table = db.tables.counters

    async def _locked_row(self, conn: AsyncConnection, key: str, now: float) -> Any:
        await conn.execute(
            self._db.insert_ignoring_conflicts(
                self._table, {"key": key, "events": [], "updated_at": now}
            )
        )
        # FOR UPDATE is compiled away on SQLite, whose BEGIN IMMEDIATE already
        # made this transaction the only writer.
        return (
            await conn.execute(
                sa.select(self._table).where(self._table.c.key == key).with_for_update()
            )
        ).one()

    async def add_event(self, key: str, at: float, since: float, keep: int) -> int:
        key = _counter_key(key)
        async with self._db.write() as conn:
            row = await self._locked_row(conn, key, at)
            events = sorted([*(float(t) for t in row.events or ()), at])
            events = [t for t in events if t > since][-keep:] if keep > 0 else []
            await conn.execute(
                self._table.update()
                .where(self._table.c.key == key)
                .values(events=events, updated_at=max(at, row.updated_at))
            )
        return len(events)

    async def get_lockout(self, key: str, now: float) -> Lockout | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(self._table).where(self._table.c.key == _counter_key(key))
                )
            ).first()
        if row is None or row.lockout_until is None or row.forget_lockout_at is None:
            return None
        if now >= row.forget_lockout_at:
            return None
        return Lockout(
            started_at=row.lockout_started_at, until=row.lockout_until, level=row.lockout_level
        )

    async def set_lockout(self, key: str, lockout: Lockout, forget_at: float) -> None:
        key = _counter_key(key)
        async with self._db.write() as conn:
            row = await self._locked_row(conn, key, lockout.started_at)
            await conn.execute(
                self._table.update()
                .where(self._table.c.key == key)
                .values(
                    lockout_started_at=lockout.started_at,
                    lockout_until=lockout.until,
                    lockout_level=lockout.level,
                    forget_lockout_at=forget_at,
                    updated_at=max(lockout.started_at, row.updated_at),
                )
            )

    async def reset(self, key: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(self._table.delete().where(self._table.c.key == _counter_key(key)))

    async def delete_stale(self, untouched_since: float, now: float) -> int:
        """Forget keys not updated since ``untouched_since`` whose lockout memory is over."""
        table = self._table
        async with self._db.write() as conn:
            result = await conn.execute(
                table.delete().where(
                    table.c.updated_at < untouched_since,
                    sa.or_(table.c.forget_lockout_at.is_(None), table.c.forget_lockout_at <= now),
                )
            )
        return int(result.rowcount)


class SQLApiKeyStore:
    """Service-account API keys (:class:`~objectos.security.apikeys.ApiKeyStore`)."""

    def __init__(self, db: AuthDatabase) -> None:
        self._db = db
        self._table = db.tables.api_keys

    async def add(self, record: ApiKeyRecord) -> None:
        async with self._db.write() as conn:
            await conn.execute(
                self._table.insert().values(
                    key_id=record.key_id,
                    secret_hash=record.secret_hash,
                    owner=record.owner,
                    scopes=sorted(record.scopes),
                    name=record.name,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                    revoked_at=record.revoked_at,
                )
            )

    @staticmethod
    def _record(row: Any) -> ApiKeyRecord:
        return ApiKeyRecord(
            key_id=row.key_id,
            secret_hash=row.secret_hash,
            owner=row.owner,
            scopes=frozenset(row.scopes or ()),
            name=row.name,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
        )

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        async with self._db.read() as conn:
            row = (
                await conn.execute(sa.select(self._table).where(self._table.c.key_id == key_id))
            ).first()
        return self._record(row) if row is not None else None

    async def list_for_owner(self, owner: str) -> list[ApiKeyRecord]:
        """Every key of ``owner``, revoked ones included, oldest first."""
        async with self._db.read() as conn:
            rows = await conn.execute(
                sa.select(self._table)
                .where(self._table.c.owner == owner)
                .order_by(self._table.c.created_at, self._table.c.key_id)
            )
            return [self._record(row) for row in rows]

    async def revoke(self, key_id: str, at: float) -> bool:
        table = self._table
        async with self._db.write() as conn:
            result = await conn.execute(
                table.update()
                .where(table.c.key_id == key_id, table.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return result.rowcount == 1


__all__ = [
    "API_KEYS_TABLE",
    "AUTH_TABLES",
    "COUNTERS_TABLE",
    "IDENTITIES_TABLE",
    "REFRESH_FAMILIES_TABLE",
    "REFRESH_TOKENS_TABLE",
    "USERS_TABLE",
    "USER_CHANGES_TABLE",
    "AuthDatabase",
    "AuthTables",
    "SQLApiKeyStore",
    "SQLCounterStore",
    "SQLRefreshTokenStore",
    "SQLUserStore",
]
