"""Metrics of the whole hub, and the core plugin that serves them (``com.objectos.metrics``).

The model, from the bottom up:

1. **One registry per actor.** Each plugin host (and the kernel) creates a
   :class:`PluginMetrics` on its *own* ``prometheus_client.CollectorRegistry``
   — never the process-global one, since Ray may run several actors' code in one
   worker process and each actor must report only its own numbers.
   The kernel uses :class:`KernelMetrics`, the same families on its own registry.
2. **Families travel as plain data.** :func:`collect_families` turns a registry
   into a list of JSON-friendly dicts (``name``, ``type``, ``help``, ``samples``
   as ``[sample name, labels, value]``), which pickle across actor calls and
   serialize to JSON unchanged. Non-finite values are written as the strings
   ``"NaN"``, ``"+Inf"``, ``"-Inf"`` (JSON has no such numbers).
3. **The kernel gathers.** The ``kernel`` service, built into the hub (the
   host provides it to every plugin; no plugin registers it), answers
   ``collect_metrics()`` with one family list per live actor.
4. **One exposition.** :func:`merge_families` joins families of the same name
   from all actors (their samples concatenated), and :func:`render_exposition`
   writes one Prometheus text exposition through prometheus_client's own
   ``generate_latest``, so escaping and number formatting are the library's.

**Every series must stay distinct after merging.** Two actors that both count
``objectos_service_calls_total{plugin="x",...}`` would produce two identical
series, which Prometheus rejects and which cannot be summed blindly (a restart
of one would look like a counter reset of both). So each actor labels its
samples with its own name: ``collect_families(registry, actor="plugin:com.x")``
(``PluginMetrics(actor=...)`` does it for you) adds ``actor="plugin:com.x"``.
:func:`merge_families` refuses — with a ValueError naming the series — sources
whose samples collide; it never drops or adds up samples silently.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric

from objectos.errors import ObjectOSError
from objectos.kernel.plugin import Plugin, ServiceDirectory
from objectos.protocol.manifest import PluginManifest

METRICS_SERVICE = "metrics"
KERNEL_SERVICE = "kernel"
"""The built-in service of the kernel; every plugin host provides it (see MetricsSource)."""

ACTOR_LABEL = "actor"
"""The label that keeps the same series from different actors apart."""

EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
"""Content-Type for :func:`render_exposition`'s output (text format 0.0.4)."""

# Seconds. An actor call costs about 0.5 to 1 ms; hooks may run up to the 30 s hook timeout.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

Family = dict[str, Any]
"""``{"name": str, "type": str, "help": str, "samples": [[name, {label: value}, value]]}``."""


def outcome_of(exc: BaseException | None) -> str:
    """``ok``, ``timeout``, ``cancelled`` or ``error``: the ``outcome`` label of a call."""
    if exc is None:
        return "ok"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, asyncio.CancelledError) or not isinstance(exc, Exception):
        return "cancelled"
    return "error"


def error_code(exc: BaseException) -> str:
    """The protocol error code of ``exc`` (bounded label values, unlike messages)."""
    if isinstance(exc, ObjectOSError):
        return exc.code
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "internal_error"


