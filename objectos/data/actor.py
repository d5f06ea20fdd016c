"""Who is acting: the user (or the system) on whose behalf the data engine works."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Actor:
    """The caller of a data operation, passed explicitly to every engine method.

    ``user_id`` is stamped into ``created_by``/``updated_by``/``owner`` and the
    change log. ``system`` marks trusted server code (automations, seeding,
    sync merges): it may write readonly fields and ``owner``, which clients may
    not. The permission engine decides *whether* an actor may act; this engine
    only records who did.
    """

    user_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    system: bool = False

    @classmethod
    def user(cls, user_id: str, roles: Iterable[str] = ()) -> Actor:
        """An end user."""
        return cls(user_id=user_id, roles=frozenset(roles))

    @classmethod
    def system_actor(cls, name: str = "system") -> Actor:
        """Trusted server code, recorded under ``name``."""
        return cls(user_id=name, roles=frozenset(), system=True)

    def to_dict(self) -> dict[str, Any]:
        """The ``session`` of a hook payload: ``{userId, roles, system}``."""
        return {"userId": self.user_id, "roles": sorted(self.roles), "system": self.system}


__all__ = ["Actor"]
