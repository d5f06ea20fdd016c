"""Dependency resolution: start order, cycles, missing and incompatible plugins."""

from __future__ import annotations

import pytest

from objectos.errors import (
    DependencyCycle,
    DependencyError,
    IncompatibleDependency,
    MissingDependency,
)
from objectos.kernel.graph import dependency_edges, resolve_load_order, reverse_dependents
from objectos.protocol.manifest import PluginManifest


def plugins(*manifests: PluginManifest) -> dict[str, PluginManifest]:
    return {manifest.id: manifest for manifest in manifests}


def plugin(
    plugin_id: str,
    version: str = "1.0.0",
    requires: dict[str, str] | None = None,
    optional: dict[str, str] | None = None,
) -> PluginManifest:
    return PluginManifest(
        id=plugin_id,
        version=version,
        dependencies=requires or {},
        optionalDependencies=optional or {},
    )


# --- order -------------------------------------------------------------------


def test_a_chain_starts_from_its_root():
    manifests = plugins(
        plugin("com.x.c", requires={"com.x.b": "^1.0.0"}),
        plugin("com.x.b", requires={"com.x.a": "^1.0.0"}),
        plugin("com.x.a"),
    )
    assert resolve_load_order(manifests) == ["com.x.a", "com.x.b", "com.x.c"]


def test_a_diamond_places_the_shared_dependency_first_and_the_join_last():
    manifests = plugins(
        plugin("com.x.app", requires={"com.x.left": "*", "com.x.right": "*"}),
        plugin("com.x.right", requires={"com.x.base": "*"}),
        plugin("com.x.left", requires={"com.x.base": "*"}),
        plugin("com.x.base"),
    )
    assert resolve_load_order(manifests) == ["com.x.base", "com.x.left", "com.x.right", "com.x.app"]


def test_independent_plugins_start_in_id_order_whatever_the_input_order():
    ids = ["com.x.zeta", "com.x.alpha", "com.x.mid"]
    forwards = plugins(*(plugin(i) for i in ids))
    backwards = plugins(*(plugin(i) for i in reversed(ids)))
    assert resolve_load_order(forwards) == ["com.x.alpha", "com.x.mid", "com.x.zeta"]
    assert resolve_load_order(backwards) == resolve_load_order(forwards)


def test_ties_are_broken_by_id_only_among_plugins_that_are_ready():
    # com.x.a must wait for com.x.z even though "a" sorts first.
    manifests = plugins(
        plugin("com.x.a", requires={"com.x.z": "*"}), plugin("com.x.z"), plugin("com.x.m")
    )
    assert resolve_load_order(manifests) == ["com.x.m", "com.x.z", "com.x.a"]


def test_an_empty_hub_has_an_empty_order():
    assert resolve_load_order({}) == []


# --- optional dependencies ------------------------------------------------------


def test_a_present_optional_dependency_starts_first():
    manifests = plugins(
        plugin("com.x.audit", optional={"com.x.zcache": "^2.0.0"}),
        plugin("com.x.zcache", version="2.1.0"),
    )
    assert resolve_load_order(manifests) == ["com.x.zcache", "com.x.audit"]


def test_an_absent_optional_dependency_is_ignored():
    manifests = plugins(plugin("com.x.audit", optional={"com.x.cache": "^2.0.0"}))
    assert resolve_load_order(manifests) == ["com.x.audit"]


def test_a_present_optional_dependency_must_satisfy_its_range():
    manifests = plugins(
        plugin("com.x.audit", optional={"com.x.cache": "^2.0.0"}),
        plugin("com.x.cache", version="1.9.0"),
    )
    with pytest.raises(IncompatibleDependency) as caught:
        resolve_load_order(manifests)
    assert caught.value.details["optional"] is True
    assert caught.value.field_errors[0].field == "com.x.audit.optionalDependencies[com.x.cache]"


# --- cycles ------------------------------------------------------------------


