"""The plugin lifecycle: states, hooks, timeouts, install records, whole-graph start/stop."""

from __future__ import annotations

import asyncio
import json

import pytest

from objectos.errors import LifecycleError
from objectos.kernel.graph import resolve_load_order
from objectos.kernel.lifecycle import (
    HISTORY_LIMIT,
    TRANSITIONS,
    MemoryInstallRecord,
    PluginLifecycle,
    PluginState,
    check_transition,
    start_all,
    stop_all,
)

S = PluginState


def states_of(lifecycle: PluginLifecycle) -> list[str]:
    return [str(t.state) for t in lifecycle.history]


def hooks_of(journal, plugin_id: str = "com.x.demo") -> list[str]:
    return [entry[1] for entry in journal if entry[0] == plugin_id]


# --- the happy path -------------------------------------------------------------


async def test_start_installs_enables_and_loads(make_plugin, journal):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())

    assert await lifecycle.start() is S.RUNNING

    assert hooks_of(journal) == ["on_install", "on_enable", "on_load"]
    assert states_of(lifecycle) == [
        "registered", "installing", "installed", "enabling", "enabled", "loading", "running",
    ]  # fmt: skip
    assert lifecycle.last_error is None


async def test_start_records_the_installed_version(make_plugin):
    record = MemoryInstallRecord()
    await PluginLifecycle(make_plugin(version="1.2.3"), record).start()
    assert record.versions == {"com.x.demo": "1.2.3"}


async def test_a_restarted_hub_does_not_install_again(make_plugin, journal):
    record = MemoryInstallRecord()
    await PluginLifecycle(make_plugin(), record).start()

    # A new process: new plugin instance, new lifecycle, same durable record.
    journal.clear()
    restarted = PluginLifecycle(make_plugin(), record)
    await restarted.start()

    assert hooks_of(journal) == ["on_enable", "on_load"]
    assert "installing" not in states_of(restarted)


async def test_a_new_version_runs_on_upgrade_instead_of_on_install(make_plugin, journal):
    record = MemoryInstallRecord({"com.x.demo": "1.0.0"})
    await PluginLifecycle(make_plugin(version="1.1.0"), record).start()

    assert journal[0] == ("com.x.demo", "on_upgrade", "1.0.0", "1.1.0")
    assert hooks_of(journal) == ["on_upgrade", "on_enable", "on_load"]
    assert record.versions["com.x.demo"] == "1.1.0"


async def test_start_while_running_is_a_no_op(make_plugin, journal):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    await lifecycle.start()
    journal.clear()

    assert await lifecycle.start() is S.RUNNING
    assert journal == []


async def test_a_second_concurrent_start_is_refused(make_plugin):
    loading, release = asyncio.Event(), asyncio.Event()
    plugin = make_plugin()

    async def slow_load() -> None:
        loading.set()
        await release.wait()

    plugin.on_load = slow_load  # type: ignore[method-assign]
    lifecycle = PluginLifecycle(plugin, MemoryInstallRecord())
    first = asyncio.create_task(lifecycle.start())
    await loading.wait()
    assert lifecycle.state is S.LOADING

    with pytest.raises(LifecycleError, match="start already in progress"):
        await lifecycle.start()

    release.set()
    assert await first is S.RUNNING


async def test_stop_disables_and_a_second_stop_does_nothing(make_plugin, journal):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    await lifecycle.start()
    journal.clear()

    assert await lifecycle.stop() is S.DISABLED
    assert await lifecycle.stop() is S.DISABLED
    assert hooks_of(journal) == ["on_disable"]
    assert states_of(lifecycle)[-2:] == ["disabling", "disabled"]


async def test_stop_of_a_plugin_never_started_runs_no_hook(make_plugin, journal):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    assert await lifecycle.stop() is S.REGISTERED
    assert journal == []


async def test_a_stopped_plugin_starts_again_without_installing(make_plugin, journal):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    await lifecycle.start()
    await lifecycle.stop()
    journal.clear()

    await lifecycle.start()
    assert hooks_of(journal) == ["on_enable", "on_load"]
    assert states_of(lifecycle)[-5:] == ["disabled", "enabling", "enabled", "loading", "running"]


