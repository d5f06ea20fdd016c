"""Identity and permissions through real Ray Serve, on the sample CRM.

Accounts (conftest ``CRM_USERS``) sign in over HTTP and get a JWT; every data
route then answers with what that account's roles allow
(configs/metadata/security): reps see their own deals, the ``ceo`` (admin)
sees all of them; ``account.annual_revenue`` is readable by sales managers
only; without or with a bad token the answer is 401 with a challenge.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from conftest import api_as
from test_rest import start_crm_hub

REVENUE = "5000000.00"


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return sorted(record["name"] for record in response.json()["data"])


def contains(marker: str) -> dict[str, str]:
    return {"filter": f'{{"name": {{"$contains": "{marker}"}}}}'}


def new_account(admin: httpx.Client, marker: str) -> dict[str, Any]:
    created = admin.post(
        "/data/account", json={"name": f"Globex {marker}", "annual_revenue": REVENUE}
    )
    assert created.status_code == 201, created.text
    account: dict[str, Any] = created.json()["data"]
    return account


def test_each_user_lists_only_the_deals_they_may_see(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    admin = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    east, west = api_as(serve_url, "east_rep"), api_as(serve_url, "west_rep")
    marker = uuid.uuid4().hex[:8]
    account = new_account(admin, marker)

    deals = {}
    for rep, who in ((east, "East"), (west, "West")):
        created = rep.post(
            "/data/opportunity",
            json={"name": f"{who} deal {marker}", "account": account["id"], "stage": "proposal"},
        )
        assert created.status_code == 201, created.text
        deals[who] = created.json()["data"]["id"]

    # Opportunities are private: a rep sees the deals they own, the ceo every deal.
    assert names(east.get("/data/opportunity", params=contains(marker))) == [f"East deal {marker}"]
    assert names(west.get("/data/opportunity", params=contains(marker))) == [f"West deal {marker}"]
    assert names(admin.get("/data/opportunity", params=contains(marker))) == [
        f"East deal {marker}",
        f"West deal {marker}",
    ]
    # A deal one may not see is missing, exactly like one that does not exist.
    hidden = east.get(f"/data/opportunity/{deals['West']}")
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "record_not_found"
    refused = east.patch(f"/data/opportunity/{deals['West']}", json={"stage": "closed_lost"})
    assert refused.status_code == 404
    assert admin.get(f"/data/opportunity/{deals['West']}").json()["data"]["stage"] == "proposal"


def test_a_controlled_field_is_absent_for_a_rep_and_present_for_a_manager(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    admin = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    rep, manager = api_as(serve_url, "east_rep"), api_as(serve_url, "east_manager")
    marker = uuid.uuid4().hex[:8]
    account = new_account(admin, marker)

    as_rep = rep.get(f"/data/account/{account['id']}").json()["data"]
    as_manager = manager.get(f"/data/account/{account['id']}").json()["data"]

    assert as_rep["name"] == as_manager["name"] == f"Globex {marker}"
    assert "annual_revenue" not in as_rep
    assert float(as_manager["annual_revenue"]) == float(REVENUE)
    listed = rep.get("/data/account", params=contains(marker)).json()["data"]
    assert [r["id"] for r in listed] == [account["id"]] and "annual_revenue" not in listed[0]
    # Asking for it, or filtering on it, is refused, naming the field (never its value).
    selected = rep.get("/data/account", params={"select": "name,annual_revenue"})
    assert selected.status_code == 403
    assert selected.json()["error"]["code"] == "field_not_accessible"
    assert REVENUE.split(".")[0] not in selected.text
    written = rep.patch(f"/data/account/{account['id']}", json={"annual_revenue": 1})
    assert written.status_code == 403
    assert float(
        manager.get(f"/data/account/{account['id']}").json()["data"]["annual_revenue"]
    ) == (float(REVENUE))


def test_credentials_are_required_and_checked(
    ray_session: Any, start_hub: Any, serve_hub: dict[str, Any], serve_url: str
) -> None:
    start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    url = f"{serve_url}/api/v1/data/account"

    missing = httpx.get(url, timeout=20)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthenticated"
    assert missing.headers["www-authenticate"] == 'Bearer realm="objectos"'

    bad = httpx.get(url, headers={"Authorization": "Bearer not.a.token"}, timeout=20)
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_token"
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]
    assert "Traceback" not in bad.text

    # Signed in, but holding no role: authenticated, and allowed nothing.
    nobody = api_as(serve_url, "nobody")
    assert nobody.get("/auth/me").json()["data"]["email"] == "nobody@crm.test"
    denied = nobody.get("/data/account")
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"


def test_permissions_check_explains_a_denial(
    ray_session: Any,
    start_hub: Any,
    serve_hub: dict[str, Any],
    serve_url: str,
    crm_users: dict[str, str],
) -> None:
    admin = start_crm_hub(ray_session, start_hub, serve_hub, serve_url)
    rep, manager = api_as(serve_url, "east_rep"), api_as(serve_url, "east_manager")
    revenue = {"action": "read", "object": "account", "field": "annual_revenue"}

    denial = rep.post("/permissions/check", json=revenue)
    assert denial.status_code == 200, denial.text
    decision = denial.json()["data"]
    assert decision["allowed"] is False
    assert decision["userId"] == crm_users["east_rep"]
    assert "only revenue_viewer, sales_manager may read it" in " ".join(decision["reasons"])

    assert manager.post("/permissions/check", json=revenue).json()["data"]["allowed"] is True
    delete = rep.post("/permissions/check", json={"action": "delete", "object": "account"})
    assert delete.json()["data"]["allowed"] is False
    assert "sales_rep" in " ".join(delete.json()["data"]["reasons"])

    # Asking about someone else needs view_all_data (the ceo has it, a rep has not).
    for_rep = {**revenue, "userId": crm_users["east_rep"]}
    assert admin.post("/permissions/check", json=for_rep).json()["data"] == decision
    nosy = rep.post("/permissions/check", json={**revenue, "userId": crm_users["east_manager"]})
    assert nosy.status_code == 403
    assert nosy.json()["error"]["code"] == "permission_denied"

    bad = rep.post("/permissions/check", json={"action": "fly", "object": "account"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_field"
    unknown = rep.post("/permissions/check", json={**revenue, "why": "curious"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["fieldErrors"][0]["field"] == "why"
    anonymous = httpx.post(f"{serve_url}/api/v1/permissions/check", json=revenue, timeout=20)
    assert anonymous.status_code == 401
