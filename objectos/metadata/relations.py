"""Relations between objects: who references whom, and how summaries find their children.

A relation is a reference field (lookup, master_detail, tree) of a *child*
object pointing at a *parent*. The data engine walks relations to apply
``deleteBehavior`` (cascade / restrict / set_null) and to recompute summary
fields; the metadata checks use them to refuse a summary over an object that
is not a child.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from objectos.protocol.object import FieldType, ObjectField, ObjectSchema


@dataclass(frozen=True)
class Relation:
    """``child.field`` references a record of ``parent``."""

    child: str
    field: str
    parent: str
    kind: FieldType
    on_delete: str
    multiple: bool


def reference_target(owner: str, field: ObjectField) -> str | None:
    """The object a reference field points at (``tree`` points at its own object)."""
    if field.type == FieldType.TREE:
        return field.reference or owner
    if field.type in (FieldType.LOOKUP, FieldType.MASTER_DETAIL):
        return field.reference
    return None


def relations_of(objects: Mapping[str, ObjectSchema]) -> list[Relation]:
    """Every reference field of ``objects`` as a Relation (unknown targets included)."""
    found: list[Relation] = []
    for name, obj in objects.items():
        for field_name, field in obj.fields.items():
            target = reference_target(name, field)
            if target is not None:
                found.append(
                    Relation(
                        child=name,
                        field=field_name,
                        parent=target,
                        kind=field.type,
                        on_delete=field.on_delete,
                        multiple=field.multiple,
                    )
                )
    return found


def summary_link(parent: str, child: ObjectSchema) -> str | None:
    """The field of ``child`` that a summary on ``parent`` rolls up through.

    A master_detail field to ``parent`` wins over lookups; ``None`` when the
    child has no single-valued reference to ``parent`` or the choice is ambiguous.
    """
    candidates = [
        (name, field)
        for name, field in child.fields.items()
        if reference_target(child.name, field) == parent and not field.multiple
    ]
    masters = [name for name, field in candidates if field.type == FieldType.MASTER_DETAIL]
    if len(masters) == 1:
        return masters[0]
    if not masters and len(candidates) == 1:
        return candidates[0][0]
    return None


__all__ = ["Relation", "reference_target", "relations_of", "summary_link"]
