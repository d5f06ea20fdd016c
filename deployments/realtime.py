"""Realtime on a cluster: one Socket.IO gateway actor per alive node, and what discovery shows.

Called by ``objectos up`` / the Serve builder after the kernel is up::

    infos = ensure_gateways(hub.model_dump())  # idempotent: one gateway:<node> per node
    realtime_routes()                          # {"realtime": url, "yjs": url + "/yjs|{document}"}
    stop_realtime()                            # `objectos down`: gateways, then rooms

A hub with metadata also gets record subscriptions and presence on ``/realtime``:
``ensure_gateways`` starts the change feed actor (``feed:changes``) on the hub's
database -- the REST replicas nudge it after each commit -- and gives every gateway
the hub's record permissions (:func:`record_permissions`), which its record rooms
filter events with. ``stop_realtime`` stops those actors too.

Each gateway publishes its URL in Ray's GCS key-value store (``realtime:gateway:<node>``,
``realtime:gateway:<node>:<index>`` for a node's further gateways),
so any process -- an HTTP replica building the discovery document -- reads the URLs
without an actor call.

Settings come from the hub manifest's typed ``realtime`` section
(``objectos.protocol.manifest.RealtimeSettings``; keys below, all optional).
Clients send a credential as handshake ``auth.token``: in *hub mode* (the
default) what REST accepts -- a hub access token, a configured OIDC provider's
token or an API key; in *dev mode* (``auth: dev``) the shared realtime token:
``realtime.devToken``, else ``$OBJECTOS_REALTIME_TOKEN``, else the contents of
``<dataDir>/realtime.token`` (created with a random token, mode 0600, on first use).

    realtime:
      enabled: true            # false: `objectos up` / build_app start no gateway
      host: 127.0.0.1          # where each node's gateway binds (0.0.0.0 = all interfaces)
      port: 8001               # the same port on every node; 0 = a free port (one node only)
      gatewaysPerNode: 1       # gateway processes per node, on port .. port+n-1
      advertiseUrl: null       # URL clients should use, if not http://<host or node IP>:<port>
      corsAllowedOrigins: "*"
      auth: hub                # hub | dev
      devToken: null           # read-write token (dev mode)
      devReadToken: null       # read-only token (dev mode)
      rooms: {idleTimeoutS: 60, maxRooms: 100,  compactEvery: 500, sweepIntervalS: 5,
              awarenessTimeoutS: 30}
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray
from ray.experimental import internal_kv

from actors import factory
from actors.gateway import (
    DocumentAuthorizer,
    GatewaySettings,
    HubRecordAccess,
    HubTokenIdentity,
    Identify,
    RecordAccess,
    SharedTokenIdentity,
)
from actors.room import RoomSettings
from deployments.ports import free_ports
from objectos.errors import ConfigError, FieldError, ManifestError
from objectos.protocol._base import ProtocolModel
from objectos.protocol.loading import validate_model
from objectos.protocol.manifest import HubManifest, RealtimeSettings
from objectos.realtime.permissions import HubRecordPermissions
from objectos.realtime.yjs.protocol import Authorize

TOKEN_ENV = "OBJECTOS_REALTIME_TOKEN"
READ_TOKEN_ENV = "OBJECTOS_REALTIME_READ_TOKEN"
TOKEN_FILE = "realtime.token"
KV_PREFIX = "realtime:gateway:"

# The manifest's ``realtime`` keys (camelCase, like the rest of objectos.yaml) -> settings
# fields; ``enabled`` says whether gateways start at all and is no gateway setting.
_GATEWAY_KEYS = {
    "host": "host",
    "port": "port",
    "gatewaysPerNode": "per_node",
    "advertiseUrl": "advertise_url",
    "corsAllowedOrigins": "cors_allowed_origins",
    "wsCompression": "ws_compression",
    "niceness": "niceness",
    "maxPayloadBytes": "max_payload_bytes",
    "pingIntervalS": "ping_interval_s",
    "pingTimeoutS": "ping_timeout_s",
    "auth": "auth",
    "devToken": "dev_token",
    "devReadToken": "dev_read_token",
}
_ROOM_KEYS = {
    "compactEvery": "compact_every",
    "idleTimeoutS": "idle_timeout_s",
    "sweepIntervalS": "sweep_interval_s",
    "awarenessTimeoutS": "awareness_timeout_s",
    "maxRooms": "max_rooms",
    "activationTimeoutS": "activation_timeout_s",
    "gatewayTimeoutS": "gateway_timeout_s",
    "niceness": "niceness",
}


def realtime_section(hub: HubManifest | Mapping[str, Any]) -> RealtimeSettings:
    """The hub's typed ``realtime`` section (defaults when it has none).

    ``hub`` is a :class:`HubManifest` or its ``model_dump()``; a bad section raises
    ``ManifestError`` naming the key (``realtime.rooms.maxRooms``), as loading does.
    """
    if isinstance(hub, HubManifest):
        return hub.realtime
    raw = hub.get("realtime")
    if isinstance(raw, RealtimeSettings):
        return raw
    try:
        return validate_model(HubRealtime, {"realtime": raw or {}}, source="hub").realtime
    except ManifestError as exc:
        first = exc.field_errors[0]
        key = first.field.removeprefix("hub ").strip()  # "realtime.rooms.maxRooms"
        raise ManifestError(
            f"invalid realtime settings: {key}: {first.message}",
            details={"key": key, "reason": first.message},
            field_errors=[
                FieldError(fe.field.removeprefix("hub "), fe.code, fe.message)
                for fe in exc.field_errors
            ],
        ) from None


class HubRealtime(ProtocolModel):
    """The ``realtime`` key alone: errors then name ``realtime.<key>`` as in objectos.yaml."""

    realtime: RealtimeSettings


def realtime_enabled(hub: HubManifest | Mapping[str, Any]) -> bool:
    """Whether the hub runs realtime gateways (``realtime.enabled``)."""
    return realtime_section(hub).enabled


def realtime_settings(hub: HubManifest | Mapping[str, Any], **overrides: Any) -> GatewaySettings:
    """Gateway and room settings from the hub's typed ``realtime`` section, plus ``overrides``.

    ``hub`` is a :class:`HubManifest` or its ``model_dump()`` (what Ray ships to actors).
    ``overrides`` use the settings' field names (``port=0``, ``rooms={"max_rooms": 5}``).
    Port 0 (in the section or an override) picks a free port on this machine (good for
    one node and for tests). A bad section raises ``ManifestError`` naming the key.
    """
    section = realtime_section(hub)
    dumped = section.model_dump()
    database_url = hub.database.url if isinstance(hub, HubManifest) else hub["database"]["url"]
    values: dict[str, Any] = {field: dumped[key] for key, field in _GATEWAY_KEYS.items()}
    rooms: dict[str, Any] = {field: dumped["rooms"][key] for key, field in _ROOM_KEYS.items()}
    data_dir = hub.dataDir if isinstance(hub, HubManifest) else str(hub.get("dataDir") or ".")
    rooms["database_url"] = database_url.replace("{dataDir}", data_dir)
    rooms.update(overrides.pop("rooms", None) or {})
    values.update(overrides)
    if values.get("port") == 0:
        values["port"] = free_ports(values.get("host", "127.0.0.1"), values.get("per_node", 1))
    if values.get("auth") == "dev":
        if not values.get("dev_token"):
            values["dev_token"] = os.environ.get(TOKEN_ENV) or dev_token(_as_mapping(hub))
        if not values.get("dev_read_token") and os.environ.get(READ_TOKEN_ENV):
            values["dev_read_token"] = os.environ[READ_TOKEN_ENV]
    try:
        return GatewaySettings.model_validate({**values, "rooms": RoomSettings(**rooms)})
    except ValueError as exc:
        raise ConfigError(f"invalid realtime settings: {exc}", details={"key": "realtime"}) from exc


def _as_mapping(hub: HubManifest | Mapping[str, Any]) -> Mapping[str, Any]:
    return hub.model_dump() if isinstance(hub, HubManifest) else hub


def dev_token(hub: Mapping[str, Any]) -> str:
    """The dev-mode token in ``<dataDir>/realtime.token``, created (0600) if missing."""
    path = Path(hub.get("dataDir") or ".objectos") / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def realtime_authorizer(
    hub: Mapping[str, Any],
    settings: GatewaySettings,
    record_access: RecordAccess | None = None,
) -> DocumentAuthorizer:
    """The gateways' ``authorize``: hub mode (REST's credentials) unless ``auth: dev``.

    ``record_access`` is the record-permission hook for ``<object>/<id>/<field>``
    documents (see ``actors.gateway.RecordAccess``); it must be picklable.
    """
    identify: Identify
    if settings.auth == "dev":
        if not settings.dev_token:
            raise ConfigError("realtime.auth is dev but no dev token is set")
        identify = SharedTokenIdentity(settings.dev_token, settings.dev_read_token)
    else:
        identify = HubTokenIdentity(
            dict(hub.get("auth") or {}), hub["database"]["url"], str(hub.get("dataDir") or ".")
        )
    return DocumentAuthorizer(identify, record_access)


def hub_database_url(hub: Mapping[str, Any]) -> str:
    """The hub's database URL with ``{dataDir}`` filled in (as the replicas do)."""
    return str(hub["database"]["url"]).replace("{dataDir}", str(hub.get("dataDir") or "."))


