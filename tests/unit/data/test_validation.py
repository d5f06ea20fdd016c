"""Every kind of validation error, reported per field and all at once."""

from __future__ import annotations

from typing import Any

import pytest

from objectos.data import DataEngine
from objectos.errors import DuplicateValue, MissingRequiredField, ValidationError
from objectos.metadata import MetadataRegistry

from .conftest import OpenEngine
from .doubles import ALICE

GADGET: dict[str, Any] = {
    "name": "gadget",
    "fields": {
        "code": {"type": "text", "minLength": 3, "maxLength": 8},
        "email": {"type": "email"},
        "homepage": {"type": "url"},
        "phone": {"type": "phone"},
        "size": {"type": "select", "options": [{"label": "S", "value": "s"}]},
        "colours": {
            "type": "multiselect",
            "options": [{"label": "Red", "value": "red"}, {"label": "Blue", "value": "blue"}],
        },
        "weight": {"type": "number", "precision": 5, "scale": 2, "min": 0},
        "ratio": {"type": "number"},
        "active": {"type": "boolean"},
        "launched": {"type": "date"},
        "opens": {"type": "time"},
        "tags": {"type": "tags"},
        "specs": {"type": "json"},
        "where": {"type": "location"},
        "address": {"type": "address"},
    },
}


async def errors_of(data: DataEngine, obj: str, record: dict[str, Any]) -> dict[str, str]:
    """``{field: code}`` of the ValidationError that inserting ``record`` raises."""
    with pytest.raises(ValidationError) as info:
        await data.insert(obj, record, actor=ALICE)
    assert info.value.status == 400
    return {e.field: e.code for e in info.value.field_errors}


@pytest.fixture
async def gadgets(open_engine: OpenEngine) -> DataEngine:
    return await open_engine(MetadataRegistry.from_objects([GADGET]))


async def test_values_of_every_type_are_checked_and_all_errors_reported(
    gadgets: DataEngine,
) -> None:
    errors = await errors_of(
        gadgets,
        "gadget",
        {
            "code": "ab",
            "email": "not-an-email",
            "homepage": "ftp://example.com",
            "phone": "call me",
            "size": "xl",
            "colours": ["red", "green"],
            "weight": -1,
            "ratio": "lots",
            "active": "yes",
            "launched": "31/12/2026",
            "opens": "noon",
            "tags": [1, 2],
            "where": {"latitude": 91, "longitude": 0},
            "address": {"planet": "Mars"},
        },
    )

    assert errors == {
        "code": "value_too_short",
        "email": "invalid_format",
        "homepage": "invalid_format",
        "phone": "invalid_format",
        "size": "invalid_option",
        "colours": "invalid_option",
        "weight": "value_out_of_range",
        "ratio": "invalid_field",
        "active": "invalid_field",
        "launched": "invalid_field",
        "opens": "invalid_field",
        "tags": "invalid_field",
        "where": "value_out_of_range",
        "address": "invalid_field",
    }


async def test_valid_values_are_stored_in_their_types(gadgets: DataEngine) -> None:
    gadget = await gadgets.insert(
        "gadget",
        {
            "code": "abc",
            "email": "ada@example.com",
            "homepage": "https://example.com/x",
            "phone": "+44 20 7946 0958",
            "size": "s",
            "colours": ["blue", "red", "blue"],
            "weight": "12.345",
            "ratio": 0.25,
            "active": True,
            "launched": "2026-12-31",
            "opens": "09:30",
            "tags": ["new"],
            "specs": {"volts": [110, 230]},
            "where": {"latitude": 51.5, "longitude": -0.1},
            "address": {"city": "London"},
        },
        actor=ALICE,
    )

    assert gadget["colours"] == ["blue", "red"]
    assert gadget["weight"] == 12.35  # rounded half-up to the field's scale
    assert gadget["ratio"] == 0.25
    assert gadget["opens"] == "09:30:00"
    assert gadget["specs"] == {"volts": [110, 230]}
    assert gadget["where"] == {"latitude": 51.5, "longitude": -0.1}


async def test_too_long_and_too_many_digits(gadgets: DataEngine) -> None:
    errors = await errors_of(gadgets, "gadget", {"code": "abcdefghi", "weight": 1000})

    assert errors == {"code": "value_too_long", "weight": "value_out_of_range"}


async def test_required_fields_raise_missing_required_field(data: DataEngine) -> None:
    with pytest.raises(MissingRequiredField) as info:
        await data.insert("opportunity", {"amount": 10}, actor=ALICE)

    assert {e.field for e in info.value.field_errors} == {"name", "account"}
    assert info.value.code == "missing_required_field"


async def test_blank_text_does_not_satisfy_required(data: DataEngine) -> None:
    with pytest.raises(MissingRequiredField):
        await data.insert("account", {"name": "   "}, actor=ALICE)


async def test_min_and_max(data: DataEngine) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)

    errors = await errors_of(
        data, "opportunity", {"name": "x", "account": acme["id"], "probability": 150}
    )

    assert errors == {"probability": "value_out_of_range"}


