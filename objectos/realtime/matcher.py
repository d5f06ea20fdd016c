"""Filters evaluated in memory: does one record (a JSON dict) match a filter?

The realtime engines decide per subscriber whether a changed record belongs to its
view, without a query. They accept exactly the filters REST accepts: the raw
filter goes through :func:`~objectos.data.filter.normalize_filter`, and when the
object's columns are known it is also checked by
:func:`~objectos.data.filter.compile_filter` against those columns, so field
names, operators per field type and value types are refused with the same
``invalid_field`` / ``invalid_filter`` errors (and the same ``details``) as a
REST list request. Pass only the columns the subscriber may read: any other
field is then unknown, as in SQL.

Evaluation follows the SQL semantics of :mod:`objectos.data.filter`:

* **two-valued NULL**: a missing field and ``None`` are null; ``$ne``, ``$nin``
  and ``$notContains`` match null, ``$not`` is the exact complement, ordering
  operators never match null;
* **text operators** are case-insensitive and literal (no wildcards); on a
  non-text value they look at its text form;
* **array fields** (multiselect, tags, ``multiple``): ``$eq``/``$contains`` test
  membership (a list means "all of"), ``$in`` means "any of";
* **typed comparisons**: numbers compare as decimals (``0.1 == 0.1`` whatever
  the float), date-times as instants (``...Z`` equals ``...+00:00``; naive
  values are UTC), dates and times as such;
* ``{"$field": name}`` compares with another field of the same record
  (``$eq``/``$ne`` treat two nulls as equal, like ``IS NOT DISTINCT FROM``).

Without columns (``columns=None``) the matcher is untyped: values compare as
they are and a list value gets array semantics. Known gap to SQL: SQLite folds
case of ASCII letters only, the matcher folds all of Unicode.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa

from objectos.data.filter import (
    ColumnInfo,
    FieldKind,
    compile_filter,
    field_kind,
    normalize_filter,
)

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]

_INVALID = object()  # a record value that cannot be read as the field's type


class RecordMatcher:
    """A compiled filter: call it with a record to know whether the record matches.

    Build one with :func:`compile_matcher`; ``fields`` are the fields the filter
    reads (``$field`` references included) and ``filter`` is its normalized form
    (None: match everything).
    """

    __slots__ = ("_predicate", "fields", "filter")

    def __init__(self, normalized: dict[str, Any] | None, predicate: Predicate) -> None:
        self.filter = normalized
        self._predicate = predicate
        self.fields = frozenset(_fields_of(normalized)) if normalized else frozenset()

    def __call__(self, record: Record | None) -> bool:
        """Whether ``record`` matches (a missing record never does)."""
        if record is None:
            return False
        return self._predicate(record)

    def __repr__(self) -> str:
        return f"RecordMatcher({self.filter!r})"


def compile_matcher(where: Any, columns: Mapping[str, ColumnInfo] | None = None) -> RecordMatcher:
    """Compile a filter in any syntax REST accepts into a :class:`RecordMatcher`.

    ``columns`` (field name → ColumnInfo, e.g. ``DataEngine.tables.columns(obj)``
    restricted to what the subscriber may read) turns on validation and typed
    comparison. Raises InvalidFilter / InvalidField exactly as
    :func:`~objectos.data.filter.compile_filter` would.
    """
    normalized = normalize_filter(where)
    if normalized is None:
        return RecordMatcher(None, lambda record: True)
    if columns is not None:
        # The SQL compiler is the one source of truth for what a filter may say:
        # compile against a column-only table (never executed) to get its checks.
        table = sa.table("_realtime", *(sa.column(info.name) for info in columns.values()))
        compile_filter(normalized, table, columns)
    return RecordMatcher(normalized, _Compiler(columns).node(normalized))


def _fields_of(node: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for key, value in node.items():
        if key in ("$and", "$or"):
            for child in value:
                found |= _fields_of(child)
        elif key == "$not":
            found |= _fields_of(value)
        else:
            found.add(key)
            for operand in value.values():
                if _is_field_ref(operand):
                    found.add(operand["$field"])
    return found


def _is_field_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and "$field" in value


# --------------------------------------------------------------------------
# Values


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return _INVALID
    try:
        # Through str: 0.1 stays 0.1 instead of its binary expansion.
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        return _INVALID
    return number if number.is_finite() else _INVALID


def _datetime(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime.combine(value, dt.time())
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return _INVALID
    else:
        return _INVALID
    # The hub stores UTC: naive values are UTC, aware ones compare as instants.
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def _date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        return _INVALID
    text = value.strip()
    try:
        # A date field kept in a timestamp column comes back as a date-time.
        if "T" in text:
            return dt.datetime.fromisoformat(text).date()
        return dt.date.fromisoformat(text)
    except ValueError:
        return _INVALID


def _time(value: Any) -> Any:
    if isinstance(value, dt.time):
        return value
    if not isinstance(value, str):
        return _INVALID
    try:
        return dt.time.fromisoformat(value.strip())
    except ValueError:
        return _INVALID


def _plain(value: Any) -> Any:
    """Untyped values: numbers become decimals so that 1 == 1.0; the rest stays."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = _number(value)
        return value if number is _INVALID else number
    return value


