"""Record visibility of realtime events from the permission engine, decided in memory.

:class:`~objectos.realtime.subscriptions.SubscriptionRoom` asks, for every change
and subscriber, whether the subscriber may read the record and which fields
(:class:`~objectos.realtime.subscriptions.RecordVisibility`), synchronously. REST
answers the same question with SQL (:meth:`PermissionEngine.record_condition`);
:class:`PermissionVisibility` answers it from the same compiled rules, on the
record in hand::

    visibility = PermissionVisibility(guard.permissions)
    visibility.can_read(actor, "case", record)      # object read AND sharing AND RLS
    visibility.readable_fields(actor, "case")       # field-level security

**Rules.** A system actor reads everything. Otherwise the actor needs read on the
object (its permission sets), then one of its sharing grants must match the record
(:meth:`PermissionEngine.grants`, skipped by ``viewAllRecords`` / ``view_all_data``)
and, unless it holds ``view_all_data`` or ``modify_all_data``, the ``using`` filter
of an RLS policy that restricts it (any of them, as PostgreSQL's permissive policies).
Filters are those of REST, bound to the actor (``$user.id`` ...), evaluated by
:mod:`objectos.realtime.matcher` with the object's column types.

**Fails closed.** A grant through the master record (``controlled_by_parent``)
needs the parent record, which an event does not carry: it grants nothing here, so
such details reach only readers of every record of their object. A filter that
cannot be compiled grants nothing either (logged).

Compiled predicates are cached per (actor, object) until the metadata or the role
directory changes version, like the permission engine's own caches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from objectos.data.actor import Actor
from objectos.data.filter import ColumnInfo
from objectos.errors import ObjectOSError
from objectos.realtime.matcher import compile_matcher
from objectos.security.permissions import PermissionEngine
from objectos.security.rls import OPERATION_OF_ACTION, bind_user

logger = logging.getLogger("objectos.realtime.visibility")

Predicate = Callable[[Mapping[str, Any]], bool]


def _nothing(record: Mapping[str, Any]) -> bool:
    return False


def _everything(record: Mapping[str, Any]) -> bool:
    return True


class PermissionVisibility:
    """A :class:`~objectos.realtime.subscriptions.RecordVisibility` over a PermissionEngine."""

    def __init__(self, permissions: PermissionEngine, *, cache_size: int = 4096) -> None:
        self.permissions = permissions
        self._cache_size = cache_size
        self._predicates: dict[tuple[Actor, str], Predicate] = {}
        self._versions: tuple[int, int] | None = None

    def can_read(self, actor: Actor, object_name: str, record: Mapping[str, Any]) -> bool:
        """Whether ``actor`` may read ``record`` of ``object_name`` (see the module docstring)."""
        return self._predicate(actor, object_name)(record)

    def readable_fields(self, actor: Actor, object_name: str) -> set[str]:
        """The fields of ``object_name`` ``actor`` may read (none without read on the object)."""
        access = self.permissions.object_access(actor, object_name)
        return set(access.readable) if access.allows("read") else set()

    # -- compiled predicates ----------------------------------------------------------------

    def _predicate(self, actor: Actor, object_name: str) -> Predicate:
        versions = (self.permissions.registry.version, self.permissions.directory.version)
        if versions != self._versions:
            self._predicates.clear()
            self._versions = versions
        key = (actor, object_name)
        predicate = self._predicates.get(key)
        if predicate is None:
            predicate = self._compile(actor, object_name)
            if len(self._predicates) >= self._cache_size:
                self._predicates.pop(next(iter(self._predicates)))
            self._predicates[key] = predicate
        return predicate

    def _compile(self, actor: Actor, object_name: str) -> Predicate:
        permissions = self.permissions
        subject = permissions.subject(actor)
        if subject.system:
            return _everything
        access = permissions.object_access(actor, object_name)
        if not access.allows("read") or subject.user is None:
            return _nothing
        columns = permissions.tables().columns(object_name)
        parts: list[Predicate] = []
        if not access.all_records("read"):
            grants = permissions.grants(actor, object_name, "read")
            if not any(grant.kind == "all" for grant in grants):
                shared = [
                    self._matcher(grant.filter, columns, f"sharing grant {grant.reason}")
                    for grant in grants
                    if grant.kind != "parent" and grant.filter is not None
                ]
                parts.append(_any(shared))
        if not (subject.modify_all_data or subject.view_all_data):
            policies = permissions.rls.applicable(
                object_name, OPERATION_OF_ACTION["read"], permissions.holds(subject)
            )
            if policies and all(policy.using is not None for policy in policies):
                parts.append(
                    _any(
                        [
                            self._matcher(
                                bind_user(policy.using, subject.user),
                                columns,
                                f"RLS policy {policy.name}",
                            )
                            for policy in policies
                            if policy.using is not None
                        ]
                    )
                )
        return _all(parts)

    @staticmethod
    def _matcher(where: Any, columns: Mapping[str, ColumnInfo], what: str) -> Predicate:
        try:
            return compile_matcher(where, columns)
        except ObjectOSError as exc:
            logger.warning("%s cannot be evaluated in memory (%s): it grants nothing", what, exc)
            return _nothing


def _any(predicates: list[Predicate]) -> Predicate:
    if not predicates:
        return _nothing
    if len(predicates) == 1:
        return predicates[0]
    return lambda record: any(predicate(record) for predicate in predicates)


def _all(predicates: list[Predicate]) -> Predicate:
    if not predicates:
        return _everything
    if len(predicates) == 1:
        return predicates[0]
    return lambda record: all(predicate(record) for predicate in predicates)


__all__ = ["PermissionVisibility"]