async def test_uninstall_stops_runs_on_uninstall_and_forgets_the_version(make_plugin, journal):
    record = MemoryInstallRecord()
    lifecycle = PluginLifecycle(make_plugin(), record)
    await lifecycle.start()
    journal.clear()

    assert await lifecycle.uninstall() is S.UNINSTALLED
    assert hooks_of(journal) == ["on_disable", "on_uninstall"]
    assert record.versions == {}
    assert await lifecycle.uninstall() is S.UNINSTALLED  # idempotent


async def test_uninstalling_a_plugin_that_was_never_installed_runs_no_hook(make_plugin, journal):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    assert await lifecycle.uninstall() is S.UNINSTALLED
    assert journal == []


async def test_an_uninstalled_plugin_can_be_installed_again(make_plugin, journal):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    await lifecycle.start()
    await lifecycle.uninstall()
    journal.clear()

    await lifecycle.start()
    assert hooks_of(journal) == ["on_install", "on_enable", "on_load"]


# --- failures -------------------------------------------------------------------


async def test_a_hook_that_raises_fails_the_plugin_and_says_why(make_plugin, journal):
    boom = RuntimeError("boom")
    lifecycle = PluginLifecycle(make_plugin(failures={"on_enable": boom}), MemoryInstallRecord())

    with pytest.raises(LifecycleError) as caught:
        await lifecycle.start()

    assert caught.value.__cause__ is boom
    assert str(caught.value) == "plugin com.x.demo: on_enable raised RuntimeError: boom"
    assert caught.value.details["hook"] == "on_enable"
    assert lifecycle.state is S.FAILED
    assert lifecycle.last_error == "on_enable raised RuntimeError: boom"
    assert lifecycle.history[-1].error == lifecycle.last_error
    assert "on_load" not in hooks_of(journal)


async def test_a_hook_that_hangs_times_out(make_plugin):
    lifecycle = PluginLifecycle(
        make_plugin(hangs={"on_load"}), MemoryInstallRecord(), hook_timeout_s=0.05
    )
    with pytest.raises(LifecycleError, match=r"on_load timed out after 0\.05s") as caught:
        await lifecycle.start()
    assert isinstance(caught.value.__cause__, TimeoutError)
    assert lifecycle.state is S.FAILED
    assert lifecycle.last_error == "on_load timed out after 0.05s"


async def test_a_hook_raising_timeout_error_itself_is_not_called_a_timeout(make_plugin):
    plugin = make_plugin(failures={"on_load": TimeoutError("upstream slow")})
    lifecycle = PluginLifecycle(plugin, MemoryInstallRecord(), hook_timeout_s=5)
    with pytest.raises(LifecycleError):
        await lifecycle.start()
    assert lifecycle.last_error == "on_load raised TimeoutError: upstream slow"


async def test_a_failed_install_is_retried_on_the_next_start(make_plugin, journal):
    plugin = make_plugin(failures={"on_install": OSError("disk full")})
    record = MemoryInstallRecord()
    lifecycle = PluginLifecycle(plugin, record)
    with pytest.raises(LifecycleError):
        await lifecycle.start()
    assert record.versions == {}

    del plugin.failures["on_install"]
    assert await lifecycle.start() is S.RUNNING
    assert hooks_of(journal) == ["on_install", "on_install", "on_enable", "on_load"]


async def test_a_plugin_that_failed_to_load_restarts_without_reinstalling(make_plugin, journal):
    plugin = make_plugin(failures={"on_load": ValueError("bad config")})
    lifecycle = PluginLifecycle(plugin, MemoryInstallRecord())
    with pytest.raises(LifecycleError):
        await lifecycle.start()

    del plugin.failures["on_load"]
    await lifecycle.start()
    # on_load never succeeded, so there is nothing for on_disable to release.
    assert hooks_of(journal) == ["on_install", "on_enable", "on_load", "on_enable", "on_load"]


async def test_a_plugin_that_failed_while_running_is_disabled_on_stop(make_plugin, journal):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    await lifecycle.start()
    lifecycle.mark_failed("health check timed out")
    assert lifecycle.state is S.FAILED
    assert lifecycle.last_error == "health check timed out"
    journal.clear()

    assert await lifecycle.stop() is S.DISABLED
    assert hooks_of(journal) == ["on_disable"]


