"""IdentityService rules that are not about one route: roles, deactivation, rehashing,
events, housekeeping."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.errors import InvalidField, MissingRequiredField, NotFound
from objectos.security.identity import AuthEvent

from .conftest import PASSWORD, Hub, MakeHub, ManualClock, bearer, error_of


async def test_changing_roles_ends_sessions_so_the_next_sign_in_carries_them(hub: Hub) -> None:
    session = await hub.session()
    user_id = session["user"]["id"]
    updated = await hub.identity.set_roles(user_id, ["sales", "user", "sales"])
    assert updated.roles == ("sales", "user")

    stale = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert stale.status_code == 401
    fresh = await hub.session()
    assert fresh["user"]["roles"] == ["sales", "user"]
    me = await hub.me(bearer(fresh["accessToken"]))
    assert me.json()["data"]["auth"]["roles"] == ["sales", "user"]


async def test_a_role_name_that_is_not_one_is_refused(hub: Hub) -> None:
    account = await hub.identity.create_user("ada@example.test", PASSWORD)
    with pytest.raises(InvalidField):
        await hub.identity.set_roles(account.id, ["admin; drop table"])
    with pytest.raises(NotFound):
        await hub.identity.set_roles("no-such-user", ["user"])


async def test_a_disabled_account_can_neither_sign_in_nor_refresh(hub: Hub) -> None:
    session = await hub.session()
    user_id = session["user"]["id"]
    await hub.identity.deactivate(user_id)

    assert error_of(await hub.sign_in())["code"] == "unauthenticated"
    refresh = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert refresh.status_code == 401
    me = await hub.me(bearer(session["accessToken"]))
    # The access token itself is still a valid token, but /me reads the account.
    assert me.status_code == 401
    assert error_of(me)["details"]["reason"] == "account disabled"

    await hub.identity.activate(user_id)
    assert (await hub.sign_in()).status_code == 200


async def test_refresh_refuses_an_account_disabled_behind_the_services_back(
    hub: Hub, database: AsyncEngine
) -> None:
    session = await hub.session()
    # An operator flips the column directly in the database.
    async with database.begin() as conn:
        await conn.execute(sa.text("UPDATE _auth_users SET active = false"))
    response = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert error_of(response)["details"]["reason"] == "account disabled"
    await hub.identity.activate(session["user"]["id"])
    # The session was revoked on the way, not merely refused once.
    again = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert error_of(again)["details"]["reason"] == "refresh token revoked"


async def stored_hash(database: AsyncEngine) -> str:
    async with database.connect() as conn:
        return str((await conn.execute(sa.text("SELECT password_hash FROM _auth_users"))).scalar())


async def test_an_outdated_password_hash_is_upgraded_at_the_next_sign_in(
    make_hub: MakeHub, database: AsyncEngine
) -> None:
    old = await make_hub(passwordHashing={"timeCost": 1, "memoryCostKib": 64, "parallelism": 1})
    await old.sign_up()
    assert "m=64,t=1" in await stored_hash(database)

    new = await make_hub(passwordHashing={"timeCost": 2, "memoryCostKib": 128, "parallelism": 1})
    assert (await new.sign_in()).status_code == 200
    assert "m=128,t=2" in await stored_hash(database)
    assert [e.type for e in new.events] == ["auth.password_rehashed", "auth.signed_in"]
    # And the upgraded hash still takes the same password, on either replica.
    assert (await old.sign_in()).status_code == 200


async def test_a_failing_event_sink_does_not_fail_the_sign_in(make_hub: MakeHub) -> None:
    async def broken(event: AuthEvent) -> None:
        raise RuntimeError("audit backend down")

    hub = await make_hub(on_event=broken)
    await hub.sign_up()
    assert (await hub.sign_in()).status_code == 200


async def test_service_accounts_need_a_name_and_get_no_password(hub: Hub) -> None:
    with pytest.raises(MissingRequiredField):
        await hub.identity.create_service_account("  ")
    robot = await hub.identity.create_service_account("exporter", ["integration"])
    assert robot.kind == "service" and robot.email is None and robot.password_hash is None
    with pytest.raises(NotFound):
        await hub.identity.create_api_key("nobody")
    with pytest.raises(InvalidField):
        await hub.identity.create_api_key(robot.id, ttl_s=-5)


async def test_accounts_without_a_password_cannot_sign_in_with_one(hub: Hub) -> None:
    await hub.identity.create_user("sso-only@example.test", None, "SSO only")
    response = await hub.sign_in("sso-only@example.test", "")
    assert response.status_code == 400  # an empty password is not even tried
    response = await hub.sign_in("sso-only@example.test", PASSWORD)
    assert response.status_code == 401
    reasons = [e.details.get("reason") for e in hub.events if e.type == "auth.sign_in_failed"]
    assert reasons == ["account cannot sign in"]


async def test_expired_rows_are_purged_during_sign_in_once_an_hour(
    hub: Hub, clock: ManualClock
) -> None:
    first = await hub.session()
    clock.advance(31 * 86400)  # past the refresh lifetime, and past the purge interval
    await hub.session()
    gone = await hub.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": first["refreshToken"]}
    )
    assert error_of(gone)["details"]["reason"] == "unknown refresh token"
    assert await hub.identity.purge_expired() == {"refreshTokens": 0, "counters": 0}
