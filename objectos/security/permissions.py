"""The permission engine: who may do what to which objects, records and fields.

Compiled once from a :class:`~objectos.protocol.permission.SecurityConfig`
and the objects of a registry, then asked per request::

    permissions = PermissionEngine.from_registry(registry, directory)
    access = permissions.require(actor, "opportunity", "edit")    # object CRUD, or 403
    access.readable, access.editable                                # field-level security
    permissions.record_condition(actor, "opportunity", "edit", table)  # sharing AND RLS

**Who.** An :class:`~objectos.data.Actor`'s ``roles`` (from the token) name
roles of the hierarchy and/or permission sets. The actor holds every
permission set its roles list (``Role.permissionSets``) plus every permission
set named directly. No permission set, no access (deny by default). A
``system`` actor (trusted server code) bypasses everything.

**Objects.** A permission set grants an action on an object by its flags,
ORed over the actor's sets (``modifyAllRecords`` implies read, edit, delete
and ``viewAllRecords``; those imply read). The system permission
``modify_all_data`` grants every action on every record and field and skips
RLS; ``view_all_data`` does so for reading.

**Fields.** A field that any permission set lists under ``fields`` is
*controlled*: only the actor's sets that list it grant read or edit on it. A
field no set lists is readable (and writable) whenever its object is. A
formula reading a field the actor cannot read, and a summary over a child
field it cannot read, are not readable either (they would reveal it). System
fields (``id``, ``owner``, ``version`` ...) are always readable and never
client-writable. ``hidden`` in object metadata is a UI hint, not security.

**Records.** :meth:`PermissionEngine.record_condition` is the record
predicate for an action: the OR of the actor's sharing grants
(:mod:`objectos.security.sharing`; skipped by ``viewAllRecords`` for reading
and ``modifyAllRecords`` for writing) AND the RLS policies that restrict the
actor (:mod:`objectos.security.rls`). It is a SQLAlchemy condition on the
object's table, built from filters by the query compiler.

**Cost.** Subjects are cached per actor, object access per (actor, object)
and record predicates per (actor, object, action, table); the caches are
bounded LRUs, dropped whenever the metadata or the role directory changes
version. A metadata reload also re-checks the security setup (and
:meth:`PermissionEngine.from_registry` re-reads it); if it no longer fits,
checks fail closed. A cached check is a dictionary lookup (see
``benchmarks/permissions/bench_permissions.py``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import ColumnElement, FromClause

from objectos.data.actor import Actor
from objectos.data.filter import ColumnInfo, compile_filter
from objectos.data.schema import ObjectTables
from objectos.errors import (
    InvalidField,
    ManifestError,
    ObjectOSError,
    PermissionDenied,
    ServiceUnavailable,
)
from objectos.metadata.expression import Expression
from objectos.metadata.registry import MetadataRegistry
from objectos.protocol.object import SYSTEM_FIELDS, FieldType
from objectos.protocol.permission import (
    MODIFY_ALL_DATA,
    VIEW_ALL_DATA,
    ObjectPermission,
    PermissionSet,
    SecurityConfig,
)
from objectos.security.loading import check_security, load_security
from objectos.security.rls import OPERATION_OF_ACTION, RowLevelSecurity, UserContext
from objectos.security.sharing import (
    Access,
    Grant,
    InMemoryRoleDirectory,
    RoleDirectory,
    SharingModel,
)

Action = Literal["read", "create", "edit", "delete"]
ACTIONS: tuple[Action, ...] = ("read", "create", "edit", "delete")

#: Which ObjectPermission flags grant each action (any of them suffices).
_FLAGS_OF_ACTION: dict[Action, tuple[str, ...]] = {
    "read": ("allowRead", "allowEdit", "allowDelete", "viewAllRecords", "modifyAllRecords"),
    "create": ("allowCreate",),
    "edit": ("allowEdit", "modifyAllRecords"),
    "delete": ("allowDelete", "modifyAllRecords"),
}

V = TypeVar("V")


class _LRU(OrderedDict[Any, Any]):
    """A bounded mapping that forgets the least recently used entry."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def lookup(self, key: Hashable, build: Callable[[], V]) -> V:
        try:
            value: V = self[key]
        except KeyError:
            value = build()
            self[key] = value
            if len(self) > self.size:
                self.popitem(last=False)
            return value
        self.move_to_end(key)
        return value


