"""The SQL stores against the Protocols they implement, on SQLite and PostgreSQL.

The atomic steps the Protocols promise are checked under real concurrency:
several coroutines, each with its own pooled connection, at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.data import Actor, DataEngine
from objectos.errors import DuplicateValue, ObjectNotFound, RateLimitExceeded
from objectos.metadata import MetadataRegistry
from objectos.security.apikeys import ApiKeyRecord, ApiKeyStore
from objectos.security.identity import UserRecord, UserStore
from objectos.security.store import AUTH_TABLES, AuthDatabase
from objectos.security.throttle import CounterStore, Lockout, SignInThrottle
from objectos.security.tokens import RefreshTokenRecord, RefreshTokenStore

from .conftest import START, EngineFactory

CRM = Path(__file__).resolve().parents[3] / "configs" / "metadata"


def token(
    token_hash: str, family: str = "fam-1", user: str = "u1", **times: float
) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        token_hash=token_hash,
        family_id=family,
        user_id=user,
        roles=("user",),
        extra_claims={"tenant": "acme"},
        issued_at=START,
        expires_at=times.pop("expires_at", START + 3600),
        **times,
    )


def user(user_id: str, email: str | None) -> UserRecord:
    return UserRecord(
        id=user_id, email=email, name=None, roles=("user",), created_at=START, updated_at=START
    )


async def test_the_stores_satisfy_their_protocols(auth_db: AuthDatabase) -> None:
    assert isinstance(auth_db.users, UserStore)
    assert isinstance(auth_db.refresh_tokens, RefreshTokenStore)
    assert isinstance(auth_db.counters, CounterStore)
    assert isinstance(auth_db.api_keys, ApiKeyStore)


async def test_tables_are_created_once_even_by_replicas_starting_together(
    new_engine: EngineFactory,
) -> None:
    replicas = [AuthDatabase(new_engine()) for _ in range(3)]
    await asyncio.gather(*(db.create_tables() for db in replicas))
    async with replicas[0].engine.connect() as conn:
        names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    assert set(AUTH_TABLES) <= set(names)


# -- refresh tokens -----------------------------------------------------------------------


async def test_a_refresh_token_round_trips(auth_db: AuthDatabase) -> None:
    store = auth_db.refresh_tokens
    await store.add(token("h1"))
    assert await store.get("h1") == token("h1")
    assert await store.get("nope") is None


async def test_mark_rotated_lets_exactly_one_of_many_concurrent_callers_win(
    new_engine: EngineFactory,
) -> None:
    replicas = [AuthDatabase(new_engine()) for _ in range(4)]
    await replicas[0].refresh_tokens.add(token("h1"))
    results = await asyncio.gather(
        *(db.refresh_tokens.mark_rotated("h1", START + i) for i, db in enumerate(replicas * 2))
    )
    assert sorted(results) == [False] * 7 + [True]


async def test_revocation_counts_live_tokens_and_spares_other_families(
    auth_db: AuthDatabase,
) -> None:
    store = auth_db.refresh_tokens
    await store.add(token("a1"))
    await store.add(token("a2"))
    await store.add(token("b1", family="fam-2"))
    assert await store.mark_rotated("a1", START + 1)
    assert await store.revoke_family("fam-1", START + 2) == 1  # a1 was spent, a2 live
    assert await store.revoke_family("fam-1", START + 3) == 0
    assert (await store.get("a1")).revoked_at == START + 2  # type: ignore[union-attr]
    assert not await store.mark_rotated("a2", START + 4)
    assert (await store.get("b1")).revoked_at is None  # type: ignore[union-attr]
    assert await store.revoke_user("u1", START + 5) == 1


async def test_a_token_added_to_a_revoked_family_is_born_revoked(auth_db: AuthDatabase) -> None:
    store = auth_db.refresh_tokens
    await store.add(token("a1"))
    await store.revoke_family("fam-1", START + 1)
    await store.add(token("a2"))
    assert (await store.get("a2")).revoked_at == START + 1  # type: ignore[union-attr]
    assert not await store.mark_rotated("a2", START + 2)


async def test_expired_tokens_and_their_empty_families_are_purged(auth_db: AuthDatabase) -> None:
    store = auth_db.refresh_tokens
    await store.add(token("old", expires_at=START + 10))
    await store.add(token("new", family="fam-2", expires_at=START + 1000))
    assert await store.delete_expired(START + 100) == 1
    assert await store.get("old") is None and await store.get("new") is not None
    async with auth_db.engine.connect() as conn:
        families = (
            await conn.execute(sa.select(auth_db.tables.refresh_families.c.family_id))
        ).scalars()
        assert list(families) == ["fam-2"]


# -- counters -----------------------------------------------------------------------------


async def test_counter_events_slide_out_of_the_window_and_are_capped(
    auth_db: AuthDatabase,
) -> None:
    counters = auth_db.counters
    assert await counters.add_event("k", START, since=START - 60, keep=3) == 1
    assert await counters.add_event("k", START + 10, since=START - 50, keep=3) == 2
    # START leaves the window (since is exclusive).
    assert await counters.add_event("k", START + 60, since=START, keep=3) == 2
    for i in range(5):
        count = await counters.add_event("k", START + 61 + i, since=START, keep=3)
    assert count == 3
    await counters.reset("k")
    assert await counters.add_event("k", START + 70, since=START, keep=3) == 1


async def test_concurrent_failures_from_many_replicas_are_never_lost(
    new_engine: EngineFactory,
) -> None:
    replicas = [AuthDatabase(new_engine()) for _ in range(4)]
    await replicas[0].create_tables()
    counts = await asyncio.gather(
        *(
            db.counters.add_event("account:ada", START + i, since=START - 900, keep=100)
            for i, db in enumerate(replicas * 5)
        )
    )
    # Each add saw every add committed before it: the counts are exactly 1..20.
    assert sorted(counts) == list(range(1, 21))


async def test_lockouts_are_remembered_until_forgotten(auth_db: AuthDatabase) -> None:
    counters = auth_db.counters
    lockout = Lockout(started_at=START, until=START + 60, level=1)
    assert await counters.get_lockout("k", START) is None
    await counters.set_lockout("k", lockout, forget_at=START + 600)
    assert await counters.get_lockout("k", START + 100) == lockout  # over, but remembered
    assert await counters.get_lockout("k", START + 600) is None


async def test_long_keys_are_stored_by_digest(auth_db: AuthDatabase) -> None:
    counters = auth_db.counters
    long_key = "account:" + "x" * 1000 + "@example.test"
    assert await counters.add_event(long_key, START, since=START - 1, keep=5) == 1
    assert await counters.add_event(long_key, START + 1, since=START - 1, keep=5) == 2
    assert await counters.add_event(long_key[:-1], START + 1, since=START - 1, keep=5) == 1


async def test_stale_counters_are_purged_but_remembered_lockouts_are_kept(
    auth_db: AuthDatabase,
) -> None:
    counters = auth_db.counters
    await counters.add_event("idle", START, since=START - 1, keep=5)
    await counters.add_event("locked", START, since=START - 1, keep=5)
    await counters.set_lockout("locked", Lockout(START, START + 60, 1), forget_at=START + 10_000)
    assert await counters.delete_stale(untouched_since=START + 1, now=START + 1000) == 1
    assert await counters.add_event("idle", START + 1000, since=START - 1, keep=5) == 1
    assert await counters.get_lockout("locked", START + 1000) is not None


async def test_the_throttle_runs_unchanged_on_the_sql_store(auth_db: AuthDatabase) -> None:
    now = [START]
    throttle = SignInThrottle(3, 900, 60, lambda: now[0], store=auth_db.counters)
    for _ in range(2):
        assert await throttle.record_failure("Ada@example.test", "10.0.0.1") is None
    started = await throttle.record_failure("ada@example.test", "10.0.0.1")
    assert started == Lockout(START, START + 60, 1)
    with pytest.raises(RateLimitExceeded):
        await throttle.check("ADA@example.test")


# -- users --------------------------------------------------------------------------------


async def test_emails_are_unique_case_insensitively_and_may_be_absent(
    auth_db: AuthDatabase,
) -> None:
    users = auth_db.users
    await users.add(user("u1", "Ada@Example.test"))
    with pytest.raises(DuplicateValue) as caught:
        await users.add(user("u2", "ada@example.TEST"))
    assert caught.value.field_errors[0].field == "email"
    await users.add(user("u3", None))
    await users.add(user("u4", None))
    found = await users.find_by_email("  ADA@example.test ")
    assert found is not None and found.id == "u1" and found.email == "Ada@Example.test"
    assert found.created_at == START


async def test_a_password_hash_is_replaced_only_over_the_expected_one(
    auth_db: AuthDatabase,
) -> None:
    users = auth_db.users
    await users.add(UserRecord(id="u1", email="a@b.test", name=None, password_hash="old"))
    assert not await users.replace_password_hash("u1", "new", expected="other", at=START)
    assert await users.replace_password_hash("u1", "new", expected="old", at=START)
    assert (await users.get("u1")).password_hash == "new"  # type: ignore[union-attr]


async def test_provisioning_an_identity_twice_at_once_makes_one_account(
    new_engine: EngineFactory,
) -> None:
    replicas = [AuthDatabase(new_engine()) for _ in range(3)]
    await replicas[0].create_tables()
    results = await asyncio.gather(
        *(
            db.users.provision("https://idp", "sub-1", user(f"u{i}", "g@x.test"), at=START)
            for i, db in enumerate(replicas * 2)
        )
    )
    assert len({account.id for account, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1


async def test_a_provisioned_account_gives_up_an_email_that_is_taken(
    auth_db: AuthDatabase,
) -> None:
    await auth_db.users.add(user("local", "g@x.test"))
    account, created = await auth_db.users.provision(
        "https://idp", "sub-1", user("ext", "G@x.test"), at=START
    )
    assert created and account.id == "ext" and account.email is None
    assert (await auth_db.users.find_linked("https://idp", "sub-1")).id == "ext"  # type: ignore[union-attr]
    assert await auth_db.users.link("https://idp", "sub-1", "local", at=START) is False


# -- API keys -----------------------------------------------------------------------------


async def test_api_keys_round_trip_and_revoke_once(auth_db: AuthDatabase) -> None:
    keys = auth_db.api_keys
    record = ApiKeyRecord(
        key_id="0123456789abcdef",
        secret_hash="f" * 64,
        owner="svc-1",
        scopes=frozenset({"data:read", "data:write"}),
        name="ci",
        created_at=START,
    )
    await keys.add(record)
    assert await keys.get(record.key_id) == record
    assert await keys.list_for_owner("svc-1") == [record]
    assert await keys.revoke(record.key_id, START + 1) is True
    assert await keys.revoke(record.key_id, START + 2) is False
    assert (await keys.get(record.key_id)).revoked_at == START + 1  # type: ignore[union-attr]


# -- next to the data engine ----------------------------------------------------------------


async def test_the_data_engine_can_neither_see_nor_drop_the_auth_tables(
    database: AsyncEngine, auth_db: AuthDatabase
) -> None:
    """Accounts are not a metadata object, so no data route can list them."""
    await auth_db.users.add(
        UserRecord(id="u1", email="a@b.test", name=None, password_hash="$argon2id$x")
    )
    data = DataEngine(database, MetadataRegistry.load([CRM]))
    plan = await data.migrate()
    assert not any(step.object.startswith("_auth_") for step in plan.steps)
    with pytest.raises(ObjectNotFound):
        await data.find("_auth_users", actor=Actor.system_actor())
    assert (await auth_db.users.get("u1")) is not None
