"""Security protocol: permission sets, roles, sharing rules and row-level security.

Two shapes live in ``*.permission.yml`` files, told apart by ``type``:

- :class:`PermissionSet` (``type: permission_set``, the default, so files in
  the @objectstack/spec shape load unchanged): object CRUD, field-level
  security and system permissions. ``isProfile: true`` marks a user's base set.
- :class:`SharingConfig` (``type: sharing``): the organization's record-sharing
  setup — the role hierarchy, public groups, org-wide defaults per object,
  sharing rules and row-level security (RLS) policies. Several such files are
  merged.

Names and keys follow @objectstack/spec (``security/*.zod.ts``). Filters
(``condition`` of a criteria rule, ``using``/``check`` of an RLS policy) are
the Mongo-style filters of PROTOCOL.md; a string value that is exactly
``$user.id``, ``$user.roles`` or ``$user.groups`` is replaced by the caller's
id, held roles or groups when the filter is compiled for a request. Models
only check their own shape; :mod:`objectos.security.loading` checks them
against each other and against the objects (unknown objects, fields, roles).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from objectos.protocol._base import ProtocolModel
from objectos.protocol.object import check_snake_case

SnakeName = Annotated[str, AfterValidator(check_snake_case)]

#: ``object.field`` keys of :attr:`PermissionSet.fields`.
FIELD_KEY = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")

#: System permissions the hub itself understands (others are free-form labels).
MODIFY_ALL_DATA = "modify_all_data"
VIEW_ALL_DATA = "view_all_data"
#: Reading the hub's setup: plugin states (``/api/v1/admin/plugins``).
VIEW_SETUP = "view_setup"

OrgWideDefault = Literal["private", "public_read", "public_read_write", "controlled_by_parent"]
"""Access to records a user does not own, before sharing rules add more."""

AccessLevel = Literal["read", "edit", "full"]
"""What a sharing rule grants: read; read and edit; read, edit and delete."""

RecipientType = Literal["user", "group", "role", "role_and_subordinates"]

RLSOperation = Literal["select", "insert", "update", "delete", "all"]

#: A Mongo-style filter as JSON text, a mapping or the legacy array form.
Filter = dict[str, Any] | list[Any] | str


def _check_field_key(value: str) -> str:
    if not FIELD_KEY.match(value):
        raise ValueError(f"{value!r} is not an 'object.field' key")
    return value


FieldKey = Annotated[str, AfterValidator(_check_field_key)]


class ObjectPermission(ProtocolModel):
    """What a permission set allows on one object (every flag defaults to false).

    Flags imply others as in Salesforce: ``modifyAllRecords`` implies
    ``viewAllRecords``, read, edit and delete; ``viewAllRecords``, edit and
    delete imply read.
    """

    allowCreate: bool = Field(False, description="Create records.")
    allowRead: bool = Field(False, description="Read records the user has access to.")
    allowEdit: bool = Field(False, description="Edit records the user has edit access to.")
    allowDelete: bool = Field(False, description="Delete records the user has full access to.")
    allowTransfer: bool = Field(
        False, description="Change record owners (spec key; no client operation uses it yet)."
    )
    allowRestore: bool = Field(
        False, description="Restore deleted records (spec key; no trash operation exists yet)."
    )
    allowPurge: bool = Field(
        False, description="Purge deleted records (spec key; no trash operation exists yet)."
    )
    viewAllRecords: bool = Field(
        False, description="Read every record of the object, ignoring sharing."
    )
    modifyAllRecords: bool = Field(
        False, description="Read, edit and delete every record of the object, ignoring sharing."
    )


class FieldPermission(ProtocolModel):
    """Field-level security for one field in one permission set.

    A field that any permission set lists is *controlled*: only the sets that
    list it grant access to it. A field no set lists follows its object.
    """

    readable: bool = Field(True, description="The field's value may be read.")
    editable: bool = Field(False, description="The field may be written.")

    @model_validator(mode="after")
    def _editable_needs_readable(self) -> FieldPermission:
        if self.editable and not self.readable:
            raise ValueError("an editable field must also be readable")
        return self


class PermissionSet(ProtocolModel):
    """A named bundle of permissions; a profile is a user's base permission set."""

    type: Literal["permission_set"] = Field(
        "permission_set", description="Shape of this permission file (the default)."
    )
    name: SnakeName = Field(description="Machine name, unique among permission sets.")
    label: str | None = Field(None, description="Display name.")
    description: str | None = Field(None, description="What the set is for.")
    isProfile: bool = Field(False, description="Whether this set is a profile (a base set).")
    objects: dict[SnakeName, ObjectPermission] = Field(
        default_factory=dict, description="Object permissions by object name."
    )
    fields: dict[FieldKey, FieldPermission] = Field(
        default_factory=dict, description="Field permissions by 'object.field'."
    )
    systemPermissions: list[str] = Field(
        default_factory=list,
        description=f"Org-wide abilities; the hub acts on {MODIFY_ALL_DATA!r}, "
        f"{VIEW_ALL_DATA!r} and {VIEW_SETUP!r} (the admin routes), others are labels for "
        "plugins.",
    )


