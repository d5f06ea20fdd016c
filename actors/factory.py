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