@dataclass(frozen=True)
class Subject:
    """An actor as the permission engine sees it.

    ``user`` is None for system actors. ``permission_sets`` are the names of
    the sets the actor holds, in a stable order.
    """

    user: UserContext | None
    system: bool
    permission_sets: tuple[str, ...]
    system_permissions: frozenset[str]

    @property
    def modify_all_data(self) -> bool:
        """Superuser: every action on every record and field, RLS skipped."""
        return self.system or MODIFY_ALL_DATA in self.system_permissions

    @property
    def view_all_data(self) -> bool:
        """Reads every record and field, RLS skipped for reading."""
        return self.modify_all_data or VIEW_ALL_DATA in self.system_permissions


@dataclass(frozen=True)
class ObjectAccess:
    """What one actor may do with one object, and which permission sets say so.

    ``readable`` holds every field the actor may read (system fields
    included); ``editable`` the fields it may write. ``granted_by`` maps an
    action to the permission sets (or system permission) granting it.
    """

    object: str
    actions: frozenset[Action]
    view_all: bool
    modify_all: bool
    readable: frozenset[str]
    editable: frozenset[str]
    granted_by: Mapping[Action, tuple[str, ...]] = field(default_factory=dict)

    def allows(self, action: Action) -> bool:
        """Whether the object permission grants ``action``."""
        return action in self.actions

    def all_records(self, action: Action) -> bool:
        """Whether ``action`` reaches every record, whatever sharing says."""
        return self.view_all if action == "read" else self.modify_all


