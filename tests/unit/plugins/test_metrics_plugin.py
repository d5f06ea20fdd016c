"""Hub metrics: per-actor recording, plain-data families, one merged exposition."""

from __future__ import annotations

import asyncio
import json
import math
import pickle
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from objectos.errors import RecordNotFound
from objectos.plugins.metrics import (
    Family,
    KernelMetrics,
    MetricsPlugin,
    PluginMetrics,
    collect_families,
    merge_families,
    render_exposition,
)
from objectos.testing import LocalServiceDirectory, load_plugin

Series = tuple[str, tuple[tuple[str, str], ...]]


def flatten(families: list[Family]) -> dict[Series, float]:
    """{(sample name, sorted labels): value} of plain families."""
    return {
        (name, tuple(sorted(labels.items()))): float(value)
        for family in families
        for name, labels, value in family["samples"]
    }


def parse(exposition: str) -> dict[Series, float]:
    """The same shape, read back by prometheus_client's own parser."""
    parsed: dict[Series, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in parsed, f"duplicate series {key}"
            parsed[key] = sample.value
    return parsed


def same_values(a: dict[Series, float], b: dict[Series, float]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k]  # NaN != NaN
        for k in a
    )


async def failing() -> None:
    raise RecordNotFound("no such record")


async def two_hosts() -> tuple[PluginMetrics, PluginMetrics]:
    """Two plugin hosts that handled calls, with the same label values on purpose."""
    first, second = PluginMetrics("com.example.hello"), PluginMetrics("com.example.hello")
    second.actor = "plugin:com.example.hello#2"  # e.g. a second generation after a restart
    for metrics in (first, second):
        with metrics.time_service_call("hello", "greet"):
            await asyncio.sleep(0)
        with pytest.raises(RecordNotFound), metrics.time_service_call("hello", "greet"):
            await failing()
        with metrics.time_hook_call("data.afterInsert.*"):
            pass
    return first, second


