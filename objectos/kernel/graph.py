"""Dependency resolution: in which order plugins start, and who depends on whom.

The kernel holds one :class:`~objectos.protocol.manifest.PluginManifest` per
plugin id. :func:`resolve_load_order` checks every ``dependencies`` and
``optionalDependencies`` entry against the installed versions (npm-style ranges,
``semantic_version.NpmSpec``) and returns a deterministic topological order,
dependencies first. Problems are reported as the ``DependencyError`` family of
:mod:`objectos.errors`, all of them at once, so an operator fixes a manifest in
one pass rather than one error per restart.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import semantic_version

from objectos.errors import (
    DependencyCycle,
    DependencyError,
    FieldError,
    IncompatibleDependency,
    MissingDependency,
)
from objectos.protocol.manifest import PluginManifest


def resolve_load_order(manifests: Mapping[str, PluginManifest]) -> list[str]:
    """Plugin ids in start order: every plugin after all the plugins it depends on.

    ``manifests`` is keyed by plugin id. Required ``dependencies`` must be
    present and satisfy their range; ``optionalDependencies`` order first and
    must satisfy their range when present, and are ignored when absent. Among
    plugins whose dependencies are all placed, the smallest id comes first, so
    the same manifests always give the same order.

    Raises:
        MissingDependency: required plugins are absent (and nothing is incompatible).
        IncompatibleDependency: present plugins have a version outside the range
            (and nothing is missing).
        DependencyError: both kinds of problem at once; ``field_errors`` holds
            one entry per problem with the specific code.
        DependencyCycle: the plugins depend on each other in a loop; the message
            shows the path, e.g. ``a -> b -> a``, and ``details["cycle"]`` lists it.
    """
    _check_dependencies(manifests)
    edges = _ordering_edges(manifests)

    # Kahn's algorithm with a heap: a plugin becomes ready once everything it
    # depends on is placed; the heap picks the smallest ready id.
    waiting_on = {plugin_id: len(deps) for plugin_id, deps in edges.items()}
    dependents: dict[str, list[str]] = {plugin_id: [] for plugin_id in edges}
    for plugin_id, deps in edges.items():
        for dep in deps:
            dependents[dep].append(plugin_id)
    ready = [plugin_id for plugin_id, count in waiting_on.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        plugin_id = heapq.heappop(ready)
        order.append(plugin_id)
        for dependent in dependents[plugin_id]:
            waiting_on[dependent] -= 1
            if waiting_on[dependent] == 0:
                heapq.heappush(ready, dependent)

    if len(order) < len(edges):
        stuck = {plugin_id for plugin_id, count in waiting_on.items() if count > 0}
        cycle = _find_cycle(edges, stuck)
        raise DependencyCycle(
            f"plugin dependency cycle: {' -> '.join(cycle)}",
            details={"cycle": cycle},
        )
    return order


def reverse_dependents(manifests: Mapping[str, PluginManifest], plugin_id: str) -> set[str]:
    """Every plugin that requires ``plugin_id``, directly or through others.

    Only required ``dependencies`` count: these are the plugins that must not
    start (or must stop) when ``plugin_id`` fails. Optional dependents keep
    running without it. ``plugin_id`` itself is never in the result, and it need
    not be in ``manifests`` (the dependents of a missing plugin are found too).
    """
    required_by: dict[str, set[str]] = {}
    for dependent, manifest in manifests.items():
        for dep in manifest.dependencies:
            required_by.setdefault(dep, set()).add(dependent)

    found: set[str] = set()
    pending = [plugin_id]
    while pending:
        for dependent in required_by.get(pending.pop(), ()):
            if dependent not in found and dependent != plugin_id:
                found.add(dependent)
                pending.append(dependent)
    return found


def dependency_edges(manifests: Mapping[str, PluginManifest]) -> list[tuple[str, str]]:
    """``(plugin, dependency)`` pairs for drawing the graph, sorted.

    Required dependencies are listed even when the dependency is absent (so a
    drawing shows what is missing); optional ones only when present, since only
    then do they affect anything.
    """
    edges: set[tuple[str, str]] = set()
    for plugin_id, manifest in manifests.items():
        edges.update((plugin_id, dep) for dep in manifest.dependencies)
        edges.update((plugin_id, dep) for dep in manifest.optionalDependencies if dep in manifests)
    return sorted(edges)


def _check_dependencies(manifests: Mapping[str, PluginManifest]) -> None:
    """Raise one error listing every missing or incompatible dependency."""
    problems: list[dict[str, Any]] = []
    for plugin_id in sorted(manifests):
        manifest = manifests[plugin_id]
        for kind, declared in (
            ("dependencies", manifest.dependencies),
            ("optionalDependencies", manifest.optionalDependencies),
        ):
            for dep in sorted(declared):
                spec = declared[dep]
                problem: dict[str, Any] = {
                    "plugin": plugin_id,
                    "dependency": dep,
                    "range": spec,
                    "optional": kind == "optionalDependencies",
                }
                if dep not in manifests:
                    if kind == "dependencies":
                        problems.append({**problem, "code": MissingDependency.code})
                    continue
                installed = manifests[dep].version
                if semantic_version.Version(installed) not in semantic_version.NpmSpec(spec):
                    problems.append(
                        {**problem, "installed": installed, "code": IncompatibleDependency.code}
                    )
    if not problems:
        return

    field_errors = [_field_error(problem) for problem in problems]
    codes = {problem["code"] for problem in problems}
    error_class: type[DependencyError]
    if codes == {MissingDependency.code}:
        error_class = MissingDependency
    elif codes == {IncompatibleDependency.code}:
        error_class = IncompatibleDependency
    else:
        error_class = DependencyError
    details: dict[str, Any] = {"problems": problems}
    if len(problems) == 1:
        # The common case reads flat: details["plugin"], ["dependency"], ["range"].
        details.update({k: v for k, v in problems[0].items() if k != "code"})
        message = field_errors[0].message
    else:
        message = f"{len(problems)} plugin dependency problems: " + "; ".join(
            fe.message for fe in field_errors
        )
    raise error_class(message, details=details, field_errors=field_errors)


def _field_error(problem: dict[str, Any]) -> FieldError:
    plugin, dep, spec = problem["plugin"], problem["dependency"], problem["range"]
    kind = "optionalDependencies" if problem["optional"] else "dependencies"
    if problem["code"] == MissingDependency.code:
        message = f"{plugin} requires {dep} {spec}, which is not installed"
    else:
        wants = "optionally uses" if problem["optional"] else "requires"
        message = f"{plugin} {wants} {dep} {spec}, but {problem['installed']} is installed"
    # The manifest key that needs fixing, e.g. "com.acme.crm.dependencies[com.acme.storage]".
    return FieldError(field=f"{plugin}.{kind}[{dep}]", code=problem["code"], message=message)


def _ordering_edges(manifests: Mapping[str, PluginManifest]) -> dict[str, list[str]]:
    """For each plugin, the present plugins it must start after, sorted."""
    edges: dict[str, list[str]] = {}
    for plugin_id, manifest in manifests.items():
        deps = set(manifest.dependencies) | set(manifest.optionalDependencies)
        edges[plugin_id] = sorted(dep for dep in deps if dep in manifests)
    return edges


def _find_cycle(edges: Mapping[str, list[str]], stuck: set[str]) -> list[str]:
    """One dependency cycle among ``stuck`` plugins, closed: ``[a, b, a]``.

    Every stuck plugin waits on at least one other stuck plugin, so following
    the smallest stuck dependency from the smallest stuck id must revisit a
    plugin; the walk from that first revisit is the cycle, found the same way
    every time.
    """
    path: list[str] = []
    position: dict[str, int] = {}
    current = min(stuck)
    while current not in position:
        position[current] = len(path)
        path.append(current)
        current = min(dep for dep in edges[current] if dep in stuck)
    return [*path[position[current] :], current]
