"""The one place that turns plain classes into named Ray actors.

Like Ray Serve's ``default_impl.py``: names, namespace, lifetime and restart
options live here and nowhere else. Names are parseable (``kernel``,
``plugin:<id>``) so a restarted kernel finds its plugin hosts again.
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


def get_named_actor(name: str) -> Any | None:
    """Any actor of the hub by its full name (``gateway:<node>``, ``presence:0``, ...), or None."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None
