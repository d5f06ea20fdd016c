"""Hub errors on the client side: the protocol's error object back into a typed exception.

Every error the hub reports has a ``code`` (PROTOCOL.md), and each code has a
class in :mod:`objectos.errors`. The client raises an exception that is *both*
that class and :class:`HubError`::

    try:
        await accounts.get(record_id)
    except RecordNotFound as exc:         # the server's class, as on the server side
        print(exc.code, exc.reason, exc.request_id)
    except HubError as exc:               # anything the hub answered with an error
        print(exc.status_code, exc.field, exc.field_errors)

A code this client does not know (a newer hub, a plugin's own code) still gets a
class: one derived from the class of its HTTP status (``NotFound`` for 404,
``Conflict`` for 409, ...), carrying the code as the server sent it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from objectos import errors as _errors
from objectos.errors import FieldError, ObjectOSError


class HubError(ObjectOSError):
    """What the hub answered with an error (REST envelope or Socket.IO error payload).

    Mixed into the class of the error's code, so ``except RecordNotFound`` and
    ``except HubError`` both work. ``status_code`` is the HTTP status (None over
    Socket.IO), ``request_id`` the hub's id of the request (quote it to an operator),
    ``retry_after`` the seconds a 429 asks to wait.
    """

    status_code: int | None = None
    request_id: str | None = None
    retry_after: float | None = None

    @property
    def field(self) -> str | None:
        """The field the error is about: ``details.field``, else the first field error's."""
        named = self.details.get("field")
        if isinstance(named, str):
            return named
        return self.field_errors[0].field if self.field_errors else None

    @property
    def reason(self) -> str | None:
        """The machine-readable reason of ``details`` (``"missing credentials"``...), if any."""
        reason = self.details.get("reason")
        return reason if isinstance(reason, str) else None


def _known_classes() -> dict[str, type[ObjectOSError]]:
    classes: dict[str, type[ObjectOSError]] = {}
    for name in _errors.__all__:
        value = getattr(_errors, name)
        if isinstance(value, type) and issubclass(value, ObjectOSError):
            classes.setdefault(value.code, value)
    return classes


#: Protocol code -> the class :mod:`objectos.errors` defines for it.
ERROR_CLASSES: dict[str, type[ObjectOSError]] = _known_classes()

#: The class of an unknown code, by HTTP status.
_BY_STATUS: dict[int, type[ObjectOSError]] = {
    400: _errors.ValidationError,
    401: _errors.Unauthenticated,
    403: _errors.PermissionDenied,
    404: _errors.NotFound,
    405: _errors.MethodNotAllowed,
    409: _errors.Conflict,
    413: _errors.PayloadTooLarge,
    429: _errors.RateLimitExceeded,
    503: _errors.ServiceUnavailable,
}

_CLIENT_CLASSES: dict[tuple[type[ObjectOSError], str], type[HubError]] = {}


def error_class(code: str, status: int | None = None) -> type[HubError]:
    """The client-side class of ``code``: its server class plus :class:`HubError`."""
    known = ERROR_CLASSES.get(code)
    base = known or _BY_STATUS.get(status or 500, ObjectOSError)
    key = (base, code)
    cls = _CLIENT_CLASSES.get(key)
    if cls is None:
        namespace: dict[str, Any] = {"__module__": __name__, "__qualname__": base.__name__}
        if known is None:
            namespace.update(code=code, status=status or base.status)
        cls = type(base.__name__, (HubError, base), namespace)
        _CLIENT_CLASSES[key] = cls
    return cls


def _field_errors(raw: Any) -> list[FieldError]:
    errors = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, Mapping):
            errors.append(
                FieldError(
                    str(item.get("field", "")), str(item.get("code", "")), str(item.get("message"))
                )
            )
    return errors


def error_from_payload(
    error: Any,
    *,
    status: int | None = None,
    request_id: str | None = None,
    retry_after: float | None = None,
) -> HubError:
    """The exception for a protocol error object ``{code, message, details, fieldErrors}``.

    Anything else (a proxy's HTML page, a bare string) becomes an error of the
    HTTP status' class with the text as its message.
    """
    if not isinstance(error, Mapping):
        code = "internal_error" if status is None else _status_code(status)
        text = str(error) if error else f"HTTP {status}"
        error = {"code": code, "message": text[:500]}
    code = str(error.get("code") or "internal_error")
    details = error.get("details")
    cls = error_class(code, status)
    exc = cls(
        str(error.get("message") or code),
        dict(details) if isinstance(details, Mapping) else {},
        _field_errors(error.get("fieldErrors")),
    )
    exc.status_code = status
    exc.request_id = request_id or _text(error.get("requestId"))
    exc.retry_after = retry_after
    return exc


def error_from_response(status: int, body: Any, headers: Mapping[str, str]) -> HubError:
    """The exception for an HTTP error response (``body`` parsed JSON, or text)."""
    error = body.get("error") if isinstance(body, Mapping) else body
    retry_after = None
    raw_retry = headers.get("retry-after")
    if raw_retry is not None:
        try:
            retry_after = float(raw_retry)
        except ValueError:
            retry_after = None
    return error_from_payload(error, status=status, retry_after=retry_after)


def _status_code(status: int) -> str:
    cls = _BY_STATUS.get(status)
    return cls.code if cls is not None else "internal_error"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


__all__ = ["ERROR_CLASSES", "HubError", "error_class", "error_from_payload", "error_from_response"]
