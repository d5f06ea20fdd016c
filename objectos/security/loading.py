"""Typed security metadata: ``*.permission.yml`` items of a registry → a checked SecurityConfig.

The metadata loader keeps permission files as plain mappings;
:func:`load_security` validates each as a
:class:`~objectos.protocol.permission.PermissionSet` or (``type: sharing``) a
:class:`~objectos.protocol.permission.SharingConfig`, then
:func:`check_security` checks them against each other and against the
objects. Every problem of every file is reported at once, as one
:class:`~objectos.errors.ManifestError` whose field errors name
``file:line key`` (or ``<where> key`` for configs built in code).

Checked: objects, fields and ``object.field`` keys exist; roles' parents
exist and form no cycle; roles name existing permission sets; groups,
recipients and policies name existing roles and groups; a
``controlled_by_parent`` object has exactly one master_detail field and no
sharing rules; filters compile against their object, with placeholders
known; an RLS ``check`` names only stored fields (it is evaluated before the
engine computes formulas).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from objectos.data.filter import compile_filter, filter_fields, normalize_filter
from objectos.data.schema import ObjectTables
from objectos.errors import FieldError, ManifestError, ObjectOSError
from objectos.metadata.registry import MetadataRegistry
from objectos.protocol.loading import _line_of, parse_yaml, validate_model
from objectos.protocol.object import SYSTEM_FIELDS, FieldType
from objectos.protocol.permission import (
    CriteriaSharingRule,
    Filter,
    PermissionSet,
    SecurityConfig,
    ShareRecipient,
    SharingConfig,
)
from objectos.security.rls import PLACEHOLDERS, UserContext, bind_user, placeholders_in

#: Stand-in caller used to compile filters at load time.
_PROBE_USER = UserContext("probe", frozenset({"probe"}), frozenset({"probe"}))
#: Fields an RLS ``check`` may name besides the object's stored fields (set before the write).
_CHECKABLE_SYSTEM_FIELDS = frozenset({"id", "owner", "created_by", "updated_by"})


class _Problems:
    """Collects problems as FieldErrors naming where they are."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.files: list[str] = []

    def add(self, where: str, key: str, code: str, message: str) -> None:
        self.errors.append(FieldError(f"{where} {key}", code, message))
        self.files.append(where.split(":")[0])

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        shown = "; ".join(f"{e.field}: {e.message}" for e in self.errors[:5])
        more = f" (+{len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        raise ManifestError(
            f"{len(self.errors)} security metadata problem(s): {shown}{more}",
            details={"files": sorted(set(self.files)), "count": len(self.errors)},
            field_errors=self.errors,
        )


def _node_of(source: str) -> yaml.Node | None:
    """The YAML node of a metadata file, for line numbers (None if it cannot be read)."""
    path = Path(source)
    if not path.is_file():
        return None
    try:
        _, node = parse_yaml(path.read_text(encoding="utf-8"), source)
    except (OSError, ManifestError):
        return None
    return node


def load_security(registry: MetadataRegistry) -> SecurityConfig:
    """The permission metadata of ``registry`` as a checked SecurityConfig.

    Raises one ManifestError listing every problem (file, line, key, reason).
    """
    problems = _Problems()
    sets: list[PermissionSet] = []
    sharing: list[SharingConfig] = []
    sources: dict[tuple[str, str], tuple[str, yaml.Node | None]] = {}
    for item in registry.items("permission"):
        node = _node_of(item.source)
        model: type[PermissionSet] | type[SharingConfig] = (
            SharingConfig if item.body.get("type") == "sharing" else PermissionSet
        )
        try:
            parsed = validate_model(model, item.body, source=item.source, node=node)
        except ManifestError as exc:
            problems.errors.extend(
                FieldError(e.field, e.code, e.message.removeprefix("Value error, "))
                for e in exc.field_errors
            )
            problems.files.append(item.source)
            continue
        if isinstance(parsed, SharingConfig):
            sharing.append(parsed)
            sources[("sharing", parsed.name)] = (item.source, node)
        else:
            sets.append(parsed)
            sources[("permission_set", parsed.name)] = (item.source, node)
    problems.raise_if_any()
    config = SecurityConfig(permissionSets=sets, sharing=sharing)
    check_security(config, registry, sources=sources)
    return config


def check_security(
    config: SecurityConfig,
    registry: MetadataRegistry,
    *,
    sources: Mapping[tuple[str, str], tuple[str, yaml.Node | None]] | None = None,
) -> None:
    """Check ``config`` against itself and the objects of ``registry``; raise all problems.

    ``sources`` maps ``("permission_set"|"sharing", name)`` to the file and
    YAML node it came from, so errors carry a line.
    """
    _Checker(config, registry, sources or {}).run()