async def test_restarting_a_plugin_that_failed_while_running_releases_it_first(
    make_plugin, journal
):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    await lifecycle.start()
    lifecycle.mark_failed("health check timed out")
    journal.clear()

    await lifecycle.start()
    assert hooks_of(journal) == ["on_disable", "on_enable", "on_load"]


async def test_a_failing_on_disable_fails_the_plugin_and_is_not_retried(make_plugin, journal):
    plugin = make_plugin(failures={"on_disable": RuntimeError("stuck")})
    lifecycle = PluginLifecycle(plugin, MemoryInstallRecord())
    await lifecycle.start()

    with pytest.raises(LifecycleError, match="on_disable raised RuntimeError: stuck"):
        await lifecycle.stop()
    assert lifecycle.state is S.FAILED
    assert await lifecycle.stop() is S.FAILED
    assert hooks_of(journal).count("on_disable") == 1


async def test_an_unreadable_install_record_raises_without_failing_the_plugin(make_plugin):
    class BrokenRecord(MemoryInstallRecord):
        async def get(self, plugin_id: str) -> str | None:
            raise ConnectionError("kv down")

    lifecycle = PluginLifecycle(make_plugin(), BrokenRecord())
    with pytest.raises(LifecycleError, match="cannot read the install record: ConnectionError"):
        await lifecycle.start()
    assert lifecycle.state is S.REGISTERED


# --- the transition table ---------------------------------------------------------


def test_an_illegal_transition_names_both_states():
    with pytest.raises(LifecycleError) as caught:
        check_transition("com.x.demo", S.REGISTERED, S.RUNNING)
    assert (
        str(caught.value) == "plugin com.x.demo: illegal lifecycle transition registered -> running"
    )
    assert caught.value.details == {"plugin": "com.x.demo", "from": "registered", "to": "running"}


async def test_marking_a_plugin_that_is_not_running_as_failed_is_illegal(make_plugin):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    with pytest.raises(LifecycleError, match="registered -> failed"):
        lifecycle.mark_failed("nope")
    assert lifecycle.state is S.REGISTERED
    assert lifecycle.last_error is None


async def test_a_running_plugin_cannot_be_blocked(make_plugin):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord())
    await lifecycle.start()
    with pytest.raises(LifecycleError, match="running -> blocked"):
        lifecycle.block("dependency com.x.other failed")


def test_every_state_has_an_entry_and_every_transient_state_can_fail():
    assert set(TRANSITIONS) == set(PluginState)
    for transient in (S.INSTALLING, S.ENABLING, S.LOADING, S.DISABLING, S.UNINSTALLING):
        assert S.FAILED in TRANSITIONS[transient]
    assert S.FAILED not in TRANSITIONS[S.REGISTERED]


# --- history and snapshot --------------------------------------------------------------


async def test_history_is_stamped_by_the_injected_clock(make_plugin, clock):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord(), clock=clock)
    clock.advance(5)
    await lifecycle.start()
    assert lifecycle.history[0].at == 1000.0
    assert lifecycle.history[-1].at == 1005.0
    assert lifecycle.since == 1005.0


async def test_history_keeps_only_the_last_fifty_transitions(make_plugin, clock):
    lifecycle = PluginLifecycle(make_plugin(), MemoryInstallRecord(), clock=clock)
    for _ in range(20):
        clock.advance(1)
        await lifecycle.start()
        await lifecycle.stop()

    assert len(lifecycle.history) == HISTORY_LIMIT == 50
    assert lifecycle.history[-1].state is S.DISABLED
    assert lifecycle.history[-1].at == clock.now
    assert lifecycle.history[0].state is not S.REGISTERED  # the oldest ones are gone


async def test_snapshot_is_json_friendly(make_plugin, clock):
    lifecycle = PluginLifecycle(
        make_plugin(version="2.0.0", failures={"on_load": KeyError("x")}),
        MemoryInstallRecord(),
        clock=clock,
    )
    with pytest.raises(LifecycleError):
        await lifecycle.start()

    snapshot = json.loads(json.dumps(lifecycle.snapshot()))
    assert snapshot == {
        "plugin": "com.x.demo",
        "state": "failed",
        "version": "2.0.0",
        "last_error": "on_load raised KeyError: 'x'",
        "since": 1000.0,
        "history_length": 7,
    }


