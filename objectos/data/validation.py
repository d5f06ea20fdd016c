"""Record-level checks and computed values: required fields, rules, formulas, autonumbers.

:class:`RecordRules` is built once per object (expressions parsed once) and
used by the engine on every write:

- :meth:`RecordRules.compute_formulas` fills formula fields, in dependency
  order, from the record's other values;
- :meth:`RecordRules.check` returns every violated ``required`` flag and
  validation rule (script, cross_field, format, state_machine) as
  :class:`~objectos.errors.FieldError` objects. Unique rules need the
  database, so the engine checks them itself.

Only rules with ``severity: error`` reject a write; warnings and infos are for
UIs. A rule whose condition evaluates to null (a field it reads is empty)
passes, like a SQL CHECK constraint (see :mod:`objectos.metadata.expression`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, Literal

from objectos.data.values import computed_value, is_blank
from objectos.errors import FieldError
from objectos.metadata.expression import Expression, ExpressionError
from objectos.protocol.object import (
    AUTONUMBER_TOKENS,
    CrossFieldRule,
    FieldType,
    FormatRule,
    ObjectSchema,
    ScriptRule,
    StateMachineRule,
)

WriteEvent = Literal["insert", "update"]


def format_autonumber(pattern: str | None, number: int, now: dt.datetime) -> str:
    """``CASE-{0000}`` and 7 give ``CASE-0007``; date tokens (``{YYYY}``...) read ``now``."""

    def token(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("0"):
            return str(number).zfill(len(name))
        return {
            "YYYY": f"{now.year:04d}",
            "YY": f"{now.year % 100:02d}",
            "MM": f"{now.month:02d}",
            "DD": f"{now.day:02d}",
        }[name]

    return AUTONUMBER_TOKENS.sub(token, pattern or "{0}")


class RecordRules:
    """The compiled formulas and validation rules of one object."""

    def __init__(self, obj: ObjectSchema) -> None:
        """Parse every expression of ``obj`` (already checked when the metadata loaded)."""
        self.obj = obj
        formulas = {
            name: Expression(field.expression or "")
            for name, field in obj.fields.items()
            if field.type == FieldType.FORMULA
        }
        self.formula_order = _dependency_order(formulas)
        self.formulas = formulas
        self.conditions: dict[str, Expression] = {}
        self.patterns: dict[str, re.Pattern[str]] = {}
        for rule in obj.validations:
            if isinstance(rule, ScriptRule):
                self.conditions[rule.name] = Expression(rule.expression)
            elif isinstance(rule, CrossFieldRule):
                self.conditions[rule.name] = Expression(rule.condition)
            elif isinstance(rule, FormatRule):
                self.patterns[rule.name] = re.compile(rule.regex)

    def compute_formulas(self, record: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
        """The value of every formula field for ``record`` (formulas may read formulas)."""
        values = dict(record)
        results: dict[str, Any] = {}
        for name in self.formula_order:
            try:
                raw = self.formulas[name].evaluate(values, now=now)
            except ExpressionError:
                raw = None
            value = computed_value(self.obj.fields[name], raw)
            values[name] = results[name] = value
        return results

    def check(
        self,
        record: Mapping[str, Any],
        *,
        event: WriteEvent,
        previous: Mapping[str, Any] | None = None,
        now: dt.datetime,
    ) -> list[FieldError]:
        """Every required-field and rule violation of ``record`` (empty when it is valid)."""
        errors: list[FieldError] = []
        for name, field in self.obj.fields.items():
            if field.computed:
                continue
            if (field.required or field.type == FieldType.MASTER_DETAIL) and is_blank(
                record.get(name)
            ):
                errors.append(FieldError(name, "missing_required_field", f"{name} is required"))
        for rule in self.obj.validations:
            if not rule.active or rule.severity != "error" or event not in rule.events:
                continue
            if isinstance(rule, ScriptRule | CrossFieldRule):
                try:
                    ok = self.conditions[rule.name].is_true(record, now=now)
                except ExpressionError:
                    ok = False
                if ok is False:
                    targets = rule.fields if isinstance(rule, CrossFieldRule) else []
                    for target in targets or [rule.name]:
                        errors.append(FieldError(target, "validation_rule", rule.message))
            elif isinstance(rule, FormatRule):
                value = record.get(rule.field)
                if not is_blank(value) and not self.patterns[rule.name].fullmatch(str(value)):
                    errors.append(FieldError(rule.field, "invalid_format", rule.message))
            elif isinstance(rule, StateMachineRule) and event == "update" and previous:
                before, after = previous.get(rule.field), record.get(rule.field)
                allowed = rule.transitions.get(str(before)) if before is not None else None
                if before != after and allowed is not None and after not in allowed:
                    errors.append(
                        FieldError(
                            rule.field,
                            "invalid_transition",
                            f"{rule.message} ({before!r} -> {after!r}; allowed: "
                            f"{', '.join(map(repr, allowed)) or 'none'})",
                        )
                    )
        return errors


def _dependency_order(formulas: Mapping[str, Expression]) -> list[str]:
    """Formulas ordered so each comes after the formulas it reads (no cycles: checked)."""
    order: list[str] = []
    placed: set[str] = set()

    def place(name: str, trail: frozenset[str]) -> None:
        if name in placed or name in trail:
            return
        for dep in sorted(formulas[name].names & set(formulas)):
            place(dep, trail | {name})
        placed.add(name)
        order.append(name)

    for name in formulas:
        place(name, frozenset())
    return order


__all__ = ["RecordRules", "WriteEvent", "format_autonumber"]
