"""``objectos.client`` against real servers: the session Serve app (auth, discovery, REST
data) and the node's Socket.IO gateway in hub mode (Yjs documents, hub tokens, and the
``/realtime`` namespace: record events as each user may read them, resuming from the
cursor after the gateway process is killed, presence).

The client's resume and error logic is also tested, faster and more exhaustively,
against a protocol peer in tests/unit/client.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import CRM_PASSWORD, data_plugin_entry, email_of, wait_until

from objectos.client import HubClient, HubError, RecordEvent, Subscription
from objectos.errors import (
    ConcurrentModification,
    InvalidField,
    InvalidFilter,
    InvalidToken,
    ObjectNotFound,
    PermissionDenied,
    RecordNotFound,
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


async def test_the_realtime_url_comes_from_discovery(crm_hub: str, gateway: dict[str, Any]) -> None:
    async with HubClient(crm_hub) as hub:
        routes = (await hub.discovery())["routes"]
        assert routes["realtime"] == gateway["url"]
        assert await hub._realtime_url() == gateway["url"]


# ---------------------------------------------------------------------- /realtime


async def events_until(
    subscription: Subscription, done: Any, within_s: float = SLOW_S
) -> list[RecordEvent]:
    """Events of ``subscription`` up to the first one for which ``done(event)`` holds."""
    events: list[RecordEvent] = []
    async with asyncio.timeout(within_s):
        while not events or not done(events[-1]):
            events.append(await subscription.next_event())
    return events


def summary(events: list[RecordEvent]) -> list[tuple[str, str]]:
    """``(eventName, changed fields of updates)``."""
    return [
        (e.event_name, ",".join(e.changed_fields) if e.event_name != "record.created" else "")
        for e in events
    ]


async def test_record_events_through_hub_realtime_carry_only_readable_fields(
    crm_hub: str, gateway: dict[str, Any]
) -> None:
    # No realtime_url: HubClient.realtime finds the gateway through discovery.
    admin = await signed_in(crm_hub, "admin")
    rep = await signed_in(crm_hub, "east_rep")
    prefix = f"Live {uuid.uuid4().hex[:8]}"
    async with admin, rep:
        subscriptions = {}
        for name, client in (("admin", admin), ("rep", rep)):
            subscriptions[name] = await client.realtime.subscribe(
                "account",
                ["record.*", "field.changed"],
                filter={"name": {"$startsWith": prefix}},
            )
            assert subscriptions[name].active and subscriptions[name].cursor is not None

        accounts = admin.objects("account")
        created = await accounts.create({"name": prefix, "annual_revenue": 1000})
        await accounts.update(created["id"], {"annual_revenue": 2000})  # managers/admins only
        await accounts.update(created["id"], {"description": "visible to all"})
        await accounts.delete(created["id"])

        def deleted(event: RecordEvent) -> bool:
            return event.event_name == "record.deleted"

        seen = {name: await events_until(sub, deleted) for name, sub in subscriptions.items()}
        assert summary(seen["admin"]) == [
            ("record.created", ""),
            ("record.updated", "annual_revenue"),
            ("field.changed", "annual_revenue"),
            ("record.updated", "description"),
            ("field.changed", "description"),
            ("record.deleted", ""),
        ]
        # A rep may read accounts but not annual_revenue: the update of it alone is not sent.
        assert summary(seen["rep"]) == [
            ("record.created", ""),
            ("record.updated", "description"),
            ("field.changed", "description"),
            ("record.deleted", ""),
        ]
        assert seen["admin"][0].record["annual_revenue"] == 1000
        assert "annual_revenue" in seen["admin"][0].changed_fields
        assert all("annual_revenue" not in e.record for e in seen["rep"])
        assert all("annual_revenue" not in e.changed_fields for e in seen["rep"])
        assert seen["rep"][0].record["name"] == prefix and seen["rep"][0].record_id == created["id"]
        for events in seen.values():
            assert {e.record_id for e in events} == {created["id"]}
            cursors = [e.cursor for e in events]
            assert cursors == sorted(cursors) and events[-1].timestamp
        assert subscriptions["rep"].cursor == seen["rep"][-1].cursor
        with pytest.raises(TimeoutError):  # nothing else: no duplicate
            await subscriptions["rep"].next_event(0.5)

        # The hub's refusals arrive as typed errors; the connection is still served.
        with pytest.raises(ObjectNotFound):
            await rep.realtime.subscribe("spaceship")
        with pytest.raises(InvalidField) as hidden:
            await rep.realtime.subscribe("account", filter={"annual_revenue": 5})
        assert hidden.value.details.get("field") == "annual_revenue"
        with pytest.raises(InvalidField) as ahead:
            await rep.realtime.subscribe("account", since=10**12)
        assert ahead.value.details.get("field") == "since"
        nobody = await signed_in(crm_hub, "nobody")
        async with nobody:
            with pytest.raises(PermissionDenied):
                await nobody.realtime.subscribe("account")
        assert rep.realtime.connections == 1 and rep.realtime.connected


async def test_a_killed_gateway_the_client_reconnects_and_resumes_from_its_cursor(
    crm_hub: str, gateway: dict[str, Any]
) -> None:
    import ray

    from actors.factory import get_gateway

    admin = await signed_in(crm_hub, "admin", realtime_url=gateway["url"])
    async with admin:
        accounts = admin.objects("account")
        account = await accounts.create({"name": f"Crash {uuid.uuid4().hex[:8]}"})
        rt = admin.realtime
        sub = await rt.subscribe("account", "record.updated", filter={"id": account["id"]})
        await accounts.update(account["id"], {"description": "before"})
        before = await sub.next_event(SLOW_S)
        assert before.record["description"] == "before" and sub.cursor == before.cursor

        handle = get_gateway(gateway["name"])
        assert handle is not None
        pid = ray.get(handle.info.remote(), timeout=SLOW_S)["pid"]
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        for n in range(3):  # committed while the gateway is down or restarting
            await accounts.update(account["id"], {"description": f"down {n}"})

        def restarted() -> bool:
            try:
                return bool(ray.get(handle.info.remote(), timeout=5)["pid"] != pid)
            except Exception:
                return False

        await asyncio.to_thread(wait_until, restarted, SLOW_S)
        # Nothing to do on the client's side: it reconnects and resumes by itself.
        missed = await events_until(sub, lambda e: e.record["description"] == "down 2")
        recovered_s = time.perf_counter() - killed
        print(f"\nkill -9 of the gateway -> missed events replayed: {recovered_s:.1f} s")
        await accounts.update(account["id"], {"description": "after"})
        live = await events_until(sub, lambda e: e.record["description"] == "after")
        with pytest.raises(TimeoutError):
            await sub.next_event(0.5)
        events = [before, *missed, *live]
        assert [e.record["description"] for e in events] == [
            "before",
            "down 0",
            "down 1",
            "down 2",
            "after",
        ]
        cursors = [e.cursor for e in events]
        assert cursors == sorted(set(cursors))  # no gap in order, no duplicate
        assert rt.connections >= 2 and sub.resumes >= 1 and sub.gaps == 0 and sub.active


async def test_presence_of_two_users_through_hub_realtime(
    crm_hub: str, gateway: dict[str, Any], crm_users: dict[str, str]
) -> None:
    east = await signed_in(crm_hub, "east_rep", realtime_url=gateway["url"])
    west = await signed_in(crm_hub, "west_rep", realtime_url=gateway["url"])
    east_id, west_id = crm_users["east_rep"], crm_users["west_rep"]
    async with await signed_in(crm_hub, "admin") as admin:  # a record both reps may read
        account = await admin.objects("account").create({"name": f"Room {uuid.uuid4().hex[:8]}"})
    room = f"account/{account['id']}"

    def listed(client: HubClient) -> dict[str, str]:
        return {u["userId"]: u["status"] for u in client.realtime.presence.users(room)}

    async with east, west:
        alone = await east.realtime.presence.join(room)
        assert [(u["userId"], u["status"]) for u in alone] == [(east_id, "online")]
        both = await west.realtime.presence.join(room, status="busy")
        assert {u["userId"]: u["status"] for u in both} == {east_id: "online", west_id: "busy"}
        assert all(u["since"] for u in both)
        await east.realtime.presence.wait_for(lambda _: len(listed(east)) == 2, SLOW_S)
        assert listed(east) == {east_id: "online", west_id: "busy"}

        await west.realtime.presence.update(room, "away")
        await east.realtime.presence.wait_for(lambda _: listed(east).get(west_id) == "away", SLOW_S)
        await west.realtime.presence.leave(room)
        await east.realtime.presence.wait_for(lambda _: listed(east) == {east_id: "online"}, SLOW_S)
        with pytest.raises(InvalidField) as bad:
            await east.realtime.presence.join("account/not a record!")
        assert bad.value.details.get("field") == "room"
        assert east.realtime.presence.rooms == {room: "online"}
        assert [e.code for e in east.realtime.errors] == ["invalid_field"]  # that join only
