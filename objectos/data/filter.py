"""Filters: every accepted filter syntax, one normalized form, one SQL condition.

A filter travels in two steps::

    raw: JSON text | Mongo-style dict | legacy array
      └─ normalize_filter()  structure checked, size limits enforced
           → normalized Mongo dict
              └─ compile_filter(table, columns)  fields, operators, value types checked
                   → ColumnElement[bool] (bound parameters only, never spliced SQL)

**Normalized form.** Every node is exactly one of::

    {"$and": [node, ...]}   {"$or": [node, ...]}   {"$not": node}
    {field: {op: value}}    one field, one operator

with ``op`` one of :data:`OPERATORS`. Implicit equality (``{"status": "open"}``),
several keys in one dict, several operators on one field and every legacy array
form are rewritten into it; normalizing a normalized filter returns an equal dict.

**NULL semantics are two-valued**, as in MongoDB: ``$ne``, ``$nin`` and
``$notContains`` match rows whose field is NULL, and ``$not`` is the exact
complement of its operand. SQL's three-valued logic would otherwise make
``{"$not": {"amount": {"$gt": 5}}}`` silently skip rows without an amount.

**Text matching** (``$contains``, ``$notContains``, ``$startsWith``, ``$endsWith``)
is case-insensitive on every dialect (SQLite's ``LIKE`` is case-insensitive and
PostgreSQL's is not, so the only portable choice is insensitive); the user's
text is LIKE-escaped, so ``%`` and ``_`` match literally. SQLite folds case of
ASCII letters only.

**Array fields** (multiselect, checkboxes, tags, and any field with
``multiple=True``) are JSON arrays; ``$eq``/``$contains`` test membership and
``$in`` tests "any of", through :class:`json_array_contains`, which compiles to
``json_each`` on SQLite and ``@>`` on PostgreSQL. On JSON columns ``$null``
(and ``$eq: null``) matches both SQL NULL and the JSON value ``null``
(:class:`json_is_null`), since ``sa.JSON`` stores Python None as the latter.

Pass ``columns`` holding only the fields the caller may read: every other name is
then an unknown field, which is how field-level security composes with filters.
Password fields are never queryable.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, FromClause
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from objectos.errors import InvalidField, InvalidFilter

MAX_FILTER_DEPTH = 16
"""Deepest nesting of ``$and``/``$or``/``$not`` accepted, measured on the
normalized filter (so ``$and`` inside ``$and``, which flattens, does not count)."""

# Raw input may nest a little deeper than its normalized form (legacy arrays
# and multi-key objects add levels that normalization removes); this guard only
# keeps the recursive walk over hostile input short.
_MAX_RAW_DEPTH = 4 * MAX_FILTER_DEPTH

MAX_FILTER_CONDITIONS = 1000
"""Most field conditions one filter may hold."""

MAX_IN_ITEMS = 1000
"""Most values one ``$in``/``$nin``/``$contains`` list may hold."""

MAX_FILTER_VALUES = 5000
"""Most values in a whole filter: each becomes a bound parameter, and drivers
cap parameters per statement (asyncpg at 32767)."""

MAX_FILTER_TEXT = 100_000
"""Longest filter accepted as JSON text, in characters."""

OPERATORS = frozenset(
    {
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$in",
        "$nin",
        "$between",
        "$contains",
        "$notContains",
        "$startsWith",
        "$endsWith",
        "$null",
        "$exists",
    }
)
"""Field operators of the normalized form (@objectstack/spec data/filter.zod.ts)."""

_LOGICAL = ("$and", "$or", "$not")

# Operator spellings are matched case-insensitively ("$startswith" is common).
_OPERATOR_BY_LOWER = {op.lower(): op for op in OPERATORS}

# Legacy array operators (ObjectQL AST_OPERATOR_MAP). "like", "is_null" and
# "is_not_null" need the value too and are handled in _legacy_condition.
_LEGACY_OPERATORS = {
    "=": "$eq",
    "==": "$eq",
    "!=": "$ne",
    "<>": "$ne",
    ">": "$gt",
    ">=": "$gte",
    "<": "$lt",
    "<=": "$lte",
    "in": "$in",
    "nin": "$nin",
    "not_in": "$nin",
    "not in": "$nin",
    "contains": "$contains",
    "notcontains": "$notContains",
    "not_contains": "$notContains",
    "startswith": "$startsWith",
    "starts_with": "$startsWith",
    "endswith": "$endsWith",
    "ends_with": "$endsWith",
    "between": "$between",
}
_LEGACY_SPECIAL = frozenset({"like", "is_null", "is_not_null"})


class ParamText(str):
    """A filter value that arrived as query-string text (``?amount=100``).

    JSON filters carry real types and are checked strictly; a flat query
    parameter can only ever be text, so the compiler converts a ``ParamText``
    to the field's type (``"100"`` → 100 on a number field) instead of
    rejecting it. It is a ``str``, so it pickles and serializes as one.
    """

    __slots__ = ()


@dataclass(frozen=True)
class ColumnInfo:
    """What the query compiler needs to know about one field of an object.

    ``name`` is the column's name in the table; the key under which the
    ColumnInfo is passed in ``columns`` is the field name clients use (they are
    usually equal). ``type`` is an @objectstack/spec field type name; it decides
    which operators and value types a filter may use on the field.
    """

    name: str
    type: str
    searchable: bool = False
    reference: str | None = None
    multiple: bool = False


class FieldKind(enum.Enum):
    """How a field type behaves in a query."""

    STRING = "string"
    REFERENCE = "reference"  # ids: strings, or integers on integer-keyed tables
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    TIME = "time"
    ARRAY = "array"  # JSON array of scalars
    STRUCTURED = "structured"  # JSON documents: only NULL tests make sense
    SECRET = "secret"  # never filtered, sorted, searched or selected
    ANY = "any"  # computed values of unknown type (formula)


_KIND_BY_TYPE = {
    **dict.fromkeys(
        (
            *("text", "textarea", "email", "url", "phone", "markdown", "html", "richtext"),
            *("code", "color", "select", "radio", "autonumber", "image", "file", "avatar"),
            *("video", "audio", "signature", "qrcode"),
        ),
        FieldKind.STRING,
    ),
    **dict.fromkeys(("lookup", "master_detail", "tree"), FieldKind.REFERENCE),
    **dict.fromkeys(
        ("number", "currency", "percent", "rating", "slider", "progress", "summary"),
        FieldKind.NUMBER,
    ),
    **dict.fromkeys(("boolean", "toggle"), FieldKind.BOOLEAN),
    "date": FieldKind.DATE,
    "datetime": FieldKind.DATETIME,
    "time": FieldKind.TIME,
    **dict.fromkeys(("multiselect", "checkboxes", "tags"), FieldKind.ARRAY),
    **dict.fromkeys(("json", "location", "address", "vector"), FieldKind.STRUCTURED),
    "password": FieldKind.SECRET,
    "formula": FieldKind.ANY,
}

_SCALAR_KINDS = frozenset(
    {
        FieldKind.STRING,
        FieldKind.REFERENCE,
        FieldKind.NUMBER,
        FieldKind.BOOLEAN,
        FieldKind.DATE,
        FieldKind.DATETIME,
        FieldKind.TIME,
        FieldKind.ANY,
    }
)
_ORDERED_KINDS = _SCALAR_KINDS - {FieldKind.BOOLEAN}
_TEXT_KINDS = frozenset({FieldKind.STRING, FieldKind.REFERENCE, FieldKind.ANY})

_OPS_BY_KIND: dict[FieldKind, frozenset[str]] = {
    **{
        kind: frozenset(
            {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$between"}
            | {"$null", "$exists"}
        )
        for kind in _ORDERED_KINDS
    },
    FieldKind.BOOLEAN: frozenset({"$eq", "$ne", "$in", "$nin", "$null", "$exists"}),
    FieldKind.ARRAY: frozenset(
        {"$eq", "$ne", "$in", "$nin", "$contains", "$notContains", "$null", "$exists"}
    ),
    FieldKind.STRUCTURED: frozenset({"$null", "$exists"}),
    FieldKind.SECRET: frozenset(),
}
for _kind in _TEXT_KINDS:
    _OPS_BY_KIND[_kind] |= {"$contains", "$notContains", "$startsWith", "$endsWith"}


def field_kind(info: ColumnInfo) -> FieldKind:
    """The query behaviour of a field: its type, or ARRAY when it holds many values."""
    kind = _KIND_BY_TYPE.get(info.type, FieldKind.ANY)
    if info.multiple and kind is not FieldKind.SECRET:
        return FieldKind.ARRAY
    return kind


def resolve_field(
    table: FromClause, columns: Mapping[str, ColumnInfo], field: str, *, usage: str = "filter"
) -> tuple[ColumnInfo, ColumnElement[Any]]:
    """The ColumnInfo and table column of ``field``, or InvalidField.

    ``usage`` ("filter", "sort", "select", ...) only words the error. A field
    present in ``columns`` but not in ``table`` is a metadata bug, not a client
    error, so it raises LookupError (a 500).
    """
    info = columns.get(field) if isinstance(field, str) else None
    if info is None:
        raise InvalidField(
            f"Unknown field {field!r} in {usage}",
            details={"field": field, "reason": "unknown field", "usage": usage},
        )
    if field_kind(info) is FieldKind.SECRET:
        raise InvalidField(
            f"Field {field!r} is a password and cannot be used in {usage}",
            details={"field": field, "reason": "password fields are write-only", "usage": usage},
        )
    try:
        column = table.c[info.name]
    except KeyError:
        raise LookupError(
            f"field {field!r} maps to column {info.name!r}, which table {table} lacks"
        ) from None
    return info, column


# --------------------------------------------------------------------------
# Normalization


@dataclass
class _Budget:
    """Running size of one filter, so huge or deep filters are refused early."""

    conditions: int = 0
    values: int = 0

    def take(self, values: int) -> None:
        self.conditions += 1
        self.values += values
        if self.conditions > MAX_FILTER_CONDITIONS:
            raise InvalidFilter(
                f"Filter has more than {MAX_FILTER_CONDITIONS} conditions",
                details={"reason": "too many conditions", "max": MAX_FILTER_CONDITIONS},
            )
        if self.values > MAX_FILTER_VALUES:
            raise InvalidFilter(
                f"Filter has more than {MAX_FILTER_VALUES} values",
                details={"reason": "too many values", "max": MAX_FILTER_VALUES},
            )


def normalize_filter(raw: Any) -> dict[str, Any] | None:
    """Rewrite any accepted filter syntax into the normalized Mongo-style dict.

    Accepts JSON text, a Mongo-style dict, or the legacy array forms
    (``["amount", ">", 100]``, ``["and", node, ...]``, ``[[cond], [cond]]``
    and ``[cond, "and", cond, "or", cond]`` where "and" binds tighter than
    "or", as in SQL). ``None``, ``""``, ``{}`` and ``[]`` mean "no filter" and
    return None.

    Only structure is checked here: operator names, value shapes that do not
    depend on the field (``$in`` takes a list, ``$null`` a bool, ...), nesting
    depth and size. Fields and value types are checked by :func:`compile_filter`.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = _parse_json(raw)
        if raw is None:
            return None
    if isinstance(raw, Mapping | list | tuple) and not raw:
        return None
    normalized = _normalize_node(raw, depth=1, budget=_Budget())
    if _logical_depth(normalized) > MAX_FILTER_DEPTH:
        raise _too_deep()
    return normalized


