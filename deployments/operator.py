"""What an operator drives from a notebook or a Python shell.

    from deployments.operator import HubOperator
    hub = HubOperator.connect()                 # reads <dataDir>/hub.json of configs/objectos.yaml
    hub.plugins()                               # the plugin table, in dependency order
    hub.graph_svg()                             # the dependency graph, coloured by status
    hub.metrics("objectos_plugin_restarts")     # samples of one metric family
    hub.restart("com.example.hello")
    hub.gateways(), hub.yjs_rooms(), hub.record_rooms(), hub.presence()   # live realtime state

It joins the hub's Ray cluster as a driver (for the kernel) and talks HTTP to
the Serve app (for health and metrics), exactly as the CLI does. ``/metrics``
needs a credential (unless the manifest sets ``serve.metricsPublic``): pass
``credential=`` or set ``OBJECTOS_API_KEY`` to an API key (``objectos
service-account create --name operator``) or an access token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from deployments.cli import HubState, connect, ensure_token_auth
from objectos.kernel.drawing import dependency_svg
from objectos.kernel.loader import load_hub


@dataclass
class HubOperator:
    """A connection to a running hub: its kernel actor and its HTTP base URL."""

    address: str
    url: str
    kernel: Any
    credential: str | None = None

    @classmethod
    def connect(
        cls,
        config: str = "configs/objectos.yaml",
        *,
        address: str | None = None,
        url: str | None = None,
        credential: str | None = None,
    ) -> HubOperator:
        """Find the hub: arguments, then OBJECTOS_RAY_ADDRESS/OBJECTOS_URL, then hub.json.

        ``credential`` (else ``OBJECTOS_API_KEY``) is sent as a bearer token to
        the routes that need one.
        """
        credential = credential or os.environ.get("OBJECTOS_API_KEY") or None
        address = address or os.environ.get("OBJECTOS_RAY_ADDRESS")
        url = url or os.environ.get("OBJECTOS_URL")
        if address is None or url is None:
            state = HubState(load_hub(config).dataDir).read() or {}
            address = address or state.get("address")
            url = url or state.get("url")
        if not address or not url:
            raise RuntimeError(f"no running hub found for {config}; start one with `objectos up`")
        ensure_token_auth()
        connect(address)
        from actors.factory import get_kernel

        return cls(address=address, url=url.rstrip("/"), kernel=get_kernel(), credential=credential)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"} if self.credential else {}

    def _get(self, ref: Any) -> Any:
        import ray

        return ray.get(ref, timeout=60)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get(self.kernel.status.remote())
        return result

    def plugins(self) -> list[dict[str, Any]]:
        """One row per plugin: order, id, version, status, restarts, reason."""
        return [
            {
                "order": p["order"],
                "id": p["id"],
                "version": p["version"],
                "status": p["status"],
                "restarts": p["restarts"],
                "reason": p["reason"] or "",
            }
            for p in self._get(self.kernel.plugins.remote())
        ]

    def graph_svg(self) -> str:
        plugins = self._get(self.kernel.plugins.remote())
        order = [p["id"] for p in plugins]
        edges = [
            (p["id"], dep)
            for p in plugins
            for dep in [*p["dependencies"], *p["optionalDependencies"]]
        ]
        return dependency_svg(order, edges, {p["id"]: p["status"] for p in plugins})

    def health(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(f"{self.url}/api/v1/health", timeout=10).json()
        return body

    def metrics(self, family: str | None = None) -> list[dict[str, Any]]:
        """Samples of the hub's metrics (all families, or one by name)."""
        response = httpx.get(f"{self.url}/metrics", headers=self._headers(), timeout=30)
        if response.status_code == 401:
            raise PermissionError(
                "/metrics needs a credential: set OBJECTOS_API_KEY (see `objectos "
                "service-account create`) or pass credential= to HubOperator.connect"
            )
        response.raise_for_status()
        text = response.text
        rows = []
        for metric in text_string_to_metric_families(text):
            if family is not None and metric.name != family:
                continue
            for sample in metric.samples:
                rows.append({"name": sample.name, "labels": sample.labels, "value": sample.value})
        return rows

    def restart(self, plugin_id: str) -> dict[str, Any]:
        """Restart one plugin in a fresh host process (new budget)."""
        row: dict[str, Any] = self._get(self.kernel.restart_plugin.remote(plugin_id))
        return row

    # -- realtime ----------------------------------------------------------------------

    def gateways(self) -> list[dict[str, Any]]:
        """What each node's Socket.IO gateway advertises (name, node, url, ...)."""
        from deployments.realtime import gateway_endpoints

        return gateway_endpoints()

    def realtime_url(self) -> str | None:
        """A gateway's Socket.IO base URL (this node's first), or None when none runs."""
        from deployments.realtime import realtime_routes

        return realtime_routes().get("realtime")

    def yjs_rooms(self) -> list[dict[str, Any]]:
        """One row per live Yjs document room: state, members, log length, idleness."""
        from actors import factory

        rows = []
        for doc in factory.live_yjs_rooms():
            status = self._status(factory.get_yjs_room(doc))
            if status is not None:
                rows.append(
                    {
                        "document": doc,
                        "state": status["state"],
                        "members": status["members"],
                        "log_length": status["log_length"],
                        "idle_for_s": round(float(status["idle_for_s"]), 1),
                    }
                )
        return rows

    def record_rooms(self) -> list[dict[str, Any]]:
        """One row per live record subscription room (``room:records:<object>``)."""
        from actors import factory

        rows = []
        for name in self._named(factory.RECORD_ROOM_PREFIX):
            status = self._status(factory.get_named_actor(name))
            if status is not None:
                rows.append(
                    {
                        "object": factory.record_room_object(name),
                        "cursor": status.get("cursor"),
                        "subscriptions": len(status.get("subscriptions") or []),
                        "closing": status.get("closing", False),
                    }
                )
        return rows

    def presence(self) -> list[dict[str, Any]]:
        """Who is present where: one row per presence room, from every tracker shard."""
        from actors import factory

        rows = []
        for name in self._named(factory.PRESENCE_PREFIX):
            tracker = factory.get_named_actor(name)
            status = self._status(tracker)
            if status is None or tracker is None:
                continue
            for room in sorted(status.get("rooms") or {}):
                snapshot = self._get(tracker.snapshot.remote(room))
                users = ", ".join(f"{u['userId']} ({u['status']})" for u in snapshot["users"])
                rows.append({"shard": name, "room": room, "users": users})
        return rows

    def _named(self, prefix: str) -> list[str]:
        import ray

        from actors.factory import NAMESPACE

        names = ray.util.list_named_actors(all_namespaces=True)
        return sorted(
            entry["name"]
            for entry in names
            if entry["namespace"] == NAMESPACE and entry["name"].startswith(prefix)
        )

    def _status(self, handle: Any) -> dict[str, Any] | None:
        """An actor's ``status()``, or None when it went away meanwhile (rooms passivate)."""
        import ray

        if handle is None:
            return None
        try:
            status: dict[str, Any] = self._get(handle.status.remote())
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return None
        return status
