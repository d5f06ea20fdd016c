"""The audit event: who did what to which record, when, from where, with old and new values.

One :class:`AuditEvent` per fact an auditor wants to know:

=====================  ==========================================================  ===========
``action``             what happened                                               comes from
=====================  ==========================================================  ===========
``record.created``     a record was created (``changes``: every field set, new)     change log
``record.updated``     fields changed (``changes``: each field with old and new)    change log
``record.deleted``     a record was deleted (``changes``: every field, old)         change log
``record.read``        an audited object was read (``details``: ids read)           sink
``permission.denied``  a request was refused with 403 (``details``: code, reason)   sink
``auth.*``, ``user.*`` identity events (``auth.signed_in``, ``auth.sign_in_failed``  sink
...                    ... see :class:`objectos.security.identity.AuthEvent`)
``audit.gap``          change-log versions that were pruned before the projection   projection
                       read them (``details``: ``fromSeq``, ``toSeq``)
=====================  ==========================================================  ===========

Write events carry the change log's server version (``seq``) and get the id
``chg-<seq, zero-padded>``, so projecting the same change twice can never make two events.
Every other event gets a UUIDv7 id when it is made, so retrying its insert
is idempotent too.

The JSON shape (:meth:`AuditEvent.to_dict`, what the API returns and the
``audit`` service accepts) is camelCase: ``{id, at, action, actor, object,
recordId, changes: [{field, old, new}], ip, userAgent, requestId, traceId,
seq, details}``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from objectos.data.schema import new_id
from objectos.errors import FieldError, ValidationError

RECORD_CREATED = "record.created"
RECORD_UPDATED = "record.updated"
RECORD_DELETED = "record.deleted"
RECORD_READ = "record.read"
PERMISSION_DENIED = "permission.denied"
SIGNED_IN = "auth.signed_in"
SIGN_IN_FAILED = "auth.sign_in_failed"
AUDIT_GAP = "audit.gap"

#: Change-log operation → audit action.
ACTION_OF_OPERATION = {
    "create": RECORD_CREATED,
    "update": RECORD_UPDATED,
    "delete": RECORD_DELETED,
}

#: Actions only the change log produces: nobody may record them through a sink,
#: or a caller could forge a write that never happened.
WRITE_ACTIONS = frozenset(ACTION_OF_OPERATION.values()) | {AUDIT_GAP}

MAX_ACTION_LENGTH = 64
MAX_TEXT_LENGTH = 512
MAX_DETAILS_BYTES = 64 * 1024

_ACTION = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,64}$")
_CONTEXT_FIELDS = {
    "ip": "ip",
    "userAgent": "user_agent",
    "requestId": "request_id",
    "traceId": "trace_id",
}
_EVENT_KEYS = frozenset(
    {
        "id",
        "at",
        "action",
        "actor",
        "object",
        "recordId",
        "changes",
        "ip",
        "userAgent",
        "requestId",
        "traceId",
        "seq",
        "details",
    }
)


def change_event_id(seq: int) -> str:
    """The id of the audit event projected from change-log version ``seq``.

    Zero-padded, so events of one transaction (same ``at``) sort by version.
    """
    return f"chg-{seq:019d}"


def utc(value: dt.datetime) -> dt.datetime:
    """``value`` as an aware UTC datetime (naive values are taken as UTC)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def iso(value: dt.datetime) -> str:
    """``2024-05-01T12:00:00.123456Z``: the one timestamp format of audit JSON and CSV."""
    return utc(value).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class FieldChange:
    """One field of a write: its value before and after (None where it had none)."""

    field: str
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"field": self.field, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class AuditEvent:
    """One audited fact (see the module docstring for the actions and the JSON shape)."""

    id: str
    at: dt.datetime
    action: str
    actor: str | None = None
    object: str | None = None
    record_id: str | None = None
    changes: tuple[FieldChange, ...] = ()
    ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    seq: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        action: str,
        *,
        actor: str | None,
        object: str | None = None,
        record_id: str | None = None,
        context: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        at: dt.datetime | None = None,
    ) -> AuditEvent:
        """A non-write event happening now (``context``: an Actor's request context)."""
        context = context or {}
        return cls(
            id=new_id(),
            at=utc(at) if at is not None else dt.datetime.now(dt.UTC),
            action=action,
            actor=actor,
            object=object,
            record_id=record_id,
            ip=context.get("ip"),
            user_agent=context.get("userAgent"),
            request_id=context.get("requestId"),
            trace_id=context.get("traceId"),
            details=dict(details or {}),
        )

    @property
    def context(self) -> dict[str, str]:
        """The request context as an :class:`~objectos.data.actor.Actor` carries it."""
        out = {}
        for key, attribute in _CONTEXT_FIELDS.items():
            value = getattr(self, attribute)
            if value is not None:
                out[key] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of the API, the export and the ``audit`` service."""
        return {
            "id": self.id,
            "at": iso(self.at),
            "action": self.action,
            "actor": self.actor,
            "object": self.object,
            "recordId": self.record_id,
            "changes": [change.to_dict() for change in self.changes],
            "ip": self.ip,
            "userAgent": self.user_agent,
            "requestId": self.request_id,
            "traceId": self.trace_id,
            "seq": self.seq,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Any, *, allow_write_actions: bool = False) -> AuditEvent:
        """Parse and check an event a caller sends (the ``audit`` service's ``record_event``).

        ``id`` and ``at`` are optional (a new id, now). Every problem is
        reported at once as a :class:`~objectos.errors.ValidationError` with
        one field error each. Write actions (``record.created`` ...) are
        refused unless ``allow_write_actions``: only the change log may claim
        that a write happened.
        """
        if not isinstance(data, Mapping):
            raise ValidationError(
                "an audit event is a JSON object",
                details={"reason": f"got {type(data).__name__}"},
            )
        errors: list[FieldError] = []
        for key in sorted(set(data) - _EVENT_KEYS, key=str):
            errors.append(FieldError(str(key), "invalid_field", "unknown audit event key"))
        action = data.get("action")
        if not isinstance(action, str) or not _ACTION.match(action):
            errors.append(
                FieldError(
                    "action",
                    "invalid_field",
                    "must be dotted lower-case words such as 'auth.signed_in'",
                )
            )
        elif len(action) > MAX_ACTION_LENGTH:
            errors.append(
                FieldError("action", "invalid_field", f"at most {MAX_ACTION_LENGTH} characters")
            )
        elif action in WRITE_ACTIONS and not allow_write_actions:
            errors.append(
                FieldError(
                    "action",
                    "invalid_field",
                    f"{action} events come from the change log; they cannot be recorded",
                )
            )
        texts: dict[str, str | None] = {}
        event_id = data.get("id")
        if event_id is not None and (not isinstance(event_id, str) or not _ID.match(event_id)):
            errors.append(
                FieldError("id", "invalid_field", "must be 1-64 letters, digits or . _ : -")
            )
        texts["id"] = event_id if isinstance(event_id, str) and _ID.match(event_id) else None
        for key in ("actor", "object", "recordId", *_CONTEXT_FIELDS):
            value = data.get(key)
            if value is None:
                texts[key] = None
            elif not isinstance(value, str) or not value or len(value) > MAX_TEXT_LENGTH:
                errors.append(
                    FieldError(key, "invalid_field", f"must be text of 1-{MAX_TEXT_LENGTH} chars")
                )
            elif "\x00" in value:
                errors.append(FieldError(key, "invalid_field", "must not contain NUL characters"))
            else:
                texts[key] = value
        at = _parse_at(data.get("at"), errors)
        seq = data.get("seq")
        if seq is not None and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1):
            errors.append(FieldError("seq", "invalid_field", "must be a positive integer"))
        details = data.get("details") or {}
        if not isinstance(details, Mapping):
            errors.append(FieldError("details", "invalid_field", "must be a JSON object"))
            details = {}
        else:
            problem = _json_problem(details)
            if problem is not None:
                errors.append(FieldError("details", "invalid_field", problem))
        changes = _parse_changes(data.get("changes"), errors)
        if errors:
            raise ValidationError(
                "invalid audit event: " + "; ".join(f"{e.field}: {e.message}" for e in errors[:5]),
                details={"field": errors[0].field, "reason": errors[0].message},
                field_errors=errors,
            )
        return cls(
            id=texts["id"] or new_id(),
            at=at or dt.datetime.now(dt.UTC),
            action=str(action),
            actor=texts["actor"],
            object=texts["object"],
            record_id=texts["recordId"],
            changes=changes,
            ip=texts["ip"],
            user_agent=texts["userAgent"],
            request_id=texts["requestId"],
            trace_id=texts["traceId"],
            seq=seq,
            details=dict(details),
        )


def _parse_at(value: Any, errors: list[FieldError]) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return utc(value)
    if isinstance(value, str):
        try:
            return utc(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    errors.append(FieldError("at", "invalid_field", "must be an ISO 8601 timestamp"))
    return None


def _parse_changes(value: Any, errors: list[FieldError]) -> tuple[FieldChange, ...]:
    if value is None:
        return ()
    if not isinstance(value, Sequence) or isinstance(value, str):
        errors.append(FieldError("changes", "invalid_field", "must be a list of {field, old, new}"))
        return ()
    out = []
    for i, item in enumerate(value):
        if (
            not isinstance(item, Mapping)
            or set(item) - {"field", "old", "new"}
            or not isinstance(item.get("field"), str)
            or not item["field"]
        ):
            errors.append(FieldError(f"changes[{i}]", "invalid_field", "must be {field, old, new}"))
            continue
        out.append(FieldChange(item["field"], item.get("old"), item.get("new")))
    problem = _json_problem([c.to_dict() for c in out])
    if problem is not None:
        errors.append(FieldError("changes", "invalid_field", problem))
    return tuple(out)


def _json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as audit JSON, or None."""
    try:
        # No NaN/Infinity and no NUL: PostgreSQL's JSON refuses both.
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return "must be plain JSON (objects, lists, strings, finite numbers, booleans, null)"
    if "\\u0000" in text:
        return "must not contain NUL characters"
    if len(text) > MAX_DETAILS_BYTES:
        return f"must be JSON of at most {MAX_DETAILS_BYTES} bytes"
    return None


__all__ = [
    "ACTION_OF_OPERATION",
    "AUDIT_GAP",
    "PERMISSION_DENIED",
    "RECORD_CREATED",
    "RECORD_DELETED",
    "RECORD_READ",
    "RECORD_UPDATED",
    "SIGNED_IN",
    "SIGN_IN_FAILED",
    "WRITE_ACTIONS",
    "AuditEvent",
    "FieldChange",
    "change_event_id",
    "iso",
    "utc",
]
