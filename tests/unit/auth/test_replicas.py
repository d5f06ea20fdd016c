"""Two replicas of one hub: separate processes' worth of services on one database and data dir.

Each replica is its own ``build_identity`` with its own connection pool; they
share only what Serve replicas share — the database and the key file.
"""

from __future__ import annotations

import asyncio

from .conftest import Hub, MakeHub, ManualClock, bearer, error_of


async def two_replicas(make_hub: MakeHub) -> tuple[Hub, Hub]:
    return await make_hub(own_engine=True), await make_hub(own_engine=True)


async def test_replicas_share_one_generated_signing_key(make_hub: MakeHub) -> None:
    a, b = await two_replicas(make_hub)
    session = await a.session()
    assert (await b.me(bearer(session["accessToken"]))).status_code == 200
    jwks_a = (await a.client.get("/.well-known/jwks.json")).json()
    jwks_b = (await b.client.get("/.well-known/jwks.json")).json()
    assert jwks_a == jwks_b


async def test_failures_on_either_replica_count_towards_one_lockout(make_hub: MakeHub) -> None:
    a, b = await two_replicas(make_hub)
    await a.sign_up()
    # A guesser whose requests are spread over the replicas by the load balancer.
    for replica in (a, b, a):
        assert (await replica.sign_in(password="wrong password guess")).status_code == 401
    for replica in (a, b):
        locked = await replica.sign_in()
        assert locked.status_code == 429
        assert locked.headers["retry-after"] == "60"


async def test_concurrent_failures_on_both_replicas_are_all_counted(make_hub: MakeHub) -> None:
    a, b = await two_replicas(make_hub)
    await a.sign_up()
    guesses = [replica.sign_in(password="wrong password guess") for replica in (a, b, a, b, a, b)]
    statuses = sorted(response.status_code for response in await asyncio.gather(*guesses))
    # Three failures lock; whatever came after the lock (in commit order) is refused
    # with 429, and nothing lets the right password in now.
    assert statuses.count(401) >= 3
    assert (await a.sign_in()).status_code == 429
    assert (await b.sign_in()).status_code == 429


async def test_a_token_refreshed_on_one_replica_is_spent_on_the_other(make_hub: MakeHub) -> None:
    a, b = await two_replicas(make_hub)
    session = await a.session()
    renewed = await b.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert renewed.status_code == 200

    replay = await a.client.post(
        "/api/v1/auth/refresh", json={"refreshToken": session["refreshToken"]}
    )
    assert error_of(replay)["details"]["reason"] == "refresh token reuse detected"
    # The reuse on A revoked the family B just extended.
    successor = renewed.json()["data"]["refreshToken"]
    refused = await b.client.post("/api/v1/auth/refresh", json={"refreshToken": successor})
    assert error_of(refused)["details"]["reason"] == "refresh token revoked"


async def test_one_refresh_token_raced_on_both_replicas_wins_once(make_hub: MakeHub) -> None:
    a, b = await two_replicas(make_hub)
    for _ in range(3):
        token = (await a.session())["refreshToken"]
        responses = await asyncio.gather(
            *(
                replica.client.post("/api/v1/auth/refresh", json={"refreshToken": token})
                for replica in (a, b, a, b)
            )
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200, 401, 401, 401]
        # And the winner's new token is dead too: the race looked like theft.
        (winner,) = [r for r in responses if r.status_code == 200]
        successor = winner.json()["data"]["refreshToken"]
        after = await a.client.post("/api/v1/auth/refresh", json={"refreshToken": successor})
        assert after.status_code == 401


async def test_a_key_rotated_by_one_replica_is_picked_up_by_the_other(
    make_hub: MakeHub, clock: ManualClock
) -> None:
    a, b = await two_replicas(make_hub)
    before = await a.session()
    # Rotation is an operator action run in one process; here replica A's ring.
    new_key = a.authenticator.keyring.rotate()
    after = await a.session()
    assert after["accessToken"] != before["accessToken"]

    # B has never seen the new kid; meeting it makes B re-read the key file
    # (rate-limited to once per 5 s, so move past that).
    clock.advance(5)
    assert (await b.me(bearer(after["accessToken"]))).status_code == 200
    # Tokens signed by the retired key keep working until they expire.
    assert (await b.me(bearer(before["accessToken"]))).status_code == 200
    kids = [key["kid"] for key in (await b.client.get("/api/v1/auth/jwks")).json()["keys"]]
    assert kids[0] == new_key.kid and len(kids) == 2