def test_a_two_plugin_cycle_shows_its_path():
    manifests = plugins(
        plugin("com.x.a", requires={"com.x.b": "*"}),
        plugin("com.x.b", requires={"com.x.a": "*"}),
    )
    with pytest.raises(DependencyCycle) as caught:
        resolve_load_order(manifests)
    assert str(caught.value) == "plugin dependency cycle: com.x.a -> com.x.b -> com.x.a"
    assert caught.value.details == {"cycle": ["com.x.a", "com.x.b", "com.x.a"]}
    assert caught.value.code == "dependency_cycle"


def test_a_three_plugin_cycle_shows_its_path_and_not_the_plugins_waiting_on_it():
    manifests = plugins(
        plugin("com.x.a", requires={"com.x.b": "*"}),
        plugin("com.x.b", requires={"com.x.c": "*"}),
        plugin("com.x.c", requires={"com.x.a": "*"}),
        plugin("com.x.app", requires={"com.x.a": "*"}),  # stuck behind the cycle, not in it
        plugin("com.x.free"),
    )
    with pytest.raises(DependencyCycle) as caught:
        resolve_load_order(manifests)
    assert "com.x.a -> com.x.b -> com.x.c -> com.x.a" in str(caught.value)
    assert caught.value.details["cycle"] == ["com.x.a", "com.x.b", "com.x.c", "com.x.a"]


def test_a_plugin_that_depends_on_itself_is_a_cycle():
    manifests = plugins(plugin("com.x.selfish", requires={"com.x.selfish": "*"}))
    with pytest.raises(DependencyCycle, match=r"com\.x\.selfish -> com\.x\.selfish$"):
        resolve_load_order(manifests)


def test_a_cycle_through_an_optional_dependency_is_still_a_cycle():
    manifests = plugins(
        plugin("com.x.a", requires={"com.x.b": "*"}),
        plugin("com.x.b", optional={"com.x.a": "*"}),
    )
    with pytest.raises(DependencyCycle):
        resolve_load_order(manifests)


# --- missing and incompatible ---------------------------------------------------


def test_a_missing_dependency_names_who_needs_what():
    manifests = plugins(plugin("com.x.crm", requires={"com.x.storage": "^0.1.0"}))
    with pytest.raises(MissingDependency) as caught:
        resolve_load_order(manifests)
    error = caught.value
    assert str(error) == "com.x.crm requires com.x.storage ^0.1.0, which is not installed"
    assert error.details["plugin"] == "com.x.crm"
    assert error.details["dependency"] == "com.x.storage"
    assert error.details["range"] == "^0.1.0"
    assert error.status == 400


@pytest.mark.parametrize(
    ("spec", "installed"),
    [
        ("^1.2.0", "2.0.0"),  # caret keeps the major version
        ("^0.2.0", "0.3.0"),  # ... and the minor one below 1.0
        ("~1.2.0", "1.3.0"),  # tilde keeps the minor version
        (">=1.0.0 <2.0.0", "2.0.0"),
        ("^1.0.0 || ^3.0.0", "2.5.0"),
    ],
)
def test_a_version_outside_the_range_is_incompatible(spec: str, installed: str):
    manifests = plugins(
        plugin("com.x.crm", requires={"com.x.storage": spec}),
        plugin("com.x.storage", version=installed),
    )
    with pytest.raises(IncompatibleDependency) as caught:
        resolve_load_order(manifests)
    assert caught.value.details["installed"] == installed
    assert caught.value.details["range"] == spec
    assert installed in str(caught.value)


@pytest.mark.parametrize(
    ("spec", "installed"),
    [
        ("^1.2.0", "1.9.3"),
        ("~1.2.0", "1.2.9"),
        (">=1.0.0 <2.0.0", "1.99.0"),
        ("^1.0.0 || ^3.0.0", "3.1.0"),
        ("*", "0.0.1"),
    ],
)
def test_a_version_inside_the_range_resolves(spec: str, installed: str):
    manifests = plugins(
        plugin("com.x.crm", requires={"com.x.storage": spec}),
        plugin("com.x.storage", version=installed),
    )
    assert resolve_load_order(manifests) == ["com.x.storage", "com.x.crm"]


