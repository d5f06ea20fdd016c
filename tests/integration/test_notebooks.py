"""The operator notebooks run top to bottom against a hub the test started."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
from conftest import ROOT, wait_until
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


def test_operate_notebook(ray_session: Any, start_hub: Any, serve_url: str) -> None:
    ray = ray_session
    kernel = start_hub(CORE)
    wait_until(lambda: ray.get(kernel.ready.remote()), timeout=90)
    address = ray.get_runtime_context().gcs_address

    notebook = run_notebook(
        ROOT / "notebooks" / "operate.ipynb",
        {
            "OBJECTOS_RAY_ADDRESS": address,
            "OBJECTOS_URL": serve_url,
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
