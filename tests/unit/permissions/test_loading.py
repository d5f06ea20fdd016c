"""Permission files: typed, cross-checked, every problem reported with file, line and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from objectos.data import Actor
from objectos.errors import ManifestError, ServiceUnavailable
from objectos.metadata import MetadataRegistry
from objectos.protocol.permission import RLSPolicy, SecurityConfig, SharingConfig
from objectos.security.loading import load_security
from objectos.security.permissions import PermissionEngine

from .conftest import METADATA


def crm_with(tmp_path: Path, files: dict[str, str]) -> MetadataRegistry:
    """The sample CRM's objects plus the given permission files (and none of the shipped ones)."""
    shutil.copytree(METADATA / "crm", tmp_path / "crm")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return MetadataRegistry.load([tmp_path])


def problems(registry: MetadataRegistry) -> dict[str, str]:
    """``{"file:line key": message}`` of every problem load_security reports."""
    with pytest.raises(ManifestError) as failed:
        load_security(registry)
    return {e.field.split("/")[-1]: e.message for e in failed.value.field_errors}


def test_the_sample_crm_security_loads() -> None:
    config = load_security(MetadataRegistry.load([METADATA]))
    assert {ps.name for ps in config.permissionSets if ps.isProfile} == {
        "admin",
        "sales_manager",
        "sales_rep",
        "support",
        "read_only",
    }
    assert [p.name for p in config.policies()] == ["agents_work_open_cases"]


def test_unknown_keys_and_bad_shapes_name_file_and_line(tmp_path: Path) -> None:
    registry = crm_with(
        tmp_path,
        {
            "rep.permission.yml": (
                "name: rep\n"
                "objects:\n"
                "  account: {allowRead: true, allowFly: true}\n"
                "fields:\n"
                "  account.phone: {readable: false, editable: true}\n"
            ),
            "share.permission.yml": (
                "type: sharing\n"
                "name: share\n"
                "sharingRules:\n"
                "  - {name: r, type: owner, object: account, sharedWith: {type: role, value: x}}\n"
            ),
        },
    )
    found = problems(registry)
    assert found == {
        "rep.permission.yml:3 objects.account.allowFly": "unknown key",
        "rep.permission.yml:5 fields.account.phone": "an editable field must also be readable",
        "share.permission.yml:4 sharingRules[0].owner.ownedBy": "Field required",
    }


def test_references_are_checked_across_files(tmp_path: Path) -> None:
    registry = crm_with(
        tmp_path,
        {
            "rep.permission.yml": (
                "name: rep\n"
                "objects:\n"
                "  spaceship: {allowRead: true}\n"
                "fields:\n"
                "  account.salary: {readable: true}\n"
                "  account.owner: {readable: true}\n"
            ),
            "share.permission.yml": (
                "type: sharing\n"
                "name: share\n"
                "roles:\n"
                "  - {name: boss, parent: ghost, permissionSets: [rep, nope]}\n"
                "  - {name: a, parent: b}\n"
                "  - {name: b, parent: a}\n"
                "organizationDefaults:\n"
                "  contact: controlled_by_parent\n"
                "sharingRules:\n"
                "  - name: by_criteria\n"
                "    type: criteria\n"
                "    object: account\n"
                "    condition: {salary: {$gt: 1}}\n"
                "    sharedWith: {type: group, value: nobody}\n"
                "rowLevelSecurity:\n"
                "  - name: mine\n"
                "    object: opportunity\n"
                "    operation: update\n"
                "    using: {owner: $user.email}\n"
                "    check: {expected_revenue: {$gt: 0}}\n"
                "    roles: [ghost]\n"
            ),
        },
    )
    assert problems(registry) == {
        "rep.permission.yml:3 objects.spaceship": "no such object",
        "rep.permission.yml:5 fields.account.salary": "account has no field 'salary'",
        "rep.permission.yml:6 fields.account.owner": (
            "system fields follow their object and cannot be controlled"
        ),
        "share.permission.yml:4 roles[0].parent": "no role 'ghost'",
        "share.permission.yml:4 roles[0].permissionSets[1]": "no permission set 'nope'",
        "share.permission.yml:5 roles[1].parent": "role 'a' is its own ancestor",
        "share.permission.yml:6 roles[2].parent": "role 'b' is its own ancestor",
        "share.permission.yml:8 organizationDefaults.contact": (
            "controlled_by_parent needs exactly one master_detail field; contact has 0"
        ),
        "share.permission.yml:14 sharingRules[0].sharedWith.value": "no group 'nobody'",
        "share.permission.yml:13 sharingRules[0].condition": "Unknown field 'salary' in filter",
        "share.permission.yml:21 rowLevelSecurity[0].roles[0]": (
            "no role or permission set 'ghost'"
        ),
        "share.permission.yml:19 rowLevelSecurity[0].using": (
            "unknown placeholder(s) ['$user.email']; known: "
            "['$user.groups', '$user.id', '$user.roles']"
        ),
        "share.permission.yml:20 rowLevelSecurity[0].check": (
            "a check can only name stored fields, not 'expected_revenue'"
        ),
    }


def test_configs_built_in_code_are_checked_too(registry: MetadataRegistry) -> None:
    config = SecurityConfig(
        sharing=[
            SharingConfig(
                type="sharing",
                name="inline",
                rowLevelSecurity=[
                    RLSPolicy(name="p", object="case", operation="select", using={"nope": 1})
                ],
            )
        ]
    )
    with pytest.raises(ManifestError) as failed:
        PermissionEngine(config, registry)
    assert [e.field for e in failed.value.field_errors] == [
        "<sharing inline> rowLevelSecurity[0].using"
    ]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"operation": "insert", "using": {"a": 1}}, "an insert policy has only 'check'"),
        ({"operation": "select", "check": {"a": 1}}, "a select policy has only 'using'"),
        ({"operation": "all"}, "a policy needs 'using' or 'check'"),
    ],
)
def test_policy_clauses_must_fit_the_operation(policy: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RLSPolicy.model_validate({"name": "p", "object": "case", **policy})


def test_a_reload_recompiles_and_a_broken_one_fails_closed(tmp_path: Path) -> None:
    rep = tmp_path / "rep.permission.yml"
    registry = crm_with(
        tmp_path, {"rep.permission.yml": "name: rep\nobjects: {account: {allowRead: true}}\n"}
    )
    engine = PermissionEngine.from_registry(registry)
    alice = Actor.user("alice", ["rep"])
    assert engine.object_access(alice, "account").allows("read")

    rep.write_text("name: rep\nobjects: {account: {allowRead: true, allowEdit: true}}\n")
    registry.reload()
    assert engine.object_access(alice, "account").allows("edit")

    rep.write_text("name: rep\nfields: {account.salary: {readable: true}}\n")
    registry.reload()  # the registry only checks that a permission file has a name
    with pytest.raises(ServiceUnavailable) as unavailable:
        engine.object_access(alice, "account")
    assert unavailable.value.details["problems"][0]["message"] == "account has no field 'salary'"
    with pytest.raises(ServiceUnavailable):  # still closed on the next request
        engine.record_condition(alice, "account", "read")

    rep.write_text("name: rep\nobjects: {contact: {allowRead: true}}\n")
    registry.reload()
    assert not engine.object_access(alice, "account").allows("read")
    assert engine.object_access(alice, "contact").allows("read")
