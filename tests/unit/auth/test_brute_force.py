"""Guessing passwords over HTTP: lockouts per account and per client IP, 429 + Retry-After.

The test hub locks an account after 3 failures for 60 s (doubling on each
repeat, up to 600 s) and a client IP after 12 (4 x 3).
"""

from __future__ import annotations

from .conftest import PASSWORD, Hub, ManualClock, error_of


async def test_repeated_wrong_passwords_lock_the_account_with_retry_after(
    hub: Hub, clock: ManualClock
) -> None:
    await hub.sign_up()
    for _ in range(3):
        assert (await hub.sign_in(password="wrong password guess")).status_code == 401

    locked = await hub.sign_in(password="wrong password guess")
    assert locked.status_code == 429
    assert locked.headers["retry-after"] == "60"
    assert error_of(locked)["code"] == "rate_limit_exceeded"

    # While locked, even the right password is refused: otherwise the lockout
    # would just tell the guesser when they got it right.
    assert (await hub.sign_in()).status_code == 429
    clock.advance(30)
    assert (await hub.sign_in()).headers["retry-after"] == "30"

    clock.advance(30)
    assert (await hub.sign_in()).status_code == 200
    assert [e.type for e in hub.events].count("auth.locked_out") == 1


async def test_lockouts_escalate_while_the_guessing_goes_on(hub: Hub, clock: ManualClock) -> None:
    await hub.sign_up()
    waits = []
    for _ in range(3):
        for _ in range(3):
            await hub.sign_in(password="wrong password guess")
        response = await hub.sign_in(password="wrong password guess")
        waits.append(int(response.headers["retry-after"]))
        clock.advance(waits[-1])
    assert waits == [60, 120, 240]


async def test_a_success_clears_the_account_count(hub: Hub) -> None:
    await hub.sign_up()
    for _ in range(2):
        await hub.sign_in(password="wrong password guess")
    assert (await hub.sign_in()).status_code == 200
    for _ in range(2):
        assert (await hub.sign_in(password="wrong password guess")).status_code == 401
    assert (await hub.sign_in()).status_code == 200


async def test_unknown_accounts_are_locked_like_real_ones(hub: Hub) -> None:
    # Otherwise "429 after 3 tries" would reveal which addresses have accounts.
    for _ in range(3):
        assert (await hub.sign_in("ghost@example.test")).status_code == 401
    assert (await hub.sign_in("ghost@example.test")).status_code == 429


async def test_one_client_spraying_many_accounts_is_locked_by_its_address(hub: Hub) -> None:
    await hub.sign_up("victim@example.test")
    sprayer = hub.client_from("203.0.113.7")
    bystander = hub.client_from("198.51.100.20")
    async with sprayer, bystander:
        # Two guesses per account stay under the per-account limit of 3 ...
        for index in range(6):
            for _ in range(2):
                response = await sprayer.post(
                    "/api/v1/auth/sign-in",
                    json={"email": f"user{index}@example.test", "password": "Summer2024!"},
                )
                assert response.status_code == 401
        # ... but 12 failures from one address lock the address.
        blocked = await sprayer.post(
            "/api/v1/auth/sign-in", json={"email": "victim@example.test", "password": PASSWORD}
        )
        assert blocked.status_code == 429
        # Someone elsewhere is not affected.
        other = await bystander.post(
            "/api/v1/auth/sign-in", json={"email": "victim@example.test", "password": PASSWORD}
        )
        assert other.status_code == 200


async def test_emails_differing_in_case_share_one_counter(hub: Hub) -> None:
    await hub.sign_up()
    for email in ("ada@example.test", "ADA@example.test", " Ada@Example.Test "):
        assert (await hub.sign_in(email, "wrong password guess")).status_code == 401
    assert (await hub.sign_in()).status_code == 429


async def test_malformed_sign_in_input_is_a_400_and_not_counted(hub: Hub) -> None:
    await hub.sign_up()
    for body in ({"email": "ada@example.test"}, {"email": 7, "password": "x"}, {}):
        response = await hub.client.post("/api/v1/auth/sign-in", json=body)
        assert response.status_code == 400
    assert (await hub.sign_in()).status_code == 200