async def test_two_sources_merge_into_one_exposition_that_keeps_every_sample() -> None:
    first, second = await two_hosts()
    kernel = KernelMetrics()
    kernel.set_plugin_state("com.example.hello", "running", ["starting", "running", "failed"])
    kernel.record_restart("com.example.hello")
    kernel.set_actor_count("plugin", 2)
    sources = [kernel.families(), first.families(), second.families()]

    merged = merge_families(sources)
    text = render_exposition(merged).decode("utf-8")

    assert same_values(parse(text), flatten(merged))
    assert len(flatten(merged)) == sum(len(flatten(source)) for source in sources)
    # One HELP/TYPE per family: Prometheus refuses a family declared twice.
    type_lines = [line for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(type_lines) == len(set(type_lines)) == len(merged)
    assert "# TYPE objectos_service_calls_total counter" in type_lines


async def test_samples_of_each_actor_are_told_apart_by_the_actor_label() -> None:
    first, second = await two_hosts()
    merged = merge_families([first.families(), second.families()])
    calls = next(f for f in merged if f["name"] == "objectos_service_calls")
    assert sorted(labels["actor"] for _, labels, _ in calls["samples"]) == [
        "plugin:com.example.hello",
        "plugin:com.example.hello",
        "plugin:com.example.hello#2",
        "plugin:com.example.hello#2",
    ]


async def test_unlabelled_identical_series_from_two_sources_are_refused() -> None:
    first, second = await two_hosts()
    unlabelled = [collect_families(first.registry), collect_families(second.registry)]
    with pytest.raises(ValueError, match="two sources"):
        merge_families(unlabelled)


def test_a_family_with_two_types_is_refused() -> None:
    as_gauge = [{"name": "x", "type": "gauge", "help": "", "samples": [["x", {"a": "1"}, 1.0]]}]
    as_counter = [
        {"name": "x", "type": "counter", "help": "", "samples": [["x_total", {"a": "2"}, 1.0]]}
    ]
    with pytest.raises(ValueError, match="gauge"):
        merge_families([as_gauge, as_counter])


async def test_families_are_plain_data_that_survive_json_and_pickle() -> None:
    first, _ = await two_hosts()
    families = first.families()
    assert json.loads(json.dumps(families)) == families
    assert pickle.loads(pickle.dumps(families)) == families


def test_awkward_label_values_and_non_finite_values_survive_the_round_trip() -> None:
    registry = CollectorRegistry()
    gauge = Gauge(
        "objectos_test_values", 'help with "quotes"\nand a newline', ["name"], registry=registry
    )
    gauge.labels('quote " backslash \\ newline \n').set(1.5)
    gauge.labels("ünïcødé ✓").set(math.nan)
    gauge.labels("up").set(math.inf)
    gauge.labels("down").set(-math.inf)
    # Strict JSON: non-finite numbers travel as the strings Prometheus uses.
    families = json.loads(json.dumps(collect_families(registry, actor="a"), allow_nan=False))

    text = render_exposition(merge_families([families])).decode("utf-8")

    assert same_values(parse(text), flatten(families))
    assert parse(text)[("objectos_test_values", (("actor", "a"), ("name", "up")))] == math.inf


async def test_service_calls_are_counted_by_outcome_and_errors_by_code() -> None:
    metrics = PluginMetrics("com.example.hello")
    with metrics.time_service_call("hello", "greet"):
        pass
    with pytest.raises(RecordNotFound), metrics.time_service_call("hello", "greet"):
        await failing()
    with pytest.raises(TimeoutError), metrics.time_service_call("hello", "greet"):
        raise TimeoutError
    with pytest.raises(asyncio.CancelledError), metrics.time_service_call("hello", "greet"):
        raise asyncio.CancelledError

    values = flatten(metrics.families())
    actor = ("actor", "plugin:com.example.hello")
    plugin = ("plugin", "com.example.hello")

    def calls(outcome: str) -> float:
        labels = (actor, ("method", "greet"), ("outcome", outcome), plugin, ("service", "hello"))
        return values[("objectos_service_calls_total", labels)]

    assert [calls(o) for o in ("ok", "error", "timeout", "cancelled")] == [1, 1, 1, 1]
    errors = {
        dict(labels)["code"]: value
        for (name, labels), value in values.items()
        if name == "objectos_errors_total"
    }
    assert errors == {"record_not_found": 1, "timeout": 1}  # a cancellation is no error
    latency_count = (actor, ("method", "greet"), plugin, ("service", "hello"))
    assert values[("objectos_service_call_duration_seconds_count", latency_count)] == 4


def test_created_samples_and_empty_families_are_not_exported() -> None:
    families = PluginMetrics("com.example.hello").families()
    assert families == []
    metrics = PluginMetrics("com.example.hello")
    metrics.observe_service_call("hello", "greet", "ok", 0.002)
    names = {name for family in metrics.families() for name, _, _ in family["samples"]}
    assert names and not any(name.endswith("_created") for name in names)


def test_plugin_state_is_one_for_exactly_the_current_state() -> None:
    kernel = KernelMetrics()
    kernel.set_plugin_state("com.a", "starting", ["starting", "running", "failed"])
    kernel.set_plugin_state("com.a", "running")
    kernel.set_plugin_state("com.b", "failed")

    states = {
        (dict(labels)["plugin"], dict(labels)["state"]): value
        for (name, labels), value in flatten(kernel.families()).items()
        if name == "objectos_plugin_state"
    }
    assert states == {
        ("com.a", "starting"): 0,
        ("com.a", "running"): 1,
        ("com.a", "failed"): 0,
        ("com.b", "failed"): 1,
    }


def test_kernel_observes_supervisor_snapshots_without_double_counting_restarts() -> None:
    kernel = KernelMetrics()

    def restarts() -> dict[str, float]:
        return {
            dict(labels)["plugin"]: value
            for (name, labels), value in flatten(kernel.families()).items()
            if name == "objectos_plugin_restarts_total"
        }

    kernel.observe([{"id": "com.a", "status": "running", "restarts": 2}])
    kernel.observe([{"id": "com.a", "status": "running", "restarts": 2}])
    assert restarts() == {"com.a": 2}
    kernel.observe([{"id": "com.a", "status": "restarting", "restarts": 3}])
    assert restarts() == {"com.a": 3}
    kernel.observe([{"id": "com.a", "status": "running", "restarts": 0}])  # counts anew
    kernel.observe([{"id": "com.a", "status": "running", "restarts": 1}])
    assert restarts() == {"com.a": 4}

    kernel.observe([])  # com.a left the manifest
    assert not any(name == "objectos_plugin_state" for (name, _) in flatten(kernel.families()))


class FakeKernel:
    """The built-in ``kernel`` service, answering with prepared family lists."""

    def __init__(self, sources: list[list[Family]]) -> None:
        self.sources = sources

    async def collect_metrics(self) -> list[list[Family]]:
        return self.sources


async def test_metrics_service_renders_what_the_kernel_gathers_plus_extras() -> None:
    first, second = await two_hosts()
    kernel = KernelMetrics()
    kernel.set_actor_count("plugin", 2)
    sources = [kernel.families(), first.families()]
    replica = collect_families(second.registry, extra_labels={"replica": "http-1"})
    services = LocalServiceDirectory(services={"kernel": FakeKernel(sources)})
    await load_plugin(MetricsPlugin, {}, services)

    text = await services.for_caller("com.example.dashboard").get("metrics").exposition([replica])

    assert same_values(parse(text), flatten(merge_families([*sources, replica])))
    assert 'replica="http-1"' in text


async def test_metrics_service_reports_what_it_cannot_merge() -> None:
    first, _ = await two_hosts()
    unlabelled = collect_families(first.registry)
    services = LocalServiceDirectory(services={"kernel": FakeKernel([unlabelled, unlabelled])})
    await load_plugin(MetricsPlugin, {}, services)
    with pytest.raises(ValueError, match="two sources"):
        await services.get("metrics").exposition()


def test_render_accepts_tuples_and_integer_values() -> None:
    family: dict[str, Any] = {
        "name": "objectos_actors",
        "type": "gauge",
        "help": "h",
        "samples": [("objectos_actors", {"kind": "room"}, 3)],
    }
    assert parse(render_exposition([family]).decode()) == {
        ("objectos_actors", (("kind", "room"),)): 3.0
    }