def _logical_depth(node: Mapping[str, Any]) -> int:
    """Nesting of $and/$or/$not in a normalized node (a field condition is 0)."""
    if "$and" in node or "$or" in node:
        children = node.get("$and") or node.get("$or") or []
        return 1 + max(_logical_depth(child) for child in children)
    if "$not" in node:
        return 1 + _logical_depth(node["$not"])
    return 0


def _too_deep() -> InvalidFilter:
    return InvalidFilter(
        f"Filter is nested deeper than {MAX_FILTER_DEPTH} levels",
        details={"reason": "nesting too deep", "max": MAX_FILTER_DEPTH},
    )


def _parse_json(text: str) -> Any:
    if not text.strip():
        return None
    if len(text) > MAX_FILTER_TEXT:
        raise InvalidFilter(
            f"Filter text is longer than {MAX_FILTER_TEXT} characters",
            details={"reason": "filter too long", "max": MAX_FILTER_TEXT},
        )
    try:
        # NaN/Infinity are not JSON; refusing them here keeps numbers finite.
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise InvalidFilter(
            f"Filter is not valid JSON: {exc}", details={"reason": "invalid JSON"}
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _normalize_node(node: Any, *, depth: int, budget: _Budget) -> dict[str, Any]:
    if depth > _MAX_RAW_DEPTH:
        raise _too_deep()
    if isinstance(node, Mapping):
        return _normalize_mapping(node, depth=depth, budget=budget)
    if isinstance(node, list | tuple):
        return _normalize_legacy(list(node), depth=depth, budget=budget)
    raise InvalidFilter(
        f"A filter node must be an object or an array, not {type(node).__name__}",
        details={"reason": "invalid filter node"},
    )


def _join(op: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """``{op: nodes}``, flattening children that are the same operator.

    ``$and`` of ``$and`` is one ``$and``; flattening keeps the normalized form
    shallow and makes normalization idempotent.
    """
    flat: list[dict[str, Any]] = []
    for node in nodes:
        if len(node) == 1 and op in node:
            flat.extend(node[op])
        else:
            flat.append(node)
    return flat[0] if len(flat) == 1 else {op: flat}


def _and(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return _join("$and", nodes)


def _normalize_mapping(node: Mapping[Any, Any], *, depth: int, budget: _Budget) -> dict[str, Any]:
    if not node:
        raise InvalidFilter(
            "An empty object cannot be part of a filter", details={"reason": "empty condition"}
        )
    parts: list[dict[str, Any]] = []
    for key, value in node.items():
        if not isinstance(key, str) or not key:
            raise InvalidFilter(
                f"Filter keys must be non-empty strings, not {key!r}",
                details={"reason": "invalid field name"},
            )
        if key in ("$and", "$or"):
            parts.append(_join(key, _normalize_list(key, value, depth=depth, budget=budget)))
        elif key == "$not":
            if isinstance(value, Mapping | list | tuple) and value:
                parts.append({"$not": _normalize_node(value, depth=depth + 1, budget=budget)})
            else:
                raise InvalidFilter(
                    "$not takes a non-empty filter object",
                    details={"operator": "$not", "reason": "expected a filter object"},
                )
        elif key.startswith("$"):
            raise InvalidFilter(
                f"Unknown logical operator {key!r}",
                details={"operator": key, "reason": "unknown operator"},
            )
        else:
            parts.extend(_normalize_field(key, value, depth=depth, budget=budget))
    return _and(parts)


def _normalize_list(op: str, value: Any, *, depth: int, budget: _Budget) -> list[dict[str, Any]]:
    if not isinstance(value, list | tuple) or not value:
        # Mongo refuses empty $and/$or too: "none of nothing" is a likely bug.
        raise InvalidFilter(
            f"{op} takes a non-empty array of filters",
            details={"operator": op, "reason": "expected a non-empty array"},
        )
    return [_normalize_node(item, depth=depth + 1, budget=budget) for item in value]


def _is_field_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and "$field" in value


def _normalize_field(
    field: str, value: Any, *, depth: int, budget: _Budget
) -> list[dict[str, Any]]:
    """``{field: value}`` → one normalized condition per operator."""
    if not isinstance(value, Mapping) or _is_field_ref(value):
        budget.take(1)
        return [{field: {"$eq": value}}]
    if not value:
        raise InvalidFilter(
            f"Empty operator object for field {field!r}",
            details={"field": field, "reason": "empty condition"},
        )
    if not all(isinstance(k, str) and k.startswith("$") for k in value):
        # {owner: {name: "x"}} is the spec's relation filter; joins are not compiled.
        raise InvalidFilter(
            f"Field {field!r} has a nested object; relation filters are not supported",
            details={"field": field, "reason": "relation filters are not supported"},
        )
    conditions: list[dict[str, Any]] = []
    for op_name, operand in value.items():
        if op_name == "$not":
            # Field-level $not ({name: {$not: {$contains: "x"}}}) is a Mongo idiom.
            inner = _normalize_node({field: operand}, depth=depth + 1, budget=budget)
            conditions.append({"$not": inner})
            continue
        op = _OPERATOR_BY_LOWER.get(op_name.lower())
        if op is None:
            raise InvalidFilter(
                f"Unknown operator {op_name!r} on field {field!r}",
                details={"field": field, "operator": op_name, "reason": "unknown operator"},
            )
        conditions.append({field: {op: _check_operand_shape(field, op, operand, budget)}})
    return conditions


def _check_operand_shape(field: str, op: str, operand: Any, budget: _Budget) -> Any:
    """Checks that need no field type: list sizes, booleans. Returns a copy-safe operand."""

    def fail(reason: str) -> InvalidFilter:
        return InvalidFilter(
            f"Invalid value for {op} on field {field!r}: {reason}",
            details={"field": field, "operator": op, "reason": reason},
        )

    if op in ("$in", "$nin"):
        if not isinstance(operand, list | tuple):
            raise fail("expected an array")
        if len(operand) > MAX_IN_ITEMS:
            raise fail(f"more than {MAX_IN_ITEMS} items")
        budget.take(len(operand))
        return list(operand)
    if op == "$between":
        if not isinstance(operand, list | tuple) or len(operand) != 2:
            raise fail("expected an array of two values [min, max]")
        budget.take(2)
        return list(operand)
    if op in ("$null", "$exists"):
        if not isinstance(operand, bool):
            raise fail("expected true or false")
        budget.take(0)
        return operand
    if op in ("$contains", "$notContains") and isinstance(operand, list | tuple):
        # A list is "contains all of" on array fields; compile checks the field kind.
        if not operand:
            raise fail("expected a non-empty array")
        if len(operand) > MAX_IN_ITEMS:
            raise fail(f"more than {MAX_IN_ITEMS} items")
        budget.take(len(operand))
        return list(operand)
    budget.take(1)
    return operand


def _normalize_legacy(items: list[Any], *, depth: int, budget: _Budget) -> dict[str, Any]:
    """The legacy array forms of ObjectQL (see :func:`normalize_filter`)."""
    if not items:
        raise InvalidFilter(
            "An empty array cannot be part of a filter", details={"reason": "empty condition"}
        )
    head = items[0]
    if isinstance(head, str):
        word = head.strip().lower()
        if word in ("and", "or") and all(isinstance(i, list | tuple) for i in items[1:]):
            if len(items) < 2:
                raise InvalidFilter(
                    f"{head!r} needs at least one condition",
                    details={"operator": head, "reason": "expected conditions"},
                )
            children = [_normalize_node(i, depth=depth + 1, budget=budget) for i in items[1:]]
            return _join(f"${word}", children)
        return _legacy_condition(items, budget)
    # A sequence of conditions, joined implicitly by "and" or by infix words.
    or_groups: list[list[dict[str, Any]]] = [[]]
    expect_condition = True
    for item in items:
        if isinstance(item, str):
            word = item.strip().lower()
            if word not in ("and", "or"):
                raise InvalidFilter(
                    f"Unknown connector {item!r} between conditions",
                    details={"operator": item, "reason": "expected 'and' or 'or'"},
                )
            if expect_condition:
                raise InvalidFilter(
                    f"Connector {item!r} must stand between two conditions",
                    details={"operator": item, "reason": "misplaced connector"},
                )
            if word == "or":
                or_groups.append([])
            expect_condition = True
        elif isinstance(item, list | tuple | Mapping):
            or_groups[-1].append(_normalize_node(item, depth=depth + 1, budget=budget))
            expect_condition = False
        else:
            raise InvalidFilter(
                f"Unexpected {item!r} in filter array",
                details={"reason": "expected a condition or 'and'/'or'"},
            )
    if expect_condition:
        raise InvalidFilter(
            "Filter array ends with a connector",
            details={"reason": "misplaced connector"},
        )
    return _join("$or", [_and(group) for group in or_groups])


def _legacy_condition(items: list[Any], budget: _Budget) -> dict[str, Any]:
    """``[field, op, value]`` (or ``[field, "is_null"]``) → normalized condition."""
    field = items[0]
    if len(items) not in (2, 3) or not isinstance(items[1], str):
        raise InvalidFilter(
            f"A condition array is [field, operator, value], got {items!r}",
            details={"field": field, "reason": "malformed condition"},
        )
    op_word = items[1].strip().lower()
    value = items[2] if len(items) == 3 else None
    if op_word in _LEGACY_SPECIAL:
        if op_word == "like":
            op, value = _like_to_operator(field, value)
        else:
            # An explicit false inverts: ["x", "is_null", false] means "x is set".
            is_null = value is not False
            op, value = "$null", is_null if op_word == "is_null" else not is_null
    elif op_word in _LEGACY_OPERATORS:
        if len(items) != 3:
            raise InvalidFilter(
                f"Operator {items[1]!r} needs a value",
                details={"field": field, "operator": items[1], "reason": "missing value"},
            )
        op = _LEGACY_OPERATORS[op_word]
    else:
        raise InvalidFilter(
            f"Unknown operator {items[1]!r} on field {field!r}",
            details={"field": field, "operator": items[1], "reason": "unknown operator"},
        )
    if not field:
        raise InvalidFilter(
            "Condition has an empty field name", details={"reason": "invalid field name"}
        )
    return {field: {op: _check_operand_shape(field, op, value, budget)}}


def _like_to_operator(field: str, value: Any) -> tuple[str, Any]:
    """Map SQL-style ``like`` onto the literal text operators.

    The spec maps ``like`` to ``$contains``; clients that still write SQL
    wildcards at the ends ("abc%", "%abc") get starts/ends-with. Interior
    wildcards stay literal: user text never becomes a LIKE pattern.
    """
    if not isinstance(value, str):
        raise InvalidFilter(
            f"Invalid value for like on field {field!r}: expected text",
            details={"field": field, "operator": "like", "reason": "expected text"},
        )
    starts, ends = value.startswith("%"), value.endswith("%") and len(value) > 1
    core = value[1 if starts else 0 : len(value) - 1 if ends else len(value)]
    if starts and not ends:
        return "$endsWith", core
    if ends and not starts:
        return "$startsWith", core
    return "$contains", core


def filter_fields(where: Any) -> set[str]:
    """Every field a filter (any accepted syntax) names, including ``$field`` references.

    For callers that check field-level access before compiling.
    """
    found: set[str] = set()
    where = normalize_filter(where)

    def walk(node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            if key in ("$and", "$or"):
                for child in value:
                    walk(child)
            elif key == "$not":
                walk(value)
            else:
                found.add(key)
                for operand in value.values():
                    if _is_field_ref(operand):
                        found.add(operand["$field"])

    if where:
        walk(where)
    return found


# --------------------------------------------------------------------------
# JSON array membership, per dialect


class json_array_contains(FunctionElement[bool]):
    """True when the JSON array in ``column`` has ``element`` as a member.

    Built as ``json_array_contains(column, element_bind, array_json_bind)``:
    SQLite compares elements one by one through ``json_each``; PostgreSQL asks
    ``jsonb @> '[element]'``, which needs the element wrapped in a JSON array.
    Both binds are part of the expression, so statement caching stays correct;
    each dialect renders only the one it uses.
    """

    type = sa.Boolean()
    inherit_cache = True

    @classmethod
    def of(cls, column: ColumnElement[Any], element: Any) -> json_array_contains:
        return cls(
            column,
            sa.bindparam(None, element, type_=_bind_type_for(element)),
            sa.bindparam(None, json.dumps([element]), type_=sa.String()),
        )


def _bind_type_for(element: Any) -> sa.types.TypeEngine[Any]:
    if isinstance(element, bool):
        return sa.Boolean()
    if isinstance(element, int):
        return sa.BigInteger()
    if isinstance(element, float):
        return sa.Float()
    return sa.String()


@compiles(json_array_contains, "sqlite")
def _json_array_contains_sqlite(
    element: json_array_contains, compiler: SQLCompiler, **kw: Any
) -> str:
    column, member, _ = list(element.clauses)
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.value = {compiler.process(member, **kw)})"
    )


@compiles(json_array_contains, "postgresql")
def _json_array_contains_postgresql(
    element: json_array_contains, compiler: SQLCompiler, **kw: Any
) -> str:
    column, _, array_json = list(element.clauses)
    # CAST works whether the column is json, jsonb or text holding JSON.
    expr = sa.cast(column, postgresql.JSONB).op("@>")(sa.cast(array_json, postgresql.JSONB))
    return compiler.process(expr, **kw)


@compiles(json_array_contains)
def _json_array_contains_default(
    element: json_array_contains, compiler: SQLCompiler, **kw: Any
) -> str:
    raise sa.exc.CompileError(
        f"array membership filters are not implemented for {compiler.dialect.name}"
    )


class json_is_null(FunctionElement[bool]):
    """True when a JSON column is SQL NULL or holds the JSON value ``null``.

    ``sa.JSON`` stores Python None as JSON ``null`` while an omitted column is
    SQL NULL; a client asking for "no value" means both. Never NULL itself.
    """

    type = sa.Boolean()
    inherit_cache = True


@compiles(json_is_null, "sqlite")
def _json_is_null_sqlite(element: json_is_null, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    expr = sa.or_(column.is_(None), sa.func.json_type(column) == sa.literal_column("'null'"))
    return compiler.process(sa.Grouping(expr), **kw)


@compiles(json_is_null, "postgresql")
def _json_is_null_postgresql(element: json_is_null, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    typeof = sa.func.jsonb_typeof(sa.cast(column, postgresql.JSONB))
    expr = sa.or_(column.is_(None), typeof == sa.literal_column("'null'"))
    return compiler.process(sa.Grouping(expr), **kw)


@compiles(json_is_null)
def _json_is_null_default(element: json_is_null, compiler: SQLCompiler, **kw: Any) -> str:
    (column,) = list(element.clauses)
    return compiler.process(sa.Grouping(column.is_(None)), **kw)


# --------------------------------------------------------------------------
# Compilation


def negate(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    """The two-valued complement: NULL counts as false before negating."""
    return sa.not_(sa.func.coalesce(condition, sa.false()))


def compile_filter(
    where: Mapping[str, Any] | Sequence[Any] | str | None,
    table: FromClause,
    columns: Mapping[str, ColumnInfo],
) -> ColumnElement[bool]:
    """Compile a filter (any syntax :func:`normalize_filter` accepts) to a condition.

    Raises InvalidField for a field not in ``columns`` (details: field), and
    InvalidFilter for an unknown operator (details: operator), an operator the
    field type does not support, or a value of the wrong type (details: field,
    operator, reason). An empty filter compiles to ``true``.
    """
    normalized = normalize_filter(where)
    if normalized is None:
        return sa.true()
    return _FilterCompiler(table, columns).node(normalized)


class _FilterCompiler:
    def __init__(self, table: FromClause, columns: Mapping[str, ColumnInfo]) -> None:
        self.table = table
        self.columns = columns

    def node(self, node: Mapping[str, Any]) -> ColumnElement[bool]:
        clauses = [self.entry(key, value) for key, value in node.items()]
        return clauses[0] if len(clauses) == 1 else sa.and_(*clauses)

    def entry(self, key: str, value: Any) -> ColumnElement[bool]:
        if key == "$and":
            return sa.and_(*(self.node(child) for child in value))
        if key == "$or":
            return sa.or_(*(self.node(child) for child in value))
        if key == "$not":
            return negate(self.node(value))
        info, column = resolve_field(self.table, self.columns, key)
        return sa.and_(*(self.condition(key, info, column, op, v) for op, v in value.items()))

    def condition(
        self, field: str, info: ColumnInfo, column: ColumnElement[Any], op: str, operand: Any
    ) -> ColumnElement[bool]:
        kind = field_kind(info)
        if op not in _OPS_BY_KIND[kind]:
            raise InvalidFilter(
                f"Operator {op} is not supported on {info.type} field {field!r}",
                details={
                    "field": field,
                    "operator": op,
                    "reason": f"not supported on {info.type} fields"
                    + (" holding many values" if kind is FieldKind.ARRAY else ""),
                },
            )
        if op in ("$null", "$exists"):
            wants_null = operand if op == "$null" else not operand
            return _is_null(column, kind) if wants_null else negate(_is_null(column, kind))
        if _is_field_ref(operand):
            return self.field_comparison(field, info, column, op, operand["$field"])
        values = _ValueCoercer(field, op, info, kind, column)
        if kind is FieldKind.ARRAY:
            return self.array_condition(column, op, operand, values)
        return self.scalar_condition(column, op, operand, values)

    def scalar_condition(
        self, column: ColumnElement[Any], op: str, operand: Any, values: _ValueCoercer
    ) -> ColumnElement[bool]:
        if op == "$eq":
            return column.is_(None) if operand is None else column == values.one(operand)
        if op == "$ne":
            return column.is_not(None) if operand is None else negate(column == values.one(operand))
        if op in ("$gt", "$gte", "$lt", "$lte"):
            compare: Callable[[Any], ColumnElement[bool]] = {
                "$gt": column.__gt__,
                "$gte": column.__ge__,
                "$lt": column.__lt__,
                "$lte": column.__le__,
            }[op]
            return compare(values.one(operand, nullable=False))
        if op in ("$in", "$nin"):
            members = [values.one(v) for v in operand if v is not None]
            matches: ColumnElement[bool] = column.in_(members)
            if None in operand:
                matches = sa.or_(matches, column.is_(None))
            return matches if op == "$in" else negate(matches)
        if op == "$between":
            low, high = (values.one(v, nullable=False) for v in operand)
            return column.between(low, high)
        text = values.text(operand)
        if op == "$contains":
            return _as_text(column).icontains(text, autoescape=True)
        if op == "$notContains":
            return negate(_as_text(column).icontains(text, autoescape=True))
        if op == "$startsWith":
            return _as_text(column).istartswith(text, autoescape=True)
        if op == "$endsWith":
            return _as_text(column).iendswith(text, autoescape=True)
        raise AssertionError(f"unhandled operator {op}")  # _OPS_BY_KIND and this agree

    def array_condition(
        self, column: ColumnElement[Any], op: str, operand: Any, values: _ValueCoercer
    ) -> ColumnElement[bool]:
        def member(value: Any) -> ColumnElement[bool]:
            return json_array_contains.of(column, values.element(value))

        if op in ("$eq", "$ne") and operand is None:
            missing = _is_null(column, FieldKind.ARRAY)
            return missing if op == "$eq" else negate(missing)
        if op in ("$eq", "$ne", "$contains", "$notContains"):
            wanted = operand if isinstance(operand, list) else [operand]
            if op in ("$eq", "$ne") and isinstance(operand, list):
                raise values.invalid("use $contains (all of) or $in (any of) with a list")
            matches = sa.and_(*(member(v) for v in wanted))
            return matches if op in ("$eq", "$contains") else negate(matches)
        # $in / $nin: any of the listed values is a member.
        matches = sa.or_(*(member(v) for v in operand)) if operand else sa.false()
        return matches if op == "$in" else negate(matches)

    def field_comparison(
        self, field: str, info: ColumnInfo, column: ColumnElement[Any], op: str, other: Any
    ) -> ColumnElement[bool]:
        if op not in ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte"):
            raise InvalidFilter(
                f"{op} cannot compare field {field!r} with another field",
                details={
                    "field": field,
                    "operator": op,
                    "reason": "$field is only for comparisons",
                },
            )
        if not isinstance(other, str):
            raise InvalidFilter(
                f"$field on {field!r} must name a field",
                details={"field": field, "operator": op, "reason": "$field takes a field name"},
            )
        other_info, other_column = resolve_field(self.table, self.columns, other)
        kind, other_kind = field_kind(info), field_kind(other_info)
        comparable = kind is other_kind or {kind, other_kind} <= _TEXT_KINDS
        if not comparable or kind not in _SCALAR_KINDS or other_kind not in _SCALAR_KINDS:
            raise InvalidFilter(
                f"Cannot compare {info.type} field {field!r} "
                f"with {other_info.type} field {other!r}",
                details={"field": field, "operator": op, "reason": "incompatible field types"},
            )
        if op == "$eq":
            return column.is_not_distinct_from(other_column)
        if op == "$ne":
            return column.is_distinct_from(other_column)
        return {
            "$gt": column.__gt__,
            "$gte": column.__ge__,
            "$lt": column.__lt__,
            "$lte": column.__le__,
        }[op](other_column)


def _is_null(column: ColumnElement[Any], kind: FieldKind) -> ColumnElement[bool]:
    if kind in (FieldKind.ARRAY, FieldKind.STRUCTURED):
        return json_is_null(column)
    return column.is_(None)


def _as_text(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """Text operators on a non-text column (formula, summary) compare its text form."""
    if isinstance(column.type, sa.String):
        return column
    return sa.cast(column, sa.String)


def column_python_type(column: ColumnElement[Any]) -> type | None:
    """The Python type the column's SQL type binds, if SQLAlchemy knows it."""
    try:
        return column.type.python_type
    except NotImplementedError:
        return None


class _ValueCoercer:
    """Checks filter values against a field's kind and converts them for binding."""

    def __init__(
        self, field: str, op: str, info: ColumnInfo, kind: FieldKind, column: ColumnElement[Any]
    ) -> None:
        self.field, self.op, self.info, self.kind, self.column = field, op, info, kind, column

    def invalid(self, reason: str) -> InvalidFilter:
        return InvalidFilter(
            f"Invalid value for {self.op} on {self.info.type} field {self.field!r}: {reason}",
            details={"field": self.field, "operator": self.op, "reason": reason},
        )

    def text(self, value: Any) -> str:
        if not isinstance(value, str):
            raise self.invalid("expected text")
        return str(value)

    def element(self, value: Any) -> Any:
        """A member of a JSON array field: a string or a number."""
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return value
        raise self.invalid("expected a string or a number")

    def one(self, value: Any, *, nullable: bool = True) -> Any:
        if value is None:
            if nullable:
                return None
            raise self.invalid("null is not allowed here; use $null")
        return coerce_value(self.kind, value, self.column, self.invalid)


def coerce_value(
    kind: FieldKind,
    value: Any,
    column: ColumnElement[Any],
    invalid: Callable[[str], Exception],
) -> Any:
    """Check ``value`` against ``kind`` and convert it to what ``column`` binds.

    Strict for JSON values; a :class:`ParamText` (query-string text) is parsed
    into the field's type first. ``invalid(reason)`` builds the error to raise.
    """
    python_type = column_python_type(column)
    if kind is FieldKind.ANY and python_type is not None:
        # A formula stores its result in a column of its return type: check
        # values as that type, or a text value would meet a number column.
        kind = _KIND_BY_PYTHON_TYPE.get(python_type, FieldKind.ANY)
    if kind in (FieldKind.STRING, FieldKind.ANY) and isinstance(value, ParamText):
        return str(value)
    if kind is FieldKind.STRING:
        if not isinstance(value, str):
            raise invalid("expected text")
        return str(value)
    if kind is FieldKind.REFERENCE:
        if isinstance(value, ParamText) and python_type is int:
            value = _parse_number(str(value), invalid)
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise invalid("expected a record id")
    if kind is FieldKind.NUMBER:
        if isinstance(value, ParamText):
            value = _parse_number(str(value), invalid)
        return _number_for_column(value, python_type, invalid)
    if kind is FieldKind.BOOLEAN:
        if isinstance(value, ParamText):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise invalid("expected true or false")
        if not isinstance(value, bool):
            raise invalid("expected true or false")
        return value
    if kind in (FieldKind.DATE, FieldKind.DATETIME, FieldKind.TIME):
        return _temporal_for_column(kind, value, column, python_type, invalid)
    # ANY (formula): whatever scalar the client sent.
    if isinstance(value, str | bool) or (
        isinstance(value, int | float | Decimal) and math.isfinite(value)
    ):
        return value
    raise invalid("expected a scalar value")


_KIND_BY_PYTHON_TYPE: dict[type, FieldKind] = {
    str: FieldKind.STRING,
    int: FieldKind.NUMBER,
    float: FieldKind.NUMBER,
    Decimal: FieldKind.NUMBER,
    bool: FieldKind.BOOLEAN,
    datetime: FieldKind.DATETIME,
    date: FieldKind.DATE,
    time: FieldKind.TIME,
}

_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def _parse_number(text: str, invalid: Callable[[str], Exception]) -> int | Decimal:
    text = text.strip()
    if not _NUMBER_TEXT.fullmatch(text):
        raise invalid("expected a number")
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    return Decimal(text)


def _number_for_column(
    value: Any, python_type: type | None, invalid: Callable[[str], Exception]
) -> Any:
    # bool is an int in Python, but true is not a number in a filter.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise invalid("expected a number")
    try:
        finite = math.isfinite(value)
    except (OverflowError, InvalidOperation):
        finite = False
    if not finite:
        raise invalid("expected a finite number")
    # asyncpg refuses a float for an integer parameter, and a Decimal column
    # compares exactly only with a Decimal: bind what the column holds.
    if python_type is Decimal:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    if python_type is int:
        if value == int(value):
            return int(value)
        return sa.literal(float(value), sa.Float())
    if python_type is float:
        return float(value)
    return value


def _temporal_for_column(
    kind: FieldKind,
    value: Any,
    column: ColumnElement[Any],
    python_type: type | None,
    invalid: Callable[[str], Exception],
) -> Any:
    expected = {
        FieldKind.DATE: "an ISO 8601 date (YYYY-MM-DD)",
        FieldKind.DATETIME: "an ISO 8601 date-time",
        FieldKind.TIME: "an ISO 8601 time (HH:MM[:SS])",
    }[kind]
    if not isinstance(value, str):
        raise invalid(f"expected {expected}")
    parsed: date | datetime | time
    try:
        if kind is FieldKind.DATE:
            parsed = date.fromisoformat(value.strip())
        elif kind is FieldKind.TIME:
            parsed = time.fromisoformat(value.strip())
        else:
            parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise invalid(f"expected {expected}, got {value!r}") from None
    if isinstance(parsed, datetime):
        # The hub stores UTC; naive values are UTC, aware ones are converted.
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC)
        stores_zone = bool(getattr(column.type, "timezone", False))
        parsed = parsed.replace(tzinfo=UTC if stores_zone else None)
    if python_type is str:
        return parsed.isoformat()
    if python_type is datetime and type(parsed) is date:
        # A date field stored in a timestamp column: the day starts at midnight.
        return datetime.combine(parsed, time())
    return parsed


def searchable_condition(
    terms: Iterable[str], columns: Sequence[ColumnElement[Any]], *, match_all: bool = True
) -> ColumnElement[bool]:
    """Full-text-ish search: every (or any) term appears in one of the columns.

    Case-insensitive, LIKE-escaped (``50%`` finds the text "50%" only).
    """
    per_term = [
        sa.or_(*(_as_text(column).icontains(term, autoescape=True) for column in columns))
        for term in terms
    ]
    if not per_term:
        return sa.true()
    return sa.and_(*per_term) if match_all else sa.or_(*per_term)


__all__ = [
    "MAX_FILTER_CONDITIONS",
    "MAX_FILTER_DEPTH",
    "MAX_FILTER_TEXT",
    "MAX_FILTER_VALUES",
    "MAX_IN_ITEMS",
    "OPERATORS",
    "ColumnInfo",
    "FieldKind",
    "ParamText",
    "coerce_value",
    "column_python_type",
    "compile_filter",
    "field_kind",
    "filter_fields",
    "json_array_contains",
    "json_is_null",
    "negate",
    "normalize_filter",
    "resolve_field",
    "searchable_condition",
]
