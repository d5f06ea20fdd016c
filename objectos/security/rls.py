"""Row-level security: RLS policies compiled into SQL conditions for one user.

A policy (:class:`~objectos.protocol.permission.RLSPolicy`) holds Mongo-style
filters in ``using`` and ``check``. For a request they are bound to the caller
(:func:`bind_user` replaces ``$user.id``, ``$user.roles``, ``$user.groups``)
and compiled by the query compiler (:func:`~objectos.data.filter.compile_filter`),
so every value reaches the database as a bound parameter and the filter
language, operators and NULL semantics are exactly those clients use.

Semantics follow PostgreSQL's permissive policies:

- a policy restricts the holders of its ``roles`` (everyone when empty) for its
  operation (``all`` covers select, insert, update and delete);
- a user restricted by several policies sees the rows any of them allows (OR);
- a user no policy restricts is not restricted (RLS only ever narrows sharing);
- ``using`` filters the existing rows of select, update and delete; a policy
  without ``using`` lets every existing row through;
- ``check`` is what the row written by an insert or update must match (an
  update policy without ``check`` re-applies its ``using``). Because the row
  does not exist yet, :func:`candidate_row` turns its values into a one-row
  subquery and the same compiled filter is evaluated against it by the
  database, so a check means the same as the equal ``using`` would.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import ColumnElement, FromClause

from objectos.data.filter import ColumnInfo, compile_filter
from objectos.errors import InvalidFilter
from objectos.protocol.permission import Filter, RLSPolicy

Operation = Literal["select", "insert", "update", "delete"]

#: The data actions of the permission engine and the RLS operation each one is.
OPERATION_OF_ACTION: dict[str, Operation] = {
    "read": "select",
    "create": "insert",
    "edit": "update",
    "delete": "delete",
}

#: Placeholders a policy or criteria filter may use as a whole string value.
PLACEHOLDERS = frozenset({"$user.id", "$user.roles", "$user.groups"})


@dataclass(frozen=True)
class UserContext:
    """What a filter may know about the caller (the spec's RLSUserContext).

    ``roles`` are the names the caller's token holds (roles of the hierarchy
    and permission sets alike); ``groups`` the public groups the caller is in.
    """

    id: str
    roles: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    def value_of(self, placeholder: str) -> Any:
        """The value a placeholder stands for (lists are sorted, for stable SQL)."""
        if placeholder == "$user.id":
            return self.id
        if placeholder == "$user.roles":
            return sorted(self.roles)
        if placeholder == "$user.groups":
            return sorted(self.groups)
        raise KeyError(placeholder)


def parse_filter(raw: Filter) -> Any:
    """A filter given as JSON text, parsed; mappings and lists pass through."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            raise InvalidFilter(
                "a filter given as text must be JSON", details={"reason": "invalid JSON"}
            ) from None
    return raw


def placeholders_in(raw: Filter) -> set[str]:
    """Every ``$user.*`` string value in a filter (known or not), for load-time checks."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)
        elif isinstance(node, str) and node.startswith("$user."):
            found.add(node)

    walk(parse_filter(raw))
    return found


def bind_user(raw: Filter, user: UserContext) -> Any:
    """A copy of the filter with every placeholder replaced by the caller's value.

    Only whole string *values* are replaced, never keys: a field name cannot
    be smuggled in through a placeholder.
    """

    def walk(node: Any) -> Any:
        if isinstance(node, Mapping):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [walk(item) for item in node]
        if isinstance(node, str) and node in PLACEHOLDERS:
            return user.value_of(node)
        return node

    return walk(parse_filter(raw))


def candidate_row(
    table: FromClause, values: Mapping[str, Any], names: Iterable[str]
) -> sa.Subquery:
    """A one-row subquery holding ``values`` under the column names of ``table``.

    Each value is a bound parameter of its column's type, so a filter compiled
    against this subquery compares exactly as it would against the stored row.
    ``names`` are the columns to include (those the filter names).
    """
    columns = [
        sa.literal(values.get(name), type_=table.c[name].type).label(name) for name in sorted(names)
    ]
    return sa.select(*columns).subquery("candidate")


def _any(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    return conditions[0] if len(conditions) == 1 else sa.or_(*conditions)


class RowLevelSecurity:
    """The enabled RLS policies of a hub, by object; compiles them per user."""

    def __init__(self, policies: Iterable[RLSPolicy]) -> None:
        """Keep the enabled ``policies`` (already checked by the security loader)."""
        self._by_object: dict[str, list[RLSPolicy]] = {}
        for policy in policies:
            if policy.enabled:
                self._by_object.setdefault(policy.object, []).append(policy)

    def objects(self) -> set[str]:
        """Objects that have at least one enabled policy."""
        return set(self._by_object)

    def applicable(
        self, object_name: str, operation: Operation, roles: frozenset[str]
    ) -> list[RLSPolicy]:
        """The policies restricting a holder of ``roles`` for ``operation`` on the object."""
        return [
            policy
            for policy in self._by_object.get(object_name, ())
            if policy.operation in (operation, "all")
            and (not policy.roles or not roles.isdisjoint(policy.roles))
        ]

    def using(
        self,
        user: UserContext,
        object_name: str,
        operation: Operation,
        table: FromClause,
        columns: Mapping[str, ColumnInfo],
        *,
        holds: frozenset[str] | None = None,
    ) -> ColumnElement[bool] | None:
        """The condition existing rows must match (None: RLS does not restrict this).

        ``holds`` are the names policy ``roles`` are matched against (default:
        the user's roles; the permission engine adds their permission sets).
        """
        if operation == "insert":
            return None
        policies = self.applicable(object_name, operation, user.roles if holds is None else holds)
        if not policies or any(policy.using is None for policy in policies):
            return None
        return _any(
            [
                compile_filter(bind_user(policy.using, user), table, columns)
                for policy in policies
                if policy.using is not None
            ]
        )

    def check_filters(
        self,
        user: UserContext,
        object_name: str,
        operation: Operation,
        *,
        holds: frozenset[str] | None = None,
    ) -> list[tuple[RLSPolicy, Any]] | None:
        """``(policy, bound filter)`` a written row must match one of (None: unrestricted)."""
        if operation not in ("insert", "update"):
            return None
        policies = self.applicable(object_name, operation, user.roles if holds is None else holds)
        if not policies:
            return None
        bound = []
        for policy in policies:
            clause = policy.check if policy.check is not None else policy.using
            if clause is None:  # cannot happen: a policy has using or check
                return None
            bound.append((policy, bind_user(clause, user)))
        return bound

    def check_condition(
        self,
        user: UserContext,
        object_name: str,
        operation: Operation,
        table: FromClause,
        columns: Mapping[str, ColumnInfo],
        *,
        holds: frozenset[str] | None = None,
    ) -> ColumnElement[bool] | None:
        """The ``check`` condition compiled against ``table`` (a :func:`candidate_row`)."""
        filters = self.check_filters(user, object_name, operation, holds=holds)
        if filters is None:
            return None
        return _any([compile_filter(clause, table, columns) for _, clause in filters])


__all__ = [
    "OPERATION_OF_ACTION",
    "PLACEHOLDERS",
    "Operation",
    "RowLevelSecurity",
    "UserContext",
    "bind_user",
    "candidate_row",
    "parse_filter",
    "placeholders_in",
]
