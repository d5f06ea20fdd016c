"""The one place that turns plain classes into named Ray actors.

Like Ray Serve's ``default_impl.py``: names, namespace, lifetime and restart
options live here and nowhere else. Names are parseable (``kernel``,
``plugin:<id>``, ``room:yjs:<doc>``, ``rooms:yjs``, ``gateway:<node id>``) so a
restarted kernel finds its plugin hosts again and a restarted room directory
finds the live rooms.
"""

from __future__ import annotations

from typing import Any

import ray

NAMESPACE = "objectos"
KERNEL_NAME = "kernel"
PLUGIN_PREFIX = "plugin:"


def plugin_actor_name(plugin_id: str) -> str:
    return f"{PLUGIN_PREFIX}{plugin_id}"


def plugin_id_of(actor_name: str) -> str | None:
    return actor_name[len(PLUGIN_PREFIX) :] if actor_name.startswith(PLUGIN_PREFIX) else None


def kernel_actor_class() -> Any:
    from actors.kernel import KernelActor

    return ray.remote(KernelActor)


def get_or_create_kernel(hub: dict[str, Any]) -> Any:
    """The kernel actor: detached, restarted by Ray forever, one per namespace."""
    return (
        kernel_actor_class()
        .options(
            name=KERNEL_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            # Callers wait out a kernel restart instead of failing.
            max_task_retries=-1,
            num_cpus=0,
            max_concurrency=1000,
        )
        .remote(hub)
    )


def get_kernel() -> Any:
    """The running kernel; raises ValueError when there is none."""
    return ray.get_actor(KERNEL_NAME, namespace=NAMESPACE)


def create_plugin_host(plugin_id: str, entry: dict[str, Any], settings: dict[str, Any]) -> Any:
    """A plugin host: detached (outlives a kernel restart), restarted by the kernel only."""
    from actors.plugin_host import PluginHost

    return (
        ray.remote(PluginHost)
        .options(
            name=plugin_actor_name(plugin_id),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=0,
            num_cpus=0,
            max_concurrency=1000,
        )
        .remote(plugin_id, entry, settings)
    )


def get_plugin_host(plugin_id: str) -> Any | None:
    try:
        return ray.get_actor(plugin_actor_name(plugin_id), namespace=NAMESPACE)
    except ValueError:
        return None


RATE_LIMITER_NAME = "ratelimiter"


def get_or_create_rate_limiter() -> Any:
    """The rate-limit bucket store every HTTP replica shares.

    Detached (outlives the replicas that created it) and restarted by Ray; a
    lease is not retried after a crash (a lost lease only makes the limit
    stricter for a moment, a replayed one would take tokens twice).
    """
    from actors.ratelimiter import RateLimiterActor

    return (
        ray.remote(RateLimiterActor)
        .options(
            name=RATE_LIMITER_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            num_cpus=0,
        )
        .remote()
    )


# ---------------------------------------------------------------------- realtime

ROOM_PREFIX = "room:"
YJS_ROOM_KIND = "yjs"
YJS_ROOM_DIRECTORY_NAME = "rooms:yjs"
GATEWAY_PREFIX = "gateway:"


def room_actor_name(kind: str, key: str) -> str:
    """``room:<kind>:<key>``; the key may contain colons (it is everything after the kind)."""
    return f"{ROOM_PREFIX}{kind}:{key}"


def yjs_room_name(doc_name: str) -> str:
    return room_actor_name(YJS_ROOM_KIND, doc_name)


def yjs_doc_of(actor_name: str) -> str | None:
    """The document name of a ``room:yjs:<doc>`` actor name, or None for any other name."""
    prefix = room_actor_name(YJS_ROOM_KIND, "")
    return actor_name[len(prefix) :] if actor_name.startswith(prefix) else None


def gateway_actor_name(node_id: str, index: int = 0) -> str:
    """``gateway:<node>`` for a node's first gateway, ``gateway:<node>:<index>`` for more."""
    return f"{GATEWAY_PREFIX}{node_id}" if index == 0 else f"{GATEWAY_PREFIX}{node_id}:{index}"


def node_id_of_gateway(actor_name: str) -> str | None:
    if not actor_name.startswith(GATEWAY_PREFIX):
        return None
    return actor_name[len(GATEWAY_PREFIX) :].split(":")[0]


def get_or_create_yjs_room(doc_name: str, settings: dict[str, Any]) -> Any:
    """The virtual actor of one Yjs document, created on first use.

    Detached, so it outlives whoever activated it; never restarted by Ray
    (``max_restarts=0``): a dead room is re-activated from the store by its next
    user, which is also what re-syncs the clients.
    """
    from actors.room import DocumentRoomActor

    return (
        ray.remote(DocumentRoomActor)
        .options(
            name=yjs_room_name(doc_name),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=0,
            num_cpus=0,
            max_concurrency=1000,
        )
        .remote(doc_name, settings)
    )


def get_yjs_room(doc_name: str) -> Any | None:
    try:
        return ray.get_actor(yjs_room_name(doc_name), namespace=NAMESPACE)
    except ValueError:
        return None


def live_yjs_rooms() -> list[str]:
    """Document names of every ``room:yjs:<doc>`` actor Ray knows by name."""
    names = ray.util.list_named_actors(all_namespaces=True)
    docs = (yjs_doc_of(entry["name"]) for entry in names if entry["namespace"] == NAMESPACE)
    return sorted(doc for doc in docs if doc is not None)


