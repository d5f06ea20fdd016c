"""``GET /api/v1`` and ``/api/v1/discovery``: what this hub serves, in the spec's shape.

"Mount everything advertised, advertise only what is mounted": routes and
services are built from what the running hub actually has, never a fixed list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

API_BASE = "/api/v1"


def discovery_document(
    *,
    name: str,
    version: str,
    environment: str,
    mounted_routes: Mapping[str, str],
    plugins: Iterable[Mapping[str, Any]],
    capabilities: Mapping[str, bool] | None = None,
    locale: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the discovery document.

    ``mounted_routes`` maps a route family (``data``, ``metadata``, ``health``
    ...) to its path — only families the HTTP app really mounts. ``plugins``
    are the kernel's plugin rows; each running plugin's services are listed
    with status ``available``, others with ``unavailable`` and the reason.
    """
    services: dict[str, dict[str, Any]] = {}
    for plugin in plugins:
        running = plugin.get("status") == "running"
        names = list((plugin.get("lifecycle") or {}).get("services") or []) or [plugin["id"]]
        for service in names:
            entry: dict[str, Any] = {
                "enabled": True,
                "status": "available" if running else "unavailable",
                "handlerReady": bool(plugin.get("ready")),
                "provider": plugin["id"],
                "version": plugin.get("version"),
            }
            if not running and plugin.get("reason"):
                entry["message"] = plugin["reason"]
            services[service] = entry
    caps = dict(capabilities or {})
    return {
        "name": name,
        "version": version,
        "environment": environment,
        "routes": dict(mounted_routes),
        "services": services,
        "capabilities": {key: {"enabled": value} for key, value in caps.items()},
        "locale": dict(locale or {"default": "en", "supported": ["en"], "timezone": "UTC"}),
    }
