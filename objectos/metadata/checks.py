"""Checks that need more than one object: references, summaries, formulas, rules.

:func:`check_objects` never stops at the first problem; it returns every
:class:`Problem` with the object and the key path inside that object's file,
so the loader can name file, line and key for each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from objectos.metadata.expression import Expression, ExpressionError
from objectos.metadata.relations import reference_target, summary_link
from objectos.protocol.object import (
    NUMERIC_TYPES,
    OPTION_TYPES,
    SYSTEM_FIELDS,
    CrossFieldRule,
    FieldType,
    FormatRule,
    ObjectField,
    ObjectSchema,
    ScriptRule,
    StateMachineRule,
    UniqueRule,
)

Path = tuple[str | int, ...]

_ORDERABLE_TYPES = NUMERIC_TYPES | {FieldType.DATE, FieldType.DATETIME, FieldType.TIME}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one object: where (key path in its file) and why."""

    object: str
    path: Path
    message: str
    code: str = "invalid_metadata"
    #: For ``unknown_object`` problems: the object that was not found.
    target: str | None = None


def _is_numeric(field: ObjectField) -> bool:
    if field.type == FieldType.SUMMARY:
        return True
    return field.value_type in NUMERIC_TYPES


def _is_orderable(field: ObjectField) -> bool:
    return field.type == FieldType.SUMMARY or field.value_type in _ORDERABLE_TYPES