def test_all_problems_are_reported_together():
    manifests = plugins(
        plugin("com.x.crm", requires={"com.x.storage": "^1.0.0", "com.x.auth": "^1.0.0"}),
        plugin("com.x.jobs", requires={"com.x.queue": "*"}),
        plugin("com.x.storage", version="2.0.0"),
    )
    with pytest.raises(DependencyError) as caught:
        resolve_load_order(manifests)
    error = caught.value
    # Mixed kinds: neither subclass alone would be honest, so the common parent is raised
    # and each problem carries its own code.
    assert type(error) is DependencyError
    assert [(fe.field, fe.code) for fe in error.field_errors] == [
        ("com.x.crm.dependencies[com.x.auth]", "missing_dependency"),
        ("com.x.crm.dependencies[com.x.storage]", "incompatible_dependency"),
        ("com.x.jobs.dependencies[com.x.queue]", "missing_dependency"),
    ]
    assert len(error.details["problems"]) == 3
    assert str(error).startswith("3 plugin dependency problems: ")
    assert "com.x.queue" in str(error)


def test_several_missing_dependencies_raise_missing_dependency():
    manifests = plugins(
        plugin("com.x.a", requires={"com.x.gone": "*"}),
        plugin("com.x.b", requires={"com.x.lost": "*"}),
    )
    with pytest.raises(MissingDependency) as caught:
        resolve_load_order(manifests)
    assert [p["dependency"] for p in caught.value.details["problems"]] == [
        "com.x.gone",
        "com.x.lost",
    ]
    assert "plugin" not in caught.value.details  # flat keys only when there is one problem


def test_dependency_problems_are_reported_before_cycles():
    manifests = plugins(
        plugin("com.x.a", requires={"com.x.b": "*", "com.x.gone": "*"}),
        plugin("com.x.b", requires={"com.x.a": "*"}),
    )
    with pytest.raises(MissingDependency):
        resolve_load_order(manifests)


# --- dependents and edges --------------------------------------------------------


def test_reverse_dependents_follow_required_dependencies_transitively():
    manifests = plugins(
        plugin("com.x.storage"),
        plugin("com.x.crm", requires={"com.x.storage": "*"}),
        plugin("com.x.sales", requires={"com.x.crm": "*"}),
        plugin("com.x.audit", optional={"com.x.storage": "*"}),
        plugin("com.x.other"),
    )
    assert reverse_dependents(manifests, "com.x.storage") == {"com.x.crm", "com.x.sales"}
    assert reverse_dependents(manifests, "com.x.sales") == set()


def test_reverse_dependents_of_a_missing_plugin_are_found_too():
    manifests = plugins(plugin("com.x.crm", requires={"com.x.storage": "*"}))
    assert reverse_dependents(manifests, "com.x.storage") == {"com.x.crm"}


def test_reverse_dependents_terminate_on_a_cycle():
    manifests = plugins(
        plugin("com.x.a", requires={"com.x.b": "*"}),
        plugin("com.x.b", requires={"com.x.a": "*"}),
    )
    assert reverse_dependents(manifests, "com.x.a") == {"com.x.b"}


def test_dependency_edges_list_required_and_present_optional_dependencies():
    manifests = plugins(
        plugin("com.x.crm", requires={"com.x.storage": "*", "com.x.gone": "*"}),
        plugin("com.x.audit", optional={"com.x.crm": "*", "com.x.absent": "*"}),
        plugin("com.x.storage"),
    )
    assert dependency_edges(manifests) == [
        ("com.x.audit", "com.x.crm"),
        ("com.x.crm", "com.x.gone"),
        ("com.x.crm", "com.x.storage"),
    ]
