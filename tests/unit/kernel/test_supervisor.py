"""The kernel's reconciliation loop: start order, health, restarts, recovery, shutdown.

The supervisor runs against :class:`FakeRuntime` (plugin hosts as small
in-memory objects that can be killed), :class:`MemoryCheckpoint` and the
manual :class:`~tests.unit.kernel.conftest.Clock`: backoff is tested by moving
the clock, never by sleeping. A "kernel restart" is a second Supervisor over the
same runtime and checkpoint, as the Ray actor builds after Ray restarts it.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from objectos.errors import UnknownPlugin
from objectos.kernel.supervisor import Supervisor
from objectos.protocol.manifest import (
    HubManifest,
    KernelSettings,
    PluginEntry,
    PluginManifest,
    RestartPolicy,
)

STORAGE = "com.x.storage"
AUTH = "com.x.auth"  # requires storage
CRM = "com.x.crm"  # requires auth

# --- test doubles ---------------------------------------------------------------------


class KernelCrash(BaseException):
    """The kernel process dies here (a BaseException, so no `except Exception` eats it)."""


@dataclass
class FakeHost:
    """One plugin host "process". ``pid`` tells a restarted host from the original."""

    plugin_id: str
    pid: int
    state: str = "registered"
    alive: bool = True
    ready: bool = True

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state, "ready": self.ready, "pid": self.pid}


@dataclass
class FakeRuntime:
    """A PluginRuntime whose hosts live in a dict, found by name like named actors.

    ``start_failures`` maps a plugin id to how many more starts fail (``math.inf``:
    forever); ``errors`` maps ``(method, plugin id)`` to an exception that method
    raises; ``hangs`` holds ``(method, plugin id)`` pairs that never return.
    ``on_start`` runs at the top of every start, before anything can fail.
    """

    hosts: dict[str, FakeHost] = field(default_factory=dict)  # live hosts by name
    calls: list[tuple[str, str]] = field(default_factory=list)
    start_failures: dict[str, float] = field(default_factory=dict)
    errors: dict[tuple[str, str], BaseException] = field(default_factory=dict)
    hangs: set[tuple[str, str]] = field(default_factory=set)
    on_start: Callable[[FakeHost], None] | None = None
    last_pid: int = 100

    # -- what tests use ---------------------------------------------------------------

    def kill(self, plugin_id: str) -> FakeHost:
        """The host process dies: its name is free and status() on it raises."""
        host = self.hosts.pop(plugin_id)
        host.alive = False
        return host

    def called(self, method: str) -> list[str]:
        """Plugin ids ``method`` was called for, in order."""
        return [pid for name, pid in self.calls if name == method]

    def pid_of(self, plugin_id: str) -> int:
        return self.hosts[plugin_id].pid

    # -- PluginRuntime ----------------------------------------------------------------

    async def _enter(self, method: str, plugin_id: str) -> None:
        self.calls.append((method, plugin_id))
        if (method, plugin_id) in self.hangs:
            await asyncio.Event().wait()
        error = self.errors.get((method, plugin_id))
        if error is not None:
            raise error

    async def lookup(self, plugin_id: str) -> FakeHost | None:
        await self._enter("lookup", plugin_id)
        return self.hosts.get(plugin_id)

    async def create(self, plugin_id: str, entry: PluginEntry) -> FakeHost:
        await self._enter("create", plugin_id)
        if plugin_id not in self.hosts:  # get_if_exists, like a named actor
            self.last_pid += 1
            self.hosts[plugin_id] = FakeHost(plugin_id, self.last_pid)
        return self.hosts[plugin_id]

    async def start(self, handle: FakeHost) -> dict[str, Any]:
        if self.on_start is not None:
            self.on_start(handle)
        await self._enter("start", handle.plugin_id)
        _check_alive(handle)
        if self.start_failures.get(handle.plugin_id, 0) > 0:
            self.start_failures[handle.plugin_id] -= 1
            handle.state = "failed"
            raise RuntimeError(f"on_load of {handle.plugin_id} exploded")
        handle.state = "running"
        return handle.snapshot()

    async def stop(self, handle: FakeHost) -> None:
        await self._enter("stop", handle.plugin_id)
        _check_alive(handle)
        handle.state = "disabled"

    async def status(self, handle: FakeHost, timeout_s: float) -> dict[str, Any]:
        await self._enter("status", handle.plugin_id)
        _check_alive(handle)
        return handle.snapshot()

    async def destroy(self, handle: FakeHost) -> None:
        await self._enter("destroy", handle.plugin_id)
        handle.alive = False
        if self.hosts.get(handle.plugin_id) is handle:
            del self.hosts[handle.plugin_id]


def _check_alive(handle: FakeHost) -> None:
    if not handle.alive:
        raise RuntimeError(f"ActorDiedError: the actor plugin:{handle.plugin_id} died")


@dataclass
class MemoryCheckpoint:
    """A Checkpoint in a dict, stored as JSON like the GCS checkpoint.

    ``crash_when(state)`` returning True kills the "kernel" right after that save.
    """

    state: dict[str, Any] | None = None
    fail_saves: bool = False
    crash_when: Callable[[dict[str, Any]], bool] | None = None

    async def load(self) -> dict[str, Any] | None:
        return None if self.state is None else json.loads(json.dumps(self.state))

    async def save(self, state: dict[str, Any]) -> None:
        if self.fail_saves:
            raise ConnectionError("GCS unavailable")
        self.state = json.loads(json.dumps(state))
        if self.crash_when is not None and self.crash_when(self.state):
            raise KernelCrash

    def status_of(self, plugin_id: str) -> str:
        assert self.state is not None
        status: str = self.state["plugins"][plugin_id]["status"]
        return status


# --- building hubs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    plugin_id: str
    requires: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    enabled: bool = True


CHAIN = (Spec(CRM, requires=(AUTH,)), Spec(AUTH, requires=(STORAGE,)), Spec(STORAGE))
POLICY = {"maxRestarts": 3, "windowS": 60.0, "backoffInitialS": 1.0, "backoffMaxS": 8.0}


def build_hub(
    specs: tuple[Spec, ...], policy: dict[str, float], kernel: dict[str, float]
) -> tuple[HubManifest, dict[str, PluginManifest]]:
    manifests = {
        s.plugin_id: PluginManifest(
            id=s.plugin_id,
            version="1.0.0",
            dependencies={d: "^1.0.0" for d in s.requires},
            optionalDependencies={d: "^1.0.0" for d in s.optional},
        )
        for s in specs
    }
    hub = HubManifest(
        id="com.x.hub",
        plugins={
            s.plugin_id: PluginEntry(module="tests.fake:Plugin", enabled=s.enabled) for s in specs
        },
        kernel=KernelSettings(restart=RestartPolicy(**policy), **kernel),
    )
    return hub, manifests


MakeSupervisor = Callable[..., Supervisor]


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def checkpoint() -> MemoryCheckpoint:
    return MemoryCheckpoint()


@pytest.fixture
def make_supervisor(runtime, checkpoint, clock) -> MakeSupervisor:
    """A supervisor over the shared runtime, checkpoint and clock; call again to
    "restart the kernel"."""

    def make(*specs: Spec, kernel: dict[str, float] | None = None, **policy: float) -> Supervisor:
        hub, manifests = build_hub(specs or CHAIN, {**POLICY, **policy}, kernel or {})
        return Supervisor(hub, manifests, runtime, checkpoint, clock=clock)

    return make


def statuses(supervisor: Supervisor) -> dict[str, str]:
    return {row["id"]: row["status"] for row in supervisor.plugins()}


def row_of(supervisor: Supervisor, plugin_id: str) -> dict[str, Any]:
    return next(row for row in supervisor.plugins() if row["id"] == plugin_id)


async def reconcile_until_running(supervisor: Supervisor, clock, passes: int = 20) -> None:
    """Reconcile, moving the clock a second at a time, until every plugin runs."""
    for _ in range(passes):
        await supervisor.reconcile()
        if supervisor.ready():
            return
        clock.advance(1.0)
    raise AssertionError(f"never ready: {statuses(supervisor)}")


# --- starting in dependency order ----------------------------------------------------------


async def test_plugins_start_in_dependency_order(make_supervisor, runtime):
    supervisor = make_supervisor()

    await supervisor.reconcile()

    assert runtime.called("start") == [STORAGE, AUTH, CRM]
    assert statuses(supervisor) == {STORAGE: "running", AUTH: "running", CRM: "running"}
    assert supervisor.ready()
    assert supervisor.settled()
    assert [row["id"] for row in supervisor.plugins()] == [STORAGE, AUTH, CRM]


async def test_a_plugin_waits_until_its_required_dependency_runs(make_supervisor, runtime, clock):
    runtime.start_failures[STORAGE] = 1
    supervisor = make_supervisor()

    await supervisor.reconcile()

    assert statuses(supervisor) == {STORAGE: "restarting", AUTH: "pending", CRM: "pending"}
    assert row_of(supervisor, AUTH)["reason"] == "waiting for dependencies"
    assert runtime.called("create") == [STORAGE]
    assert not supervisor.settled()

    clock.advance(1.0)
    await supervisor.reconcile()

    assert runtime.called("start") == [STORAGE, STORAGE, AUTH, CRM]
    assert supervisor.ready()


async def test_optional_dependencies_start_first_when_present(make_supervisor, runtime):
    # "com.x.zsearch" sorts after "com.x.crm": only the dependency puts it first.
    supervisor = make_supervisor(Spec(CRM, optional=("com.x.zsearch",)), Spec("com.x.zsearch"))

    await supervisor.reconcile()

    assert runtime.called("start") == ["com.x.zsearch", CRM]
    assert supervisor.ready()


async def test_an_optional_dependency_that_fails_does_not_block(make_supervisor, runtime):
    runtime.start_failures["com.x.search"] = math.inf
    supervisor = make_supervisor(
        Spec(CRM, optional=("com.x.search",)), Spec("com.x.search"), maxRestarts=0
    )

    await supervisor.reconcile()

    assert statuses(supervisor) == {"com.x.search": "failed", CRM: "running"}
    assert runtime.called("start") == ["com.x.search", CRM]


async def test_an_optional_dependency_that_restarts_does_not_hold_up_the_start(
    make_supervisor, runtime
):
    runtime.start_failures["com.x.search"] = math.inf
    supervisor = make_supervisor(Spec(CRM, optional=("com.x.search",)), Spec("com.x.search"))

    await supervisor.reconcile()

    assert statuses(supervisor) == {"com.x.search": "restarting", CRM: "running"}


async def test_a_plugin_waits_for_an_optional_dependency_still_on_its_way_up(
    make_supervisor, runtime, clock
):
    runtime.start_failures[STORAGE] = 1
    supervisor = make_supervisor(
        Spec(CRM, optional=("com.x.search",)),
        Spec("com.x.search", requires=(STORAGE,)),
        Spec(STORAGE),
    )

    await supervisor.reconcile()
    assert statuses(supervisor) == {
        STORAGE: "restarting",
        "com.x.search": "pending",
        CRM: "pending",
    }

    clock.advance(1.0)
    await supervisor.reconcile()
    assert runtime.called("start") == [STORAGE, STORAGE, "com.x.search", CRM]


async def test_a_missing_optional_dependency_is_ignored(make_supervisor, runtime):
    supervisor = make_supervisor(Spec(CRM, optional=("com.x.absent",)))

    await supervisor.reconcile()

    assert statuses(supervisor) == {CRM: "running"}
    assert "com.x.absent" not in runtime.called("lookup") + runtime.called("create")


# --- restarts with backoff inside a budget ----------------------------------------------------


async def test_a_dead_host_is_restarted_after_its_backoff_not_before(
    make_supervisor, runtime, clock
):
    supervisor = make_supervisor(backoffInitialS=2.0)
    await supervisor.reconcile()
    original = runtime.kill(STORAGE)

    await supervisor.reconcile()

    row = row_of(supervisor, STORAGE)
    assert row["status"] == "restarting"
    assert "health check failed" in row["reason"]
    assert "ActorDiedError" in row["reason"]
    assert row["restarts"] == 1
    assert runtime.called("destroy") == [STORAGE]  # the dead host is cleaned up

    clock.advance(1.99)
    await supervisor.reconcile()
    assert row_of(supervisor, STORAGE)["status"] == "restarting"
    assert runtime.called("start") == [STORAGE, AUTH, CRM]

    clock.advance(0.01)
    await supervisor.reconcile()
    assert row_of(supervisor, STORAGE)["status"] == "running"
    assert runtime.pid_of(STORAGE) != original.pid
    assert supervisor.handles[STORAGE] is runtime.hosts[STORAGE]


async def test_a_host_reporting_a_failed_lifecycle_is_replaced(make_supervisor, runtime, clock):
    supervisor = make_supervisor(Spec(STORAGE))
    await supervisor.reconcile()
    original = runtime.hosts[STORAGE]
    original.state = "failed"  # alive, but its plugin is no longer running

    await supervisor.reconcile()

    assert row_of(supervisor, STORAGE)["status"] == "restarting"
    assert "host reports failed" in row_of(supervisor, STORAGE)["reason"]
    assert not original.alive
    clock.advance(1.0)
    await supervisor.reconcile()
    assert runtime.pid_of(STORAGE) != original.pid


async def test_backoff_doubles_up_to_its_cap(make_supervisor, runtime, clock):
    runtime.start_failures[STORAGE] = math.inf
    supervisor = make_supervisor(
        Spec(STORAGE), maxRestarts=10, windowS=1000.0, backoffInitialS=1.0, backoffMaxS=8.0
    )
    await supervisor.reconcile()

    delays = []
    for _ in range(6):
        starts = len(runtime.called("start"))
        waited = 0.0
        while len(runtime.called("start")) == starts:
            clock.advance(0.5)
            waited += 0.5
            await supervisor.reconcile()
        delays.append(waited)

    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


async def test_backoff_also_grows_when_a_host_starts_and_then_keeps_dying(
    make_supervisor, runtime, clock
):
    # Crash loops where start() itself succeeds must slow down too.
    supervisor = make_supervisor(Spec(STORAGE), maxRestarts=10, windowS=1000.0)
    await supervisor.reconcile()

    delays = []
    for _ in range(4):
        runtime.kill(STORAGE)
        await supervisor.reconcile()
        waited = 0.0
        while row_of(supervisor, STORAGE)["status"] != "running":
            clock.advance(0.5)
            waited += 0.5
            await supervisor.reconcile()
        delays.append(waited)

    assert delays == [1.0, 2.0, 4.0, 8.0]


async def test_past_its_restart_budget_a_plugin_fails_for_good(make_supervisor, runtime, clock):
    runtime.start_failures[STORAGE] = math.inf
    supervisor = make_supervisor(Spec(STORAGE), maxRestarts=2, windowS=60.0)

    for _ in range(10):
        await supervisor.reconcile()
        clock.advance(1.0)

    row = row_of(supervisor, STORAGE)
    assert row["status"] == "failed"
    assert "start failed: RuntimeError: on_load of com.x.storage exploded" in row["reason"]
    assert "restart budget of 2 in 60s exhausted" in row["reason"]
    assert runtime.called("start") == [STORAGE] * 3  # the first try and two restarts
    assert row["restarts"] == 2
    assert supervisor.settled()
    assert not supervisor.ready()


async def test_a_zero_budget_fails_on_the_first_crash(make_supervisor, runtime):
    supervisor = make_supervisor(Spec(STORAGE), maxRestarts=0)
    await supervisor.reconcile()
    runtime.kill(STORAGE)

    await supervisor.reconcile()

    assert row_of(supervisor, STORAGE)["status"] == "failed"
    assert row_of(supervisor, STORAGE)["restarts"] == 0


async def test_restarts_outside_the_window_do_not_count(make_supervisor, runtime, clock):
    supervisor = make_supervisor(Spec(STORAGE), maxRestarts=2, windowS=10.0)
    await supervisor.reconcile()

    for _ in range(5):  # 5 crashes, but never more than one inside 10 s
        runtime.kill(STORAGE)
        await supervisor.reconcile()
        clock.advance(1.0)
        await supervisor.reconcile()
        assert row_of(supervisor, STORAGE)["status"] == "running"
        clock.advance(10.0)

    assert row_of(supervisor, STORAGE)["restarts"] == 5

    # Three crashes inside 10 s exhaust the same budget.
    for _ in range(2):
        runtime.kill(STORAGE)
        await supervisor.reconcile()
        clock.advance(3.0)  # past the backoff of 1 s, then 2 s
        await supervisor.reconcile()
        assert row_of(supervisor, STORAGE)["status"] == "running"
    runtime.kill(STORAGE)
    await supervisor.reconcile()
    assert row_of(supervisor, STORAGE)["status"] == "failed"


# --- dependencies that fail -----------------------------------------------------------------


async def test_dependents_of_a_plugin_that_cannot_start_are_blocked(
    make_supervisor, runtime, clock
):
    runtime.start_failures[STORAGE] = math.inf
    supervisor = make_supervisor(maxRestarts=1)

    for _ in range(5):
        await supervisor.reconcile()
        clock.advance(10.0)

    assert statuses(supervisor) == {STORAGE: "failed", AUTH: "blocked", CRM: "blocked"}
    assert STORAGE in row_of(supervisor, AUTH)["reason"]
    assert row_of(supervisor, AUTH)["reason"].startswith(f"dependency {STORAGE} failed")
    assert row_of(supervisor, CRM)["reason"].startswith(f"dependency {AUTH} blocked")
    assert set(runtime.called("create")) == {STORAGE}
    assert set(runtime.called("start")) == {STORAGE}
    assert supervisor.settled()


async def test_running_dependents_of_a_plugin_that_fails_for_good_are_stopped(
    make_supervisor, runtime
):
    supervisor = make_supervisor(maxRestarts=0)
    await supervisor.reconcile()
    auth_host = runtime.hosts[AUTH]
    runtime.kill(STORAGE)

    await supervisor.reconcile()

    assert statuses(supervisor) == {STORAGE: "failed", AUTH: "blocked", CRM: "blocked"}
    assert runtime.called("stop") == [AUTH, CRM]
    assert not auth_host.alive
    assert supervisor.handles == {}


async def test_a_restarting_dependency_does_not_disturb_running_dependents(
    make_supervisor, runtime, clock
):
    supervisor = make_supervisor()
    await supervisor.reconcile()
    pids = {pid: runtime.pid_of(pid) for pid in (AUTH, CRM)}
    runtime.kill(STORAGE)

    await supervisor.reconcile()
    assert statuses(supervisor) == {STORAGE: "restarting", AUTH: "running", CRM: "running"}
    clock.advance(1.0)
    await supervisor.reconcile()

    assert supervisor.ready()
    assert {pid: runtime.pid_of(pid) for pid in (AUTH, CRM)} == pids
    assert runtime.called("stop") == []
    assert runtime.called("start") == [STORAGE, AUTH, CRM, STORAGE]


# --- recovery after a kernel restart ---------------------------------------------------------


async def test_a_restarted_kernel_reattaches_to_live_hosts_without_duplicates(
    make_supervisor, runtime, clock
):
    first = make_supervisor()
    await first.reconcile()
    runtime.kill(STORAGE)  # one restart before the kernel dies
    await first.reconcile()
    clock.advance(1.0)
    await first.reconcile()
    assert first.ready()
    hosts = dict(runtime.hosts)
    runtime.calls.clear()

    second = make_supervisor()
    await second.recover()
    await second.reconcile()

    assert statuses(second) == {STORAGE: "running", AUTH: "running", CRM: "running"}
    assert runtime.called("create") == []
    assert runtime.called("start") == []
    assert runtime.hosts == hosts
    assert second.handles == hosts
    assert row_of(second, STORAGE)["restarts"] == 1


async def test_the_restart_budget_survives_a_kernel_restart(make_supervisor, runtime, clock):
    first = make_supervisor(Spec(STORAGE), maxRestarts=1)
    await first.reconcile()
    runtime.kill(STORAGE)
    await first.reconcile()
    clock.advance(1.0)
    await first.reconcile()
    assert first.ready()

    second = make_supervisor(Spec(STORAGE), maxRestarts=1)
    await second.recover()
    runtime.kill(STORAGE)
    await second.reconcile()

    assert row_of(second, STORAGE)["status"] == "failed"
    assert "restart budget of 1" in row_of(second, STORAGE)["reason"]


async def test_a_pending_restart_still_waits_out_its_backoff_after_a_kernel_restart(
    make_supervisor, runtime, clock
):
    first = make_supervisor(Spec(STORAGE), backoffInitialS=5.0)
    await first.reconcile()
    runtime.kill(STORAGE)
    await first.reconcile()
    assert row_of(first, STORAGE)["status"] == "restarting"

    second = make_supervisor(Spec(STORAGE), backoffInitialS=5.0)
    await second.recover()
    await second.reconcile()
    assert row_of(second, STORAGE)["status"] == "restarting"
    assert runtime.called("start") == [STORAGE]

    clock.advance(5.0)
    await second.reconcile()
    assert row_of(second, STORAGE)["status"] == "running"


async def test_a_checkpoint_from_a_clock_far_ahead_cannot_postpone_a_restart(
    make_supervisor, runtime, checkpoint, clock
):
    first = make_supervisor(Spec(STORAGE))
    await first.reconcile()
    runtime.kill(STORAGE)
    await first.reconcile()
    assert checkpoint.state is not None
    checkpoint.state["plugins"][STORAGE]["nextAttemptAt"] = clock() + 3600.0

    second = make_supervisor(Spec(STORAGE))
    await second.recover()
    clock.advance(POLICY["backoffMaxS"])
    await second.reconcile()

    assert row_of(second, STORAGE)["status"] == "running"


async def test_a_host_that_died_while_the_kernel_was_down_is_restarted(
    make_supervisor, runtime, clock
):
    first = make_supervisor()
    await first.reconcile()
    storage_pid, dead_pid = runtime.pid_of(STORAGE), runtime.pid_of(AUTH)
    runtime.kill(AUTH)
    runtime.calls.clear()

    second = make_supervisor()
    await second.recover()
    await reconcile_until_running(second, clock)

    assert runtime.called("create") == [AUTH]
    assert runtime.called("start") == [AUTH]
    assert runtime.pid_of(AUTH) != dead_pid
    assert runtime.pid_of(STORAGE) == storage_pid
    assert row_of(second, AUTH)["restarts"] == 1  # a crash is a crash, kernel up or not


async def test_a_failed_plugin_stays_failed_across_a_kernel_restart(
    make_supervisor, runtime, clock
):
    runtime.start_failures[STORAGE] = math.inf
    first = make_supervisor(maxRestarts=0)
    await first.reconcile()
    assert statuses(first)[STORAGE] == "failed"
    runtime.start_failures[STORAGE] = 0

    second = make_supervisor(maxRestarts=0)
    await second.recover()
    await second.reconcile()

    assert statuses(second) == {STORAGE: "failed", AUTH: "blocked", CRM: "blocked"}
    assert runtime.called("start") == [STORAGE]


async def test_recover_survives_an_unreadable_checkpoint_and_a_failing_lookup(
    make_supervisor, runtime, checkpoint
):
    first = make_supervisor()
    await first.reconcile()
    checkpoint.state = {"plugins": {STORAGE: {"restartsTotal": "many"}}}
    runtime.errors[("lookup", AUTH)] = TimeoutError("GCS slow")
    runtime.calls.clear()

    second = make_supervisor()
    await second.recover()
    await second.reconcile()

    # Storage and crm re-attached; auth was not found but its name was: no duplicate host.
    assert second.ready()
    assert runtime.called("create") == [AUTH]
    assert len(runtime.hosts) == 3


async def test_recover_stops_a_live_host_of_a_plugin_now_disabled(make_supervisor, runtime):
    first = make_supervisor(Spec(STORAGE), Spec(CRM))
    await first.reconcile()
    crm_host = runtime.hosts[CRM]

    second = make_supervisor(Spec(STORAGE), Spec(CRM, enabled=False))
    await second.recover()
    await second.reconcile()

    assert statuses(second) == {STORAGE: "running", CRM: "stopped"}
    assert runtime.called("stop") == [CRM]
    assert not crm_host.alive


# --- operator actions -------------------------------------------------------------------


async def test_restart_plugin_gives_a_fresh_host_and_budget_and_unblocks_dependents(
    make_supervisor, runtime, clock
):
    runtime.start_failures[STORAGE] = 1
    supervisor = make_supervisor(maxRestarts=0)
    await supervisor.reconcile()
    assert statuses(supervisor) == {STORAGE: "failed", AUTH: "blocked", CRM: "blocked"}

    row = await supervisor.restart_plugin(STORAGE)

    assert row["status"] == "running"
    assert row["id"] == STORAGE
    assert statuses(supervisor) == {STORAGE: "running", AUTH: "running", CRM: "running"}
    assert row_of(supervisor, AUTH)["reason"] is None


async def test_restart_plugin_replaces_a_running_host(make_supervisor, runtime):
    supervisor = make_supervisor()
    await supervisor.reconcile()
    original = runtime.hosts[AUTH]
    runtime.calls.clear()

    row = await supervisor.restart_plugin(AUTH)

    assert row["status"] == "running"
    assert runtime.called("stop") == [AUTH]
    assert runtime.called("destroy") == [AUTH]
    assert not original.alive
    assert runtime.pid_of(AUTH) != original.pid
    assert supervisor.handles[AUTH] is runtime.hosts[AUTH]
    assert runtime.called("start") == [AUTH]  # dependents kept running
    assert row["restarts"] == 1


async def test_restart_plugin_resets_the_budget(make_supervisor, runtime, clock):
    supervisor = make_supervisor(Spec(STORAGE), maxRestarts=1)
    await supervisor.reconcile()
    runtime.kill(STORAGE)
    await supervisor.reconcile()
    clock.advance(1.0)
    await supervisor.reconcile()  # the one restart of the budget is used up

    await supervisor.restart_plugin(STORAGE)
    runtime.kill(STORAGE)
    await supervisor.reconcile()

    assert row_of(supervisor, STORAGE)["status"] == "restarting"


async def test_restart_plugin_checkpoints_its_intent_before_stopping(
    make_supervisor, runtime, checkpoint
):
    supervisor = make_supervisor(Spec(STORAGE))
    await supervisor.reconcile()
    seen: list[str] = []
    original_stop = runtime.stop

    async def stop(handle: FakeHost) -> None:
        seen.append(checkpoint.status_of(STORAGE))
        await original_stop(handle)

    runtime.stop = stop
    await supervisor.restart_plugin(STORAGE)

    assert seen == ["pending"]


async def test_unknown_plugins_are_reported(make_supervisor):
    supervisor = make_supervisor()

    with pytest.raises(UnknownPlugin) as caught:
        await supervisor.restart_plugin("com.x.nope")

    assert caught.value.code == "unknown_plugin"
    assert caught.value.details == {"plugin": "com.x.nope"}


async def test_restarting_a_disabled_plugin_leaves_it_stopped(make_supervisor, runtime):
    supervisor = make_supervisor(Spec(STORAGE), Spec(CRM, enabled=False))
    await supervisor.reconcile()

    row = await supervisor.restart_plugin(CRM)

    assert row["status"] == "stopped"
    assert row["reason"] == "disabled in the manifest"
    assert CRM not in runtime.called("create")


# --- shutdown ----------------------------------------------------------------------------


async def test_shutdown_stops_in_reverse_order_past_a_failing_stop(
    make_supervisor, runtime, checkpoint
):
    supervisor = make_supervisor()
    await supervisor.reconcile()
    hosts = dict(runtime.hosts)
    runtime.errors[("stop", AUTH)] = RuntimeError("on_disable exploded")

    errors = await supervisor.shutdown()

    assert runtime.called("stop") == [CRM, AUTH, STORAGE]
    assert errors == [f"{AUTH}: RuntimeError: on_disable exploded"]
    assert statuses(supervisor) == {STORAGE: "stopped", AUTH: "stopped", CRM: "stopped"}
    assert not any(host.alive for host in hosts.values())
    assert checkpoint.state is not None and checkpoint.state["shuttingDown"] is True

    runtime.calls.clear()
    await supervisor.reconcile()
    assert runtime.calls == []
    assert await supervisor.shutdown() == []  # idempotent


async def test_a_kernel_that_died_while_shutting_down_starts_nothing(
    make_supervisor, runtime, checkpoint, clock
):
    first = make_supervisor()
    await first.reconcile()
    checkpoint.crash_when = lambda state: state["shuttingDown"]
    with pytest.raises(KernelCrash):
        await first.shutdown()  # dies right after checkpointing its intent
    checkpoint.crash_when = None
    assert runtime.called("stop") == []
    runtime.kill(STORAGE)  # and a host dies while the kernel is down
    runtime.calls.clear()

    second = make_supervisor()
    await second.recover()
    for _ in range(3):
        await second.reconcile()
        clock.advance(10.0)
    assert runtime.called("create") == []
    assert runtime.called("start") == []
    assert row_of(second, STORAGE)["restarts"] == 0  # dying during shutdown is no crash

    await second.shutdown()
    assert runtime.called("stop") == [CRM, AUTH]
    assert runtime.hosts == {}


async def test_a_kernel_restarted_after_shutdown_still_reports_stopped_plugins(
    make_supervisor, runtime
):
    first = make_supervisor()
    await first.reconcile()
    await first.shutdown()
    runtime.calls.clear()

    second = make_supervisor()
    await second.recover()
    await second.reconcile()

    assert statuses(second) == {STORAGE: "stopped", AUTH: "stopped", CRM: "stopped"}
    assert runtime.called("create") == []


async def test_restart_plugin_during_shutdown_starts_nothing(make_supervisor, runtime):
    supervisor = make_supervisor()
    await supervisor.reconcile()
    await supervisor.shutdown()
    runtime.calls.clear()

    row = await supervisor.restart_plugin(AUTH)

    assert row["status"] == "stopped"
    assert runtime.calls == []


# --- intent first, disabled plugins, isolation of failures --------------------------------------


async def test_the_checkpoint_says_starting_before_start_is_attempted(
    make_supervisor, runtime, checkpoint
):
    seen: list[tuple[str, str]] = []
    runtime.on_start = lambda host: seen.append(
        (host.plugin_id, checkpoint.status_of(host.plugin_id))
    )
    supervisor = make_supervisor()

    await supervisor.reconcile()

    assert seen == [(STORAGE, "starting"), (AUTH, "starting"), (CRM, "starting")]
    assert checkpoint.status_of(CRM) == "running"


async def test_disabled_plugins_are_reported_stopped_and_never_started(make_supervisor, runtime):
    supervisor = make_supervisor(
        Spec(STORAGE), Spec(CRM, optional=("com.x.search",)), Spec("com.x.search", enabled=False)
    )

    await supervisor.reconcile()

    assert [row["id"] for row in supervisor.plugins()] == [CRM, STORAGE, "com.x.search"]
    search = row_of(supervisor, "com.x.search")
    assert search["status"] == "stopped"
    assert search["reason"] == "disabled in the manifest"
    assert search["ready"] is False
    assert "com.x.search" not in runtime.called("create") + runtime.called("start")
    assert supervisor.ready()  # only enabled plugins count


@pytest.mark.parametrize("method", ["create", "start", "status"])
async def test_a_runtime_error_for_one_plugin_spares_the_others(
    make_supervisor, runtime, clock, method
):
    supervisor = make_supervisor(Spec("com.x.a"), Spec("com.x.b"), Spec("com.x.c"))
    if method == "status":
        await supervisor.reconcile()
    runtime.errors[(method, "com.x.b")] = KeyError("surprise")

    await supervisor.reconcile()

    assert statuses(supervisor) == {
        "com.x.a": "running",
        "com.x.b": "restarting",
        "com.x.c": "running",
    }
    assert "KeyError" in row_of(supervisor, "com.x.b")["reason"]


async def test_failing_destroy_and_checkpoint_do_not_stop_the_loop(
    make_supervisor, runtime, checkpoint, clock
):
    supervisor = make_supervisor(Spec("com.x.a"), Spec("com.x.b"))
    await supervisor.reconcile()
    checkpoint.fail_saves = True
    runtime.errors[("destroy", "com.x.a")] = RuntimeError("already gone")
    runtime.kill("com.x.a")

    await supervisor.reconcile()
    clock.advance(1.0)
    await supervisor.reconcile()

    assert statuses(supervisor) == {"com.x.a": "running", "com.x.b": "running"}


async def test_a_start_that_never_returns_times_out_and_is_retried(make_supervisor, runtime, clock):
    runtime.hangs.add(("start", STORAGE))
    supervisor = make_supervisor(
        Spec(STORAGE),
        Spec("com.x.other"),
        kernel={"hookTimeoutS": 0.01, "healthCheckTimeoutS": 0.01},
    )

    await asyncio.wait_for(supervisor.reconcile(), timeout=5.0)

    assert statuses(supervisor) == {STORAGE: "restarting", "com.x.other": "running"}
    assert "TimeoutError" in row_of(supervisor, STORAGE)["reason"]
    runtime.hangs.clear()
    clock.advance(1.0)
    await supervisor.reconcile()
    assert supervisor.ready()


async def test_a_stop_that_never_returns_does_not_hang_shutdown(make_supervisor, runtime):
    supervisor = make_supervisor(kernel={"hookTimeoutS": 0.01, "healthCheckTimeoutS": 0.01})
    await supervisor.reconcile()
    runtime.hangs.add(("stop", AUTH))

    errors = await asyncio.wait_for(supervisor.shutdown(), timeout=5.0)

    assert runtime.called("stop") == [CRM, AUTH, STORAGE]
    assert len(errors) == 1 and errors[0].startswith(f"{AUTH}: TimeoutError")
    assert runtime.hosts == {}
