"""The service registry: providers, conflicts, hook lookup, revisions, checkpoints."""

from __future__ import annotations

import json

import pytest

from objectos.errors import Conflict, KernelError, NotFound, ServiceConflict, ServiceNotFound
from objectos.kernel.registry import ServiceRegistry

# --- services -----------------------------------------------------------------------


def test_a_registered_service_has_its_provider():
    registry = ServiceRegistry()
    registry.register("storage", "com.x.storage")
    registry.register("auth", "com.x.auth")

    assert registry.provider("storage") == "com.x.storage"
    assert registry.services() == {"auth": "com.x.auth", "storage": "com.x.storage"}


def test_a_second_provider_of_a_service_is_a_conflict():
    registry = ServiceRegistry()
    registry.register("storage", "com.x.storage")

    with pytest.raises(ServiceConflict) as caught:
        registry.register("storage", "com.x.other")

    error = caught.value
    assert isinstance(error, KernelError) and isinstance(error, Conflict)
    assert error.status == 409
    assert error.details == {
        "service": "storage",
        "provider": "com.x.storage",
        "plugin": "com.x.other",
    }
    assert registry.provider("storage") == "com.x.storage"


def test_the_same_plugin_registering_again_is_fine_and_changes_nothing():
    registry = ServiceRegistry()
    registry.register("storage", "com.x.storage")
    revision = registry.revision

    registry.register("storage", "com.x.storage")

    assert registry.revision == revision


def test_an_unknown_service_is_not_found():
    with pytest.raises(ServiceNotFound, match="no plugin provides service 'mail'") as caught:
        ServiceRegistry().provider("mail")
    assert isinstance(caught.value, NotFound)
    assert caught.value.code == "service_not_found"


def test_unregistering_a_plugin_frees_its_services_for_another():
    registry = ServiceRegistry()
    registry.register("storage", "com.x.storage")
    registry.register_hook("data.*", "com.x.storage")
    registry.register("auth", "com.x.auth")

    registry.unregister_plugin("com.x.storage")

    assert registry.services() == {"auth": "com.x.auth"}
    assert registry.hooks_for("data.beforeInsert.account") == []
    registry.register("storage", "com.x.replacement")
    assert registry.provider("storage") == "com.x.replacement"


# --- hooks ----------------------------------------------------------------------------


def test_hooks_for_an_event_are_sorted_by_priority_then_registration():
    registry = ServiceRegistry()
    registry.register_hook("data.beforeInsert.account", "com.x.late", priority=500)
    registry.register_hook("data.beforeInsert.*", "com.x.first", priority=100)
    registry.register_hook("data.*", "com.x.second", priority=100)
    registry.register_hook("*", "com.x.early", priority=1)
    registry.register_hook("data.beforeInsert.contact", "com.x.elsewhere")

    assert registry.hooks_for("data.beforeInsert.account") == [
        ("com.x.early", 1),
        ("com.x.first", 100),
        ("com.x.second", 100),
        ("com.x.late", 500),
    ]


def test_a_plugin_with_several_matching_hooks_is_listed_once_at_its_lowest_priority():
    registry = ServiceRegistry()
    registry.register_hook("data.*", "com.x.audit", priority=300)
    registry.register_hook("data.beforeInsert.*", "com.x.crm", priority=200)
    registry.register_hook("data.beforeInsert.account", "com.x.audit", priority=50)

    assert registry.hooks_for("data.beforeInsert.account") == [
        ("com.x.audit", 50),
        ("com.x.crm", 200),
    ]
    assert registry.hooks_for("data.afterFind.account") == [("com.x.audit", 300)]


def test_hook_patterns_are_checked_like_the_event_bus():
    with pytest.raises(ValueError, match="invalid event pattern"):
        ServiceRegistry().register_hook("data.*.account", "com.x.crm")


# --- revisions --------------------------------------------------------------------------


def test_every_change_bumps_the_revision_and_no_op_does_not():
    registry = ServiceRegistry()
    assert registry.revision == 0

    registry.register("storage", "com.x.storage")
    assert registry.revision == 1
    registry.register_hook("data.*", "com.x.storage", 10)
    assert registry.revision == 2
    registry.register_hook("data.*", "com.x.storage", 10)  # already there
    assert registry.revision == 2
    registry.unregister_plugin("com.x.storage")
    assert registry.revision == 3
    registry.unregister_plugin("com.x.storage")  # nothing left to remove
    assert registry.revision == 3


def test_a_refused_registration_does_not_bump_the_revision():
    registry = ServiceRegistry()
    registry.register("storage", "com.x.storage")
    with pytest.raises(ServiceConflict):
        registry.register("storage", "com.x.other")
    assert registry.revision == 1


def test_sync_plugin_moves_the_revision_only_when_something_changed():
    registry = ServiceRegistry()
    assert registry.sync_plugin("com.x.crm", ["crm"], [("data.*", 100)]) is True
    revision = registry.revision

    # What a reconciliation loop does every pass: same registrations again.
    assert registry.sync_plugin("com.x.crm", ["crm"], [("data.*", 100)]) is False
    assert registry.revision == revision

    assert registry.sync_plugin("com.x.crm", ["crm", "leads"], [("data.*", 100)]) is True
    assert registry.revision == revision + 1
    assert registry.services() == {"crm": "com.x.crm", "leads": "com.x.crm"}


def test_sync_plugin_replaces_what_the_plugin_no_longer_offers():
    registry = ServiceRegistry()
    registry.sync_plugin("com.x.crm", ["crm", "leads"], [("data.*", 100), ("record.*", 5)])
    registry.register("auth", "com.x.auth")

    registry.sync_plugin("com.x.crm", ["crm"], [("record.*", 5)])

    assert registry.services() == {"auth": "com.x.auth", "crm": "com.x.crm"}
    assert registry.hooks_for("data.beforeInsert.account") == []
    assert registry.hooks_for("record.created") == [("com.x.crm", 5)]


def test_sync_plugin_with_a_conflict_changes_nothing():
    registry = ServiceRegistry()
    registry.register("storage", "com.x.storage")
    registry.sync_plugin("com.x.crm", ["crm"], [])
    before = registry.to_dict()

    with pytest.raises(ServiceConflict):
        registry.sync_plugin("com.x.crm", ["crm", "storage"], [("data.*", 1)])

    assert registry.to_dict() == before


# --- checkpoints -------------------------------------------------------------------------


def test_a_checkpoint_restores_services_hooks_order_and_revision():
    registry = ServiceRegistry()
    registry.register("storage", "com.x.storage")
    registry.register_hook("data.*", "com.x.b", 100)
    registry.register_hook("data.*", "com.x.a", 100)
    registry.unregister_plugin("com.x.gone")  # no change, no bump
    registry.register("auth", "com.x.auth")

    checkpoint = json.loads(json.dumps(registry.to_dict()))
    restored = ServiceRegistry.from_dict(checkpoint)

    assert restored.revision == registry.revision == 4
    assert restored.services() == registry.services()
    assert restored.hooks_for("data.x") == [("com.x.b", 100), ("com.x.a", 100)]
    assert restored.to_dict() == registry.to_dict()


def test_a_restored_registry_keeps_counting_from_the_checkpoint():
    restored = ServiceRegistry.from_dict({"revision": 41, "services": {}, "hooks": []})
    restored.register("storage", "com.x.storage")
    assert restored.revision == 42
