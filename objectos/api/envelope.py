"""The response envelope of PROTOCOL.md, and the one place errors become responses.

``{success: true, data, meta: {timestamp, duration, requestId, traceId}}`` and
``{success: false, error: {code, message, category, details, fieldErrors, requestId}}``.
Any exception that is not an :class:`ObjectOSError` becomes ``internal_error``
with a generic message: no stack trace, no exception text reaches a client.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from objectos.errors import ObjectOSError, RateLimitExceeded

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


def failure(
    exc: BaseException, *, request_id: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) for any exception; unknown ones are internal_error."""
    headers: dict[str, str] = {}
    if isinstance(exc, ObjectOSError):
        error = exc.to_dict()
        status = exc.status
        if isinstance(exc, RateLimitExceeded):
            retry = exc.details.get("retryAfter")
            if retry is not None:
                headers["Retry-After"] = str(max(1, int(float(retry) + 0.999)))
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