class _Checker:
    def __init__(
        self,
        config: SecurityConfig,
        registry: MetadataRegistry,
        sources: Mapping[tuple[str, str], tuple[str, yaml.Node | None]],
    ) -> None:
        self.config = config
        self.registry = registry
        self.sources = sources
        self.problems = _Problems()
        self.tables = ObjectTables(registry)
        self.set_names = {ps.name for ps in config.permissionSets}
        self.roles = {role.name: role for role in config.roles()}
        self.groups = {group.name for group in config.groups()}
        self.defaults = config.organization_defaults()

    def where(self, kind: str, name: str, path: list[str | int]) -> tuple[str, str]:
        source, node = self.sources.get((kind, name), (f"<{kind} {name}>", None))
        line = _line_of(node, path) if node is not None else None
        key = ""
        for part in path:
            key += f"[{part}]" if isinstance(part, int) else (("." if key else "") + part)
        return (f"{source}:{line}" if line else source), key or "<root>"

    def fail(self, kind: str, name: str, path: list[str | int], code: str, message: str) -> None:
        where, key = self.where(kind, name, path)
        self.problems.add(where, key, code, message)

    def run(self) -> None:
        self.check_unique()
        for ps in self.config.permissionSets:
            self.check_permission_set(ps)
        for part in self.config.sharing:
            self.check_sharing(part)
        self.problems.raise_if_any()

    def check_unique(self) -> None:
        seen_sets: set[str] = set()
        for ps in self.config.permissionSets:
            if ps.name in seen_sets:
                self.fail("permission_set", ps.name, ["name"], "duplicate_name", "defined twice")
            seen_sets.add(ps.name)
        for key, items in (
            ("roles", [(p, r.name) for p in self.config.sharing for r in p.roles]),
            ("groups", [(p, g.name) for p in self.config.sharing for g in p.groups]),
            ("sharingRules", [(p, r.name) for p in self.config.sharing for r in p.sharingRules]),
            (
                "rowLevelSecurity",
                [(p, r.name) for p in self.config.sharing for r in p.rowLevelSecurity],
            ),
        ):
            seen: set[str] = set()
            for part, name in items:
                if name in seen:
                    self.fail(
                        "sharing",
                        part.name,
                        [key],
                        "duplicate_name",
                        f"{name!r} is defined in more than one sharing file",
                    )
                seen.add(name)

    # -- permission sets --------------------------------------------------------------------

    def check_permission_set(self, ps: PermissionSet) -> None:
        for obj in ps.objects:
            if obj not in self.registry.objects:
                self.fail(
                    "permission_set", ps.name, ["objects", obj], "unknown_object", "no such object"
                )
        for key in ps.fields:
            obj, _, fld = key.partition(".")
            schema = self.registry.objects.get(obj)
            if schema is None:
                self.fail(
                    "permission_set", ps.name, ["fields", key], "unknown_object", "no such object"
                )
            elif fld in SYSTEM_FIELDS:
                self.fail(
                    "permission_set",
                    ps.name,
                    ["fields", key],
                    "invalid_field",
                    "system fields follow their object and cannot be controlled",
                )
            elif fld not in schema.fields:
                self.fail(
                    "permission_set",
                    ps.name,
                    ["fields", key],
                    "unknown_field",
                    f"{obj} has no field {fld!r}",
                )

    # -- sharing ----------------------------------------------------------------------------

    def check_sharing(self, part: SharingConfig) -> None:
        for i, role in enumerate(part.roles):
            if role.parent is not None and role.parent not in self.roles:
                self.fail(
                    "sharing",
                    part.name,
                    ["roles", i, "parent"],
                    "unknown_role",
                    f"no role {role.parent!r}",
                )
            for j, name in enumerate(role.permissionSets):
                if name not in self.set_names:
                    self.fail(
                        "sharing",
                        part.name,
                        ["roles", i, "permissionSets", j],
                        "unknown_permission_set",
                        f"no permission set {name!r}",
                    )
            if self.in_cycle(role.name):
                self.fail(
                    "sharing",
                    part.name,
                    ["roles", i, "parent"],
                    "role_cycle",
                    f"role {role.name!r} is its own ancestor",
                )
        for i, group in enumerate(part.groups):
            for j, role_name in enumerate(group.roles):
                if role_name not in self.roles:
                    self.fail(
                        "sharing",
                        part.name,
                        ["groups", i, "roles", j],
                        "unknown_role",
                        f"no role {role_name!r}",
                    )
        for obj, owd in part.organizationDefaults.items():
            if obj not in self.registry.objects:
                self.fail(
                    "sharing",
                    part.name,
                    ["organizationDefaults", obj],
                    "unknown_object",
                    "no such object",
                )
            elif owd == "controlled_by_parent":
                self.check_controlled_by_parent(part, obj)
        for i, rule in enumerate(part.sharingRules):
            path: list[str | int] = ["sharingRules", i]
            if rule.object not in self.registry.objects:
                self.fail(
                    "sharing", part.name, [*path, "object"], "unknown_object", "no such object"
                )
                continue
            if self.defaults.get(rule.object) == "controlled_by_parent":
                self.fail(
                    "sharing",
                    part.name,
                    [*path, "object"],
                    "invalid_rule",
                    f"{rule.object} is controlled_by_parent: share its master records instead",
                )
            self.check_recipient(part, [*path, "sharedWith"], rule.sharedWith)
            if isinstance(rule, CriteriaSharingRule):
                self.check_filter(part, [*path, "condition"], rule.object, rule.condition)
            else:
                self.check_recipient(part, [*path, "ownedBy"], rule.ownedBy)
        for i, policy in enumerate(part.rowLevelSecurity):
            path = ["rowLevelSecurity", i]
            if policy.object not in self.registry.objects:
                self.fail(
                    "sharing", part.name, [*path, "object"], "unknown_object", "no such object"
                )
                continue
            for j, role_name in enumerate(policy.roles):
                if role_name not in self.roles and role_name not in self.set_names:
                    self.fail(
                        "sharing",
                        part.name,
                        [*path, "roles", j],
                        "unknown_role",
                        f"no role or permission set {role_name!r}",
                    )
            if policy.using is not None:
                self.check_filter(part, [*path, "using"], policy.object, policy.using)
            if policy.check is not None:
                fields = self.check_filter(part, [*path, "check"], policy.object, policy.check)
                schema = self.registry.objects[policy.object]
                for name in sorted(fields):
                    fld = schema.fields.get(name)
                    stored = name in _CHECKABLE_SYSTEM_FIELDS or (
                        fld is not None and not fld.computed and fld.type != FieldType.PASSWORD
                    )
                    if not stored:
                        self.fail(
                            "sharing",
                            part.name,
                            [*path, "check"],
                            "invalid_field",
                            f"a check can only name stored fields, not {name!r}",
                        )

    def in_cycle(self, start: str) -> bool:
        seen: set[str] = set()
        current = self.roles[start].parent
        while current is not None and current in self.roles:
            if current == start:
                return True
            if current in seen:
                return False  # a cycle above us, reported for its own members
            seen.add(current)
            current = self.roles[current].parent
        return False

    def check_controlled_by_parent(self, part: SharingConfig, obj: str) -> None:
        schema = self.registry.objects[obj]
        masters = [
            (name, fld.reference)
            for name, fld in schema.fields.items()
            if fld.type == FieldType.MASTER_DETAIL and not fld.multiple
        ]
        if len(masters) != 1:
            self.fail(
                "sharing",
                part.name,
                ["organizationDefaults", obj],
                "invalid_default",
                f"controlled_by_parent needs exactly one master_detail field; {obj} has "
                f"{len(masters)}",
            )
            return
        # A chain of controlled_by_parent masters must end (its predicate nests subqueries).
        seen = {obj}
        current = masters[0][1]
        while current is not None and self.defaults.get(current) == "controlled_by_parent":
            if current in seen:
                self.fail(
                    "sharing",
                    part.name,
                    ["organizationDefaults", obj],
                    "invalid_default",
                    "controlled_by_parent masters form a cycle",
                )
                return
            seen.add(current)
            parent = self.registry.objects.get(current)
            nxt = [
                f.reference
                for f in (parent.fields.values() if parent else [])
                if f.type == FieldType.MASTER_DETAIL and not f.multiple
            ]
            current = nxt[0] if len(nxt) == 1 else None

    def check_recipient(
        self, part: SharingConfig, path: list[str | int], recipient: ShareRecipient
    ) -> None:
        if (
            recipient.type in ("role", "role_and_subordinates")
            and recipient.value not in self.roles
        ):
            self.fail(
                "sharing",
                part.name,
                [*path, "value"],
                "unknown_role",
                f"no role {recipient.value!r}",
            )
        if recipient.type == "group" and recipient.value not in self.groups:
            self.fail(
                "sharing",
                part.name,
                [*path, "value"],
                "unknown_group",
                f"no group {recipient.value!r}",
            )

    def check_filter(
        self, part: SharingConfig, path: list[str | int], obj: str, raw: Filter
    ) -> set[str]:
        """Compile a filter against ``obj``; return the fields it names (empty on errors)."""
        try:
            unknown = sorted(placeholders_in(raw) - PLACEHOLDERS)
            if unknown:
                self.fail(
                    "sharing",
                    part.name,
                    path,
                    "unknown_placeholder",
                    f"unknown placeholder(s) {unknown}; known: {sorted(PLACEHOLDERS)}",
                )
                return set()
            bound: Any = bind_user(raw, _PROBE_USER)
            compile_filter(bound, self.tables.table(obj), self.tables.columns(obj))
            return filter_fields(normalize_filter(bound))
        except ObjectOSError as exc:
            self.fail("sharing", part.name, path, exc.code, exc.message)
            return set()


__all__ = ["check_security", "load_security"]