class _ObjectChecker:
    def __init__(self, obj: ObjectSchema, objects: Mapping[str, ObjectSchema]) -> None:
        self.obj = obj
        self.objects = objects
        self.problems: list[Problem] = []
        self.known = set(obj.fields) | set(SYSTEM_FIELDS)

    def problem(
        self, path: Path, message: str, code: str = "invalid_metadata", target: str | None = None
    ) -> None:
        self.problems.append(Problem(self.obj.name, path, message, code, target))

    def need_fields(self, names: Iterable[str], path: Path, what: str) -> None:
        for name in names:
            if name not in self.known:
                self.problem(
                    path,
                    f"{what} names unknown field {name!r} of {self.obj.name!r}",
                    "unknown_field",
                )

    def expression(self, source: str, path: Path, what: str) -> Expression | None:
        try:
            expr = Expression(source)
        except ExpressionError as exc:
            self.problem(path, str(exc), "invalid_expression")
            return None
        self.need_fields(sorted(expr.names), path, what)
        return expr

    def run(self) -> list[Problem]:
        for name, field in self.obj.fields.items():
            self.field(name, field)
        self.formula_cycles()
        seen_indexes: set[str] = set()
        for i, index in enumerate(self.obj.indexes):
            if index.name in seen_indexes:
                self.problem(("indexes", i, "name"), f"index name {index.name!r} is used twice")
            seen_indexes.add(index.name)
            self.need_fields(index.fields, ("indexes", i, "fields"), f"index {index.name!r}")
        seen_rules: set[str] = set()
        for i, rule in enumerate(self.obj.validations):
            if rule.name in seen_rules:
                self.problem(("validations", i, "name"), f"rule name {rule.name!r} is used twice")
            seen_rules.add(rule.name)
            self.rule(i, rule)
        if self.obj.displayNameField is not None:
            self.need_fields([self.obj.displayNameField], ("displayNameField",), "displayNameField")
        return self.problems

    def field(self, name: str, field: ObjectField) -> None:
        path: Path = ("fields", name)
        target = reference_target(self.obj.name, field)
        if target is not None and target not in self.objects:
            self.problem(
                (*path, "reference"),
                f"field {name!r} references unknown object {target!r}",
                "unknown_object",
                target,
            )
        if field.type == FieldType.FORMULA and field.expression:
            self.expression(field.expression, (*path, "expression"), f"formula {name!r}")
        if field.type == FieldType.SUMMARY and field.summaryOperations is not None:
            self.summary(name, field)
        if field.type in OPTION_TYPES and field.defaultValue is not None and field.options:
            allowed = {o.value for o in field.options}
            given = (
                field.defaultValue if isinstance(field.defaultValue, list) else [field.defaultValue]
            )
            for value in given:
                if value not in allowed:
                    self.problem(
                        (*path, "defaultValue"),
                        f"defaultValue {value!r} is not one of the options of {name!r}",
                    )

    def summary(self, name: str, field: ObjectField) -> None:
        ops = field.summaryOperations
        assert ops is not None
        path: Path = ("fields", name, "summaryOperations")
        child = self.objects.get(ops.object)
        if child is None:
            self.problem(
                (*path, "object"),
                f"summary {name!r} rolls up unknown object {ops.object!r}",
                "unknown_object",
                ops.object,
            )
            return
        if summary_link(self.obj.name, child) is None:
            self.problem(
                (*path, "object"),
                f"summary {name!r}: {ops.object!r} is not a child of {self.obj.name!r} (it needs "
                f"exactly one master_detail, or else one lookup, field referencing "
                f"{self.obj.name!r})",
                "not_a_child",
            )
        if ops.field is not None:
            child_field = child.fields.get(ops.field)
            if child_field is None:
                if ops.field not in SYSTEM_FIELDS:
                    self.problem(
                        (*path, "field"),
                        f"summary {name!r} names unknown field {ops.field!r} of {ops.object!r}",
                        "unknown_field",
                    )
            elif ops.function in ("sum", "avg") and not _is_numeric(child_field):
                self.problem(
                    (*path, "field"),
                    f"summary {name!r}: {ops.function} needs a numeric field, "
                    f"{ops.object}.{ops.field} is {child_field.type.value}",
                )
            elif ops.function in ("min", "max") and not _is_orderable(child_field):
                self.problem(
                    (*path, "field"),
                    f"summary {name!r}: {ops.function} needs a number or date field, "
                    f"{ops.object}.{ops.field} is {child_field.type.value}",
                )
        if ops.filter:
            child_known = set(child.fields) | set(SYSTEM_FIELDS)
            for key in _filter_fields(ops.filter):
                if key not in child_known:
                    self.problem(
                        (*path, "filter"),
                        f"summary {name!r} filters on unknown field {key!r} of {ops.object!r}",
                        "unknown_field",
                    )

    def formula_cycles(self) -> None:
        """A formula may read another formula, but never (transitively) itself."""
        formulas = {
            name: field.expression
            for name, field in self.obj.fields.items()
            if field.type == FieldType.FORMULA and field.expression
        }
        reads: dict[str, set[str]] = {}
        for name, source in formulas.items():
            try:
                reads[name] = set(Expression(source).names) & set(formulas)
            except ExpressionError:
                continue
        visiting: set[str] = set()
        done: set[str] = set()

        def visit(name: str, trail: list[str]) -> None:
            if name in done:
                return
            if name in visiting:
                cycle = " -> ".join([*trail[trail.index(name) :], name])
                self.problem(
                    ("fields", name, "expression"), f"formula cycle: {cycle}", "formula_cycle"
                )
                return
            visiting.add(name)
            for dep in sorted(reads.get(name, ())):
                visit(dep, [*trail, name])
            visiting.discard(name)
            done.add(name)

        for name in sorted(reads):
            visit(name, [])

    def rule(self, i: int, rule: object) -> None:
        path: Path = ("validations", i)
        if isinstance(rule, ScriptRule):
            self.expression(rule.expression, (*path, "expression"), f"rule {rule.name!r}")
        elif isinstance(rule, CrossFieldRule):
            self.expression(rule.condition, (*path, "condition"), f"rule {rule.name!r}")
            self.need_fields(rule.fields, (*path, "fields"), f"rule {rule.name!r}")
        elif isinstance(rule, UniqueRule):
            self.need_fields(rule.fields, (*path, "fields"), f"rule {rule.name!r}")
        elif isinstance(rule, FormatRule):
            self.need_fields([rule.field], (*path, "field"), f"rule {rule.name!r}")
        elif isinstance(rule, StateMachineRule):
            self.need_fields([rule.field], (*path, "field"), f"rule {rule.name!r}")
            field = self.obj.fields.get(rule.field)
            if field is not None and field.options:
                states = {o.value for o in field.options}
                for source, targets in rule.transitions.items():
                    for state in [source, *targets]:
                        if state not in states:
                            self.problem(
                                (*path, "transitions", source),
                                f"rule {rule.name!r}: {state!r} is not an option of {rule.field!r}",
                                "unknown_state",
                            )


def _filter_fields(where: Mapping[str, object]) -> set[str]:
    """Field names used by a Mongo-style filter (operators start with '$')."""
    found: set[str] = set()
    for key, value in where.items():
        if key in ("$and", "$or") and isinstance(value, list):
            for part in value:
                if isinstance(part, Mapping):
                    found |= _filter_fields(part)
        elif key == "$not" and isinstance(value, Mapping):
            found |= _filter_fields(value)
        elif not key.startswith("$"):
            found.add(key)
    return found


def check_objects(objects: Mapping[str, ObjectSchema]) -> list[Problem]:
    """Every cross-object problem of ``objects`` (empty when they are consistent)."""
    problems: list[Problem] = []
    for obj in objects.values():
        problems.extend(_ObjectChecker(obj, objects).run())
    return problems


__all__ = ["Problem", "check_objects"]
