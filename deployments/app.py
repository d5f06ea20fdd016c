"""Serve application builder: ``serve deploy configs/serve.yaml`` lands here.

``build_app({"config": "configs/objectos.yaml"})`` checks the hub manifest,
makes sure the kernel actor exists (it starts the plugins) and returns the
HTTP application. ``objectos up`` calls the same function.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from actors.factory import get_or_create_kernel
from deployments.api import APIGateway
from objectos.kernel.loader import check_hub, load_hub

DEFAULT_CONFIG = "configs/objectos.yaml"


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Check the manifest, ensure the kernel, return the HTTP application."""
    args = dict(args or {})
    config = args.get("config") or os.environ.get("OBJECTOS_CONFIG") or DEFAULT_CONFIG
    hub = load_hub(config)
    check_hub(hub, source=str(config))
    payload = hub.model_dump()
    get_or_create_kernel(payload)
    replicas = int(args.get("replicas") or hub.serve.replicas)
    app: Application = APIGateway.options(num_replicas=replicas).bind(payload)  # type: ignore[attr-defined]
    return app