# --- the whole graph -------------------------------------------------------------------


async def test_start_all_blocks_the_dependents_of_a_failed_plugin(make_plugin, journal):
    plugins = [
        make_plugin("com.x.storage", failures={"on_load": OSError("disk full")}),
        make_plugin("com.x.crm", requires={"com.x.storage": "^1.0.0"}),
        make_plugin("com.x.sales", requires={"com.x.crm": "*"}),
        make_plugin("com.x.audit", optional={"com.x.storage": "*"}),
        make_plugin("com.x.clock"),
    ]
    manifests = {p.manifest.id: p.manifest for p in plugins}
    record = MemoryInstallRecord()
    lifecycles = {p.manifest.id: PluginLifecycle(p, record) for p in plugins}

    states = await start_all(lifecycles, resolve_load_order(manifests), manifests)

    assert states == {
        "com.x.clock": S.RUNNING,
        "com.x.storage": S.FAILED,
        "com.x.audit": S.RUNNING,  # optional dependencies never block
        "com.x.crm": S.BLOCKED,
        "com.x.sales": S.BLOCKED,
    }
    assert lifecycles["com.x.crm"].last_error == (
        "dependency com.x.storage failed: on_load raised OSError: disk full"
    )
    assert lifecycles["com.x.sales"].last_error == (
        "dependency com.x.crm is blocked: "
        "dependency com.x.storage failed: on_load raised OSError: disk full"
    )
    assert hooks_of(journal, "com.x.crm") == []
    assert hooks_of(journal, "com.x.sales") == []


async def test_start_all_starts_blocked_plugins_once_their_dependency_recovers(make_plugin):
    storage = make_plugin("com.x.storage", failures={"on_load": OSError("disk full")})
    crm = make_plugin("com.x.crm", requires={"com.x.storage": "*"})
    manifests = {"com.x.storage": storage.manifest, "com.x.crm": crm.manifest}
    record = MemoryInstallRecord()
    lifecycles = {
        "com.x.storage": PluginLifecycle(storage, record),
        "com.x.crm": PluginLifecycle(crm, record),
    }
    order = resolve_load_order(manifests)
    await start_all(lifecycles, order, manifests)

    del storage.failures["on_load"]
    states = await start_all(lifecycles, order, manifests)
    assert states == {"com.x.storage": S.RUNNING, "com.x.crm": S.RUNNING}


async def test_start_all_blocks_a_plugin_whose_dependency_has_no_lifecycle(make_plugin, journal):
    crm = make_plugin("com.x.crm", requires={"com.x.storage": "*"})
    lifecycles = {"com.x.crm": PluginLifecycle(crm, MemoryInstallRecord())}

    states = await start_all(
        lifecycles, ["com.x.storage", "com.x.crm"], {"com.x.crm": crm.manifest}
    )

    assert states == {"com.x.crm": S.BLOCKED}
    assert lifecycles["com.x.crm"].last_error == "dependency com.x.storage is not loaded"
    assert journal == []


async def test_stop_all_stops_in_reverse_order_and_survives_a_failing_stop(make_plugin, journal):
    plugins = [
        make_plugin("com.x.storage"),
        make_plugin(
            "com.x.crm",
            requires={"com.x.storage": "*"},
            failures={"on_disable": RuntimeError("stuck")},
        ),
        make_plugin("com.x.sales", requires={"com.x.crm": "*"}),
    ]
    manifests = {p.manifest.id: p.manifest for p in plugins}
    record = MemoryInstallRecord()
    lifecycles = {p.manifest.id: PluginLifecycle(p, record) for p in plugins}
    order = resolve_load_order(manifests)
    await start_all(lifecycles, order, manifests)
    journal.clear()

    states = await stop_all(lifecycles, order)

    assert [(pid, hook) for pid, hook, *_ in journal] == [
        ("com.x.sales", "on_disable"),
        ("com.x.crm", "on_disable"),
        ("com.x.storage", "on_disable"),
    ]
    assert states == {
        "com.x.sales": S.DISABLED,
        "com.x.crm": S.FAILED,
        "com.x.storage": S.DISABLED,
    }
    assert lifecycles["com.x.crm"].last_error == "on_disable raised RuntimeError: stuck"
