"""Record events over HTTP (SSE and long polling) through real Ray Serve, on the sample CRM.

Two replicas serve the session app; each tails the change log itself. Subscribers
are signed-in accounts of different access (conftest ``CRM_USERS``): reps see only
their own deals (opportunities are private) and never ``account.annual_revenue``;
the ``ceo`` (admin) sees everything. What REST would not show a caller, its event
stream must not show either; a cursor resumes without gap or duplicate.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from conftest import api_as, sign_in, wait_until
from test_rest import start_crm_hub

REVENUE = "5000000.00"


class SSEReader:
    """Reads an event stream in a thread; frames land in a queue as (event, id, data)."""

    def __init__(self, response: httpx.Response) -> None:
        self.frames: queue.Queue[tuple[str, str | None, Any]] = queue.Queue()
        self._response = response
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self._response.iter_lines():
                if line == "":
                    if "data" in fields:
                        data = json.loads(fields["data"])
                        self.frames.put((fields.get("event", "message"), fields.get("id"), data))
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass  # closed by the test

    def next(self, timeout: float = 30) -> tuple[str, str | None, Any]:
        return self.frames.get(timeout=timeout)

    def until(self, predicate: Any, timeout: float = 30) -> list[tuple[str, str | None, Any]]:
        frames = [self.next(timeout)]
        while not predicate(frames[-1]):
            frames.append(self.next(timeout))
        return frames

    def drain(self, settle_s: float = 1.0) -> list[tuple[str, str | None, Any]]:
        """Whatever arrives until the stream has been quiet for ``settle_s``."""
        frames = []
        while True:
            try:
                frames.append(self.frames.get(timeout=settle_s))
            except queue.Empty:
                return frames


@contextmanager
def event_stream(url: str, token: str, **params: Any) -> Iterator[SSEReader]:
    headers = {"Authorization": f"Bearer {token}", **params.pop("headers", {})}
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
        client.stream("GET", f"{url}/api/v1/realtime/sse", params=params, headers=headers) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        yield SSEReader(r)


def poll(api: httpx.Client, **params: Any) -> dict[str, Any]:
    response = api.get("/realtime/poll", params=params, timeout=90)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def poll_all(api: httpx.Client, since: int, want: int, **params: Any) -> tuple[list[Any], int]:
    """Poll from ``since`` until ``want`` events came (or 60 s); events and the last cursor."""
    events: list[Any] = []
    deadline = time.monotonic() + 60
    while len(events) < want and time.monotonic() < deadline:
        data = poll(api, since=since, timeout=5, **params)
        events += data["events"]
        since = data["cursor"]
    return events, since


def summary(events: list[Any]) -> list[tuple[str, str, str]]:
    return [(e["eventName"], e["object"], e["record"].get("name", "")) for e in events]


def test_each_subscriber_gets_only_what_it_may_read_and_resumes_without_gaps(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    admin = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    east, west = api_as(serve_url, "east_rep"), api_as(serve_url, "west_rep")
    marker = uuid.uuid4().hex[:8]
    objects = {
        "objects": "account,opportunity",
        "filter": json.dumps({"name": {"$contains": marker}}),
    }
    start = poll(west, timeout=0, **objects)["cursor"]  # the newest change: nothing missed after

    with event_stream(serve_url, sign_in(serve_url, "west_rep"), **objects) as west_sse:
        assert west_sse.next()[0] == "subscribed"
        created = admin.post(
            "/data/account", json={"name": f"Globex {marker}", "annual_revenue": REVENUE}
        )
        assert created.status_code == 201, created.text
        account = created.json()["data"]
        deals = {}
        for rep, who in ((east, "East"), (west, "West")):
            made = rep.post(
                "/data/opportunity",
                json={
                    "name": f"{who} deal {marker}",
                    "account": account["id"],
                    "stage": "proposal",
                },
            )
            assert made.status_code == 201, made.text
            deals[who] = made.json()["data"]["id"]
        assert east.delete(f"/data/opportunity/{deals['East']}").status_code == 200
        gone = west.patch(f"/data/opportunity/{deals['West']}", json={"stage": "negotiation"})
        assert gone.status_code == 200, gone.text

        streamed = [f for f in west_sse.until(lambda f: f[2].get("eventName") == "record.updated")]
        streamed += west_sse.drain(settle_s=3)  # nothing else may follow (east's deal, delete)

    # The west rep: the account (without the revenue field), its own deal and its update.
    events = [data for event, _, data in streamed if event == "message"]
    assert summary(events) == [
        ("record.created", "account", f"Globex {marker}"),
        ("record.created", "opportunity", f"West deal {marker}"),
        ("record.updated", "opportunity", f"West deal {marker}"),
    ]
    assert "annual_revenue" not in events[0]["record"]
    assert all(e["recordId"] != deals["East"] for e in events)

    # The east rep, by long polling from the same starting cursor: its own deal and the
    # delete of it, never the west deal; the admin (ceo) everything, revenue included.
    east_events, east_cursor = poll_all(east, start, 3, **objects)
    assert summary(east_events) == [
        ("record.created", "account", f"Globex {marker}"),
        ("record.created", "opportunity", f"East deal {marker}"),
        ("record.deleted", "opportunity", f"East deal {marker}"),
    ]
    assert "annual_revenue" not in east_events[0]["record"]
    admin_events, _ = poll_all(admin, start, 5, **objects)
    assert [e["eventName"] for e in admin_events] == [
        "record.created",
        "record.created",
        "record.created",
        "record.deleted",
        "record.updated",
    ]
    assert float(admin_events[0]["record"]["annual_revenue"]) == float(REVENUE)
    cursors = [e["cursor"] for e in admin_events]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)

    # Resume: from each event's cursor, exactly the events after it, in order.
    for i, event in enumerate(admin_events):
        rest, _ = poll_all(admin, event["cursor"], len(admin_events) - i - 1, **objects)
        assert [e["cursor"] for e in rest] == cursors[i + 1 :]
    assert poll(east, since=east_cursor, timeout=0, **objects)["events"] == []

    # SSE resumes from Last-Event-ID too (what EventSource sends when it reconnects).
    last_id = str(admin_events[1]["cursor"])
    with event_stream(
        serve_url, sign_in(serve_url, "admin"), headers={"Last-Event-ID": last_id}, **objects
    ) as resumed:
        frames = resumed.until(lambda f: f[0] == "subscribed")
    assert [data["cursor"] for event, _, data in frames if event == "message"] == cursors[2:]


def test_event_routes_need_credentials_and_good_parameters(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    admin = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    for path in ("/api/v1/realtime/sse", "/api/v1/realtime/poll"):
        anonymous = httpx.get(f"{serve_url}{path}", params={"objects": "account"}, timeout=20)
        assert anonymous.status_code == 401
        assert anonymous.json()["error"]["code"] == "unauthenticated"
        assert "www-authenticate" in anonymous.headers
    token = sign_in(serve_url, "east_rep")
    # EventSource cannot send headers: the token may come as access_token instead.
    by_query = httpx.get(
        f"{serve_url}/api/v1/realtime/poll",
        params={"objects": "account", "timeout": "0", "access_token": token},
        timeout=20,
    )
    assert by_query.status_code == 200, by_query.text
    both = httpx.get(
        f"{serve_url}/api/v1/realtime/poll",
        params={"objects": "account", "access_token": token},
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    assert both.status_code == 401
    bad = admin.get("/realtime/poll", params={"objects": "account", "filter": '{"nope": 1}'})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "nope"
    hidden = api_as(serve_url, "east_rep").get(
        "/realtime/poll", params={"objects": "account", "filter": '{"annual_revenue": 1}'}
    )
    assert hidden.status_code == 400  # a field one may not read is no field at all
    unknown = admin.get("/realtime/poll", params={"objects": "invoice", "timeout": "0"})
    assert unknown.status_code == 404

    discovery = admin.get("/discovery").json()["data"]
    assert discovery["routes"]["realtimeSse"] == "/api/v1/realtime/sse"
    assert discovery["routes"]["realtimePoll"] == "/api/v1/realtime/poll"
    assert discovery["capabilities"]["sse"]["enabled"] is True
    document = admin.get("/openapi.json").json()
    assert {"/api/v1/realtime/sse", "/api/v1/realtime/poll"} <= set(document["paths"])


def test_discovery_lists_the_gateways_only_while_one_runs(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    from deployments.realtime import ensure_gateways, realtime_settings, stop_realtime

    kernel = start_hub(
        {"com.objectos.metrics": {"module": "objectos.plugins.metrics:MetricsPlugin"}}
    )
    wait_until(lambda: ray_session.get(kernel.ready.remote()), timeout=90)

    def discovery() -> dict[str, Any]:
        document: dict[str, Any] = httpx.get(f"{serve_url}/api/v1/discovery", timeout=20).json()[
            "data"
        ]
        return document

    assert "realtime" not in discovery()["routes"]
    assert discovery()["capabilities"]["realtime"]["enabled"] is False
    (gateway,) = ensure_gateways(serve_hub, settings=realtime_settings(serve_hub, port=0))
    try:
        # Both replicas notice within their cache's lifetime.
        wait_until(
            lambda: all(discovery()["routes"].get("realtime") == gateway["url"] for _ in range(6)),
            timeout=30,
        )
        routes = discovery()["routes"]
        assert routes["yjs"] == gateway["url"] + "/yjs|{document}"
        assert discovery()["capabilities"]["realtime"]["enabled"] is True
    finally:
        stop_realtime()
    wait_until(lambda: all("realtime" not in discovery()["routes"] for _ in range(6)), timeout=30)
