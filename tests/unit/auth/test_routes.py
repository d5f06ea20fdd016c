"""The /api/v1/auth routes end to end: sign-up -> sign-in -> me -> refresh -> sign-out.

Requests go through httpx into the real Starlette routes, the real identity
service and a real database; only the clock is moved by hand.
"""

from __future__ import annotations

import base64
import json

import pytest

from .conftest import PASSWORD, Hub, MakeHub, ManualClock, bearer, error_of


async def test_a_new_account_signs_in_sees_itself_refreshes_and_signs_out(hub: Hub) -> None:
    signed_up = await hub.sign_up("Ada@Example.test")
    assert signed_up["email"] == "Ada@Example.test"
    assert signed_up["roles"] == ["user"]
    assert signed_up["kind"] == "user" and signed_up["active"] is True

    # Emails are unique and looked up case-insensitively.
    response = await hub.sign_in("ada@example.TEST")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    session = response.json()["data"]
    assert session["tokenType"] == "Bearer"
    assert session["expiresIn"] == 900
    assert session["user"]["id"] == signed_up["id"]

    me = await hub.me(bearer(session["accessToken"]))
    assert me.status_code == 200
    assert me.json()["data"]["id"] == signed_up["id"]
    assert me.json()["data"]["auth"] == {
        "method": "token",
        "roles": ["user"],
        "issuer": "https://hub.example.test",
        "expiresAt": pytest.approx(1_700_000_900),
        "scopes": None,
    }

    refreshed = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert refreshed.status_code == 200
    renewed = refreshed.json()["data"]
    assert renewed["refreshToken"] != session["refreshToken"]
    assert (await hub.me(bearer(renewed["accessToken"]))).status_code == 200

    signed_out = await hub.client.post(
        "/api/v1/auth/sign-out", json={"refreshToken": renewed["refreshToken"]}
    )
    assert signed_out.status_code == 200
    assert signed_out.json()["data"] == {"signedOut": True, "sessionsEnded": 1}

    after = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": renewed["refreshToken"]}
    )
    assert after.status_code == 401
    assert error_of(after)["details"]["reason"] == "refresh token revoked"


async def test_no_response_ever_carries_a_password_hash(hub: Hub) -> None:
    signed_up = await hub.sign_up()
    session = await hub.session()
    me = (await hub.me(bearer(session["accessToken"]))).json()["data"]
    refreshed = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    for document in (signed_up, session, me, refreshed.json()):
        text = str(document)
        assert "password" not in text.lower()
        assert "$argon2id$" not in text


async def test_a_spent_refresh_token_presented_again_revokes_the_whole_family(hub: Hub) -> None:
    session = await hub.session()
    first = session["refreshToken"]
    second = (await hub.client.post("/api/v1/auth/refresh", json={"refreshToken": first})).json()[
        "data"
    ]["refreshToken"]

    # Someone replays the spent token: maybe the thief, maybe the user.
    replay = await hub.client.post("/api/v1/auth/refresh", json={"refreshToken": first})
    assert replay.status_code == 401
    assert error_of(replay)["code"] == "invalid_token"
    assert error_of(replay)["details"]["reason"] == "refresh token reuse detected"
    assert 'error="invalid_token"' in replay.headers["www-authenticate"]

    # The legitimate-looking successor dies with it: both parties sign in again.
    successor = await hub.client.post("/api/v1/auth/refresh", json={"refreshToken": second})
    assert successor.status_code == 401
    assert error_of(successor)["details"]["reason"] == "refresh token revoked"
    assert [e.type for e in hub.events].count("auth.refresh_reuse_detected") == 1


async def test_an_expired_refresh_token_is_refused(hub: Hub, clock: ManualClock) -> None:
    session = await hub.session()
    clock.advance(30 * 86400)
    response = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert response.status_code == 401
    assert error_of(response)["code"] == "expired_token"


async def test_sign_out_everywhere_needs_a_bearer_token_and_ends_every_session(hub: Hub) -> None:
    laptop = await hub.session()
    phone = await hub.session()

    anonymous = await hub.client.post("/api/v1/auth/sign-out", json={"everywhere": True})
    assert anonymous.status_code == 401
    assert error_of(anonymous)["code"] == "unauthenticated"

    response = await hub.client.post(
        "/api/v1/auth/sign-out", json={"everywhere": True}, headers=bearer(laptop["accessToken"])
    )
    assert response.json()["data"] == {"signedOut": True, "sessionsEnded": 2}
    for session in (laptop, phone):
        refused = await hub.client.post(
            "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
        )
        assert refused.status_code == 401


async def test_signing_out_twice_or_with_an_unknown_token_is_not_an_error(hub: Hub) -> None:
    session = await hub.session()
    for _ in range(2):
        response = await hub.client.post(
            "/api/v1/auth/sign-out", json={"refreshToken": session["refreshToken"]}
        )
        assert response.status_code == 200
    unknown = await hub.client.post("/api/v1/auth/sign-out", json={"refreshToken": "nope"})
    assert unknown.json()["data"] == {"signedOut": True, "sessionsEnded": 0}