def record_permissions(hub: Mapping[str, Any]) -> HubRecordPermissions | None:
    """The record permissions of a hub with metadata (None without any): the REST
    replicas' engine, with the identity store's role directory on the hub's database."""
    metadata = hub.get("metadata")
    if not metadata:
        return None
    return HubRecordPermissions(
        list(metadata), hub_database_url(hub), str(hub.get("dataDir") or ".")
    )


def ensure_gateways(
    hub: Mapping[str, Any],
    *,
    settings: GatewaySettings | None = None,
    authorize: Authorize | None = None,
    records: HubRecordPermissions | None = None,
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Make sure every alive node runs its gateway and it listens; their ``info``.

    Idempotent (actors are found by name). Also starts the room directory and
    forgets the advertised URLs of nodes that are gone. ``authorize`` defaults to
    :func:`realtime_authorizer` (it must be picklable: Ray ships it to each gateway)
    with the record-permission hook :class:`~actors.gateway.HubRecordAccess`.

    A hub with metadata (``records`` defaults to :func:`record_permissions`) also
    gets record subscriptions on ``/realtime``: the change feed actor is started
    on the hub's database (REST replicas nudge it after each commit) and every
    gateway gets the permissions its record rooms filter events with.
    """
    settings = settings or realtime_settings(hub)
    records = records or record_permissions(hub)
    if authorize is None:
        record_access = (
            HubRecordAccess(records, hub_database_url(hub)) if records is not None else None
        )
        authorize = realtime_authorizer(hub, settings, record_access)
    factory.get_or_create_room_directory(settings.rooms.model_dump())
    if records is not None:
        factory.get_or_create_change_feed(hub_database_url(hub))
    nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    handles = [
        factory.get_or_create_gateway(node_id, settings.model_dump(), authorize, records, index)
        for node_id in nodes
        for index in range(settings.per_node)
    ]
    infos: list[dict[str, Any]] = ray.get(
        [handle.ready.remote(timeout_s) for handle in handles], timeout=timeout_s + 10
    )
    for info in infos:
        _kv_put(_kv_key(info["name"]), json.dumps(info).encode())
    current = {_kv_key(info["name"]) for info in infos}
    for key in _kv_keys():
        if key not in current:  # a node that is gone, or fewer gateways per node now
            _kv_del(key)
    return infos


def gateway_endpoints() -> list[dict[str, Any]]:
    """What each running gateway advertised (``info``: name, node, url, ...), by node id."""
    endpoints = []
    for key in _kv_keys():
        raw = internal_kv._internal_kv_get(key.encode(), namespace=factory.NAMESPACE)
        if raw:
            endpoints.append(json.loads(raw))
    return sorted(endpoints, key=lambda info: str(info.get("node")))


def realtime_routes(node_id: str | None = None) -> dict[str, str]:
    """Route families for the discovery document: only when a gateway is running.

    ``realtime`` is the Socket.IO base URL (a ``socket.io-client`` / y-socket.io
    ``url``); ``yjs`` the namespace template of a collaborative document. The gateway
    on ``node_id`` (default: this process's node) is preferred: any gateway reaches
    every room, the local one saves a hop. With several gateways on that node
    (``gatewaysPerNode``) one is picked at random, which spreads clients over them.
    """
    endpoints = gateway_endpoints()
    if not endpoints:
        return {}
    if node_id is None and ray.is_initialized():
        node_id = ray.get_runtime_context().get_node_id()
    local = [e for e in endpoints if e.get("node") == node_id]
    chosen = random.choice(local or endpoints)
    url = str(chosen["url"])
    return {"realtime": url, "yjs": f"{url}/yjs|{{document}}"}


def stop_realtime(timeout_s: float = 30.0) -> dict[str, Any]:
    """Stop every gateway (connections closed), then passivate every room and the directory.

    Rooms compact their logs on the way out. Returns what was stopped.
    """
    stopped_gateways = []
    for name in factory.live_gateways():
        handle = factory.get_gateway(name)
        if handle is None:
            continue
        with contextlib.suppress(Exception):  # dead or stuck: it is killed below anyway
            ray.get(handle.shutdown.remote(), timeout=timeout_s)
        ray.kill(handle, no_restart=True)
        stopped_gateways.append(name)
    for key in _kv_keys():
        _kv_del(key)
    passivated = []
    for doc in factory.live_yjs_rooms():
        room = factory.get_yjs_room(doc)
        if room is None:
            continue
        try:
            ray.get(room.passivate.remote(force=True), timeout=timeout_s)
        except ray.exceptions.RayActorError:
            passivated.append(doc)  # exit_actor: the expected way to end
        except Exception:
            ray.kill(room, no_restart=True)  # nothing unflushed: every update is logged
    directory = factory.get_room_directory()
    if directory is not None:
        ray.kill(directory, no_restart=True)
    # Record rooms, presence and the feed keep nothing durable: the change log is the truth.
    stopped = []
    for prefix in (factory.RECORD_ROOM_PREFIX, factory.PRESENCE_PREFIX, factory.CHANGE_FEED_NAME):
        for name in factory.live_actors(prefix):
            handle = factory.get_named_actor(name)
            if handle is not None:
                ray.kill(handle, no_restart=True)
                stopped.append(name)
    return {"gateways": stopped_gateways, "rooms": passivated, "records": stopped}


def _kv_key(gateway_name: str) -> str:
    """``realtime:gateway:<node>[:<index>]`` for the gateway actor ``gateway:<node>[:<index>]``."""
    return KV_PREFIX + gateway_name[len(factory.GATEWAY_PREFIX) :]


def _kv_keys() -> list[str]:
    keys = internal_kv._internal_kv_list(KV_PREFIX.encode(), namespace=factory.NAMESPACE)
    return sorted(key.decode() if isinstance(key, bytes) else str(key) for key in keys)


def _kv_put(key: str, value: bytes) -> None:
    internal_kv._internal_kv_put(key.encode(), value, overwrite=True, namespace=factory.NAMESPACE)


def _kv_del(key: str) -> None:
    internal_kv._internal_kv_del(key.encode(), namespace=factory.NAMESPACE)


__all__ = [
    "KV_PREFIX",
    "READ_TOKEN_ENV",
    "TOKEN_ENV",
    "TOKEN_FILE",
    "dev_token",
    "ensure_gateways",
    "gateway_endpoints",
    "hub_database_url",
    "realtime_authorizer",
    "realtime_enabled",
    "realtime_routes",
    "realtime_section",
    "realtime_settings",
    "record_permissions",
    "stop_realtime",
]
