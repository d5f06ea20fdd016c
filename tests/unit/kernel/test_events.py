"""The event bus: priorities, wildcards, before-hook vetoes and rewrites, after-hook isolation."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from objectos.errors import ValidationError
from objectos.kernel.events import (
    AFTER_HOOKS,
    ANONYMOUS_OWNER,
    BEFORE_HOOKS,
    DATA_HOOK_EVENTS,
    EventBus,
    data_event,
    event_matches,
)


def recorder(calls: list[str], name: str, result: Any = None):
    async def handler(payload: Any) -> Any:
        calls.append(name)
        return result

    return handler


# --- ordering ---------------------------------------------------------------------


async def test_lower_priority_runs_first_and_ties_keep_registration_order():
    bus, calls = EventBus(), []
    bus.on("record.created", recorder(calls, "late"), priority=200)
    bus.on("record.created", recorder(calls, "first-of-default"))
    bus.on("record.created", recorder(calls, "early"), priority=10)
    bus.on("record.created", recorder(calls, "second-of-default"))

    await bus.trigger("record.created", {})

    assert calls == ["early", "first-of-default", "second-of-default", "late"]


async def test_trigger_returns_every_result_in_order_and_accepts_plain_functions():
    bus = EventBus()
    bus.on("ping", lambda payload: payload["n"] + 1)
    bus.on("ping", recorder([], "async", result="pong"))
    assert await bus.trigger("ping", {"n": 41}) == [42, "pong"]


async def test_trigger_with_no_handlers_returns_nothing():
    assert await EventBus().trigger("nobody.listens", {}) == []


async def test_trigger_stops_at_the_first_error():
    bus, calls = EventBus(), []

    def broken(payload: Any) -> None:
        raise RuntimeError("nope")

    bus.on("e", broken)
    bus.on("e", recorder(calls, "after"))
    with pytest.raises(RuntimeError, match="nope"):
        await bus.trigger("e", {})
    assert calls == []


# --- wildcards ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "event", "matches"),
    [
        ("data.*", "data.beforeInsert", True),
        ("data.*", "data.beforeInsert.account", True),
        ("data.*", "data", False),
        ("data.*", "database.ready", False),
        ("data.beforeInsert.*", "data.beforeInsert.account", True),
        ("data.beforeInsert.*", "data.beforeUpdate.account", False),
        ("*", "anything.at.all", True),
        ("record.created", "record.created", True),
        ("record.created", "record.created.extra", False),
    ],
)
def test_event_patterns(pattern: str, event: str, matches: bool):
    assert event_matches(pattern, event) is matches


async def test_wildcard_and_exact_handlers_share_one_priority_order():
    bus, calls = EventBus(), []
    bus.on("*", recorder(calls, "everything"), priority=300)
    bus.on("data.*", recorder(calls, "all data"), priority=100)
    bus.on("data.beforeInsert.account", recorder(calls, "exact"), priority=50)
    bus.on("data.beforeInsert.contact", recorder(calls, "other object"))

    await bus.trigger("data.beforeInsert.account", {})

    assert calls == ["exact", "all data", "everything"]


@pytest.mark.parametrize("pattern", ["", "data.*.account", "data*", "*.created", ".*"])
def test_a_wildcard_is_only_allowed_as_the_last_part(pattern: str):
    with pytest.raises(ValueError, match="invalid event pattern"):
        EventBus().on(pattern, recorder([], "x"))


def test_handlers_of_star_lists_every_subscription():
    bus = EventBus()
    a = bus.on("a.b", recorder([], "a"), priority=5)
    b = bus.on("c.*", recorder([], "b"))
    assert bus.handlers() == [a, b]
    assert bus.handlers("a.b") == [a]


# --- unsubscribing ------------------------------------------------------------------


async def test_off_removes_one_subscription():
    bus, calls = EventBus(), []
    keep = bus.on("e", recorder(calls, "keep"))
    drop = bus.on("e", recorder(calls, "drop"))

    assert bus.off(drop) is True
    assert bus.off(drop) is False
    await bus.trigger("e", {})

    assert calls == ["keep"]
    assert bus.handlers("e") == [keep]


async def test_off_owner_removes_all_handlers_of_a_plugin():
    bus, calls = EventBus(), []
    bus.on("a", recorder(calls, "crm-a"), owner="com.x.crm")
    bus.on("data.*", recorder(calls, "crm-data"), owner="com.x.crm")
    bus.on("a", recorder(calls, "audit-a"), owner="com.x.audit")

    assert bus.off_owner("com.x.crm") == 2
    await bus.trigger("a", {})

    assert calls == ["audit-a"]


async def test_a_handler_unsubscribing_during_a_run_does_not_skip_the_others():
    bus, calls = EventBus(), []
    later = bus.on("e", recorder(calls, "later"), priority=200)

    async def remove_later(payload: Any) -> None:
        calls.append("remover")
        bus.off(later)

    bus.on("e", remove_later)
    await bus.trigger("e", {})
    await bus.trigger("e", {})

    assert calls == ["remover", "later", "remover"]


# --- before-hooks -----------------------------------------------------------------


async def test_before_hooks_can_replace_or_modify_the_payload_in_turn():
    bus = EventBus()
    seen: list[dict[str, Any]] = []

    async def defaults(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "status": "new"}

    async def uppercase_in_place(payload: dict[str, Any]) -> None:
        seen.append(dict(payload))
        payload["name"] = payload["name"].upper()

    async def stamp(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(dict(payload))
        return {**payload, "stamped": True}

    bus.on("data.beforeInsert.*", defaults, priority=1)
    bus.on("data.beforeInsert.account", uppercase_in_place, priority=2)
    bus.on("data.*", stamp, priority=3)

    result = await bus.run_before("data.beforeInsert.account", {"name": "acme"})

    assert seen == [{"name": "acme", "status": "new"}, {"name": "ACME", "status": "new"}]
    assert result == {"name": "ACME", "status": "new", "stamped": True}


async def test_before_hooks_without_handlers_return_the_payload_unchanged():
    payload = {"name": "acme"}
    assert await EventBus().run_before("data.beforeInsert.account", payload) is payload


async def test_a_before_hook_vetoes_by_raising_and_its_error_reaches_the_caller_unchanged():
    bus, calls = EventBus(), []
    veto = ValidationError("amount must be positive", details={"field": "amount"})

    async def check_amount(payload: dict[str, Any]) -> None:
        if payload["amount"] <= 0:
            raise veto

    bus.on("data.beforeInsert.invoice", check_amount, priority=1)
    bus.on("data.beforeInsert.invoice", recorder(calls, "later"), priority=2)

    with pytest.raises(ValidationError) as caught:
        await bus.run_before("data.beforeInsert.invoice", {"amount": 0})

    assert caught.value is veto
    assert caught.value.status == 400
    assert calls == []


async def test_a_before_hook_returning_something_else_than_a_dict_is_a_bug():
    bus = EventBus()
    bus.on("data.beforeInsert.account", recorder([], "bad", result=["not", "a", "dict"]))
    with pytest.raises(TypeError, match="expected a dict or None"):
        await bus.run_before("data.beforeInsert.account", {})


# --- after-hooks ------------------------------------------------------------------


async def test_after_hooks_all_run_even_when_some_fail(caplog: pytest.LogCaptureFixture):
    bus, calls = EventBus(), []
    first, second = RuntimeError("first"), KeyError("second")

    def failing(error: Exception):
        async def handler(payload: Any) -> None:
            calls.append(str(error))
            raise error

        return handler

    bus.on("data.afterInsert.account", failing(first), owner="com.x.a", priority=1)
    bus.on("data.afterInsert.account", recorder(calls, "ok"), priority=2)
    bus.on("data.afterInsert.*", failing(second), owner="com.x.b", priority=3)

    errors = await bus.run_after("data.afterInsert.account", {"id": "1"})

    assert errors == [first, second]
    assert calls == ["first", "ok", "'second'"]
    assert "com.x.a" in caplog.text and "com.x.b" in caplog.text


# --- timeouts -----------------------------------------------------------------------


async def test_a_slow_handler_times_out_with_a_readable_error():
    bus = EventBus()

    async def slow(payload: Any) -> None:
        await asyncio.sleep(10)

    bus.on("e", slow, owner="com.x.slow", timeout_s=0.05)
    with pytest.raises(TimeoutError, match=r"com\.x\.slow for e timed out after 0\.05s"):
        await bus.trigger("e", {})
    assert bus.stats()["e"]["com.x.slow"]["timeouts"] == 1


async def test_the_bus_default_timeout_applies_to_handlers_without_their_own():
    bus = EventBus(default_timeout_s=0.05)

    async def slow(payload: Any) -> None:
        await asyncio.sleep(10)

    bus.on("e", slow)
    errors = await bus.run_after("e", {})
    assert len(errors) == 1 and isinstance(errors[0], TimeoutError)


async def test_a_handlers_own_timeout_error_is_not_counted_as_a_timeout():
    bus = EventBus(default_timeout_s=5)

    async def upstream_timeout(payload: Any) -> None:
        raise TimeoutError("upstream")

    bus.on("e", upstream_timeout)
    with pytest.raises(TimeoutError, match=r"^upstream$"):
        await bus.trigger("e", {})
    stats = bus.stats()["e"][ANONYMOUS_OWNER]
    assert (stats["calls"], stats["errors"], stats["timeouts"]) == (1, 1, 0)


# --- stats --------------------------------------------------------------------------


async def test_stats_count_calls_errors_and_latency_per_event_and_owner():
    # Two readings per call: ok 0.25 s, broken 0.5 s, then ok 0.1 s, broken 0.1 s.
    ticks = iter([0.0, 0.25, 1.0, 1.5, 2.0, 2.1, 3.0, 3.1])
    bus = EventBus(clock=lambda: next(ticks))

    async def ok(payload: Any) -> None:
        return None

    async def broken(payload: Any) -> None:
        raise ValueError("x")

    bus.on("data.afterInsert.*", ok, owner="com.x.audit")
    bus.on("data.afterInsert.*", broken, owner="com.x.flaky")

    await bus.run_after("data.afterInsert.account", {})
    await bus.run_after("data.afterInsert.account", {})

    stats = json.loads(json.dumps(bus.stats()))
    audit = stats["data.afterInsert.account"]["com.x.audit"]
    flaky = stats["data.afterInsert.account"]["com.x.flaky"]
    assert (audit["calls"], audit["errors"]) == (2, 0)
    assert (flaky["calls"], flaky["errors"]) == (2, 2)
    assert audit["max_s"] == pytest.approx(0.25)
    assert audit["total_s"] == pytest.approx(0.35)
    assert flaky["total_s"] == pytest.approx(0.6)


# --- data hook names ------------------------------------------------------------------


def test_data_hook_names_follow_the_protocol():
    assert DATA_HOOK_EVENTS[:8] == (
        "beforeFind", "afterFind", "beforeInsert", "afterInsert",
        "beforeUpdate", "afterUpdate", "beforeDelete", "afterDelete",
    )  # fmt: skip
    assert {"beforeUpdateMany", "afterDeleteMany"} <= set(DATA_HOOK_EVENTS)
    assert set(BEFORE_HOOKS) | set(AFTER_HOOKS) == set(DATA_HOOK_EVENTS)
    assert all(hook.startswith("before") for hook in BEFORE_HOOKS)


def test_data_event_names_an_object_hook_and_refuses_unknown_hooks():
    assert data_event("beforeInsert", "account") == "data.beforeInsert.account"
    assert data_event("afterDelete", "*") == "data.afterDelete.*"
    with pytest.raises(ValueError, match="unknown data hook 'beforeCreate'"):
        data_event("beforeCreate", "account")