class HubMetrics:
    """Every metric family of the hub, on one actor's own registry.

    Plugin hosts use :class:`PluginMetrics`, the kernel :class:`KernelMetrics`;
    both create the whole set, so the families of all actors have the same
    names, types and help and merge cleanly (families without samples are not
    exported, so unused ones cost nothing on the wire).

    Label values must stay few: ``method`` is a service method name, ``event``
    should be the event *pattern* a hook registered (``data.afterInsert.*``)
    rather than every concrete event name.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        actor: str | None = None,
        latency_buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        """``actor`` is this actor's name (``plugin:<id>``, ``kernel``), added to every sample."""
        # Never the process-global REGISTRY: see the module docstring.
        self.registry = registry if registry is not None else CollectorRegistry()
        self.actor = actor
        r = self.registry
        self.service_calls = Counter(
            "objectos_service_calls",
            "Service method calls handled, by outcome (ok, error, timeout, cancelled).",
            ["plugin", "service", "method", "outcome"],
            registry=r,
        )
        self.service_latency = Histogram(
            "objectos_service_call_duration_seconds",
            "Time to handle one service method call.",
            ["plugin", "service", "method"],
            buckets=latency_buckets,
            registry=r,
        )
        self.hook_calls = Counter(
            "objectos_hook_calls",
            "Hook handler runs, by outcome (ok, error, timeout, cancelled).",
            ["plugin", "event", "outcome"],
            registry=r,
        )
        self.hook_latency = Histogram(
            "objectos_hook_duration_seconds",
            "Time the hooks of one event ran.",
            ["plugin", "event"],
            buckets=latency_buckets,
            registry=r,
        )
        self.errors = Counter(
            "objectos_errors",
            "Errors raised by plugin code, by where (service, hook, lifecycle, health) "
            "and protocol error code.",
            ["plugin", "source", "code"],
            registry=r,
        )
        self.plugin_state = Gauge(
            "objectos_plugin_state",
            "1 for the state each plugin is in, 0 for the states it is not in.",
            ["plugin", "state"],
            registry=r,
        )
        self.plugin_restarts = Counter(
            "objectos_plugin_restarts",
            "Times the kernel restarted a plugin's host.",
            ["plugin"],
            registry=r,
        )
        self.actors = Gauge(
            "objectos_actors",
            "Live actors of the hub, by kind (plugin, room, presence, gateway, workflow).",
            ["kind"],
            registry=r,
        )

    def families(self) -> list[Family]:
        """This actor's families, each sample labelled with its ``actor`` name."""
        return collect_families(self.registry, actor=self.actor)


