"""The response envelope of PROTOCOL.md, and the one place errors become responses.

``{success: true, data, meta: {timestamp, duration, requestId, traceId}}`` and
``{success: false, error: {code, message, category, details, fieldErrors, requestId}}``.
Any exception that is not an :class:`ObjectOSError` becomes ``internal_error``
with a generic message: no stack trace, no exception text reaches a client.

For Starlette apps: :func:`respond` and :func:`error_response` build the
responses (request and trace ids come from ``request.state``, set by
:class:`objectos.api.middleware.RequestContext`), and :func:`exception_handlers`
turns the router's own 404/405 and anything that escapes a route into the
same error envelope.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from objectos.errors import (
    ExpiredToken,
    InvalidToken,
    MethodNotAllowed,
    NotFound,
    ObjectOSError,
    RateLimitExceeded,
    Unauthenticated,
    ValidationError,
)

logger = logging.getLogger("objectos.api")


def _meta(request_id: str | None, trace_id: str | None, started: float | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"timestamp": datetime.now(UTC).isoformat()}
    if started is not None:
        meta["duration"] = round((time.perf_counter() - started) * 1000, 3)
    if request_id:
        meta["requestId"] = request_id
    if trace_id:
        meta["traceId"] = trace_id
    return meta


def success(
    data: Any,
    *,
    request_id: str | None = None,
    trace_id: str | None = None,
    started: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A success envelope; ``extra`` adds top-level keys such as ``pagination``."""
    return {"success": True, "data": data, **extra, "meta": _meta(request_id, trace_id, started)}


def www_authenticate(exc: BaseException, realm: str = "objectos") -> dict[str, str]:
    """The ``WWW-Authenticate`` header for a 401 error (empty for anything else).

    RFC 6750 §3.1: a request without credentials gets the bare challenge; a
    bad or expired token gets ``error="invalid_token"`` and a description
    (the same reason the error body carries; never the token).
    """
    if not isinstance(exc, Unauthenticated):
        return {}
    parts = [f'realm="{_quoted(realm)}"']
    if isinstance(exc, InvalidToken | ExpiredToken):
        parts.append('error="invalid_token"')
        reason = exc.details.get("reason")
        if isinstance(reason, str):
            parts.append(f'error_description="{_quoted(reason)}"')
    return {"WWW-Authenticate": "Bearer " + ", ".join(parts)}


def _quoted(text: str) -> str:
    # RFC 6750 limits these values to printable ASCII without '"' and '\'.
    return "".join(c for c in text if 0x20 <= ord(c) < 0x7F and c not in '"\\')


def failure(
    exc: BaseException, *, request_id: str | None = None, realm: str = "objectos"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for any exception; unknown ones are internal_error.

    A 401 carries its ``WWW-Authenticate`` challenge (:func:`www_authenticate`
    in ``realm``), a 429 its ``Retry-After``, a 405 its ``Allow``.
    """
    headers: dict[str, str] = {}
    if isinstance(exc, ObjectOSError):
        headers.update(www_authenticate(exc, realm))
        error = exc.to_dict()
        status = exc.status
        if isinstance(exc, RateLimitExceeded):
            retry = exc.details.get("retryAfter")
            if retry is not None:
                headers["Retry-After"] = str(max(1, int(float(retry) + 0.999)))
        if isinstance(exc, MethodNotAllowed) and "allow" in exc.details:
            # RFC 9110: a 405 names the methods the resource does support.
            headers["Allow"] = ", ".join(exc.details["allow"])
    else:
        logger.error("internal error (request %s)", request_id, exc_info=exc)
        error = {
            "code": "internal_error",
            "message": "internal error",
            "category": "server",
            "details": {},
            "fieldErrors": [],
        }
        status = 500
    if request_id:
        error["requestId"] = request_id
    return status, {"success": False, "error": error}, headers


def _state(request: Request, name: str) -> Any:
    return getattr(request.state, name, None)


def respond(
    request: Request,
    data: Any,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A success envelope as a response; ``extra`` adds keys such as ``pagination``."""
    body = success(
        data,
        request_id=_state(request, "request_id"),
        trace_id=_state(request, "trace_id"),
        started=_state(request, "started"),
        **extra,
    )
    return JSONResponse(body, status_code=status, headers=headers)


def error_response(request: Request, exc: BaseException) -> JSONResponse:
    """The error envelope of ``exc`` as a response (unknown errors: internal_error)."""
    status, body, headers = failure(exc, request_id=_state(request, "request_id"))
    return JSONResponse(body, status_code=status, headers=headers)


def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error: ObjectOSError
    if exc.status_code == 404:
        error = NotFound(
            f"no route {request.method} {request.url.path}",
            details={"path": request.url.path},
        )
    elif exc.status_code == 405:
        allow = [m.strip() for m in (exc.headers or {}).get("Allow", "").split(",") if m.strip()]
        error = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path}",
            details={"method": request.method, "allow": allow},
        )
    elif 400 <= exc.status_code < 500:
        error = ValidationError(str(exc.detail), details={"status": exc.status_code})
        _, body, headers = failure(error, request_id=_state(request, "request_id"))
        return JSONResponse(body, status_code=exc.status_code, headers=headers)
    else:
        return error_response(request, exc)
    return error_response(request, error)


def _unexpected(request: Request, exc: Exception) -> Response:
    return error_response(request, exc)


def exception_handlers() -> dict[Any, Any]:
    """Starlette ``exception_handlers``: router 404/405 and escaped errors as envelopes."""
    return {HTTPException: _http_exception, Exception: _unexpected}
