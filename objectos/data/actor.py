"""Who is acting: the user (or the system) on whose behalf the data engine works."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: Request context keys the hub fills in (others are kept as given).
CONTEXT_KEYS = ("ip", "userAgent", "requestId", "traceId")

#: Longest context value kept; a longer one (a padded User-Agent) is cut, not refused:
#: the context describes a request for auditors, it must never fail the request.
MAX_CONTEXT_VALUE = 512


@dataclass(frozen=True)
class Actor:
    """The caller of a data operation, passed explicitly to every engine method.

    ``user_id`` is stamped into ``created_by``/``updated_by``/``owner`` and the
    change log. ``system`` marks trusted server code (automations, seeding,
    sync merges): it may write readonly fields and ``owner``, which clients may
    not. The permission engine decides *whether* an actor may act; this engine
    only records who did.

    ``context`` describes the request the actor acts in — ``ip``,
    ``userAgent``, ``requestId``, ``traceId`` (:data:`CONTEXT_KEYS`) — and is
    written to the change log with every write, for the audit trail. It is
    deliberately left out of equality and hashing: the same user with the
    same roles is the same subject for permission caches whatever request
    they arrive in. Values are strings (``None`` entries are dropped, longer
    values cut to :data:`MAX_CONTEXT_VALUE` characters, NUL characters and
    lone surrogates removed, so a context can never fail the write it describes).
    """

    user_id: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    system: bool = False
    context: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        # A private copy: the caller's dict must not change what was recorded.
        object.__setattr__(self, "context", _clean_context(self.context))

    @classmethod
    def user(
        cls,
        user_id: str,
        roles: Iterable[str] = (),
        *,
        context: Mapping[str, str | None] | None = None,
    ) -> Actor:
        """An end user (``context``: the request they act in, see the class docstring)."""
        return cls(user_id=user_id, roles=frozenset(roles), context=_clean_context(context))

    @classmethod
    def system_actor(
        cls, name: str = "system", *, context: Mapping[str, str | None] | None = None
    ) -> Actor:
        """Trusted server code, recorded under ``name``."""
        return cls(user_id=name, roles=frozenset(), system=True, context=_clean_context(context))

    def with_context(self, **values: str | None) -> Actor:
        """This actor in a request: ``actor.with_context(ip=..., requestId=...)``.

        Keys given here replace earlier ones; a ``None`` value removes a key.
        """
        merged: dict[str, str | None] = {**self.context, **values}
        return replace(self, context=_clean_context(merged))

    def to_dict(self) -> dict[str, Any]:
        """The ``session`` of a hook payload: ``{userId, roles, system}``."""
        return {"userId": self.user_id, "roles": sorted(self.roles), "system": self.system}


def _clean_context(context: Mapping[str, Any] | None) -> dict[str, str]:
    if not context:
        return {}
    if not isinstance(context, Mapping):
        raise TypeError(f"Actor.context must be a mapping, not {type(context).__name__}")
    cleaned: dict[str, str] = {}
    for key, value in context.items():
        if not isinstance(key, str):
            raise TypeError(f"Actor.context keys are strings, not {type(key).__name__}")
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"Actor.context[{key!r}] must be a string, not {type(value).__name__}")
        # No NUL or lone surrogate: PostgreSQL's JSON would refuse the whole write.
        text = value[:MAX_CONTEXT_VALUE].replace("\x00", "")
        cleaned[key] = text.encode("utf-8", "replace").decode("utf-8")
    return cleaned


__all__ = ["CONTEXT_KEYS", "MAX_CONTEXT_VALUE", "Actor"]
