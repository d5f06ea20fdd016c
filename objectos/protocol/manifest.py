"""Kernel protocol: the plugin manifest and the hub manifest (``configs/objectos.yaml``).

Names follow @objectstack/spec's PluginDefinition / ObjectStackManifest
(``id``, ``version``, ``dependencies`` as ``{id: semver range}``,
``configuration.properties``, ``contributes``), in Python's snake_case only where
the spec has no name (``module``).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

import semantic_version
from pydantic import AfterValidator, Field, field_validator, model_validator

from objectos.protocol._base import ProtocolModel
from objectos.protocol.auth import AuthSettings

PLUGIN_ID = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)+$")
MODULE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def check_semver(value: str) -> str:
    try:
        semantic_version.Version(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a semantic version (x.y.z)") from None
    return value


def check_range(value: str) -> str:
    try:
        semantic_version.NpmSpec(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a semver range (e.g. ^1.2.0, >=1 <2)") from None
    return value


def check_plugin_id(value: str) -> str:
    if not PLUGIN_ID.match(value):
        raise ValueError(f"{value!r} is not a reverse-domain plugin id (e.g. com.example.crm)")
    return value


PluginId = Annotated[str, AfterValidator(check_plugin_id)]
SemVer = Annotated[str, AfterValidator(check_semver)]
SemVerRange = Annotated[str, AfterValidator(check_range)]


class ConfigProperty(ProtocolModel):
    """One configuration key a plugin accepts (JSON-schema-like)."""

    type: Literal["string", "number", "integer", "boolean", "array", "object"] = Field(
        description="JSON type of the value."
    )
    default: Any = Field(None, description="Value used when the hub manifest sets none.")
    description: str | None = Field(None, description="What the key does.")
    required: bool = Field(False, description="The hub manifest must set it.")
    secret: bool = Field(False, description="Never shown by admin APIs or logs.")
    enum: list[Any] | None = Field(None, description="The only values allowed.")


class PluginConfiguration(ProtocolModel):
    """The configuration schema of a plugin."""

    title: str | None = Field(None, description="Heading shown by admin tools.")
    properties: dict[str, ConfigProperty] = Field(
        default_factory=dict, description="Accepted keys and their schema."
    )


class Contributes(ProtocolModel):
    """What a plugin adds to the hub."""

    objects: list[str] = Field(default_factory=list, description="Object names it defines.")
    routes: list[str] = Field(default_factory=list, description="HTTP route prefixes it serves.")
    events: list[str] = Field(default_factory=list, description="Event names it emits.")
    jobs: list[str] = Field(default_factory=list, description="Job names it schedules.")
    services: list[str] = Field(
        default_factory=list, description="Service names it registers in the kernel registry."
    )


class PluginManifest(ProtocolModel):
    """PluginDefinition: who a plugin is and what it needs."""

    id: PluginId = Field(description="Reverse-domain id, e.g. com.objectos.storage.")
    version: SemVer = Field(description="Semantic version x.y.z.")
    name: str | None = Field(None, description="Human name.")
    description: str | None = Field(None, description="What the plugin does.")
    author: str | None = Field(None, description="Who maintains it.")
    dependencies: dict[PluginId, SemVerRange] = Field(
        default_factory=dict, description="Required plugins: {id: semver range}."
    )
    optionalDependencies: dict[PluginId, SemVerRange] = Field(
        default_factory=dict,
        description="Plugins started first when present; their absence or failure does not block.",
    )
    configuration: PluginConfiguration = Field(
        default_factory=PluginConfiguration, description="Configuration schema."
    )
    contributes: Contributes = Field(default_factory=Contributes, description="Contributions.")

    def resolve_config(self, given: dict[str, Any]) -> dict[str, Any]:
        """Apply defaults and check ``given`` against the schema.

        Raises ValueError naming the key on an unknown key, a missing required
        key, a value outside ``enum`` or a value of the wrong JSON type.
        """
        props = self.configuration.properties
        unknown = sorted(set(given) - set(props))
        if unknown:
            raise ValueError(f"unknown configuration key(s): {', '.join(unknown)}")
        resolved: dict[str, Any] = {}
        for key, prop in props.items():
            if key in given:
                value = given[key]
            elif prop.required:
                raise ValueError(f"configuration key {key!r} is required")
            else:
                value = prop.default
            if value is not None:
                if not _json_type_ok(prop.type, value):
                    raise ValueError(f"configuration key {key!r} must be of type {prop.type}")
                if prop.enum is not None and value not in prop.enum:
                    raise ValueError(f"configuration key {key!r} must be one of {prop.enum}")
            resolved[key] = value
        return resolved


def _json_type_ok(kind: str, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


class PluginEntry(ProtocolModel):
    """One plugin the hub should run."""

    module: str = Field(description="Import reference of the plugin class, 'package.module:Class'.")
    enabled: bool = Field(True, description="False keeps the plugin installed but not running.")
    config: dict[str, Any] = Field(
        default_factory=dict, description="Values for the plugin's configuration schema."
    )

    @field_validator("module")
    @classmethod
    def _check_module(cls, value: str) -> str:
        if not MODULE_REF.match(value):
            raise ValueError(f"{value!r} is not an import reference 'package.module:Class'")
        return value


class RestartPolicy(ProtocolModel):
    """How the kernel restarts a failed plugin."""

    maxRestarts: int = Field(3, ge=0, description="Restarts allowed inside windowS.")
    windowS: float = Field(60.0, gt=0, description="Sliding window of the restart budget.")
    backoffInitialS: float = Field(0.5, ge=0, description="Delay before the first restart.")
    backoffMaxS: float = Field(10.0, ge=0, description="Longest delay between restarts.")


class KernelSettings(ProtocolModel):
    """Kernel loop settings."""

    healthCheckIntervalS: float = Field(1.0, gt=0, description="Seconds between health sweeps.")
    healthCheckTimeoutS: float = Field(5.0, gt=0, description="A slower answer counts as failed.")
    hookTimeoutS: float = Field(30.0, gt=0, description="Limit for each lifecycle hook.")
    restart: RestartPolicy = Field(default_factory=RestartPolicy, description="Restart budget.")


class DatabaseSettings(ProtocolModel):
    """Where records live."""

    url: str = Field(
        "sqlite+aiosqlite:///{dataDir}/objectos.db",
        description="SQLAlchemy async URL; {dataDir} is replaced by the hub's data directory.",
    )


class RateLimitRule(ProtocolModel):
    """A token bucket: ``rate`` requests per second sustained, ``burst`` at once."""

    rate: float = Field(gt=0, description="Requests per second one client may sustain.")
    burst: int = Field(
        ge=1, description="Requests one client may make at once after being idle (bucket size)."
    )


class RateLimitSettings(ProtocolModel):
    """Per-client request limits of the HTTP surface, shared by every Serve replica.

    A client is its authenticated user, else its API key, else its address.
    Each route family (``routes``, longest path prefix wins; ``default`` for
    the rest) has its own bucket per client.
    """

    enabled: bool = Field(
        False,
        description=(
            "Off unless a manifest turns it on: which clients share a bucket depends on "
            "the ingress in front (see trustedProxies)."
        ),
    )
    default: RateLimitRule = Field(
        default_factory=lambda: RateLimitRule(rate=100, burst=200),
        description="Limit of every route no entry of ``routes`` matches.",
    )
    routes: dict[str, RateLimitRule] = Field(
        default_factory=dict,
        description="Limits by path prefix, e.g. {'/api/v1/auth': {rate: 1, burst: 10}}.",
    )
    exempt: list[str] = Field(
        default_factory=lambda: ["/api/v1/health", "/metrics"],
        description="Path prefixes never limited (probes, scrapers).",
    )
    lease: int = Field(
        10,
        ge=1,
        description=(
            "Tokens a replica takes from the shared store per call (never more than a "
            "quarter of the burst). Larger means fewer store calls and a less exact limit."
        ),
    )
    trustedProxies: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses/CIDRs whose X-Forwarded-For is believed. Serve's HAProxy ingress adds "
            "none, so behind it alone anonymous clients share the ingress's address."
        ),
    )

    @field_validator("routes")
    @classmethod
    def _check_prefixes(cls, value: dict[str, RateLimitRule]) -> dict[str, RateLimitRule]:
        for prefix in value:
            if not prefix.startswith("/"):
                raise ValueError(f"route prefix {prefix!r} must start with '/'")
        return value

    @field_validator("trustedProxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an IP address or CIDR") from None
        return value


class ServeSettings(ProtocolModel):
    """The HTTP surface."""

    host: str = Field("127.0.0.1", description="Address the HTTP ingress binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port of the HTTP ingress.")
    replicas: int = Field(2, ge=1, description="Serve replicas of the API deployment.")
    haproxy: bool = Field(
        True, description="Use Serve's HAProxy ingress (much faster than the Python proxy)."
    )
    rateLimit: RateLimitSettings = Field(
        default_factory=RateLimitSettings, description="Per-client request limits."
    )
    metricsPublic: bool = Field(
        False,
        description=(
            "Serve /metrics without credentials. Off: a scraper sends a credential, e.g. "
            "'Authorization: Bearer <API key of a service account>'."
        ),
    )
    niceness: int | None = Field(
        0,
        ge=-20,
        le=19,
        description="Scheduling niceness of the HTTP replicas (Ray starts workers at 15, "
        "below every other process on a shared node); null keeps Ray's.",
    )


class RealtimeRooms(ProtocolModel):
    """Yjs document room actors (``realtime.rooms``): storage cadence, idleness, the cap."""

    compactEvery: int = Field(
        500, ge=0, description="Write a snapshot after this many logged updates (0: on close)."
    )
    idleTimeoutS: float = Field(
        60.0, gt=0, description="Passivate a room this long after its last member left."
    )
    sweepIntervalS: float = Field(
        5.0, gt=0, description="How often a room checks idleness, awareness and its gateways."
    )
    awarenessTimeoutS: float = Field(
        30.0, gt=0, description="Drop an awareness client silent for this long."
    )
    maxRooms: int = Field(
        100,
        ge=1,
        description="Live room actors at most (least recently used ones passivate); each is "
        "a process of ~80 MB private memory.",
    )
    activationTimeoutS: float = Field(
        30.0, gt=0, description="Give up activating a room (e.g. a passivation that hangs)."
    )
    gatewayTimeoutS: float = Field(
        5.0, gt=0, description="A gateway slower than this to answer a membership check is skipped."
    )
    niceness: int | None = Field(
        0, ge=-20, le=19, description="Niceness of room processes (null keeps Ray's 15)."
    )


class RealtimeSettings(ProtocolModel):
    """``realtime``: the Socket.IO gateways (one per node) and the Yjs document rooms.

    Clients find the gateway's URL in discovery (``routes.realtime``, ``routes.yjs``).
    In ``hub`` auth mode the handshake's ``auth.token`` is what REST accepts (a hub
    access token, a configured provider's token, an API key); ``dev`` mode takes a
    shared token (``devToken``, else ``$OBJECTOS_REALTIME_TOKEN``, else
    ``<dataDir>/realtime.token``).
    """

    enabled: bool = Field(True, description="False: no gateway starts; discovery lists none.")
    host: str = Field("127.0.0.1", description="Address each node's gateway binds (0.0.0.0: all).")
    port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="Port of the gateway, the same on every node; 0 picks a free one (one node).",
    )
    gatewaysPerNode: int = Field(
        1,
        ge=1,
        le=32,
        description="Gateway processes per node, on ports port .. port+n-1 (python-socketio "
        "uses one core each; discovery spreads clients over a node's gateways).",
    )
    advertiseUrl: str | None = Field(
        None, description="URL clients should use, if not http://<host or node IP>:<port>."
    )
    corsAllowedOrigins: list[str] | str = Field(
        "*", description="Browser origins allowed to connect ('*': any; tokens, not cookies)."
    )
    auth: Literal["hub", "dev"] = Field(
        "hub", description="hub: REST's credentials; dev: a shared token (development only)."
    )
    devToken: str | None = Field(None, description="Dev mode: the shared read-write token.")
    devReadToken: str | None = Field(None, description="Dev mode: a shared read-only token.")
    wsCompression: bool = Field(
        False, description="permessage-deflate on WebSockets (CPU per keystroke-sized update)."
    )
    maxPayloadBytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest message (a whole document on first sync)."
    )
    pingIntervalS: float = Field(25.0, gt=0, description="Engine.IO ping interval.")
    pingTimeoutS: float = Field(20.0, gt=0, description="Engine.IO ping timeout.")
    niceness: int | None = Field(
        0, ge=-20, le=19, description="Niceness of gateway processes (null keeps Ray's 15)."
    )
    rooms: RealtimeRooms = Field(default_factory=RealtimeRooms, description="Document rooms.")

    @field_validator("advertiseUrl")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_url_per_gateway(self) -> RealtimeSettings:
        if self.advertiseUrl is not None and self.gatewaysPerNode > 1:
            raise ValueError(
                "advertiseUrl names one URL: it cannot be combined with gatewaysPerNode > 1"
            )
        return self


class HubManifest(ProtocolModel):
    """``configs/objectos.yaml``: the ObjectStackManifest of a running hub."""

    id: PluginId = Field(description="Reverse-domain id of this hub/app.")
    version: SemVer = Field("0.1.0", description="Version of this hub's configuration.")
    name: str = Field("ObjectOS Hub", description="Name shown by discovery.")
    description: str | None = Field(None, description="What this hub is for.")
    environment: Literal["development", "test", "production"] = Field(
        "development", description="Reported by discovery."
    )
    dataDir: str = Field(
        ".objectos", description="Data directory (SQLite file, keys), relative to the manifest."
    )
    database: DatabaseSettings = Field(default_factory=DatabaseSettings, description="Database.")
    metadata: list[str] = Field(
        default_factory=lambda: ["metadata"],
        description="Metadata directories (objects, permissions, ...), relative to the manifest.",
    )
    plugins: dict[PluginId, PluginEntry] = Field(
        default_factory=dict, description="Plugins to run, keyed by plugin id."
    )
    kernel: KernelSettings = Field(default_factory=KernelSettings, description="Kernel loop.")
    serve: ServeSettings = Field(default_factory=ServeSettings, description="HTTP surface.")
    auth: AuthSettings = Field(
        default_factory=AuthSettings,
        description="Identity: tokens, keys, OIDC providers, sign-in throttling.",
    )
    realtime: RealtimeSettings = Field(
        default_factory=RealtimeSettings,
        description="Socket.IO gateways and collaborative documents.",
    )
