"""ObjectSchema: what one object definition may and may not say."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from objectos.protocol.object import FieldType, ObjectSchema


def schema(**fields: dict[str, Any]) -> ObjectSchema:
    return ObjectSchema.model_validate({"name": "thing", "fields": fields})


def refusal(**fields: dict[str, Any]) -> str:
    """The error message of an object with ``fields``."""
    with pytest.raises(pydantic.ValidationError) as info:
        schema(**fields)
    return str(info.value)


def test_a_minimal_object() -> None:
    thing = schema(title={"type": "text"})

    assert thing.fields["title"].type is FieldType.TEXT
    assert thing.display_field == "id"
    assert thing.allows("delete")
    assert thing.sync.strategy == "lww"


def test_every_protocol_field_type_is_known() -> None:
    # The list exactly as PROTOCOL.md spells it.
    names = (  # noqa: SIM905
        "text textarea email url phone password markdown html richtext number currency "
        "percent date datetime time boolean toggle select multiselect radio checkboxes lookup "
        "master_detail tree image file avatar formula summary autonumber location address code "
        "json color rating slider tags"
    ).split()

    assert sorted(names) == sorted(t.value for t in FieldType)


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ({"type": "lookup"}, "needs 'reference'"),
        ({"type": "formula"}, "needs 'expression'"),
        ({"type": "summary"}, "needs 'summaryOperations'"),
        ({"type": "select"}, "needs 'options'"),
        ({"type": "text", "reference": "account"}, "only for lookup"),
        ({"type": "text", "expression": "1"}, "only for formula"),
        ({"type": "autonumber", "autonumberFormat": "CASE"}, "exactly one counter"),
        ({"type": "autonumber", "autonumberFormat": "{0000}-{HH}"}, "unknown token"),
        ({"type": "master_detail", "reference": "a", "deleteBehavior": "set_null"}, "cascade or"),
        (
            {"type": "lookup", "reference": "a", "required": True, "deleteBehavior": "set_null"},
            "required reference",
        ),
        ({"type": "number", "min": 5, "max": 1}, "min is greater than max"),
        ({"type": "formula", "expression": "1", "required": True}, "computed"),
        ({"type": "formula", "expression": "1", "returnType": "lookup"}, "returnType"),
        (
            {"type": "select", "options": [{"label": "A", "value": "a"}] * 2},
            "must be distinct",
        ),
        ({"type": "text", "colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_field_level_mistakes(field: dict[str, Any], reason: str) -> None:
    assert reason in refusal(x=field)


@pytest.mark.parametrize("name", ["Title", "1st", "first-name", "id", "owner", "version"])
def test_field_names_are_snake_case_and_not_system_fields(name: str) -> None:
    refusal(**{name: {"type": "text"}})


def test_delete_behavior_defaults() -> None:
    thing = schema(
        optional={"type": "lookup", "reference": "a"},
        required={"type": "lookup", "reference": "a", "required": True},
        master={"type": "master_detail", "reference": "a"},
    )

    assert thing.fields["optional"].on_delete == "set_null"
    assert thing.fields["required"].on_delete == "restrict"
    assert thing.fields["master"].on_delete == "cascade"


def test_validation_rules_are_discriminated_by_type() -> None:
    thing = ObjectSchema.model_validate(
        {
            "name": "thing",
            "fields": {"code": {"type": "text"}},
            "validations": [
                {
                    "name": "r1",
                    "type": "format",
                    "field": "code",
                    "regex": "[A-Z]+",
                    "message": "m",
                },
                {"name": "r2", "type": "unique", "fields": ["code"], "message": "m"},
            ],
        }
    )

    assert [type(r).__name__ for r in thing.validations] == ["FormatRule", "UniqueRule"]
    with pytest.raises(pydantic.ValidationError):
        ObjectSchema.model_validate(
            {
                "name": "thing",
                "fields": {},
                "validations": [
                    {"name": "r", "type": "format", "field": "x", "regex": "(", "message": "m"}
                ],
            }
        )


def test_api_methods_limit_what_rest_serves() -> None:
    reference = ObjectSchema.model_validate(
        {"name": "code", "fields": {}, "enable": {"apiMethods": ["get", "list"]}}
    )
    hidden = ObjectSchema.model_validate(
        {"name": "secret", "fields": {}, "enable": {"apiEnabled": False}}
    )

    assert reference.allows("list") and not reference.allows("create")
    assert not hidden.allows("get")