def get_or_create_room_directory(settings: dict[str, Any]) -> Any:
    """The directory that activates Yjs rooms and caps how many are alive.

    Detached and restarted by Ray forever; after a restart it re-attaches to
    the live rooms by name. Callers wait out a restart (``max_task_retries``).
    """
    from actors.room import RoomDirectoryActor

    return (
        ray.remote(RoomDirectoryActor)
        .options(
            name=YJS_ROOM_DIRECTORY_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=-1,
            num_cpus=0,
            max_concurrency=1000,
        )
        .remote(settings)
    )


def get_room_directory() -> Any | None:
    try:
        return ray.get_actor(YJS_ROOM_DIRECTORY_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


def get_or_create_gateway(
    node_id: str,
    settings: dict[str, Any],
    authorize: Any = None,
    records: Any = None,
    index: int = 0,
) -> Any:
    """The Socket.IO gateway of one node: detached, pinned to that node, restarted by Ray.

    A restart re-runs the constructor with the same arguments, so the gateway
    binds the same port again and clients reconnect to the URL discovery gave them.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.gateway import GatewayActor

    return (
        ray.remote(GatewayActor)
        .options(
            name=gateway_actor_name(node_id, index),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
            max_concurrency=1000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        )
        .remote(node_id, settings, authorize, records, index)
    )


def get_gateway(actor_name: str) -> Any | None:
    """A gateway by its full actor name (``gateway:<node>``), or None."""
    try:
        return ray.get_actor(actor_name, namespace=NAMESPACE)
    except ValueError:
        return None


def live_gateways() -> list[str]:
    """Actor names of every ``gateway:<node>`` actor Ray knows by name."""
    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        entry["name"]
        for entry in names
        if entry["namespace"] == NAMESPACE and entry["name"].startswith(GATEWAY_PREFIX)
    )


# ------------------------------------------------ record subscriptions, presence, change feed

RECORD_ROOM_PREFIX = "room:records:"
PRESENCE_PREFIX = "presence:"
CHANGE_FEED_NAME = "feed:changes"


def record_room_name(object_name: str) -> str:
    """``room:records:<object>``: the subscription room of one object."""
    return f"{RECORD_ROOM_PREFIX}{object_name}"


def record_room_object(actor_name: str) -> str | None:
    """The object of a ``room:records:<object>`` actor name, or None for any other name."""
    if not actor_name.startswith(RECORD_ROOM_PREFIX):
        return None
    return actor_name[len(RECORD_ROOM_PREFIX) :]


def presence_actor_name(shard: int) -> str:
    """``presence:<shard>``."""
    return f"{PRESENCE_PREFIX}{shard}"


def presence_shard(room: str, shards: int) -> int:
    """The shard that tracks presence room ``room`` (``<object>`` or ``<object>/<id>``).

    Hashes the object part only (CRC-32, stable across processes), so an object
    and all its records live on one shard and "who is on this object" is one call.
    """
    import zlib

    if shards < 1:
        raise ValueError("shards must be at least 1")
    return zlib.crc32(room.split("/", 1)[0].encode()) % shards


def get_or_create_record_room(object_name: str, **room_options: Any) -> Any:
    """The subscription room of one object, activated on first use.

    Detached (it serves every gateway, not just the one that activated it) and
    never restarted by Ray: it passivates itself when it has had no subscribers
    for a while, and gateways re-subscribe (with ``since``) if it dies.
    ``room_options`` go to :class:`actors.realtime.SubscriptionRoomActor` and
    only count when this call creates the actor.
    """
    from actors.realtime import SubscriptionRoomActor

    return (
        ray.remote(SubscriptionRoomActor)
        .options(
            name=record_room_name(object_name),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=0,
            num_cpus=0,
            max_concurrency=1000,
        )
        .remote(object_name, **room_options)
    )


def get_record_room(object_name: str) -> Any | None:
    """The live subscription room of ``object_name``, or None."""
    return get_named_actor(record_room_name(object_name))


def get_or_create_presence(shard: int, **tracker_options: Any) -> Any:
    """One presence tracker shard: detached, restarted by Ray (gateways then join again)."""
    from actors.realtime import PresenceActor

    return (
        ray.remote(PresenceActor)
        .options(
            name=presence_actor_name(shard),
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
            max_concurrency=1000,
        )
        .remote(shard, **tracker_options)
    )


def get_or_create_change_feed(database_url: str, **feed_options: Any) -> Any:
    """The one actor that tails the change log and pushes changes to record rooms.

    Detached and restarted by Ray forever; a restarted feed starts at the newest
    change and rooms read what they missed themselves when they register again.
    """
    from actors.realtime import ChangeFeedActor

    return (
        ray.remote(ChangeFeedActor)
        .options(
            name=CHANGE_FEED_NAME,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            num_cpus=0,
            max_concurrency=1000,
        )
        .remote(database_url, **feed_options)
    )


def get_change_feed() -> Any | None:
    """The running change feed actor, or None."""
    return get_named_actor(CHANGE_FEED_NAME)


def live_actors(prefix: str) -> list[str]:
    """Names of every actor of the hub whose name starts with ``prefix``."""
    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(
        entry["name"]
        for entry in names
        if entry["namespace"] == NAMESPACE and entry["name"].startswith(prefix)
    )


def get_named_actor(name: str) -> Any | None:
    """Any actor of the hub by its full name (``gateway:<node>``, ``presence:0``, ...), or None."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
