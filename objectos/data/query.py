"""The query compiler: REST list parameters or a QueryAST → a parameterized SELECT.

Two parsers produce one :class:`QuerySpec`; three builders turn a spec into a
SQLAlchemy Core statement::

    parse_list_params(?top=10&sort=-amount&status=open)  ┐
    parse_query_ast({"where": ..., "orderBy": ...})      ┴→ QuerySpec
        build_select(spec, table, columns)     rows of one page
        build_count(spec, table, columns)      total, ignoring paging
        build_aggregate(spec, table, columns)  groupBy + aggregations

Parsing needs no metadata and checks syntax only; the builders know the
object's ``columns`` and check fields and value types. Every value reaches the
database as a bound parameter.

**Row-level security.** Every builder takes ``extra_where``, the permission
engine's condition. It is ANDed with the user's filter as a separate operand,
so no ``$or`` or ``$not`` in the user's filter can widen it.

**Field-level security.** Pass in ``columns`` only the fields the caller may
read: everything else is then an unknown field (InvalidField) wherever it is
named — select, filter, sort, search, groupBy and aggregations.

**Limits.** ``top`` defaults to :data:`DEFAULT_LIMIT`; a ``top`` above
:data:`MAX_LIMIT` is refused (InvalidFilter) rather than clamped, so a client
never mistakes a clamped page for the page it asked for.

**Paging.** ``skip``/``top`` for offsets, or ``cursor`` for keyset paging: the
rows are ordered by the sort fields and then by ``id``, and a cursor carries
the last row's values of exactly those fields (:func:`encode_cursor`). Keyset
pages never skip or repeat rows under concurrent inserts at earlier positions.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import ColumnElement, FromClause
from sqlalchemy.sql.functions import FunctionElement

from objectos.data.filter import (
    ColumnInfo,
    FieldKind,
    ParamText,
    column_python_type,
    compile_filter,
    field_kind,
    filter_fields,
    normalize_filter,
    resolve_field,
    searchable_condition,
)
from objectos.errors import InvalidField, InvalidFilter

DEFAULT_LIMIT = 50
"""Page size when the client names none."""

MAX_LIMIT = 1000
"""Largest page a client may ask for; larger is refused, not clamped."""

MAX_SORT_FIELDS = 8
"""Most sort fields: each one widens the keyset condition of a cursor."""

MAX_SEARCH_TERMS = 16
"""Most words in a search; each becomes one LIKE per searchable column."""

MAX_CURSOR_LENGTH = 4096
"""Longest cursor token accepted, in characters."""

MAX_EXPAND_DEPTH = 3
"""Deepest nesting of expand queries in a QueryAST (the spec's default)."""

MAX_AGGREGATIONS = 32
"""Most aggregations in one query."""

AGGREGATE_FUNCTIONS = frozenset({"count", "sum", "avg", "min", "max", "count_distinct"})

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

SortDirection = Literal["asc", "desc"]


@dataclass(frozen=True)
class Aggregation:
    """One aggregate column: ``function(field) AS alias``, optionally filtered.

    ``field`` is None only for ``count`` (``count(*)``). ``where`` is a
    normalized filter restricting the rows this aggregate sees (SQL ``FILTER``).
    """

    function: str
    field: str | None
    alias: str
    where: dict[str, Any] | None = None


@dataclass
class QuerySpec:
    """A parsed query, independent of any object's metadata.

    The first eleven fields are the contract with the data engine; the rest
    refine them and all have neutral defaults.
    """

    fields: list[str] | None = None
    """Fields to return (``id`` is always added); None means every column."""
    where: dict[str, Any] | None = None
    """Normalized Mongo-style filter (see :mod:`objectos.data.filter`)."""
    order_by: list[tuple[str, str]] = field(default_factory=list)
    """``(field, "asc"|"desc")`` pairs; ``id`` is appended as final tiebreaker."""
    limit: int | None = DEFAULT_LIMIT
    """Page size; None (internal callers only) means unbounded."""
    offset: int = 0
    cursor: str | None = None
    """Opaque keyset token from :func:`encode_cursor` of the previous page."""
    search: str | None = None
    """Words to find in the searchable fields, case-insensitively."""
    expand: list[str] = field(default_factory=list)
    """Lookup fields whose records the engine should embed."""
    aggregations: list[Aggregation] = field(default_factory=list)
    group_by: list[str] = field(default_factory=list)
    count: bool = False
    """Whether the client wants the total number of matching records."""

    object: str | None = None
    """The object a QueryAST named, for the engine to check against the route."""
    search_fields: list[str] | None = None
    """Fields to search instead of the searchable ones (QueryAST search.fields)."""
    search_operator: Literal["and", "or"] = "and"
    """Whether every search word (and) or any (or) must be found."""
    expand_specs: dict[str, QuerySpec] = field(default_factory=dict)
    """Nested queries of QueryAST ``expand: {field: QueryAST}``."""

    def referenced_fields(self) -> set[str]:
        """Every field the query names, for an explicit field-level access check."""
        names = set(self.fields or ()) | filter_fields(self.where)
        names |= {name for name, _ in self.order_by} | set(self.group_by)
        names |= set(self.search_fields or ()) | set(self.expand)
        for aggregation in self.aggregations:
            if aggregation.field:
                names.add(aggregation.field)
            names |= filter_fields(aggregation.where)
        return names


# --------------------------------------------------------------------------
# Parsing: REST query string

# Canonical parameter → accepted spellings. "$"-prefixed ones are OData's.
_LIST_PARAMS: dict[str, tuple[str, ...]] = {
    "limit": ("top", "limit", "$top"),
    "offset": ("skip", "offset", "$skip"),
    "fields": ("select", "fields", "$select"),
    "sort": ("sort", "orderBy", "orderby", "order_by", "$orderby"),
    "filter": ("filter", "filters", "$filter", "where"),
    "expand": ("expand", "populate", "$expand"),
    "search": ("search", "$search"),
    "count": ("count", "$count"),
    "cursor": ("cursor",),
}

RESERVED_PARAMS = frozenset(name for names in _LIST_PARAMS.values() for name in names)
"""Query parameter names that are never read as a field equality."""


def parse_list_params(params: Mapping[str, str], *, reserved: Sequence[str] = ()) -> QuerySpec:
    """Parse the query string of ``GET /data/{object}``.

    ``top``/``skip`` (or ``limit``/``offset``), ``select`` (csv), ``sort``
    ("name,-created_at" or "name asc,created_at desc"), ``filter`` (JSON; also
    ``filters``, ``$filter``, ``where``), ``expand``/``populate`` (csv),
    ``search``, ``count`` (true/false) and ``cursor``. Every other parameter is
    an equality on the field of that name (``?status=open``), its text
    converted to the field's type when compiled; names in ``reserved`` (the
    HTTP layer's own parameters) are skipped.
    """
    given: dict[str, tuple[str, str]] = {}
    equalities: list[dict[str, Any]] = []
    skip = set(reserved)
    for name, value in params.items():
        canonical = _canonical_param(name)
        if canonical is not None:
            if canonical in given and given[canonical][1] != value:
                raise InvalidFilter(
                    f"Parameters {given[canonical][0]!r} and {name!r} conflict",
                    details={"parameter": name, "reason": f"conflicts with {given[canonical][0]}"},
                )
            given[canonical] = (name, value)
        elif name in skip:
            continue
        elif name.startswith("$") or not name:
            raise InvalidFilter(
                f"Unknown query parameter {name!r}",
                details={"parameter": name, "reason": "unknown parameter"},
            )
        else:
            equalities.append({name: {"$eq": ParamText(value)}})

    def text(canonical: str) -> str | None:
        return given[canonical][1] if canonical in given else None

    def parameter(canonical: str) -> str:
        return given[canonical][0]

    where_parts = [normalize_filter(text("filter")), *equalities]
    spec = QuerySpec(
        where=normalize_filter({"$and": [p for p in where_parts if p]})
        if any(where_parts)
        else None,
        fields=_csv(text("fields")),
        order_by=_parse_sort(text("sort") or "", parameter="sort"),
        expand=_csv(text("expand")) or [],
        count=_parse_bool(text("count"), parameter="count") if "count" in given else False,
        cursor=_parse_cursor_param(text("cursor")),
    )
    if "limit" in given:
        spec.limit = _parse_int(text("limit"), parameter=parameter("limit"), maximum=MAX_LIMIT)
    if "offset" in given:
        spec.offset = _parse_int(text("offset"), parameter=parameter("offset"))
    search = (text("search") or "").strip()
    spec.search = search or None
    _check_paging(spec)
    return spec


def _canonical_param(name: str) -> str | None:
    for canonical, spellings in _LIST_PARAMS.items():
        if name in spellings:
            return canonical
    return None


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [item.strip() for item in value.split(",")]
    return [item for item in items if item] or None


def _parse_int(value: Any, *, parameter: str, maximum: int | None = None, minimum: int = 0) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise InvalidFilter(
            f"{parameter} must be a whole number, got {value!r}",
            details={"parameter": parameter, "reason": "expected a whole number"},
        )
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise InvalidFilter(
            f"{parameter} must be {bounds}, got {number}",
            details={"parameter": parameter, "reason": f"must be {bounds}", "max": maximum},
        )
    return number


def _parse_bool(value: Any, *, parameter: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", ""):
        # A bare "?count" means yes.
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no"):
        return False
    raise InvalidFilter(
        f"{parameter} must be true or false, got {value!r}",
        details={"parameter": parameter, "reason": "expected true or false"},
    )


def _parse_cursor_param(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_CURSOR_LENGTH:
        raise _bad_cursor("cursor too long")
    return value.strip()


_SORT_ITEM = re.compile(r"([+-]?)\s*([^\s]+)(?:\s+(asc|desc|ascending|descending))?", re.I)


def _parse_sort(value: Any, *, parameter: str) -> list[tuple[str, str]]:
    """``"name,-created_at"``, ``"name asc, created_at desc"``, a list of those
    strings, or QueryAST ``[{field, order}]`` → ``[(field, direction)]``."""
    if isinstance(value, str):
        items: list[Any] = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise InvalidFilter(
            f"{parameter} must be a string or an array",
            details={"parameter": parameter, "reason": "expected a string or an array"},
        )
    order: list[tuple[str, str]] = []
    for item in items:
        name, direction = _parse_sort_item(item, parameter=parameter)
        if any(name == seen for seen, _ in order):
            raise InvalidFilter(
                f"Field {name!r} appears twice in {parameter}",
                details={"parameter": parameter, "field": name, "reason": "duplicate sort field"},
            )
        order.append((name, direction))
    if len(order) > MAX_SORT_FIELDS:
        raise InvalidFilter(
            f"{parameter} has more than {MAX_SORT_FIELDS} fields",
            details={"parameter": parameter, "reason": "too many sort fields"},
        )
    return order


def _parse_sort_item(item: Any, *, parameter: str) -> tuple[str, str]:
    if isinstance(item, Mapping):
        unknown = set(item) - {"field", "order"}
        name, direction = item.get("field"), item.get("order", "asc")
        if unknown or not isinstance(name, str) or not name:
            raise InvalidFilter(
                f"{parameter} entries are {{field, order}}, got {dict(item)!r}",
                details={"parameter": parameter, "reason": "malformed sort entry"},
            )
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            raise InvalidFilter(
                f"Sort order must be asc or desc, got {direction!r}",
                details={"parameter": parameter, "field": name, "reason": "invalid sort order"},
            )
        return name, direction.lower()
    if isinstance(item, list | tuple) and len(item) == 2:
        # ObjectQL's [["name", "desc"]].
        return _parse_sort_item({"field": item[0], "order": item[1]}, parameter=parameter)
    match = _SORT_ITEM.fullmatch(item.strip()) if isinstance(item, str) else None
    if match is None:
        raise InvalidFilter(
            f"Cannot read sort entry {item!r}",
            details={"parameter": parameter, "reason": "malformed sort entry"},
        )
    sign, name, word = match.groups()
    if sign and word:
        raise InvalidFilter(
            f"Sort entry {item!r} has both a sign and a direction",
            details={"parameter": parameter, "field": name, "reason": "malformed sort entry"},
        )
    descending = sign == "-" or (word or "").lower().startswith("desc")
    return name, "desc" if descending else "asc"


def _check_paging(spec: QuerySpec) -> None:
    if spec.cursor is not None and spec.offset:
        raise InvalidFilter(
            "cursor and skip cannot be combined",
            details={"parameter": "cursor", "reason": "cursor paging replaces skip"},
        )


# --------------------------------------------------------------------------
# Parsing: QueryAST

_AST_KEYS = frozenset(
    {
        "object",
        "fields",
        "where",
        "filter",
        "filters",
        "search",
        "orderBy",
        "sort",
        "limit",
        "top",
        "offset",
        "skip",
        "cursor",
        "expand",
        "aggregations",
        "groupBy",
        "count",
    }
)
# Spec keys this compiler does not implement: refusing them beats ignoring them.
_AST_UNSUPPORTED = frozenset({"joins", "having", "windowFunctions", "distinct"})
_AST_ALIASES = {
    "where": ("where", "filter", "filters"),
    "orderBy": ("orderBy", "sort"),
    "limit": ("limit", "top"),
    "offset": ("offset", "skip"),
}
_SEARCH_KEYS = frozenset(
    {"query", "fields", "operator", "fuzzy", "boost", "minScore", "language", "highlight"}
)
_AGGREGATION_KEYS = frozenset({"function", "field", "alias", "distinct", "filter"})


def parse_query_ast(body: Mapping[str, Any]) -> QuerySpec:
    """Parse a QueryAST (the body of ``POST /data/{object}/query``).

    Keys: ``object``, ``fields``, ``where`` (or ``filter``/``filters``),
    ``search`` (text or ``{query, fields, operator}``), ``orderBy``
    (``[{field, order}]`` or a sort string; alias ``sort``), ``limit``/``top``,
    ``offset``/``skip``, ``cursor`` (token, or the last row's ``{field: value}``),
    ``expand`` (list, or map of nested QueryASTs), ``aggregations``, ``groupBy``,
    ``count``. Any other key is refused with InvalidFilter naming it.
    """
    return _parse_ast(body, depth=0)


def _parse_ast(body: Any, *, depth: int) -> QuerySpec:
    if not isinstance(body, Mapping):
        raise InvalidFilter(
            "A query must be a JSON object", details={"reason": "expected an object"}
        )
    for key in body:
        if key in _AST_UNSUPPORTED:
            raise InvalidFilter(
                f"Query key {key!r} is not supported",
                details={"key": key, "reason": "not supported"},
            )
        if key not in _AST_KEYS:
            raise InvalidFilter(
                f"Unknown query key {key!r}", details={"key": key, "reason": "unknown key"}
            )
    values: dict[str, Any] = {}
    for canonical, spellings in _AST_ALIASES.items():
        present = [name for name in spellings if name in body]
        if len(present) > 1:
            raise InvalidFilter(
                f"Query keys {present} mean the same; use one",
                details={"key": present[1], "reason": f"conflicts with {present[0]}"},
            )
        if present:
            values[canonical] = body[present[0]]

    spec = QuerySpec()
    obj = body.get("object")
    if obj is not None and not isinstance(obj, str):
        raise _bad_key("object", "expected an object name")
    spec.object = obj
    spec.fields = _parse_field_list(body.get("fields"), key="fields")
    spec.where = normalize_filter(values.get("where"))
    if "orderBy" in values and values["orderBy"] is not None:
        spec.order_by = _parse_sort(values["orderBy"], parameter="orderBy")
    if values.get("limit") is not None:
        spec.limit = _parse_int(values["limit"], parameter="limit", maximum=MAX_LIMIT)
    if values.get("offset") is not None:
        spec.offset = _parse_int(values["offset"], parameter="offset")
    _parse_ast_search(body.get("search"), spec)
    spec.expand, spec.expand_specs = _parse_expand(body.get("expand"), depth=depth)
    spec.aggregations = _parse_aggregations(body.get("aggregations"))
    spec.group_by = _parse_field_list(body.get("groupBy"), key="groupBy") or []
    if body.get("count") is not None:
        spec.count = _parse_bool(body["count"], parameter="count")
    cursor = body.get("cursor")
    if isinstance(cursor, Mapping):
        # The spec's keyset form: the last row itself.
        try:
            spec.cursor = encode_cursor(cursor, spec.order_by)
        except (LookupError, TypeError):
            raise _bad_key("cursor", "needs every sort field and id of the last row") from None
    elif isinstance(cursor, str):
        spec.cursor = _parse_cursor_param(cursor)
    elif cursor is not None:
        raise _bad_key("cursor", "expected a cursor token or the last row's sort values")
    _check_paging(spec)
    return spec


def _bad_key(key: str, reason: str) -> InvalidFilter:
    return InvalidFilter(
        f"Invalid query key {key!r}: {reason}", details={"key": key, "reason": reason}
    )


def _parse_field_list(value: Any, *, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _csv(value)
    if not isinstance(value, list | tuple) or not all(
        isinstance(item, str) and item for item in value
    ):
        # The spec also allows {field, fields, alias} for relation projections.
        raise _bad_key(key, "expected an array of field names")
    return list(value)


def _parse_ast_search(value: Any, spec: QuerySpec) -> None:
    if value is None:
        return
    if isinstance(value, str):
        spec.search = value.strip() or None
        return
    if not isinstance(value, Mapping):
        raise _bad_key("search", "expected text or {query, fields}")
    for key in value:
        if key not in _SEARCH_KEYS:
            raise InvalidFilter(
                f"Unknown search key {key!r}",
                details={"key": f"search.{key}", "reason": "unknown key"},
            )
    # fuzzy, boost, minScore, language and highlight are ranking hints for a
    # search engine; a LIKE search has no ranking, so they are accepted and unused.
    query = value.get("query")
    if query is not None and not isinstance(query, str):
        raise _bad_key("search.query", "expected text")
    spec.search = (query or "").strip() or None
    spec.search_fields = _parse_field_list(value.get("fields"), key="search.fields")
    operator = value.get("operator", "and")
    if operator not in ("and", "or"):
        raise _bad_key("search.operator", "expected 'and' or 'or'")
    spec.search_operator = operator


def _parse_expand(value: Any, *, depth: int) -> tuple[list[str], dict[str, QuerySpec]]:
    if value is None:
        return [], {}
    if isinstance(value, str):
        return _csv(value) or [], {}
    if isinstance(value, list | tuple):
        return _parse_field_list(value, key="expand") or [], {}
    if not isinstance(value, Mapping):
        raise _bad_key("expand", "expected an array of fields or a map of queries")
    names: list[str] = []
    nested: dict[str, QuerySpec] = {}
    for name, sub in value.items():
        names.append(name)
        if sub is None or sub is True or (isinstance(sub, Mapping) and not sub):
            continue
        if depth + 1 > MAX_EXPAND_DEPTH:
            raise InvalidFilter(
                f"expand is nested deeper than {MAX_EXPAND_DEPTH} levels",
                details={"key": "expand", "field": name, "reason": "nesting too deep"},
            )
        nested[name] = _parse_ast(sub, depth=depth + 1)
    return names, nested


def _parse_aggregations(value: Any) -> list[Aggregation]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise _bad_key("aggregations", "expected an array")
    if len(value) > MAX_AGGREGATIONS:
        raise _bad_key("aggregations", f"more than {MAX_AGGREGATIONS} aggregations")
    aggregations = [_parse_aggregation(item) for item in value]
    aliases = [a.alias for a in aggregations]
    for alias in aliases:
        if aliases.count(alias) > 1:
            raise InvalidFilter(
                f"Aggregation alias {alias!r} is used twice",
                details={"key": "aggregations", "alias": alias, "reason": "duplicate alias"},
            )
    return aggregations


def _parse_aggregation(item: Any) -> Aggregation:
    if not isinstance(item, Mapping):
        raise _bad_key("aggregations", "each aggregation is {function, field, alias}")
    for key in item:
        if key not in _AGGREGATION_KEYS:
            raise InvalidFilter(
                f"Unknown aggregation key {key!r}",
                details={"key": f"aggregations.{key}", "reason": "unknown key"},
            )
    function = item.get("function")
    if not isinstance(function, str) or function.lower() not in AGGREGATE_FUNCTIONS:
        raise InvalidFilter(
            f"Unknown aggregate function {function!r}",
            details={
                "key": "aggregations.function",
                "function": function,
                "reason": f"expected one of {sorted(AGGREGATE_FUNCTIONS)}",
            },
        )
    function = function.lower()
    distinct = item.get("distinct", False)
    if distinct not in (True, False):
        raise _bad_key("aggregations.distinct", "expected true or false")
    if distinct:
        if function not in ("count", "count_distinct"):
            raise _bad_key("aggregations.distinct", "distinct is only supported with count")
        function = "count_distinct"
    name = item.get("field")
    if name is not None and (not isinstance(name, str) or not name):
        raise _bad_key("aggregations.field", "expected a field name")
    if name is None and function != "count":
        raise InvalidFilter(
            f"Aggregate {function} needs a field",
            details={"key": "aggregations.field", "function": function, "reason": "missing field"},
        )
    alias = item.get("alias")
    if alias is None:
        alias = function if name is None else f"{function}_{name}"
    if not isinstance(alias, str) or not _IDENTIFIER.fullmatch(alias):
        raise InvalidFilter(
            f"Aggregation alias {alias!r} is not an identifier",
            details={
                "key": "aggregations.alias",
                "alias": alias,
                "reason": "expected letters, digits and _ (max 63), not starting with a digit",
            },
        )
    return Aggregation(function, name, alias, normalize_filter(item.get("filter")))


# --------------------------------------------------------------------------
# Building statements


def build_select(
    spec: QuerySpec,
    table: FromClause,
    columns: Mapping[str, ColumnInfo],
    *,
    extra_where: ColumnElement[bool] | None = None,
) -> sa.Select[Any]:
    """SELECT one page of records matching ``spec`` (and ``extra_where``).

    Result columns are labelled with field names: the requested fields with
    ``id`` first, plus the sort fields (the next cursor needs them; trim to
    :func:`selected_fields` before answering). Rows are ordered by the sort
    fields, NULLs lowest (first ascending, last descending, on every dialect),
    then by ``id``. To learn whether another page exists, fetch one extra row:
    ``stmt.limit(spec.limit + 1)``.
    """
    output = selected_fields(spec, columns)
    order = _resolved_order(spec, table, columns)
    for name, _, _ in order:
        if name not in output:
            output.append(name)
    stmt = sa.select(
        *(resolve_field(table, columns, name, usage="select")[1].label(name) for name in output)
    ).select_from(table)
    conditions = _conditions(spec, table, columns, extra_where)
    if spec.cursor is not None:
        conditions.append(_keyset_condition(spec, order))
    stmt = stmt.where(*conditions)
    stmt = stmt.order_by(*(_order_term(column, direction) for _, column, direction in order))
    if spec.limit is not None:
        stmt = stmt.limit(spec.limit)
    if spec.offset:
        stmt = stmt.offset(spec.offset)
    return stmt


def build_count(
    spec: QuerySpec,
    table: FromClause,
    columns: Mapping[str, ColumnInfo],
    *,
    extra_where: ColumnElement[bool] | None = None,
) -> sa.Select[Any]:
    """SELECT count(*) AS total of all records matching ``spec``, ignoring paging."""
    stmt = sa.select(sa.func.count().label("total")).select_from(table)
    return stmt.where(*_conditions(spec, table, columns, extra_where))


def build_aggregate(
    spec: QuerySpec,
    table: FromClause,
    columns: Mapping[str, ColumnInfo],
    *,
    extra_where: ColumnElement[bool] | None = None,
) -> sa.Select[Any]:
    """SELECT group_by fields and aggregations over the matching records.

    One row per group, columns labelled with the group field names and the
    aggregation aliases, ordered by ``spec.order_by`` (which may name group
    fields and aliases) and then by the group fields. ``limit``/``offset``
    page through the groups.
    """
    if not spec.aggregations and not spec.group_by:
        raise InvalidFilter(
            "An aggregate query needs aggregations or groupBy",
            details={"key": "aggregations", "reason": "nothing to aggregate"},
        )
    if spec.cursor is not None:
        raise InvalidFilter(
            "Cursor paging is not available for aggregations; use offset",
            details={"key": "cursor", "reason": "not supported with aggregations"},
        )
    labelled: dict[str, ColumnElement[Any]] = {}
    groups: list[ColumnElement[Any]] = []
    for name in spec.group_by:
        info, column = resolve_field(table, columns, name, usage="groupBy")
        if field_kind(info) in (FieldKind.ARRAY, FieldKind.STRUCTURED):
            raise _unsortable(name, info, "groupBy")
        if name in labelled:
            raise InvalidFilter(
                f"Field {name!r} appears twice in groupBy",
                details={"key": "groupBy", "field": name, "reason": "duplicate field"},
            )
        groups.append(column)
        labelled[name] = column
    aggregates = []
    for aggregation in spec.aggregations:
        if aggregation.alias in labelled:
            raise InvalidFilter(
                f"Aggregation alias {aggregation.alias!r} collides with a group field",
                details={"alias": aggregation.alias, "reason": "alias collides with groupBy"},
            )
        expression = _aggregate_expression(aggregation, table, columns)
        labelled[aggregation.alias] = expression
        aggregates.append(expression.label(aggregation.alias))
    stmt = (
        sa.select(*(column.label(name) for name, column in zip(spec.group_by, groups, strict=True)))
        .add_columns(*aggregates)
        .select_from(table)
        .where(*_conditions(spec, table, columns, extra_where))
    )
    if groups:
        stmt = stmt.group_by(*groups)
    ordering = []
    ordered: set[str] = set()
    for name, direction in spec.order_by:
        if name not in labelled:
            raise InvalidField(
                f"Cannot sort aggregate results by {name!r}: not a group field or alias",
                details={"field": name, "reason": "not a group field or alias", "usage": "sort"},
            )
        ordering.append(_order_term(labelled[name], direction))
        ordered.add(name)
    ordering += [
        _order_term(column, "asc")
        for name, column in zip(spec.group_by, groups, strict=True)
        if name not in ordered
    ]
    stmt = stmt.order_by(*ordering)
    if spec.limit is not None:
        stmt = stmt.limit(spec.limit)
    if spec.offset:
        stmt = stmt.offset(spec.offset)
    return stmt


def selected_fields(spec: QuerySpec, columns: Mapping[str, ColumnInfo]) -> list[str]:
    """The fields a client asked for, ``id`` first; every readable one if none.

    Password fields are never part of the default projection.
    """
    if spec.fields is None:
        names = [name for name, info in columns.items() if field_kind(info) is not FieldKind.SECRET]
    else:
        names = list(dict.fromkeys(spec.fields))
    if "id" in names:
        names.remove("id")
    return ["id", *names]


def _conditions(
    spec: QuerySpec,
    table: FromClause,
    columns: Mapping[str, ColumnInfo],
    extra_where: ColumnElement[bool] | None,
) -> list[ColumnElement[bool]]:
    """The WHERE operands every builder shares; Select.where() ANDs them.

    The user's filter is one operand and ``extra_where`` another, each a
    self-contained expression, so an ``$or`` in the filter stays inside it.
    """
    conditions: list[ColumnElement[bool]] = []
    if spec.where:
        conditions.append(compile_filter(spec.where, table, columns))
    if spec.search:
        conditions.append(_search_condition(spec, table, columns))
    if extra_where is not None:
        conditions.append(extra_where)
    return conditions


def _search_condition(
    spec: QuerySpec, table: FromClause, columns: Mapping[str, ColumnInfo]
) -> ColumnElement[bool]:
    terms = (spec.search or "").split()
    if len(terms) > MAX_SEARCH_TERMS:
        raise InvalidFilter(
            f"Search has more than {MAX_SEARCH_TERMS} words",
            details={"parameter": "search", "reason": "too many search terms"},
        )
    if spec.search_fields is not None:
        names = spec.search_fields
    else:
        names = [name for name, info in columns.items() if info.searchable]
    searched = []
    for name in names:
        info, column = resolve_field(table, columns, name, usage="search")
        if field_kind(info) is FieldKind.STRUCTURED:
            raise InvalidField(
                f"Field {name!r} ({info.type}) cannot be searched",
                details={"field": name, "reason": f"{info.type} fields are not searchable"},
            )
        searched.append(column)
    if not searched:
        raise InvalidFilter(
            "This object has no searchable fields",
            details={"parameter": "search", "reason": "no searchable fields"},
        )
    return searchable_condition(terms, searched, match_all=spec.search_operator == "and")


def _aggregate_expression(
    aggregation: Aggregation, table: FromClause, columns: Mapping[str, ColumnInfo]
) -> ColumnElement[Any]:
    function = aggregation.function
    if function not in AGGREGATE_FUNCTIONS:
        raise InvalidFilter(
            f"Unknown aggregate function {function!r}",
            details={"function": function, "reason": "unknown aggregate function"},
        )
    expression: FunctionElement[Any]
    if aggregation.field is None:
        if function != "count":
            raise InvalidFilter(
                f"Aggregate {function} needs a field",
                details={"function": function, "reason": "missing field"},
            )
        expression = sa.func.count()
    else:
        info, column = resolve_field(table, columns, aggregation.field, usage="aggregation")
        kind = field_kind(info)
        numeric = kind is FieldKind.NUMBER or (
            kind is FieldKind.ANY and isinstance(column.type, sa.Numeric | sa.Integer)
        )
        if function in ("sum", "avg") and not numeric:
            raise _aggregate_type_error(aggregation, info, "needs a number field")
        if function in ("min", "max", "count_distinct") and kind in (
            FieldKind.ARRAY,
            FieldKind.STRUCTURED,
        ):
            raise _aggregate_type_error(aggregation, info, "needs a single-valued field")
        if function == "count_distinct":
            expression = sa.func.count(sa.distinct(column))
        else:
            expression = getattr(sa.func, function)(column)
    if aggregation.where:
        return expression.filter(compile_filter(aggregation.where, table, columns))
    return expression


def _aggregate_type_error(aggregation: Aggregation, info: ColumnInfo, reason: str) -> InvalidFilter:
    return InvalidFilter(
        f"Aggregate {aggregation.function} {reason}; {aggregation.field!r} is {info.type}",
        details={
            "field": aggregation.field,
            "function": aggregation.function,
            "reason": f"{aggregation.function} {reason}",
        },
    )


def _unsortable(name: str, info: ColumnInfo, usage: str) -> InvalidField:
    return InvalidField(
        f"Field {name!r} ({info.type}) cannot be used in {usage}",
        details={"field": name, "reason": f"{info.type} fields have no order", "usage": usage},
    )


def _order_term(column: ColumnElement[Any], direction: str) -> ColumnElement[Any]:
    # NULLs are the lowest value everywhere (SQLite's default; PostgreSQL's is
    # the opposite): one rule that the keyset condition below relies on.
    if direction == "desc":
        return column.desc().nulls_last()
    return column.asc().nulls_first()


def _resolved_order(
    spec: QuerySpec, table: FromClause, columns: Mapping[str, ColumnInfo]
) -> list[tuple[str, ColumnElement[Any], str]]:
    """The sort keys with ``id`` as final tiebreaker: ``(field, column, direction)``."""
    order = []
    for name, direction in _order_with_id(spec.order_by):
        info, column = resolve_field(table, columns, name, usage="sort")
        if field_kind(info) in (FieldKind.ARRAY, FieldKind.STRUCTURED):
            raise _unsortable(name, info, "sort")
        if direction not in ("asc", "desc"):
            raise InvalidFilter(
                f"Sort order must be asc or desc, got {direction!r}",
                details={"field": name, "reason": "invalid sort order"},
            )
        order.append((name, column, direction))
    return order


def _order_with_id(order_by: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    order = [(name, direction.lower()) for name, direction in order_by]
    if all(name != "id" for name, _ in order):
        order.append(("id", "asc"))
    return order


# --------------------------------------------------------------------------
# Cursors


def encode_cursor(row: Mapping[str, Any], order_by: Sequence[tuple[str, str]]) -> str:
    """The cursor that continues after ``row`` under ``order_by``.

    ``row`` is the last row of a page (``Row._mapping`` of :func:`build_select`)
    or any mapping holding its sort fields and ``id``. The token is base64url
    JSON of the sort keys and values: opaque to clients, not a secret, and
    harmless if forged (its values are only ever bound parameters, and
    ``extra_where`` still applies).
    """
    order = _order_with_id(order_by)
    missing = [name for name, _ in order if name not in row]
    if missing:
        raise LookupError(f"cannot encode a cursor: the row lacks sort fields {missing}")
    payload = {
        "k": [[name, direction] for name, direction in order],
        "v": [row[n] for n, _ in order],
    }
    raw = json.dumps(payload, default=_json_scalar, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(token: str, order_by: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The last row's sort values (``{field: JSON value}``, with ``id``).

    Raises InvalidFilter when the token is malformed or was issued for a
    different sort order.
    """
    if not isinstance(token, str) or len(token) > MAX_CURSOR_LENGTH:
        raise _bad_cursor("cursor too long" if isinstance(token, str) else "expected text")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw.decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_cursor("not a cursor token") from None
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("k"), list)
        or not isinstance(payload.get("v"), list)
        or len(payload["k"]) != len(payload["v"])
    ):
        raise _bad_cursor("not a cursor token")
    order = [list(item) for item in _order_with_id(order_by)]
    if payload["k"] != order:
        raise _bad_cursor("cursor was issued for a different sort order")
    return {name: value for (name, _), value in zip(order, payload["v"], strict=True)}


def _json_scalar(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"cannot put a {type(value).__name__} into a cursor")


def _bad_cursor(reason: str) -> InvalidFilter:
    return InvalidFilter(
        f"Invalid cursor: {reason}", details={"parameter": "cursor", "reason": reason}
    )


def _keyset_condition(
    spec: QuerySpec, order: Sequence[tuple[str, ColumnElement[Any], str]]
) -> ColumnElement[bool]:
    """Rows strictly after the cursor row in ``order``.

    For keys k1..kn: (k1 after v1) OR (k1 = v1 AND k2 after v2) OR ... With
    NULL lowest, "after NULL" ascending is "not NULL", and descending nothing
    comes after NULL on that key.
    """
    assert spec.cursor is not None
    last = decode_cursor(spec.cursor, spec.order_by)
    keys = [
        (column, direction, _bound(column, _cursor_value(name, column, last[name])))
        for name, column, direction in order
    ]
    alternatives = []
    for index, (column, direction, value) in enumerate(keys):
        after = _strictly_after(column, direction, value)
        if after is None:
            continue
        ties = [c.is_(None) if v is None else c == v for c, _, v in keys[:index]]
        alternatives.append(sa.and_(*ties, after))
    return sa.or_(*alternatives) if alternatives else sa.false()


def _bound(column: ColumnElement[Any], value: Any) -> Any:
    """A bound parameter of the column's type (SQLAlchemy refuses ``col > True``)."""
    return None if value is None else sa.bindparam(None, value, type_=column.type)


def _strictly_after(
    column: ColumnElement[Any], direction: str, value: Any
) -> ColumnElement[bool] | None:
    if direction == "asc":
        return column.is_not(None) if value is None else column > value
    if value is None:
        return None
    return sa.or_(column < value, column.is_(None))


def _cursor_value(name: str, column: ColumnElement[Any], value: Any) -> Any:
    """A cursor's JSON value back in the Python type the column binds."""
    if value is None:
        return None
    python_type = column_python_type(column)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        if python_type in (datetime, date, time) and isinstance(value, str):
            return python_type.fromisoformat(value)
        if python_type is Decimal and (number or isinstance(value, str)):
            return Decimal(str(value))
        if python_type is UUID and isinstance(value, str):
            return UUID(value)
        if python_type in (int, float) and number:
            return python_type(value)
        if python_type is None and isinstance(value, str | int | float | bool):
            return value
        if python_type is not None and isinstance(value, python_type):
            return value
    except (TypeError, ValueError, InvalidOperation):
        pass
    raise _bad_cursor(f"bad value for {name!r}")


__all__ = [
    "AGGREGATE_FUNCTIONS",
    "DEFAULT_LIMIT",
    "MAX_AGGREGATIONS",
    "MAX_CURSOR_LENGTH",
    "MAX_EXPAND_DEPTH",
    "MAX_LIMIT",
    "MAX_SEARCH_TERMS",
    "MAX_SORT_FIELDS",
    "RESERVED_PARAMS",
    "Aggregation",
    "ColumnInfo",
    "QuerySpec",
    "build_aggregate",
    "build_count",
    "build_select",
    "compile_filter",
    "decode_cursor",
    "encode_cursor",
    "parse_list_params",
    "parse_query_ast",
    "selected_fields",
]
