"""How an HTTP replica hands after-hooks to plugin hosts (actors.hooks.KernelDataHooks).

The hosts here are in-process fakes with the shape of a Ray actor handle
(``host.run_hooks_batch.remote(events)`` returns an awaitable); the hook table is
a real ServiceRegistry handed in, so nothing calls the kernel or starts Ray.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from actors.hooks import KernelDataHooks
from objectos.kernel.registry import ServiceRegistry

Events = list[tuple[str, dict[str, Any]]]


class FakeHost:
    """A plugin host: records every call; ``handler`` decides how a call behaves."""

    def __init__(self, handler: Callable[[Events], Awaitable[int]] | None = None) -> None:
        self.calls: list[Events] = []
        self.active = 0
        self.most_active = 0
        self._handler = handler
        self.run_hooks_batch = self  # host.run_hooks_batch.remote(...)

    def remote(self, events: Events) -> asyncio.Task[int]:
        self.calls.append(list(events))
        return asyncio.get_running_loop().create_task(self._run(events))

    async def _run(self, events: Events) -> int:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self._handler is not None:
                return await self._handler(events)
            await asyncio.sleep(0)
            return 0
        finally:
            self.active -= 1

    @property
    def seen(self) -> list[int]:
        return [payload["i"] for events in self.calls for _event, payload in events]


def hooks_for(
    hosts: dict[str, FakeHost], hooked: dict[str, list[str]], **options: Any
) -> KernelDataHooks:
    registry = ServiceRegistry()
    for plugin_id, events in hooked.items():
        for event in events:
            registry.register_hook(event, plugin_id)
    return KernelDataHooks(
        registry=registry,
        hosts=hosts.get,
        cancel=lambda call: call.cancel(),
        **options,
    )


async def test_two_plugins_on_one_event_get_one_call_each_per_batch() -> None:
    hosts = {"a": FakeHost(), "b": FakeHost()}
    hooks = hooks_for(
        hosts, {"a": ["data.afterInsert.*"], "b": ["data.afterInsert.*"]}, max_call=100
    )

    await hooks._deliver([("data.afterInsert.account", {"i": i}) for i in range(100)])

    assert [len(c) for c in hosts["a"].calls] == [100]
    assert [len(c) for c in hosts["b"].calls] == [100]
    assert hosts["a"].seen == hosts["b"].seen == list(range(100))
    assert hooks.host_calls == 2


async def test_a_batch_is_cut_into_calls_of_max_call_events_in_order() -> None:
    hosts = {"a": FakeHost(), "b": FakeHost()}
    hooks = hooks_for(hosts, {"a": ["data.afterInsert.*"], "b": ["data.afterInsert.*"]})

    await hooks._deliver([("data.afterInsert.account", {"i": i}) for i in range(120)])

    assert hooks.max_call == 50
    for host in hosts.values():
        assert [len(c) for c in host.calls] == [50, 50, 20]
        assert host.seen == list(range(120))
        assert host.most_active == 1


async def test_each_plugin_gets_only_its_events_in_queue_order() -> None:
    hosts = {"a": FakeHost(), "b": FakeHost()}
    hooks = hooks_for(
        hosts,
        {"a": ["data.afterInsert.*", "data.afterDelete.*"], "b": ["data.afterUpdate.case"]},
    )
    kinds = ["afterInsert", "afterUpdate", "afterDelete"]
    for i in range(30):
        await hooks.run_after(f"data.{kinds[i % 3]}.case", {"i": i})
    await hooks.run_after("data.afterUpdate.account", {"i": 99})  # hooked by nobody
    await hooks.flush()
    await hooks.close()

    assert hosts["a"].seen == [i for i in range(30) if i % 3 != 1]
    assert hosts["b"].seen == [i for i in range(30) if i % 3 == 1]
    assert hooks.host_calls == len(hosts["a"].calls) + len(hosts["b"].calls) <= 4


async def test_a_call_that_times_out_is_cancelled_and_waited_for_before_the_next() -> None:
    stuck = asyncio.Event()  # never set: the first call hangs until cancelled
    finished: list[int] = []

    async def slow_first_call(events: Events) -> int:
        if events[0][1]["i"] == 0:
            try:
                await stuck.wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # cleaning up after the cancel, well past the timeout
                finished.append(0)
                raise
        finished.append(events[0][1]["i"])
        return 0

    hosts = {"a": FakeHost(slow_first_call)}
    hooks = hooks_for(hosts, {"a": ["data.afterInsert.*"]}, max_call=2, timeout_s=0.05)

    await hooks._deliver([("data.afterInsert.case", {"i": i}) for i in range(6)])

    assert hosts["a"].seen == list(range(6))
    assert finished == [0, 2, 4]  # the cancelled call ended before the next one started
    assert hosts["a"].most_active == 1


async def test_plugins_are_called_concurrently_and_a_stopped_host_is_skipped() -> None:
    both_called = asyncio.Event()
    hosts: dict[str, FakeHost] = {}

    async def wait_for_the_other(events: Events) -> int:
        if len(hosts["a"].calls) and len(hosts["b"].calls):
            both_called.set()
        await asyncio.wait_for(both_called.wait(), 5)
        return 0

    hosts.update(a=FakeHost(wait_for_the_other), b=FakeHost(wait_for_the_other))
    hooks = hooks_for(
        hosts,
        {"a": ["data.afterInsert.*"], "b": ["data.afterInsert.*"], "gone": ["data.afterInsert.*"]},
    )

    await hooks._deliver([("data.afterInsert.case", {"i": i}) for i in range(3)])

    assert both_called.is_set()
    assert hosts["a"].seen == hosts["b"].seen == [0, 1, 2]
    assert hooks.host_calls == 2


async def test_a_failing_call_is_logged_and_the_next_chunk_still_goes(caplog: Any) -> None:
    async def fail_on_first(events: Events) -> int:
        if events[0][1]["i"] == 0:
            raise RuntimeError("plugin blew up")
        return 0

    hosts = {"a": FakeHost(fail_on_first)}
    hooks = hooks_for(hosts, {"a": ["data.afterInsert.*"]}, max_call=1)

    await hooks._deliver([("data.afterInsert.case", {"i": i}) for i in range(3)])

    assert hosts["a"].seen == [0, 1, 2]
    assert "plugin blew up" in caplog.text
