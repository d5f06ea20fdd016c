"""Retention: events older than the policy's days are pruned at the times its cron names."""

from __future__ import annotations

import datetime as dt

import pytest

from objectos.audit import AuditEvent, AuditQuery, AuditStore, RetentionPolicy
from objectos.errors import ConfigError

from .conftest import eventually

#: Just before a full minute, so an every-minute schedule fires at once.
NOW = dt.datetime(2024, 5, 1, 12, 0, 59, 950_000, tzinfo=dt.UTC)


def aged(days: float) -> AuditEvent:
    return AuditEvent.new("auth.signed_in", actor="alice", at=NOW - dt.timedelta(days=days))


async def remaining(store: AuditStore) -> list[float]:
    events = (await store.search(AuditQuery(order="asc"))).events
    return [round((NOW - e.at) / dt.timedelta(days=1)) for e in events]


@pytest.fixture
async def history(store: AuditStore) -> None:
    await store.append([aged(400), aged(40), aged(1)])


async def test_events_past_the_retention_are_pruned(store: AuditStore, history: None) -> None:
    policy = RetentionPolicy(store, days=30, clock=lambda: NOW)

    assert await policy.prune_now() == 2
    assert await remaining(store) == [1]


async def test_zero_days_keeps_everything(store: AuditStore, history: None) -> None:
    policy = RetentionPolicy(store, days=0, clock=lambda: NOW)

    assert await policy.prune_now() == 0
    assert await remaining(store) == [400, 40, 1]


async def test_the_schedule_prunes_when_the_cron_expression_says(
    store: AuditStore, history: None
) -> None:
    policy = RetentionPolicy(store, days=365, schedule="* * * * *", clock=lambda: NOW)
    await policy.start()
    try:
        await eventually(lambda: policy.last_run)
    finally:
        await policy.stop()

    assert policy.status()["lastRemoved"] == 1
    assert await remaining(store) == [40, 1]


def test_next_run_follows_the_cron_expression_in_utc(store: AuditStore) -> None:
    policy = RetentionPolicy(store, schedule="17 3 * * *")

    assert policy.next_run(NOW) == dt.datetime(2024, 5, 2, 3, 17, tzinfo=dt.UTC)
    assert policy.next_run(dt.datetime(2024, 5, 2, 3, 17, tzinfo=dt.UTC)) == dt.datetime(
        2024, 5, 3, 3, 17, tzinfo=dt.UTC
    )


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"schedule": "every night"}, "pruneSchedule"),
        ({"schedule": "* * * *"}, "pruneSchedule"),
        ({"days": -1}, "retentionDays"),
    ],
)
def test_a_bad_policy_is_a_config_error_naming_the_key(
    store: AuditStore, settings: dict, field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        RetentionPolicy(store, **settings)

    assert caught.value.details["field"] == field