class Role(ProtocolModel):
    """A node of the role hierarchy; users above see what users below own."""

    name: SnakeName = Field(description="Machine name, unique among roles.")
    label: str | None = Field(None, description="Display name.")
    description: str | None = Field(None, description="What the role is.")
    parent: SnakeName | None = Field(None, description="The role this one reports to.")
    permissionSets: list[SnakeName] = Field(
        default_factory=list, description="Permission sets every holder of the role gets."
    )


class Group(ProtocolModel):
    """A public group: a set of users and roles that sharing rules can name."""

    name: SnakeName = Field(description="Machine name, unique among groups.")
    label: str | None = Field(None, description="Display name.")
    users: list[str] = Field(default_factory=list, description="User ids in the group.")
    roles: list[SnakeName] = Field(
        default_factory=list, description="Roles whose holders are in the group."
    )


class ShareRecipient(ProtocolModel):
    """Who a sharing rule shares with, or (``ownedBy``) whose records it shares."""

    type: RecipientType = Field(description="user, group, role, or a role and those below it.")
    value: str = Field(min_length=1, description="The user id, group name or role name.")


class _SharingRuleBase(ProtocolModel):
    name: SnakeName = Field(description="Machine name, unique among sharing rules.")
    label: str | None = Field(None, description="Display name.")
    description: str | None = Field(None, description="Why records are shared.")
    object: SnakeName = Field(description="The object whose records are shared.")
    active: bool = Field(True, description="Inactive rules share nothing.")
    accessLevel: AccessLevel = Field("read", description="read, edit, or full (edit + delete).")
    sharedWith: ShareRecipient = Field(description="Who gets access.")


class CriteriaSharingRule(_SharingRuleBase):
    """Share the records matching ``condition``."""

    type: Literal["criteria"] = Field(description="Share records matching a filter.")
    condition: Filter = Field(description="Filter selecting the shared records.")


class OwnerSharingRule(_SharingRuleBase):
    """Share the records owned by the users ``ownedBy`` names."""

    type: Literal["owner"] = Field(description="Share records by who owns them.")
    ownedBy: ShareRecipient = Field(description="Whose records are shared.")


SharingRule = Annotated[CriteriaSharingRule | OwnerSharingRule, Field(discriminator="type")]