async def test_a_taken_email_is_a_duplicate_value_whatever_its_case(hub: Hub) -> None:
    await hub.sign_up("grace@example.test")
    response = await hub.client.post(
        "/api/v1/auth/sign-up", json={"email": " GRACE@example.test ", "password": PASSWORD}
    )
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "duplicate_value"
    assert error["fieldErrors"] == [
        {"field": "email", "code": "duplicate_value", "message": "already registered"}
    ]


@pytest.mark.parametrize(
    ("body", "status", "code", "field_errors"),
    [
        ({"email": "ada@example.test"}, 400, "missing_required_field", [("password", "required")]),
        (
            {"email": "not-an-email", "password": PASSWORD},
            400,
            "invalid_field",
            [("email", "invalid_format")],
        ),
        (
            {"email": "ada@example.test", "password": "short"},
            400,
            "invalid_field",
            [("password", "too_short")],
        ),
        (
            {"email": "ada@example.test", "password": "x" * 300},
            400,
            "invalid_field",
            [("password", "too_long")],
        ),
        (
            {"email": "adalovelace@example.test", "password": "adalovelace-is-my-name"},
            400,
            "invalid_field",
            [("password", "contains_email")],
        ),
        (
            {"email": "ada@example.test", "password": 12345678901234},
            400,
            "invalid_field",
            [("password", "invalid_type")],
        ),
        (
            {"email": "ada@example.test", "password": PASSWORD, "roles": ["admin"]},
            400,
            "invalid_field",
            [("roles", "unknown_field")],
        ),
        (
            {"email": "ada@example.test", "password": PASSWORD, "name": ["x"]},
            400,
            "invalid_field",
            [("name", "invalid_type")],
        ),
    ],
)
async def test_bad_sign_up_input_names_the_field_and_creates_nothing(
    hub: Hub,
    body: dict[str, object],
    status: int,
    code: str,
    field_errors: list[tuple[str, str]],
) -> None:
    response = await hub.client.post("/api/v1/auth/sign-up", json=body)
    assert response.status_code == status
    error = error_of(response)
    assert error["code"] == code
    assert [(e["field"], e["code"]) for e in error["fieldErrors"]] == field_errors
    # Nothing was created: the address is still free.
    assert (await hub.sign_in()).status_code == 401
    await hub.sign_up()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "invalid json"),
        (b"[1, 2]", "not an object"),
        (b"x" * 20_000, "body too large"),
    ],
)
async def test_malformed_bodies_are_validation_errors_not_crashes(
    hub: Hub, content: bytes, reason: str
) -> None:
    for path in ("sign-up", "sign-in", "refresh", "sign-out", "sign-in/oidc"):
        response = await hub.client.post(
            f"/api/v1/auth/{path}", content=content, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, path
        assert error_of(response)["code"] == "validation_error"
        assert error_of(response)["details"]["reason"] == reason


async def test_sign_up_is_refused_when_the_hub_does_not_allow_it(make_hub: MakeHub) -> None:
    closed = await make_hub(allowSignUp=False)
    response = await closed.client.post(
        "/api/v1/auth/sign-up", json={"email": "ada@example.test", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert error_of(response)["code"] == "permission_denied"

    # Operators still create accounts, with any roles.
    await closed.identity.create_user("ada@example.test", PASSWORD, "Ada", roles=["admin"])
    session = await closed.sign_in()
    assert session.json()["data"]["user"]["roles"] == ["admin"]


async def test_wrong_password_and_unknown_account_answer_alike(hub: Hub) -> None:
    await hub.sign_up()
    wrong = await hub.sign_in(password="not the password at all")
    unknown = await hub.sign_in(email="nobody@example.test")
    assert wrong.status_code == unknown.status_code == 401
    assert error_of(wrong) == error_of(unknown)
    assert wrong.headers["www-authenticate"] == 'Bearer realm="objectos"'
    # The audit trail knows the difference; the client does not.
    reasons = [e.details["reason"] for e in hub.events if e.type == "auth.sign_in_failed"]
    assert reasons == ["wrong password", "unknown account"]


async def test_events_report_what_happened_without_secrets(hub: Hub) -> None:
    await hub.sign_up()
    session = await hub.session()
    await hub.client.post("/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]})
    assert [e.type for e in hub.events] == ["user.signed_up", "auth.signed_in", "auth.refreshed"]
    assert all(e.ip == "127.0.0.1" for e in hub.events)
    text = str([e.to_dict() for e in hub.events])
    assert PASSWORD not in text
    assert session["refreshToken"] not in text and session["accessToken"] not in text


async def test_the_jwks_publishes_the_public_signing_key_only(hub: Hub) -> None:
    session = await hub.session()
    for path in ("/.well-known/jwks.json", "/api/v1/auth/jwks"):
        response = await hub.client.get(path)
        assert response.status_code == 200
        (key,) = response.json()["keys"]
        assert key["kty"] == "OKP" and key["alg"] == "EdDSA" and key["use"] == "sig"
        assert "d" not in key
    header = json.loads(base64.urlsafe_b64decode(session["accessToken"].split(".")[0] + "=="))
    assert header["kid"] == key["kid"]