async def test_a_lookup_must_name_an_existing_record(data: DataEngine) -> None:
    errors = await errors_of(data, "contact", {"last_name": "Doe", "account": "no-such-account"})

    assert errors == {"account": "invalid_reference"}


async def test_cross_field_rule(data: DataEngine) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    deal = await data.insert(
        "opportunity", {"name": "x", "account": acme["id"], "stage": "negotiation"}, actor=ALICE
    )

    with pytest.raises(ValidationError) as info:
        await data.update("opportunity", deal["id"], {"stage": "closed_won"}, actor=ALICE)

    assert [(e.field, e.code, e.message) for e in info.value.field_errors] == [
        ("close_date", "validation_rule", "A won opportunity needs a close date.")
    ]
    won = await data.update(
        "opportunity",
        deal["id"],
        {"stage": "closed_won", "close_date": "2026-06-30"},
        actor=ALICE,
    )
    assert won["stage"] == "closed_won"


async def test_script_rule(open_engine: OpenEngine) -> None:
    registry = MetadataRegistry.from_objects(
        [
            {
                "name": "booking",
                "fields": {"nights": {"type": "number"}, "guests": {"type": "number"}},
                "validations": [
                    {
                        "name": "enough_beds",
                        "type": "script",
                        "expression": "guests <= nights * 4",
                        "message": "Too many guests for the stay.",
                    }
                ],
            }
        ]
    )
    data = await open_engine(registry)

    errors = await errors_of(data, "booking", {"nights": 1, "guests": 5})

    assert errors == {"enough_beds": "validation_rule"}
    # A rule reading an empty field is not violated (SQL CHECK semantics).
    assert (await data.insert("booking", {"guests": 5}, actor=ALICE))["guests"] == 5


async def test_format_rule(data: DataEngine) -> None:
    errors = await errors_of(data, "case", {"subject": "PRINTER ON FIRE"})

    assert errors == {"subject": "invalid_format"}


async def test_state_machine_rule(data: DataEngine) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    deal = await data.insert("opportunity", {"name": "x", "account": acme["id"]}, actor=ALICE)

    with pytest.raises(ValidationError) as info:
        await data.update("opportunity", deal["id"], {"stage": "negotiation"}, actor=ALICE)

    assert [e.code for e in info.value.field_errors] == ["invalid_transition"]
    moved = await data.update("opportunity", deal["id"], {"stage": "qualification"}, actor=ALICE)
    assert moved["stage"] == "qualification"


async def test_warnings_do_not_reject_a_write(data: DataEngine) -> None:
    contact = await data.insert("contact", {"last_name": "Doe"}, actor=ALICE)  # no phone

    assert contact["do_not_call"] is False


async def test_unique_field_raises_duplicate_value(data: DataEngine) -> None:
    await data.insert("account", {"name": "Acme"}, actor=ALICE)

    with pytest.raises(DuplicateValue) as info:
        await data.insert("account", {"name": "Acme"}, actor=ALICE)

    assert info.value.status == 409
    assert info.value.code == "duplicate_value"
    assert [e.field for e in info.value.field_errors] == ["name"]


async def test_unique_rule_over_several_fields(data: DataEngine) -> None:
    acme = await data.insert("account", {"name": "Acme"}, actor=ALICE)
    deal = await data.insert("opportunity", {"name": "x", "account": acme["id"]}, actor=ALICE)
    other = await data.insert("opportunity", {"name": "y", "account": acme["id"]}, actor=ALICE)
    item = {"opportunity": deal["id"], "product": "Widget", "unit_price": 1}
    await data.insert("opportunity_line_item", item, actor=ALICE)

    with pytest.raises(DuplicateValue) as info:
        await data.insert("opportunity_line_item", item, actor=ALICE)

    assert info.value.field_errors[0].message == "This product is already on the opportunity."
    # The same product on another opportunity is fine.
    await data.insert("opportunity_line_item", {**item, "opportunity": other["id"]}, actor=ALICE)


async def test_unique_is_checked_on_update_too(data: DataEngine) -> None:
    await data.insert("account", {"name": "Acme"}, actor=ALICE)
    globex = await data.insert("account", {"name": "Globex"}, actor=ALICE)

    with pytest.raises(DuplicateValue):
        await data.update("account", globex["id"], {"name": "Acme"}, actor=ALICE)


async def test_case_insensitive_unique_rule(open_engine: OpenEngine) -> None:
    registry = MetadataRegistry.from_objects(
        [
            {
                "name": "tag",
                "fields": {"label": {"type": "text"}},
                "validations": [
                    {
                        "name": "one_label",
                        "type": "unique",
                        "fields": ["label"],
                        "caseSensitive": False,
                        "message": "Label exists.",
                    }
                ],
            }
        ]
    )
    data = await open_engine(registry)
    await data.insert("tag", {"label": "Urgent"}, actor=ALICE)

    with pytest.raises(DuplicateValue):
        await data.insert("tag", {"label": "URGENT"}, actor=ALICE)
