"""Record sharing: org-wide defaults, ownership, the role hierarchy and sharing rules.

For one user, object and access (read, edit, delete) :meth:`SharingModel.grants`
lists every reason the user may reach *some* records, each as a
:class:`Grant` holding a Mongo-style filter; the permission engine ORs them
into one record predicate. In order:

1. the org-wide default (OWD) — ``organizationDefaults`` of the sharing files,
   else the object's ``sharingModel`` (``private``, ``read`` → public_read,
   ``read_write`` → public_read_write, ``full`` → public_read_write plus
   delete). When it already grants the access, all records are reachable;
2. ``controlled_by_parent``: access to a detail record *is* access to its
   master record (read needs read, edit and delete need edit); nothing else
   applies, as in Salesforce;
3. ownership: the owner has full access;
4. the role hierarchy: holders of a role have the owner's access to records
   owned by holders of the roles below it;
5. sharing rules whose ``sharedWith`` includes the user and whose
   ``accessLevel`` covers the access (read < edit < full; delete needs full):
   criteria rules add their ``condition``, owner rules ``owner IN (users of
   ownedBy)``.

Whose role is what comes from a :class:`RoleDirectory` (users other than the
caller own records); the caller's own roles come from their token.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from objectos.metadata.registry import MetadataRegistry
from objectos.protocol.object import FieldType
from objectos.protocol.permission import (
    CriteriaSharingRule,
    Group,
    OwnerSharingRule,
    Role,
    SecurityConfig,
    ShareRecipient,
)
from objectos.security.rls import UserContext, bind_user

Access = Literal["read", "edit", "delete"]

#: How much each org-wide default grants on records of others (0 none .. 3 full).
OWD_LEVEL = {"private": 0, "public_read": 1, "public_read_write": 2, "public_full": 3}
#: An object's ``sharingModel`` as an org-wide default.
OWD_OF_SHARING_MODEL = {
    "private": "private",
    "read": "public_read",
    "read_write": "public_read_write",
    "full": "public_full",
}
ACCESS_LEVEL = {"read": 1, "edit": 2, "full": 3}
NEEDED_LEVEL: dict[Access, int] = {"read": 1, "edit": 2, "delete": 3}


class RoleDirectory(Protocol):
    """Who holds which role, for records owned by users other than the caller.

    ``version`` must change whenever a membership changes: compiled record
    predicates are cached until it does.
    """

    @property
    def version(self) -> int:
        """Grows on every membership change."""
        ...

    def users_with_role(self, role: str) -> frozenset[str]:
        """Ids of the users holding ``role``."""
        ...


class InMemoryRoleDirectory:
    """A RoleDirectory kept in memory (embedded hubs, tests, a synced copy of a user store)."""

    def __init__(self, memberships: Mapping[str, Iterable[str]] | None = None) -> None:
        """``memberships``: user id → role names."""
        self._roles: dict[str, frozenset[str]] = {}
        self._version = 0
        for user, roles in (memberships or {}).items():
            self.assign(user, roles)

    @property
    def version(self) -> int:
        return self._version

    def assign(self, user_id: str, roles: Iterable[str]) -> None:
        """Set the roles of ``user_id`` (an empty list removes the user)."""
        held = frozenset(roles)
        if held:
            self._roles[user_id] = held
        else:
            self._roles.pop(user_id, None)
        self._version += 1

    def roles_of(self, user_id: str) -> frozenset[str]:
        """The roles ``user_id`` holds."""
        return self._roles.get(user_id, frozenset())

    def users_with_role(self, role: str) -> frozenset[str]:
        return frozenset(user for user, roles in self._roles.items() if role in roles)


@dataclass(frozen=True)
class Grant:
    """One reason a user reaches some records of an object.

    ``kind`` is ``all`` (every record), ``owner``, ``hierarchy``, ``rule`` (a
    sharing rule) or ``parent`` (controlled by the master record through
    ``parent_field``). ``filter`` selects the records (None for all/parent).
    """

    kind: Literal["all", "owner", "hierarchy", "rule", "parent"]
    reason: str
    filter: dict[str, Any] | None = None
    parent_field: str | None = None
    parent_object: str | None = None
    rule: str | None = None


@dataclass
class _RoleTree:
    roles: dict[str, Role]
    children: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for role in self.roles.values():
            if role.parent is not None:
                self.children.setdefault(role.parent, []).append(role.name)

    def below(self, role: str) -> set[str]:
        """Strict descendants of ``role``."""
        found: set[str] = set()
        stack = list(self.children.get(role, ()))
        while stack:
            name = stack.pop()
            if name not in found:
                found.add(name)
                stack.extend(self.children.get(name, ()))
        return found

    def and_below(self, role: str) -> set[str]:
        return {role} | self.below(role)


class SharingModel:
    """Org-wide defaults, role hierarchy, groups and sharing rules of a hub."""

    def __init__(
        self, config: SecurityConfig, registry: MetadataRegistry, directory: RoleDirectory
    ) -> None:
        """Index a checked ``config`` (see :mod:`objectos.security.loading`)."""
        self.registry = registry
        self.directory = directory
        self._tree = _RoleTree({role.name: role for role in config.roles()})
        self._groups: dict[str, Group] = {group.name: group for group in config.groups()}
        self._defaults = config.organization_defaults()
        self._rules: dict[str, list[CriteriaSharingRule | OwnerSharingRule]] = {}
        for rule in config.sharing_rules():
            if rule.active:
                self._rules.setdefault(rule.object, []).append(rule)

    # -- who is who -------------------------------------------------------------------------

    def role(self, name: str) -> Role | None:
        """The role called ``name``, if the hierarchy has it."""
        return self._tree.roles.get(name)

    def roles_below(self, roles: Iterable[str]) -> frozenset[str]:
        """Every role strictly below any of ``roles``."""
        found: set[str] = set()
        for role in roles:
            found |= self._tree.below(role)
        return frozenset(found)

    def groups_of(self, user_id: str, roles: frozenset[str]) -> frozenset[str]:
        """The groups a user is in, directly or through a role."""
        return frozenset(
            name
            for name, group in self._groups.items()
            if user_id in group.users or not roles.isdisjoint(group.roles)
        )

    def includes(self, recipient: ShareRecipient, user: UserContext) -> bool:
        """Whether ``user`` is one of the users ``recipient`` names."""
        if recipient.type == "user":
            return recipient.value == user.id
        if recipient.type == "group":
            return recipient.value in user.groups
        if recipient.type == "role":
            return recipient.value in user.roles
        return not user.roles.isdisjoint(self._tree.and_below(recipient.value))

    def users_of(self, recipient: ShareRecipient) -> frozenset[str]:
        """Ids of every user ``recipient`` names (through the directory for roles)."""
        if recipient.type == "user":
            return frozenset({recipient.value})
        if recipient.type == "group":
            group = self._groups.get(recipient.value)
            if group is None:
                return frozenset()
            users = set(group.users)
            for role in group.roles:
                users |= self.directory.users_with_role(role)
            return frozenset(users)
        roles = (
            {recipient.value} if recipient.type == "role" else self._tree.and_below(recipient.value)
        )
        users = set()
        for role in roles:
            users |= self.directory.users_with_role(role)
        return frozenset(users)

    # -- what is shared ---------------------------------------------------------------------

    def default(self, object_name: str) -> str:
        """The org-wide default of an object (``public_full`` for sharingModel ``full``)."""
        configured = self._defaults.get(object_name)
        if configured is not None:
            return configured
        return OWD_OF_SHARING_MODEL[self.registry.get_object(object_name).sharingModel]

    def master_field(self, object_name: str) -> tuple[str, str]:
        """``(field, master object)`` of a controlled_by_parent object."""
        obj = self.registry.get_object(object_name)
        for name, fld in obj.fields.items():
            if fld.type == FieldType.MASTER_DETAIL and fld.reference and not fld.multiple:
                return name, fld.reference
        raise LookupError(f"{object_name} has no master_detail field")  # the loader refuses this

    def rules(self, object_name: str) -> list[CriteriaSharingRule | OwnerSharingRule]:
        """The active sharing rules of an object."""
        return list(self._rules.get(object_name, ()))

    def grants(self, user: UserContext, object_name: str, access: Access) -> list[Grant]:
        """Every reason ``user`` has ``access`` to some records of the object.

        A grant of kind ``all`` comes alone; an empty list means no record.
        """
        needed = NEEDED_LEVEL[access]
        owd = self.default(object_name)
        if owd == "controlled_by_parent":
            fld, master = self.master_field(object_name)
            return [
                Grant(
                    "parent",
                    f"controlled by parent: access to the {master} record in {fld!r}",
                    parent_field=fld,
                    parent_object=master,
                )
            ]
        if OWD_LEVEL[owd] >= needed:
            return [Grant("all", f"org-wide default {owd} of {object_name}")]
        grants = [Grant("owner", "you own the record", {"owner": {"$eq": user.id}})]
        below = self.roles_below(user.roles)
        subordinates: set[str] = set()
        for role in below:
            subordinates |= self.directory.users_with_role(role)
        subordinates.discard(user.id)
        if subordinates:
            grants.append(
                Grant(
                    "hierarchy",
                    "role hierarchy: owned by a user in a role below yours "
                    f"({', '.join(sorted(below))})",
                    {"owner": {"$in": sorted(subordinates)}},
                )
            )
        for rule in self._rules.get(object_name, ()):
            if ACCESS_LEVEL[rule.accessLevel] < needed or not self.includes(rule.sharedWith, user):
                continue
            reason = f"sharing rule {rule.name} ({rule.accessLevel})"
            if isinstance(rule, CriteriaSharingRule):
                grants.append(
                    Grant("rule", reason, bind_user(rule.condition, user), rule=rule.name)
                )
                continue
            owners = self.users_of(rule.ownedBy)
            if owners:
                grants.append(
                    Grant("rule", reason, {"owner": {"$in": sorted(owners)}}, rule=rule.name)
                )
        return grants


__all__ = [
    "ACCESS_LEVEL",
    "NEEDED_LEVEL",
    "OWD_LEVEL",
    "OWD_OF_SHARING_MODEL",
    "Access",
    "Grant",
    "InMemoryRoleDirectory",
    "RoleDirectory",
    "SharingModel",
]
