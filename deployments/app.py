"""Serve application builder: ``serve deploy configs/serve.yaml`` lands here.

``build_app({"config": "configs/objectos.yaml"})`` checks the hub manifest,
makes sure the kernel actor exists (it starts the plugins), starts the realtime
gateways (one per node, unless ``realtime.enabled`` is false) and returns the
HTTP application. ``objectos up`` calls the same function with
``"realtime": False`` and starts the gateways itself once the app answers.
"""

from __future__ import annotations

import os
from typing import Any

from ray.serve import Application

from actors.factory import get_or_create_kernel
from deployments.api import APIGateway
from deployments.realtime import ensure_gateways
from objectos.kernel.loader import check_hub, load_hub

DEFAULT_CONFIG = "configs/objectos.yaml"


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Check the manifest, ensure the kernel and the gateways, return the HTTP application.

    ``args``: ``config`` (the manifest), ``replicas`` (default ``serve.replicas``),
    ``realtime`` (false: leave the gateways to the caller).
    """
    args = dict(args or {})
    config = args.get("config") or os.environ.get("OBJECTOS_CONFIG") or DEFAULT_CONFIG
    hub = load_hub(config)
    check_hub(hub, source=str(config))
    payload = hub.model_dump()
    get_or_create_kernel(payload)
    if hub.realtime.enabled and args.get("realtime", True) not in (False, "false", "0"):
        ensure_gateways(payload)  # idempotent: a redeploy finds them running
    replicas = int(args.get("replicas") or hub.serve.replicas)
    app: Application = APIGateway.options(num_replicas=replicas).bind(payload)  # type: ignore[attr-defined]
    return app
