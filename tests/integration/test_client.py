"""``objectos.client`` against real servers: the session Serve app (auth, discovery, REST
data) and the node's Socket.IO gateway in hub mode (Yjs documents, hub tokens).

The ``/realtime`` namespace is not served on this branch yet: its client logic is
tested against a protocol peer in tests/unit/client.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import CRM_PASSWORD, data_plugin_entry, email_of, wait_until

from objectos.client import HubClient, HubError
from objectos.errors import (
    ConcurrentModification,
    InvalidFilter,
    InvalidToken,
    PermissionDenied,
    RecordNotFound,
    ServiceUnavailable,
    Unauthenticated,
)
from objectos.realtime.yjs.client import ConnectionRefused

SLOW_S = 60


@pytest.fixture
def crm_hub(ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str) -> str:
    """The session app serving the sample CRM (data plugin running, both replicas ready)."""
    ray = ray_session
    kernel = start_hub({"com.objectos.data": data_plugin_entry(serve_hub)})
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    token = httpx.post(
        f"{serve_url}/api/v1/auth/sign-in",
        json={"email": email_of("admin"), "password": CRM_PASSWORD},
        timeout=20,
    ).json()["data"]["accessToken"]
    headers = {"Authorization": f"Bearer {token}"}
    wait_until(
        lambda: all(
            httpx.get(
                f"{serve_url}/api/v1/data/account", params={"top": "1"}, headers=headers, timeout=20
            ).status_code
            == 200
            for _ in range(6)
        ),
        timeout=60,
    )
    return serve_url


@pytest.fixture(scope="module")
def gateway(ray_session: Any, serve_hub: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """This node's gateway in hub mode: handshake tokens are the session app's JWTs."""
    from deployments.realtime import ensure_gateways, realtime_settings, stop_realtime

    settings = realtime_settings(
        serve_hub, port=0, rooms={"idle_timeout_s": 2, "sweep_interval_s": 0.5}
    )
    (info,) = ensure_gateways(serve_hub, settings=settings)
    try:
        yield info
    finally:
        stop_realtime()


async def signed_in(url: str, name: str, **options: Any) -> HubClient:
    hub = HubClient(url, **options)
    await hub.sign_in(email_of(name), CRM_PASSWORD)
    return hub


async def test_auth_discovery_and_crud_with_typed_errors(crm_hub: str) -> None:
    async with HubClient(crm_hub) as hub:
        discovery = await hub.discovery()
        assert {"data", "auth", "discovery"} <= set(discovery["routes"])
        assert (await hub.health())["ready"] is True

        with pytest.raises(Unauthenticated) as anonymous:
            await hub.objects("account").find(top=1)
        assert anonymous.value.status_code == 401 and anonymous.value.request_id

        session = await hub.sign_in(email_of("admin"), CRM_PASSWORD)
        assert session["tokenType"] == "Bearer" and hub.user is not None
        assert (await hub.me())["email"] == email_of("admin")

        accounts = hub.objects("account")
        name = f"Client {uuid.uuid4().hex[:8]}"
        created = await accounts.create({"name": name, "industry": "retail", "employees": 3})
        assert created["version"] == 1
        other = await accounts.create({"name": f"{name} two", "industry": "retail"})

        page = await accounts.find(
            filter={"name": {"$startsWith": name}},
            sort="-name",
            fields=["name", "employees"],
            top=1,
            count=True,
        )
        assert page.total == 2 and page.has_more and len(page) == 1
        assert page[0]["id"] == other["id"] and set(page[0]) <= {"id", "name", "employees"}
        rest = await accounts.find(filter={"name": {"$startsWith": name}}, sort="-name", skip=1)
        assert [r["id"] for r in rest] == [created["id"]]
        assert await accounts.count({"name": {"$startsWith": name}}) == 2
        legacy = await accounts.count([["name", "=", name]])
        assert legacy == 1

        got = await accounts.get(created["id"], fields=["name"])
        assert got["name"] == name
        changed = await accounts.update(created["id"], {"employees": 12}, version=1)
        assert changed["version"] == 2 and changed["employees"] == 12
        with pytest.raises(ConcurrentModification) as stale:
            await accounts.update(created["id"], {"employees": 13}, version=1)
        assert stale.value.code == "concurrent_modification" and stale.value.status_code == 409

        deleted = await accounts.delete(created["id"], version=2)
        assert deleted["deleted"] is True
        with pytest.raises(RecordNotFound) as missing:
            await accounts.get(created["id"])
        assert missing.value.details["id"] == created["id"]
        await accounts.delete(other["id"])

        with pytest.raises(InvalidFilter) as bad_filter:
            await accounts.find(filter={"name": {"$near": 1}})
        assert isinstance(bad_filter.value, HubError) and bad_filter.value.code == "invalid_filter"

    async with HubClient(crm_hub) as wrong:
        with pytest.raises(Unauthenticated):
            await wrong.sign_in(email_of("admin"), "not the password")

    nobody = await signed_in(crm_hub, "nobody")
    async with nobody:
        with pytest.raises(PermissionDenied) as denied:
            await nobody.objects("account").find()
        assert denied.value.code == "permission_denied"


async def test_tokens_are_refreshed_before_they_expire(crm_hub: str) -> None:
    # A margin longer than any token's life: every call refreshes first.
    hub = await signed_in(crm_hub, "admin", refresh_margin_s=10**9)
    async with hub:
        first = hub.token
        await hub.objects("account").find(top=1)
        second = hub.token
        await hub.objects("account").find(top=1)
        assert len({first, second, hub.token}) == 3

        spent = hub._tokens.refresh
        await hub.refresh()
        hub._tokens.refresh = spent  # the spent refresh token again
        with pytest.raises(Unauthenticated):
            await hub.refresh()


async def test_a_document_through_the_gateway_with_hub_tokens(
    crm_hub: str, gateway: dict[str, Any]
) -> None:
    name = f"notes-{uuid.uuid4().hex[:8]}"
    ada = await signed_in(crm_hub, "admin", realtime_url=gateway["url"])
    rep = await signed_in(crm_hub, "east_rep", realtime_url=gateway["url"])
    async with ada, rep:
        mine = await ada.document(name, awareness={"user": {"name": "ada"}})
        async with mine.transact():
            mine.text("content").insert(0, "hello from python")
        theirs = await rep.document(name)
        async with asyncio.timeout(SLOW_S):
            await theirs.wait_until(lambda: str(theirs.text("content")) == "hello from python")
        async with theirs.transact():
            theirs.text("content").insert(0, ">> ")
        async with asyncio.timeout(SLOW_S):
            await mine.wait_until(lambda: str(mine.text("content")) == ">> hello from python")

    intruder = HubClient(crm_hub, token="not.a.token", realtime_url=gateway["url"])
    async with intruder:
        with pytest.raises(InvalidToken) as refused:
            await intruder.document(name)
        assert isinstance(refused.value.__cause__, ConnectionRefused)


async def test_the_realtime_url_comes_from_discovery(crm_hub: str) -> None:
    async with HubClient(crm_hub) as hub:
        routes = (await hub.discovery())["routes"]
        if "realtime" in routes:
            assert await hub._realtime_url() == routes["realtime"]
        else:  # not advertised on this branch yet: a clear error, not a guess
            with pytest.raises(ServiceUnavailable) as unavailable:
                await hub._realtime_url()
            assert "realtime_url=" in unavailable.value.message