_CONVERT: dict[FieldKind, Callable[[Any], Any]] = {
    FieldKind.NUMBER: _number,
    FieldKind.DATETIME: _datetime,
    FieldKind.DATE: _date,
    FieldKind.TIME: _time,
}


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"  # what SQL's CAST of a boolean gives
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return str(int(value))
    return str(value)


def _is_null(value: Any) -> bool:
    return value is None


def _compare(op: str, left: Any, right: Any) -> bool:
    try:
        if op == "$gt":
            return bool(left > right)
        if op == "$gte":
            return bool(left >= right)
        if op == "$lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:  # untyped values of different types: not comparable, no match
        return False


def _equal(left: Any, right: Any) -> bool:
    try:
        return bool(left == right)
    except TypeError:
        return False


class _Compiler:
    """Turns a normalized filter into nested closures, converting operands once."""

    def __init__(self, columns: Mapping[str, ColumnInfo] | None) -> None:
        self.columns = columns

    def kind(self, field: str) -> FieldKind | None:
        if self.columns is None:
            return None
        info = self.columns.get(field)
        return field_kind(info) if info is not None else None

    def convert(self, kind: FieldKind | None) -> Callable[[Any], Any]:
        if kind is None or kind is FieldKind.ANY:
            return _plain
        if kind is FieldKind.ARRAY:
            return _plain  # applied to each member
        return _CONVERT.get(kind, lambda v: v)

    def node(self, node: Mapping[str, Any]) -> Predicate:
        parts = [self.entry(key, value) for key, value in node.items()]
        if len(parts) == 1:
            return parts[0]
        return lambda record: all(part(record) for part in parts)

    def entry(self, key: str, value: Any) -> Predicate:
        if key == "$and":
            children = [self.node(child) for child in value]
            return lambda record: all(child(record) for child in children)
        if key == "$or":
            children = [self.node(child) for child in value]
            return lambda record: any(child(record) for child in children)
        if key == "$not":
            inner = self.node(value)
            return lambda record: not inner(record)
        conditions = [self.condition(key, op, operand) for op, operand in value.items()]
        if len(conditions) == 1:
            return conditions[0]
        return lambda record: all(c(record) for c in conditions)

    def condition(self, field: str, op: str, operand: Any) -> Predicate:
        kind = self.kind(field)
        if op in ("$null", "$exists"):
            wants_null = operand if op == "$null" else not operand
            return lambda record: _is_null(record.get(field)) == wants_null
        if _is_field_ref(operand):
            return self.field_comparison(field, op, operand["$field"], kind)
        is_array = kind is FieldKind.ARRAY
        convert = self.convert(kind)
        if is_array or kind is None:
            return self.maybe_array(field, op, operand, convert, typed_array=is_array)
        return self.scalar(field, op, operand, convert)

    # -- scalar fields -------------------------------------------------------

    def scalar(self, field: str, op: str, operand: Any, convert: Callable[[Any], Any]) -> Predicate:
        test = self.scalar_test(op, operand, convert)

        def predicate(record: Record) -> bool:
            return test(record.get(field))

        return predicate

    def scalar_test(
        self, op: str, operand: Any, convert: Callable[[Any], Any]
    ) -> Callable[[Any], bool]:
        def read(value: Any) -> Any:
            return None if value is None else convert(value)

        if op in ("$eq", "$ne"):
            if operand is None:
                is_null = op == "$eq"
                return lambda value: _is_null(value) == is_null
            wanted = convert(operand)
            if op == "$eq":
                return lambda value: value is not None and _equal(read(value), wanted)
            return lambda value: value is None or not _equal(read(value), wanted)
        if op in ("$gt", "$gte", "$lt", "$lte"):
            bound = convert(operand)

            def ordered(value: Any) -> bool:
                current = read(value)
                if current is None or current is _INVALID or bound is _INVALID:
                    return False
                return _compare(op, current, bound)

            return ordered
        if op in ("$in", "$nin"):
            members = [convert(v) for v in operand if v is not None]
            with_null = None in operand

            def member(value: Any) -> bool:
                if value is None:
                    return with_null
                current = read(value)
                return any(_equal(current, m) for m in members)

            if op == "$in":
                return member
            return lambda value: not member(value)
        if op == "$between":
            low, high = (convert(v) for v in operand)

            def between(value: Any) -> bool:
                current = read(value)
                if current is None or current is _INVALID:
                    return False
                return _compare("$gte", current, low) and _compare("$lte", current, high)

            return between
        needle = str(operand).casefold()
        if op == "$contains":
            return lambda value: value is not None and needle in _text(value).casefold()
        if op == "$notContains":
            return lambda value: value is None or needle not in _text(value).casefold()
        if op == "$startsWith":
            return lambda value: value is not None and _text(value).casefold().startswith(needle)
        if op == "$endsWith":
            return lambda value: value is not None and _text(value).casefold().endswith(needle)
        raise AssertionError(f"unhandled operator {op}")  # normalize_filter knows no other

    # -- array fields (and untyped values that turn out to be lists) ----------

    def maybe_array(
        self,
        field: str,
        op: str,
        operand: Any,
        convert: Callable[[Any], Any],
        *,
        typed_array: bool,
    ) -> Predicate:
        array = self.array_test(op, operand, convert)
        scalar = None if typed_array else self.scalar_test_or_none(op, operand, convert)

        def predicate(record: Record) -> bool:
            value = record.get(field)
            if isinstance(value, list) or typed_array:
                return array(value)
            return scalar(value) if scalar is not None else False

        return predicate

    def scalar_test_or_none(
        self, op: str, operand: Any, convert: Callable[[Any], Any]
    ) -> Callable[[Any], bool] | None:
        if op in ("$contains", "$notContains") and isinstance(operand, list):
            return None  # "all of" only means something for lists
        return self.scalar_test(op, operand, convert)

    def array_test(
        self, op: str, operand: Any, convert: Callable[[Any], Any]
    ) -> Callable[[Any], bool]:
        def has(value: Any, element: Any) -> bool:
            return isinstance(value, list) and any(_equal(convert(v), element) for v in value)

        if op in ("$eq", "$ne") and operand is None:
            is_null = op == "$eq"
            return lambda value: _is_null(value) == is_null
        if op in ("$eq", "$ne", "$contains", "$notContains"):
            wanted = [convert(v) for v in (operand if isinstance(operand, list) else [operand])]
            if op in ("$eq", "$ne") and isinstance(operand, list):
                # Untyped only (typed filters refuse it): plain list equality.
                whole = [_plain(v) for v in operand]

                def same(value: Any) -> bool:
                    return isinstance(value, list) and [_plain(v) for v in value] == whole

                return same if op == "$eq" else (lambda value: not same(value))

            def all_of(value: Any) -> bool:
                return all(has(value, w) for w in wanted)

            if op in ("$eq", "$contains"):
                return all_of
            return lambda value: not all_of(value)
        if op in ("$in", "$nin"):
            members = [convert(v) for v in operand]

            def any_of(value: Any) -> bool:
                return any(has(value, m) for m in members)

            return any_of if op == "$in" else (lambda value: not any_of(value))
        # Ordering and text operators on a list: no SQL counterpart; never match.
        return lambda value: False

    # -- field against field ---------------------------------------------------

    def field_comparison(
        self, field: str, op: str, other: str, kind: FieldKind | None
    ) -> Predicate:
        convert = self.convert(kind)

        def read(record: Record, name: str) -> Any:
            value = record.get(name)
            return None if value is None else convert(value)

        def predicate(record: Record) -> bool:
            left, right = read(record, field), read(record, other)
            if op in ("$eq", "$ne"):
                same = (left is None and right is None) or (
                    left is not None and right is not None and _equal(left, right)
                )
                return same if op == "$eq" else not same
            if left is None or right is None or _INVALID in (left, right):
                return False
            return _compare(op, left, right)

        return predicate


__all__ = ["RecordMatcher", "compile_matcher"]