class PluginMetrics(HubMetrics):
    """What one plugin host records about its plugin: service calls, hook runs, errors."""

    def __init__(
        self,
        plugin_id: str,
        registry: CollectorRegistry | None = None,
        *,
        actor: str | None = None,
        latency_buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        """Metrics of plugin ``plugin_id``; the actor label defaults to ``plugin:<id>``."""
        super().__init__(
            registry, actor=actor or f"plugin:{plugin_id}", latency_buckets=latency_buckets
        )
        self.plugin_id = plugin_id

    def observe_service_call(self, service: str, method: str, outcome: str, seconds: float) -> None:
        """Record one finished service call (for hosts that time calls themselves)."""
        self.service_calls.labels(self.plugin_id, service, method, outcome).inc()
        self.service_latency.labels(self.plugin_id, service, method).observe(seconds)

    def observe_hook_call(self, event: str, outcome: str, seconds: float) -> None:
        """Record one finished run of the plugin's hooks for ``event``."""
        self.hook_calls.labels(self.plugin_id, event, outcome).inc()
        self.hook_latency.labels(self.plugin_id, event).observe(seconds)

    def record_error(self, source: str, exc: BaseException) -> None:
        """Count an error of plugin code; ``source`` says where (service, hook, lifecycle, ...)."""
        self.errors.labels(self.plugin_id, source, error_code(exc)).inc()

    @contextmanager
    def time_service_call(self, service: str, method: str) -> Iterator[None]:
        """Time the body as one call of ``service.method``; errors are counted and re-raised.

        A plain (not async) context manager on purpose: it wraps an ``await``
        without adding one, and works the same around synchronous code.
        """
        with self._timed(lambda o, s: self.observe_service_call(service, method, o, s), "service"):
            yield

    @contextmanager
    def time_hook_call(self, event: str) -> Iterator[None]:
        """Time the body as one run of the hooks for ``event``."""
        with self._timed(lambda o, s: self.observe_hook_call(event, o, s), "hook"):
            yield

    @contextmanager
    def _timed(self, observe: Callable[[str, float], None], source: str) -> Iterator[None]:
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failure = exc
            if outcome_of(exc) in ("error", "timeout"):
                self.record_error(source, exc)
            raise
        finally:
            observe(outcome_of(failure), time.perf_counter() - started)


class KernelMetrics(HubMetrics):
    """What the kernel records: each plugin's state and restarts, live actors by kind."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        actor: str = "kernel",
        latency_buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(registry, actor=actor, latency_buckets=latency_buckets)
        self._states_seen: dict[str, set[str]] = {}
        self._restarts_seen: dict[str, int] = {}

    def set_plugin_state(
        self, plugin: str, state: str, all_states: Iterable[str] | None = None
    ) -> None:
        """Make ``state`` the one state of ``plugin`` at 1; every other known state gets 0.

        ``all_states`` (e.g. ``list(Status)``) lists the states to report at 0;
        without it, the states this plugin was seen in before are used.
        """
        seen = self._states_seen.setdefault(plugin, set())
        seen.add(str(state))
        if all_states is not None:
            seen.update(str(s) for s in all_states)
        for known in seen:
            self.plugin_state.labels(plugin, known).set(1 if known == str(state) else 0)

    def record_restart(self, plugin: str, count: int = 1) -> None:
        self.plugin_restarts.labels(plugin).inc(count)

    def set_actor_count(self, kind: str, count: int) -> None:
        self.actors.labels(kind).set(count)

    def forget_plugin(self, plugin: str) -> None:
        """Stop reporting the state series of a plugin that left the manifest."""
        for known in self._states_seen.pop(plugin, set()):
            self.plugin_state.remove(plugin, known)

    def observe(self, plugins: Iterable[Mapping[str, Any]]) -> None:
        """Update states and restarts from the supervisor's view of every plugin.

        Each mapping needs ``id`` and ``status``; ``restarts`` (a running total)
        is optional. The restart counter grows by the difference since the last
        observation; a total that went down (the kernel itself restarted and
        counts from zero) starts a new baseline instead of being subtracted.
        Plugins no longer listed are forgotten.
        """
        listed: set[str] = set()
        for plugin in plugins:
            plugin_id = str(plugin["id"])
            listed.add(plugin_id)
            self.set_plugin_state(plugin_id, str(plugin["status"]))
            total = plugin.get("restarts")
            if total is None:
                continue
            previous = self._restarts_seen.get(plugin_id)
            self._restarts_seen[plugin_id] = int(total)
            if previous is None:
                # First sight: report the whole total, and create the series at 0.
                self.record_restart(plugin_id, int(total))
            elif total > previous:
                self.record_restart(plugin_id, int(total) - previous)
        for gone in set(self._states_seen) - listed:
            self.forget_plugin(gone)
            self._restarts_seen.pop(gone, None)


# --------------------------------------------------------------------------- families


def _encode_value(value: float) -> float | str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return value


def _decode_value(value: float | int | str) -> float:
    # float() understands "NaN", "+Inf" and "-Inf" too.
    return float(value)


def collect_families(
    registry: Any, *, actor: str | None = None, extra_labels: Mapping[str, str] | None = None
) -> list[Family]:
    """The families of ``registry`` (anything with ``collect()``) as picklable, JSON-friendly dicts.

    With ``actor``, every sample gets the label ``actor=<actor>``; ``extra_labels``
    adds others the same way (e.g. ``{"replica": ...}`` for an HTTP replica, which
    is not an actor the kernel knows). A sample that already has one of these
    labels keeps its own value. Families without samples are
    left out, and so are ``_created`` samples: the text format has no place for
    them (they would become one extra gauge per series) and Prometheus detects
    counter resets without them. Timestamps and exemplars are not carried.
    """
    added = dict(extra_labels or {})
    if actor is not None:
        added[ACTOR_LABEL] = actor
    families: list[Family] = []
    for metric in registry.collect():
        created = f"{metric.name}_created"
        samples: list[list[Any]] = []
        for sample in metric.samples:
            if sample.name == created:
                continue
            labels = dict(sample.labels)
            for name, value in added.items():
                labels.setdefault(name, value)
            samples.append([sample.name, labels, _encode_value(sample.value)])
        if samples:
            families.append(
                {
                    "name": metric.name,
                    "type": metric.type,
                    "help": metric.documentation,
                    "samples": samples,
                }
            )
    return families


def merge_families(sources: Iterable[Iterable[Mapping[str, Any]]]) -> list[Family]:
    """One family per name across ``sources`` (one family list per actor), samples concatenated.

    Families keep the order in which their names first appear; the help text
    of the first source wins. Raises ValueError when two sources disagree on a
    family's type, or when two samples have the same name and labels — each
    source must label its samples (``collect_families(..., actor=...)``).
    """
    merged: dict[str, Family] = {}
    series_seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for source in sources:
        for family in source:
            name, kind = family["name"], family["type"]
            target = merged.get(name)
            if target is None:
                target = merged[name] = {
                    "name": name,
                    "type": kind,
                    "help": family.get("help", ""),
                    "samples": [],
                }
            elif target["type"] != kind:
                raise ValueError(
                    f"metric family {name!r} is a {target['type']} in one source "
                    f"and a {kind} in another"
                )
            for sample_name, labels, value in family["samples"]:
                key = (sample_name, tuple(sorted((k, str(v)) for k, v in labels.items())))
                if key in series_seen:
                    shown = ",".join(f'{k}="{v}"' for k, v in key[1])
                    raise ValueError(
                        f"sample {sample_name}{{{shown}}} comes from two sources; label each "
                        f"source's samples apart, e.g. collect_families(..., {ACTOR_LABEL}=...)"
                    )
                series_seen.add(key)
                target["samples"].append([sample_name, dict(labels), value])
    return list(merged.values())


class _FamiliesCollector:
    """Feeds plain family dicts to ``generate_latest`` as prometheus_client Metrics."""

    def __init__(self, families: Iterable[Mapping[str, Any]]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            metric = Metric(family["name"], family.get("help", ""), family["type"])
            for sample_name, labels, value in family["samples"]:
                metric.add_sample(
                    sample_name, {k: str(v) for k, v in labels.items()}, _decode_value(value)
                )
            yield metric


def render_exposition(families: Iterable[Mapping[str, Any]]) -> bytes:
    """One Prometheus text exposition (format 0.0.4, UTF-8) of already merged ``families``.

    Serve it with ``Content-Type:`` :data:`EXPOSITION_CONTENT_TYPE`. Pass merged
    families: two families of the same name would give two ``# TYPE`` lines,
    which Prometheus refuses.
    """
    return generate_latest(_FamiliesCollector(families))


# --------------------------------------------------------------------------- plugin


@runtime_checkable
class MetricsSource(Protocol):
    """Where the metrics plugin gets every actor's families.

    The built-in ``kernel`` service satisfies it: ``collect_metrics()`` asks
    each live actor for its :meth:`PluginMetrics.families` and returns the lists.
    """

    async def collect_metrics(self) -> list[list[Family]]: ...


class MetricsService:
    """The ``metrics`` service: the hub's Prometheus exposition in one call."""

    def __init__(self, source: Callable[[], MetricsSource]) -> None:
        """``source`` returns the MetricsSource to ask; called on every scrape."""
        self._source = source

    async def exposition(
        self, extra: Sequence[Sequence[Family]] | None = None, *, caller: str
    ) -> str:
        """Every actor's metrics, plus the ``extra`` family lists, as one Prometheus exposition.

        ``extra`` is for callers that have metrics of their own the kernel does
        not gather (an HTTP replica passes its request metrics, labelled with
        its replica name). Any plugin may read the hub's metrics; ``caller``
        (filled by the host) is accepted so the signature follows the service
        convention.
        """
        sources: list[Sequence[Family]] = [*await self._source().collect_metrics(), *(extra or [])]
        return render_exposition(merge_families(sources)).decode("utf-8")


class MetricsPlugin(Plugin):
    """Core plugin offering the ``metrics`` service (the REST layer serves it at /metrics)."""

    manifest = PluginManifest.model_validate(
        {
            "id": "com.objectos.metrics",
            "version": "0.1.0",
            "name": "Metrics",
            "description": "Prometheus exposition of every actor's metrics.",
            "author": "ObjectOS",
            "contributes": {"services": [METRICS_SERVICE]},
        }
    )

    async def on_load(self) -> None:
        services: ServiceDirectory = self.context.services
        # Looked up per scrape, not once: a restarted kernel gets a new proxy.
        self.context.register_service(
            METRICS_SERVICE, MetricsService(lambda: services.get(KERNEL_SERVICE))
        )


__all__ = [
    "ACTOR_LABEL",
    "EXPOSITION_CONTENT_TYPE",
    "KERNEL_SERVICE",
    "LATENCY_BUCKETS",
    "METRICS_SERVICE",
    "Family",
    "HubMetrics",
    "KernelMetrics",
    "MetricsPlugin",
    "MetricsService",
    "MetricsSource",
    "PluginMetrics",
    "collect_families",
    "error_code",
    "merge_families",
    "outcome_of",
    "render_exposition",
]
