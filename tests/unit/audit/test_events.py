"""Events other code sends are checked field by field; only the change log may claim writes."""

from __future__ import annotations

import datetime as dt

import pytest

from objectos.audit import AuditEvent, FieldChange
from objectos.errors import ValidationError


def test_an_event_round_trips_through_its_json_shape() -> None:
    event = AuditEvent.new(
        "permission.denied",
        actor="bob",
        object="account",
        record_id="acme",
        context={"ip": "203.0.113.7", "userAgent": "curl/8", "requestId": "r1", "traceId": "t"},
        details={"code": "permission_denied"},
        at=dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC),
    )

    data = event.to_dict()

    assert data["at"] == "2024-05-01T12:00:00Z"
    assert data["recordId"] == "acme" and data["userAgent"] == "curl/8"
    assert AuditEvent.from_dict(data) == event
    assert event.context == {
        "ip": "203.0.113.7",
        "userAgent": "curl/8",
        "requestId": "r1",
        "traceId": "t",
    }


def test_missing_id_and_time_are_filled_in() -> None:
    event = AuditEvent.from_dict({"action": "report.exported", "actor": "ann"})

    assert event.id and event.at.tzinfo is not None
    assert event.changes == () and dict(event.details) == {}


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        AuditEvent.from_dict(
            {
                "action": "Not An Action",
                "actor": 42,
                "at": "last tuesday",
                "details": {"x": float("nan")},
                "changes": [{"field": "a", "colour": 1}],
                "extra": True,
            }
        )

    fields = [e.field for e in caught.value.field_errors]
    assert fields == ["extra", "action", "actor", "at", "details", "changes[0]"]
    assert caught.value.details == {"field": "extra", "reason": "unknown audit event key"}


@pytest.mark.parametrize("action", ["record.created", "record.updated", "record.deleted"])
def test_nobody_can_record_a_write_that_the_change_log_did_not_see(action: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AuditEvent.from_dict({"action": action, "actor": "mallory"})

    assert caught.value.field_errors[0].field == "action"
    assert AuditEvent.from_dict({"action": action}, allow_write_actions=True).action == action


def test_changes_are_parsed_into_field_changes() -> None:
    event = AuditEvent.from_dict(
        {"action": "sync.merged", "changes": [{"field": "phone", "old": "1", "new": "2"}]}
    )

    assert event.changes == (FieldChange("phone", "1", "2"),)


def test_ids_are_short_and_plain() -> None:
    with pytest.raises(ValidationError) as caught:
        AuditEvent.from_dict({"action": "report.exported", "id": "x" * 65})
    assert caught.value.field_errors[0].field == "id"
    assert AuditEvent.from_dict({"action": "report.exported", "id": "ext:42"}).id == "ext:42"
