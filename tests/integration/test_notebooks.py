"""The operator notebooks run top to bottom against a hub the test started."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import nbformat
from conftest import CRM_PASSWORD, ROOT, data_plugin_entry, email_of, wait_until
from nbclient import NotebookClient

CORE = {
    "com.objectos.storage": {"module": "objectos.plugins.storage:StoragePlugin"},
    "com.objectos.metrics": {"module": "objectos.plugins.metrics:MetricsPlugin"},
    "com.example.hello": {"module": "objectos.plugins.example:HelloPlugin"},
}


def run_notebook(path: Path, env: dict[str, str]) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel process inherits the environment
    try:
        NotebookClient(
            notebook,
            timeout=180,
            kernel_name="python3",
            resources={"metadata": {"path": str(ROOT)}},
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return notebook


def test_operate_notebook(
    ray_session: Any, start_hub: Any, serve_url: str, service_key: str
) -> None:
    ray = ray_session
    kernel = start_hub(CORE)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    address = ray.get_runtime_context().gcs_address

    notebook = run_notebook(
        ROOT / "notebooks" / "operate.ipynb",
        {
            "OBJECTOS_RAY_ADDRESS": address,
            "OBJECTOS_URL": serve_url,
            "OBJECTOS_API_KEY": service_key,
            "OBJECTOS_NOTEBOOK_RESTART": "com.example.hello",
        },
    )

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(str(o.get("data", {}).get("text/html", "")) + o.get("text", "") for o in outputs)
    assert "com.example.hello" in text and "running" in text
    assert any("image/svg+xml" in o.get("data", {}) for o in outputs)
    hello = {p["id"]: p for p in ray.get(kernel.plugins.remote())}["com.example.hello"]
    assert hello["restarts"] == 1
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=60)


def test_realtime_notebook(
    ray_session: Any,
    start_hub: Any,
    serve_hub: dict[str, Any],
    serve_url: str,
    crm_users: dict[str, str],
) -> None:
    from deployments.realtime import ensure_gateways, realtime_settings, stop_realtime
    from objectos.client import HubClient

    ray = ray_session
    kernel = start_hub({"com.objectos.data": data_plugin_entry(serve_hub)})
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    settings = realtime_settings(serve_hub, port=0, rooms={"idle_timeout_s": 300})
    (gateway,) = ensure_gateways(serve_hub, settings=settings)
    document = f"notebook/{uuid.uuid4().hex[:8]}"
    written = "written by the test before the notebook ran"

    async def write_document() -> None:
        async with HubClient(serve_url, realtime_url=gateway["url"]) as hub:
            await hub.sign_in(email_of("admin"), CRM_PASSWORD)
            doc = await hub.document(document)
            async with doc.transact():
                doc.text("content").insert(0, written)
            # The gateway relays an update only once the room made it durable: a second
            # connection seeing it means the room holds it.
            reader = await hub.document(document)
            async with asyncio.timeout(60):
                await reader.wait_until(lambda: str(reader.text("content")) == written)

    try:
        asyncio.run(write_document())
        notebook = run_notebook(
            ROOT / "notebooks" / "realtime.ipynb",
            {
                "OBJECTOS_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
                "OBJECTOS_URL": serve_url,
                "OBJECTOS_EMAIL": email_of("admin"),
                "OBJECTOS_PASSWORD": CRM_PASSWORD,
                "OBJECTOS_NOTEBOOK_DOCUMENT": document,
            },
        )
    finally:
        stop_realtime()

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"], [
        o for o in outputs if o.output_type == "error"
    ]
    text = "".join(str(o.get("data", {}).get("text/html", "")) + o.get("text", "") for o in outputs)
    assert gateway["url"] in text and email_of("admin") in text
    assert document in text  # the live Yjs rooms table lists it
    assert written in text  # the document's text, read through the client
    # Presence through /realtime: the notebook's user joined, and the trackers list it.
    admin = crm_users["admin"]
    assert "Present in account:" in text and admin in text
    assert f"{admin} (online)" in text
    # Record events of the notebook's own writes, in order, carrying the record's name.
    created, updated, deleted = (
        text.index(f">{name}<") for name in ("record.created", "record.updated", "record.deleted")
    )
    assert created < updated < deleted
    assert ">notebook " in text and " (edited)<" in text
    assert "cursor to resume from:" in text and "no more events" not in text
    assert "does not serve /realtime" not in text
