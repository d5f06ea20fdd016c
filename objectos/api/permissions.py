"""``POST /api/v1/permissions/check``: may someone do something, and why.

Body (JSON object; unknown keys are refused)::

    {"action": "read|create|edit|delete", "object": "account",
     "recordId": "...",   # optional: one record
     "field": "...",      # optional: one field
     "userId": "..."}     # optional: answer for another user

The answer is the :class:`~objectos.security.guard.Decision`
(``{allowed, reasons[], action, object, recordId?, field?, userId}``); a
denial is a 200 with ``allowed: false`` — the check itself succeeded.

Without ``userId`` the answer is about the caller. Asking about someone else
shows what they may see, so only a caller holding ``view_all_data`` (or
``modify_all_data``) may; anyone else gets 403 ``permission_denied``. An
unknown ``userId`` is 404 for such a caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from objectos.api.discovery import API_BASE
from objectos.api.envelope import error_response, respond
from objectos.api.rest import Authenticator, read_json_object
from objectos.data.actor import Actor
from objectos.errors import FieldError, InvalidField, MissingRequiredField, PermissionDenied
from objectos.security.guard import SecuredDataService

PERMISSIONS_BASE = f"{API_BASE}/permissions"
PERMISSIONS_CHECK = f"{PERMISSIONS_BASE}/check"
#: Route families for discovery (``MOUNTED_ROUTES`` of the HTTP app).
PERMISSIONS_ROUTES = {"permissions": PERMISSIONS_BASE}
#: System permissions that let a caller ask about another user.
ASK_FOR_OTHERS = ("view_all_data", "modify_all_data")
#: A check body is a handful of short strings.
MAX_BODY_BYTES = 16 * 1024

_REQUIRED = ("action", "object")
_OPTIONAL = ("recordId", "field", "userId")

#: The guard, or an async callable returning it (it may raise ServiceUnavailable
#: while the data layer is starting).
GuardSource = Callable[[], Awaitable[SecuredDataService]]
#: The actor of a user id (their roles), or NotFound.
UserLookup = Callable[[str], Awaitable[Actor]]


class PermissionRoutes:
    """The ``/api/v1/permissions`` endpoints over a guard, an authenticator and a user lookup."""

    def __init__(
        self,
        guard: GuardSource,
        authenticate: Authenticator,
        users: UserLookup | None = None,
    ) -> None:
        """``users`` resolves ``userId``; without it only the caller can be asked about."""
        self._guard = guard
        self._authenticate = authenticate
        self._users = users

    def routes(self) -> list[Route]:
        """Starlette routes."""
        return [Route(PERMISSIONS_CHECK, self.check, methods=["POST"])]

    async def check(self, request: Request) -> Response:
        """Answer one check (see the module docstring)."""
        try:
            caller = await self._authenticate(request)
            body = _checked_body(await read_json_object(request, MAX_BODY_BYTES))
            guard = await self._guard()
            subject = caller
            if "userId" in body and body["userId"] != caller.user_id:
                subject = await self._other_user(guard, caller, body["userId"])
            decision = await guard.explain(
                subject, body["action"], body["object"], body.get("recordId"), body.get("field")
            )
            return respond(request, {**decision.to_dict(), "userId": subject.user_id})
        except Exception as exc:
            return error_response(request, exc)

    async def _other_user(self, guard: SecuredDataService, caller: Actor, user_id: str) -> Actor:
        if not any(guard.permissions.has_system_permission(caller, p) for p in ASK_FOR_OTHERS):
            # Checked before the lookup: whether an account exists is not for everyone.
            raise PermissionDenied(
                "asking about another user needs view_all_data or modify_all_data",
                details={"field": "userId", "reason": "system permission required"},
            )
        if self._users is None:
            raise InvalidField(
                "this hub cannot look up other users",
                field_errors=[FieldError("userId", "unsupported", "no user directory")],
            )
        return await self._users(user_id)


def _checked_body(body: dict[str, Any]) -> dict[str, str]:
    """The body with known keys only, every value a non-empty string."""
    unknown = sorted(key for key in body if key not in (*_REQUIRED, *_OPTIONAL))
    if unknown:
        raise InvalidField(
            f"unknown field(s): {', '.join(unknown)}",
            field_errors=[FieldError(key, "unknown_field", "not accepted here") for key in unknown],
        )
    missing = [key for key in _REQUIRED if body.get(key) in (None, "")]
    if missing:
        raise MissingRequiredField(
            f"missing field(s): {', '.join(missing)}",
            field_errors=[FieldError(key, "required", "is required") for key in missing],
        )
    wrong = [key for key, value in body.items() if value is not None and not isinstance(value, str)]
    if wrong:
        raise InvalidField(
            f"{', '.join(wrong)} must be strings",
            field_errors=[FieldError(key, "invalid_type", "must be a string") for key in wrong],
        )
    return {key: value for key, value in body.items() if value is not None}


def permission_routes(
    guard: GuardSource, authenticate: Authenticator, users: UserLookup | None = None
) -> list[Route]:
    """The ``/api/v1/permissions`` routes (see :class:`PermissionRoutes`)."""
    return PermissionRoutes(guard, authenticate, users).routes()


__all__ = [
    "ASK_FOR_OTHERS",
    "PERMISSIONS_BASE",
    "PERMISSIONS_CHECK",
    "PERMISSIONS_ROUTES",
    "GuardSource",
    "PermissionRoutes",
    "UserLookup",
    "permission_routes",
]