class RLSPolicy(ProtocolModel):
    """A row-level security policy, as PostgreSQL's: ``using`` filters, ``check`` guards.

    ``using`` limits the rows a select, update or delete can see; ``check`` is
    what a row must satisfy after an insert or update (an update without
    ``check`` re-applies ``using`` to the new row). A policy restricts the
    holders of ``roles`` (every user when empty); several policies for one
    user and operation are alternatives (permissive, ORed); the result is
    ANDed with sharing.
    """

    name: SnakeName = Field(description="Machine name, unique among policies.")
    label: str | None = Field(None, description="Display name.")
    description: str | None = Field(None, description="What the policy protects.")
    object: SnakeName = Field(description="The object it applies to.")
    operation: RLSOperation = Field(description="select, insert, update, delete, or all.")
    using: Filter | None = Field(None, description="Filter on existing rows.")
    check: Filter | None = Field(None, description="Filter a new or changed row must match.")
    roles: list[SnakeName] = Field(
        default_factory=list, description="Roles it restricts; empty means everyone."
    )
    enabled: bool = Field(True, description="Disabled policies restrict nothing.")

    @model_validator(mode="after")
    def _clauses_fit_operation(self) -> RLSPolicy:
        if self.using is None and self.check is None:
            raise ValueError("a policy needs 'using' or 'check'")
        if self.operation == "insert" and self.using is not None:
            raise ValueError("an insert policy has only 'check' (there is no existing row)")
        if self.operation in ("select", "delete") and self.check is not None:
            raise ValueError(f"a {self.operation} policy has only 'using' (no row is written)")
        return self


class SharingConfig(ProtocolModel):
    """The organization's record-sharing setup (``type: sharing`` permission files)."""

    type: Literal["sharing"] = Field(description="Marks a sharing file.")
    name: SnakeName = Field(description="Machine name of the file's content.")
    label: str | None = Field(None, description="Display name.")
    description: str | None = Field(None, description="What this part of the setup covers.")
    roles: list[Role] = Field(default_factory=list, description="The role hierarchy.")
    groups: list[Group] = Field(default_factory=list, description="Public groups.")
    organizationDefaults: dict[SnakeName, OrgWideDefault] = Field(
        default_factory=dict,
        description="Org-wide default per object (overrides the object's sharingModel).",
    )
    sharingRules: list[SharingRule] = Field(
        default_factory=list, description="Rules opening records to more users."
    )
    rowLevelSecurity: list[RLSPolicy] = Field(
        default_factory=list, description="Row-level security policies."
    )

    @model_validator(mode="after")
    def _unique_names(self) -> SharingConfig:
        for key, items in (
            ("roles", self.roles),
            ("groups", self.groups),
            ("sharingRules", self.sharingRules),
            ("rowLevelSecurity", self.rowLevelSecurity),
        ):
            names = [item.name for item in items]
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{key}: duplicate names {duplicates}")
        return self


class SecurityConfig(ProtocolModel):
    """Every permission set and sharing file of a hub, merged.

    Built by :func:`objectos.security.loading.load_security` from the
    metadata registry, or directly in code.
    """

    permissionSets: list[PermissionSet] = Field(
        default_factory=list, description="Permission sets and profiles."
    )
    sharing: list[SharingConfig] = Field(
        default_factory=list, description="Sharing files (roles, groups, defaults, rules, RLS)."
    )

    def roles(self) -> list[Role]:
        """Roles of every sharing file."""
        return [role for part in self.sharing for role in part.roles]

    def groups(self) -> list[Group]:
        """Groups of every sharing file."""
        return [group for part in self.sharing for group in part.groups]

    def organization_defaults(self) -> dict[str, OrgWideDefault]:
        """Org-wide defaults of every sharing file (a later file wins per object)."""
        merged: dict[str, OrgWideDefault] = {}
        for part in self.sharing:
            merged.update(part.organizationDefaults)
        return merged

    def sharing_rules(self) -> list[CriteriaSharingRule | OwnerSharingRule]:
        """Sharing rules of every sharing file."""
        return [rule for part in self.sharing for rule in part.sharingRules]

    def policies(self) -> list[RLSPolicy]:
        """RLS policies of every sharing file."""
        return [policy for part in self.sharing for policy in part.rowLevelSecurity]


__all__ = [
    "FIELD_KEY",
    "MODIFY_ALL_DATA",
    "VIEW_ALL_DATA",
    "VIEW_SETUP",
    "AccessLevel",
    "CriteriaSharingRule",
    "FieldPermission",
    "Filter",
    "Group",
    "ObjectPermission",
    "OrgWideDefault",
    "OwnerSharingRule",
    "PermissionSet",
    "RLSOperation",
    "RLSPolicy",
    "RecipientType",
    "Role",
    "SecurityConfig",
    "ShareRecipient",
    "SharingConfig",
    "SharingRule",
]
