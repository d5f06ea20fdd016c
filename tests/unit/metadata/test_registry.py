"""Loading configs/metadata: every problem of every file, with file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from objectos.errors import ManifestError, NotFound, ObjectNotFound
from objectos.metadata import MetadataRegistry

CRM = Path(__file__).resolve().parents[3] / "configs" / "metadata"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problems(folder: Path) -> dict[str, str]:
    """``{"file:line key": message}`` of the ManifestError loading ``folder`` raises."""
    return dict(problem_list(folder))


def problem_list(folder: Path) -> list[tuple[str, str]]:
    """Every ``("file:line key", message)`` of the ManifestError loading ``folder`` raises."""
    with pytest.raises(ManifestError) as info:
        MetadataRegistry.load([folder])
    prefix = f"{folder}/"
    return [(e.field.removeprefix(prefix), e.message) for e in info.value.field_errors]


def test_the_sample_crm_loads() -> None:
    crm = MetadataRegistry.load([CRM])

    assert sorted(crm.objects) == [
        "account",
        "case",
        "contact",
        "industry_code",
        "opportunity",
        "opportunity_line_item",
    ]
    assert crm.get_object("case").fields["case_number"].autonumberFormat == "CASE-{0000}"
    assert not crm.get_object("industry_code").allows("create")
    assert [(r.child, r.field, r.on_delete) for r in crm.children_of("opportunity")] == [
        ("opportunity_line_item", "opportunity", "cascade")
    ]
    assert crm.summary_link("opportunity", "opportunity_line_item") == "opportunity"


def test_schema_errors_name_file_line_and_key(tmp_path: Path) -> None:
    write(
        tmp_path,
        "account.object.yml",
        """
        name: account
        fields:
          name:
            type: text
            colour: red
          Bad Name: {type: text}
          owner: {type: text}
        """,
    )

    assert problems(tmp_path) == {
        "account.object.yml:5 fields.name.colour": "unknown key",
        "account.object.yml:6 fields.Bad Name": (
            "'Bad Name' is not snake_case (a-z, 0-9, _; starting with a letter)"
        ),
        "account.object.yml:7 fields.owner": (
            "'owner' is a system field name (reserved: id, created_at, updated_at, created_by, "
            "updated_by, owner, version)"
        ),
    }


def test_every_file_is_reported_not_just_the_first(tmp_path: Path) -> None:
    write(tmp_path, "a.object.yml", "name: a\nfields:\n  x: {type: select}\n")
    write(tmp_path, "nested/b.object.yml", "name: b\nfields: [unclosed\n")
    write(tmp_path, "nested/c.object.yml", "name: c\nfields:\n  y: {type: sparkle}\n")

    found = problems(tmp_path)

    assert set(found) == {
        "a.object.yml:3 fields.x",
        "nested/b.object.yml:3",
        "nested/c.object.yml:3 fields.y.type",
    }
    assert found["a.object.yml:3 fields.x"] == "a select field needs 'options'"
    assert found["nested/b.object.yml:3"].startswith("invalid YAML")


def test_cross_object_errors(tmp_path: Path) -> None:
    write(
        tmp_path,
        "project.object.yml",
        """
        name: project
        fields:
          client:
            type: lookup
            reference: customer
          budget:
            type: formula
            expression: rate * hours
          task_hours:
            type: summary
            summaryOperations: {object: task, field: hours, function: sum}
        validations:
          - name: has_client
            type: cross_field
            condition: "not is_blank(clinet)"
            message: A project needs a client.
        indexes:
          - {name: by_phase, fields: [phase]}
        """,
    )
    write(tmp_path, "task.object.yml", "name: task\nfields:\n  hours: {type: number}\n")

    assert sorted(problem_list(tmp_path)) == [
        (
            "project.object.yml:11 fields.task_hours.summaryOperations.object",
            "summary 'task_hours': 'task' is not a child of 'project' (it needs exactly one "
            "master_detail, or else one lookup, field referencing 'project')",
        ),
        (
            "project.object.yml:15 validations[0].condition",
            "rule 'has_client' names unknown field 'clinet' of 'project'",
        ),
        (
            "project.object.yml:18 indexes[0].fields",
            "index 'by_phase' names unknown field 'phase' of 'project'",
        ),
        (
            "project.object.yml:5 fields.client.reference",
            "field 'client' references unknown object 'customer'",
        ),
        (
            "project.object.yml:8 fields.budget.expression",
            "formula 'budget' names unknown field 'hours' of 'project'",
        ),
        (
            "project.object.yml:8 fields.budget.expression",
            "formula 'budget' names unknown field 'rate' of 'project'",
        ),
    ]


def test_formula_cycles_and_bad_expressions(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.object.yml",
        """
        name: p
        fields:
          a: {type: formula, expression: b + 1}
          b: {type: formula, expression: a + 1}
          c: {type: formula, expression: "system('rm -rf /')"}
        """,
    )

    found = problems(tmp_path)

    assert found["p.object.yml:3 fields.a.expression"] == "formula cycle: a -> b -> a"
    assert found["p.object.yml:5 fields.c.expression"].startswith("unknown function 'system'")


def test_duplicate_object_names_are_reported(tmp_path: Path) -> None:
    write(tmp_path, "one.object.yml", "name: thing\nfields: {}\n")
    write(tmp_path, "two.object.yml", "name: thing\nfields: {}\n")

    assert "is already defined in" in " ".join(problems(tmp_path).values())


def test_a_name_defaults_to_the_file_name(tmp_path: Path) -> None:
    write(tmp_path, "invoice.object.yml", "fields:\n  number: {type: text}\n")

    assert list(MetadataRegistry.load([tmp_path]).objects) == ["invoice"]


def test_other_kinds_are_kept_as_raw_items(tmp_path: Path) -> None:
    write(tmp_path, "sales.permission.yml", "name: sales\nobjects: {account: {allowRead: true}}\n")
    write(
        tmp_path,
        "nightly.job.yml",
        "name: nightly\nschedule: {type: cron, expression: '0 2 * * *'}\n",
    )
    write(tmp_path, "notes.txt", "not metadata")

    registry = MetadataRegistry.load([tmp_path])

    assert registry.kinds() == ["job", "permission"]
    assert registry.get("permission", "sales").body == {
        "name": "sales",
        "objects": {"account": {"allowRead": True}},
    }
    with pytest.raises(NotFound):
        registry.get("job", "weekly")


def test_unknown_objects_are_404s() -> None:
    registry = MetadataRegistry.load([CRM])

    with pytest.raises(ObjectNotFound) as info:
        registry.get_object("spaceship")
    assert info.value.status == 404
    with pytest.raises(ObjectNotFound):
        registry.get("object", "spaceship")


def test_etags_change_exactly_when_content_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "note.object.yml", "name: note\nfields:\n  title: {type: text}\n")
    registry = MetadataRegistry.load([tmp_path])
    etag = registry.etag("object", "note")

    path.write_text("# reformatted\nname: note\nfields: {title: {type: text}}\n")
    assert not registry.reload()
    assert registry.etag("object", "note") == etag

    path.write_text("name: note\nfields:\n  title: {type: text, required: true}\n")
    changes = registry.reload()
    assert changes.changed == [("object", "note")]
    assert registry.etag("object", "note") != etag
    assert etag.startswith('"') and etag.endswith('"')


def test_reload_reports_added_and_removed_items(tmp_path: Path) -> None:
    old = write(tmp_path, "old.object.yml", "name: old\nfields: {}\n")
    registry = MetadataRegistry.load([tmp_path])
    version = registry.version
    old.unlink()
    write(tmp_path, "new.object.yml", "name: new\nfields: {}\n")

    changes = registry.reload()

    assert changes.added == [("object", "new")]
    assert changes.removed == [("object", "old")]
    assert changes.objects() == {"new", "old"}
    assert registry.version == version + 1


def test_a_broken_reload_keeps_the_previous_metadata(tmp_path: Path) -> None:
    path = write(tmp_path, "note.object.yml", "name: note\nfields:\n  title: {type: text}\n")
    registry = MetadataRegistry.load([tmp_path])

    path.write_text("name: note\nfields:\n  title: {type: nonsense}\n")
    with pytest.raises(ManifestError):
        registry.reload()

    assert registry.get_object("note").fields["title"].type == "text"


def test_objects_built_in_code_are_checked_too() -> None:
    with pytest.raises(ManifestError) as info:
        MetadataRegistry.from_objects(
            [{"name": "child", "fields": {"parent": {"type": "lookup", "reference": "ghost"}}}]
        )

    assert info.value.field_errors[0].field == "<memory>[0] child.fields.parent.reference"
    assert info.value.field_errors[0].message == (
        "field 'parent' references unknown object 'ghost'"
    )
