"""The hub's error envelope (as objectos.api.envelope builds it) back into typed exceptions."""

from __future__ import annotations

import pytest

from objectos.api.envelope import failure
from objectos.client.errors import HubError, error_class, error_from_payload, error_from_response
from objectos.errors import (
    ConcurrentModification,
    Conflict,
    ExpiredToken,
    FieldError,
    InvalidField,
    NotFound,
    ObjectOSError,
    RateLimitExceeded,
    RecordNotFound,
    Unauthenticated,
)


@pytest.mark.parametrize(
    "error",
    [
        RecordNotFound("case 'x' does not exist", {"object": "case", "id": "x"}),
        ConcurrentModification("stale", {"expected": 1, "actual": 2}),
        ExpiredToken("token expired", {"reason": "expired"}),
        InvalidField(
            "bad amount",
            {"field": "amount", "reason": "not a number"},
            [FieldError("amount", "invalid_type", "must be a number")],
        ),
    ],
)
def test_every_protocol_error_comes_back_as_its_class(error: ObjectOSError) -> None:
    status, body, headers = failure(error, request_id="req-1")
    exc = error_from_response(status, body, headers)
    assert isinstance(exc, type(error)) and isinstance(exc, HubError)
    assert (exc.code, exc.message, exc.details) == (error.code, error.message, error.details)
    assert exc.field_errors == error.field_errors
    assert exc.status_code == status == error.status
    assert exc.request_id == "req-1"


def test_field_reason_and_retry_after() -> None:
    status, body, headers = failure(
        InvalidField("x", {"reason": "r"}, [FieldError("name", "required", "is required")])
    )
    exc = error_from_response(status, body, headers)
    assert (exc.field, exc.reason) == ("name", "r")

    status, body, headers = failure(RateLimitExceeded("slow down", {"retryAfter": 2.2}))
    limited = error_from_response(status, body, {k.lower(): v for k, v in headers.items()})
    assert isinstance(limited, RateLimitExceeded) and limited.retry_after == 3.0


def test_unknown_codes_keep_their_code_and_the_class_of_their_status() -> None:
    exc = error_from_payload({"code": "workflow_locked", "message": "locked"}, status=409)
    assert isinstance(exc, Conflict) and isinstance(exc, HubError)
    assert exc.code == "workflow_locked" and exc.status == 409
    assert error_class("workflow_locked", 409) is type(exc)

    gone = error_from_response(404, "<html>nginx</html>", {})
    assert isinstance(gone, NotFound) and "nginx" in gone.message
    anonymous = error_from_response(401, {"success": False}, {})
    assert isinstance(anonymous, Unauthenticated)


def test_api_keys_and_tokens_get_their_own_authorization_scheme() -> None:
    from objectos.api.auth import API_KEY_PREFIX
    from objectos.client.hub import API_KEY_PREFIX as CLIENT_PREFIX
    from objectos.client.hub import authorization

    assert CLIENT_PREFIX == API_KEY_PREFIX
    assert authorization(f"{API_KEY_PREFIX}abc") == f"ApiKey {API_KEY_PREFIX}abc"
    assert authorization("eyJhbGciOi.x.y") == "Bearer eyJhbGciOi.x.y"