class PermissionEngine:
    """Compiled permission sets, sharing and RLS of a hub; cheap checks per request."""

    def __init__(
        self,
        config: SecurityConfig,
        registry: MetadataRegistry,
        directory: RoleDirectory | None = None,
        *,
        cache_size: int = 4096,
    ) -> None:
        """Check ``config`` against ``registry`` (ManifestError listing every problem).

        ``directory`` says who holds which role (for hierarchy and owner-based
        sharing); without one only the caller's own roles are known.
        """
        self.registry = registry
        self.directory: RoleDirectory = directory or InMemoryRoleDirectory()
        self._reads_registry = False
        self._broken: ObjectOSError | None = None
        self._compile(config)
        self._versions: tuple[int, int] = (registry.version, self.directory.version)
        self._subjects = _LRU(cache_size)
        self._access = _LRU(cache_size)
        self._conditions = _LRU(cache_size)

    def _compile(self, config: SecurityConfig) -> None:
        """Check ``config`` against the registry and index it (ManifestError if it does not fit)."""
        check_security(config, self.registry)
        self.config = config
        self.sharing = SharingModel(config, self.registry, self.directory)
        self.rls = RowLevelSecurity(config.policies())
        self._tables = ObjectTables(self.registry)
        self._sets: dict[str, PermissionSet] = {ps.name: ps for ps in config.permissionSets}
        self._role_sets: dict[str, tuple[str, ...]] = {
            role.name: tuple(role.permissionSets) for role in config.roles()
        }
        # object -> field -> (sets granting read, sets granting edit): controlled fields only.
        self._controlled: dict[str, dict[str, tuple[frozenset[str], frozenset[str]]]] = {}
        for ps in config.permissionSets:
            for key, perm in ps.fields.items():
                obj, _, name = key.partition(".")
                readers, editors = self._controlled.setdefault(obj, {}).get(
                    name, (frozenset(), frozenset())
                )
                self._controlled[obj][name] = (
                    readers | ({ps.name} if perm.readable else set()),
                    editors | ({ps.name} if perm.editable else set()),
                )

    @classmethod
    def from_registry(
        cls, registry: MetadataRegistry, directory: RoleDirectory | None = None
    ) -> PermissionEngine:
        """The engine for the ``*.permission.yml`` files of ``registry``.

        It re-reads them whenever the registry reloads.
        """
        engine = cls(load_security(registry), registry, directory)
        engine._reads_registry = True
        return engine

    # -- caches -----------------------------------------------------------------------------

    def _fresh(self) -> None:
        """Drop caches after a metadata or directory change; recompile after a reload.

        If the reloaded metadata no longer fits the security setup (a rule names
        a field that is gone, a permission file is broken), every check raises
        ServiceUnavailable until it is fixed: failing closed beats guessing.
        """
        versions = (self.registry.version, self.directory.version)
        if versions == self._versions and self._broken is None:
            return
        if versions[0] != self._versions[0] or self._broken is not None:
            try:
                self._compile(load_security(self.registry) if self._reads_registry else self.config)
                self._broken = None
            except ManifestError as exc:
                self._broken = exc
        self._versions = versions
        self._subjects.clear()
        self._access.clear()
        self._conditions.clear()
        if self._broken is not None:
            raise ServiceUnavailable(
                "permissions are unavailable: the security metadata does not fit the objects",
                details={"problems": [e.to_dict() for e in self._broken.field_errors]},
            )

    def cache_sizes(self) -> dict[str, int]:
        """How many subjects, object accesses and record predicates are cached."""
        return {
            "subjects": len(self._subjects),
            "access": len(self._access),
            "conditions": len(self._conditions),
        }

    # -- who --------------------------------------------------------------------------------

    def subject(self, actor: Actor) -> Subject:
        """The permission sets and user context of ``actor`` (cached)."""
        self._fresh()
        return self._subjects.lookup(actor, lambda: self._build_subject(actor))

    def _build_subject(self, actor: Actor) -> Subject:
        if actor.system:
            return Subject(None, True, (), frozenset())
        if actor.user_id is None:
            # Anonymous: whatever roles it claims, it holds nothing (deny by default).
            return Subject(None, False, (), frozenset())
        names: dict[str, None] = {}
        for role in sorted(actor.roles):
            for name in self._role_sets.get(role, ()):
                names[name] = None
            if role in self._sets:
                names[role] = None
        system_permissions = frozenset(
            perm for name in names for perm in self._sets[name].systemPermissions
        )
        roles = frozenset(actor.roles)
        user = UserContext(actor.user_id, roles, self.sharing.groups_of(actor.user_id, roles))
        return Subject(user, False, tuple(names), system_permissions)

    @staticmethod
    def holds(subject: Subject) -> frozenset[str]:
        """Role and permission set names of a subject (what RLS ``roles`` match)."""
        roles = subject.user.roles if subject.user is not None else frozenset()
        return roles | frozenset(subject.permission_sets)

    def has_system_permission(self, actor: Actor, permission: str) -> bool:
        """Whether one of the actor's permission sets lists ``permission``."""
        subject = self.subject(actor)
        return subject.system or permission in subject.system_permissions

    # -- objects and fields -----------------------------------------------------------------

    def object_access(self, actor: Actor, object_name: str) -> ObjectAccess:
        """Object and field permissions of ``actor`` on ``object_name`` (cached)."""
        self._fresh()
        self.registry.get_object(object_name)  # ObjectNotFound for unknown objects
        return self._access.lookup(
            (actor, object_name), lambda: self._build_access(self.subject(actor), object_name)
        )

    def _build_access(self, subject: Subject, object_name: str) -> ObjectAccess:
        obj = self.registry.get_object(object_name)
        all_fields = frozenset(obj.fields)
        everything = all_fields | frozenset(SYSTEM_FIELDS)
        if subject.modify_all_data:
            reason = ("system actor",) if subject.system else (MODIFY_ALL_DATA,)
            return ObjectAccess(
                object_name,
                frozenset(ACTIONS),
                True,
                True,
                everything,
                all_fields,
                dict.fromkeys(ACTIONS, reason),
            )
        perms: list[tuple[str, ObjectPermission]] = [
            (name, self._sets[name].objects[object_name])
            for name in subject.permission_sets
            if object_name in self._sets[name].objects
        ]
        granted_by: dict[Action, tuple[str, ...]] = {}
        for action in ACTIONS:
            flags = _FLAGS_OF_ACTION[action]
            granting = tuple(name for name, p in perms if any(getattr(p, f) for f in flags))
            if granting:
                granted_by[action] = granting
        modify_all = any(p.modifyAllRecords for _, p in perms)
        view_all = modify_all or any(p.viewAllRecords for _, p in perms)
        if subject.view_all_data:
            granted_by["read"] = (*granted_by.get("read", ()), VIEW_ALL_DATA)
            view_all = True
        readable, editable = self._field_access(subject, object_name)
        return ObjectAccess(
            object_name,
            frozenset(granted_by),
            view_all,
            modify_all,
            frozenset(readable),
            frozenset(editable),
            granted_by,
        )

    def _field_access(
        self, subject: Subject, object_name: str, depth: int = 0
    ) -> tuple[set[str], set[str]]:
        """Readable and editable fields of an object for a (non-superuser) subject."""
        obj = self.registry.get_object(object_name)
        held = frozenset(subject.permission_sets)
        controlled = self._controlled.get(object_name, {})
        readable = set(SYSTEM_FIELDS)
        editable = set()
        for name in obj.fields:
            rule = controlled.get(name)
            if rule is None:
                readable.add(name)
                editable.add(name)
                continue
            readers, editors = rule
            if subject.view_all_data or not readers.isdisjoint(held):
                readable.add(name)
            if not editors.isdisjoint(held):
                editable.add(name)
        if not subject.view_all_data:
            readable -= self._derived_from_hidden(subject, object_name, readable, depth)
        return readable, editable

    def _derived_from_hidden(
        self, subject: Subject, object_name: str, readable: set[str], depth: int
    ) -> set[str]:
        """Computed fields that would reveal a hidden field: formulas reading one, and
        summaries over a child field the subject may not read."""
        obj = self.registry.get_object(object_name)
        known = set(obj.fields) | set(SYSTEM_FIELDS)
        hidden: set[str] = set()
        changed = True
        while changed:  # formulas may read formulas: repeat until nothing new is hidden
            changed = False
            for name, fld in obj.fields.items():
                if name in hidden or name not in readable:
                    continue
                if fld.type == FieldType.FORMULA and fld.expression:
                    reads = Expression(fld.expression).names & known
                    reveals = not reads <= readable - hidden
                elif fld.type == FieldType.SUMMARY and fld.summaryOperations is not None:
                    ops = fld.summaryOperations
                    # Summaries nest (a summary over a summary); a bounded walk suffices.
                    child = (
                        self._field_access(subject, ops.object, depth + 1)[0]
                        if depth < 4
                        else set()
                    )
                    reveals = ops.field is not None and ops.field not in child
                else:
                    continue
                if reveals:
                    hidden.add(name)
                    changed = True
        return hidden

    def require(self, actor: Actor, object_name: str, action: Action) -> ObjectAccess:
        """The actor's access to the object; PermissionDenied (403) without ``action``."""
        access = self.object_access(actor, object_name)
        if not access.allows(action):
            raise PermissionDenied(
                f"you may not {action} {object_name} records",
                details={"object": object_name, "action": action},
            )
        return access

    def field_grants(self, object_name: str, field_name: str) -> tuple[frozenset[str], ...] | None:
        """``(sets granting read, sets granting edit)`` of a controlled field; None if open."""
        return self._controlled.get(object_name, {}).get(field_name)

    # -- records ----------------------------------------------------------------------------

    def tables(self) -> ObjectTables:
        """The tables the engine compiles parent subqueries against."""
        self._fresh()
        return self._tables

    def record_condition(
        self,
        actor: Actor,
        object_name: str,
        action: Action,
        table: FromClause | None = None,
    ) -> ColumnElement[bool] | None:
        """The records of ``object_name`` the actor may ``action``, as a condition on ``table``.

        None means every record; ``sa.false()`` none. ``create`` has no
        existing record, so only its object permission counts (None or
        false); a created row is checked with :meth:`RowLevelSecurity.check_condition`.
        ``table`` defaults to the engine's own table of the object.
        """
        self._fresh()
        if table is None:
            table = self._tables.table(object_name)
        return self._conditions.lookup(
            (actor, object_name, action, table),
            lambda: self._build_condition(actor, object_name, action, table),
        )

    def _build_condition(
        self, actor: Actor, object_name: str, action: Action, table: FromClause
    ) -> ColumnElement[bool] | None:
        subject = self.subject(actor)
        if subject.system:
            return None
        access = self.object_access(actor, object_name)
        if not access.allows(action) or subject.user is None:
            return sa.false()
        if action == "create":
            return None
        parts: list[ColumnElement[bool]] = []
        if not access.all_records(action):
            sharing = self._sharing_condition(actor, subject.user, object_name, action, table)
            if sharing is not None:
                parts.append(sharing)
        rls_skipped = subject.modify_all_data or (action == "read" and subject.view_all_data)
        if not rls_skipped:
            using = self.rls.using(
                subject.user,
                object_name,
                OPERATION_OF_ACTION[action],
                table,
                self._columns(object_name),
                holds=self.holds(subject),
            )
            if using is not None:
                parts.append(using)
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else sa.and_(*parts)

    def _columns(self, object_name: str) -> Mapping[str, ColumnInfo]:
        return self._tables.columns(object_name)

    def grants(self, actor: Actor, object_name: str, action: Action) -> list[Grant]:
        """The sharing grants behind :meth:`record_condition` (for explanations)."""
        subject = self.subject(actor)
        if subject.user is None or action == "create":
            return []
        return self.sharing.grants(subject.user, object_name, _sharing_access(action))

    def grant_condition(
        self, actor: Actor, object_name: str, action: Action, grant: Grant, table: FromClause
    ) -> ColumnElement[bool]:
        """One grant as a condition on ``table``."""
        if grant.kind == "all":
            return sa.true()
        if grant.kind == "parent":
            assert grant.parent_field is not None and grant.parent_object is not None
            parent_action: Action = "read" if action == "read" else "edit"
            parent_table = self._tables.table(grant.parent_object)
            parent = self.record_condition(actor, grant.parent_object, parent_action, parent_table)
            if parent is None:
                return table.c[grant.parent_field].is_not(None)
            # correlate(None): the subquery stands alone even when the outer query
            # reads the parent's table too (expand), instead of being merged into it.
            ids = sa.select(parent_table.c.id).where(parent).correlate(None)
            return table.c[grant.parent_field].in_(ids)
        return compile_filter(grant.filter, table, self._columns(object_name))

    def _sharing_condition(
        self,
        actor: Actor,
        user: UserContext,
        object_name: str,
        action: Action,
        table: FromClause,
    ) -> ColumnElement[bool] | None:
        grants = self.sharing.grants(user, object_name, _sharing_access(action))
        if any(grant.kind == "all" for grant in grants):
            return None
        if not grants:
            return sa.false()
        conditions = [
            self.grant_condition(actor, object_name, action, grant, table) for grant in grants
        ]
        return conditions[0] if len(conditions) == 1 else sa.or_(*conditions)

    def check_field(self, object_name: str, field_name: str) -> None:
        """InvalidField unless ``field_name`` is a field of the object (system fields included)."""
        obj = self.registry.get_object(object_name)
        if field_name not in obj.fields and field_name not in SYSTEM_FIELDS:
            raise InvalidField(
                f"{object_name} has no field {field_name!r}",
                details={"object": object_name, "field": field_name},
            )


def _sharing_access(action: Action) -> Access:
    if action == "create":
        raise ValueError("create has no record to share")
    return action


__all__ = ["ACTIONS", "Action", "ObjectAccess", "PermissionEngine", "Subject"]
