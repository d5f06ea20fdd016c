"""Ray-backed implementations of the plugin context's collaborators.

A plugin never imports another plugin: ``context.services.get("storage")``
returns a :class:`ServiceProxy` that asks the kernel which plugin provides
``storage`` and calls that plugin's host actor. The caller's plugin id travels
with the call, filled in here, so a plugin cannot pretend to be another.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ray.exceptions import RayActorError

from actors.factory import get_kernel, get_plugin_host
from objectos.errors import ServiceUnavailable

# Kernel methods that plugins may call through the built-in "kernel" service.
KERNEL_SERVICE_METHODS = frozenset({"collect_metrics", "plugins", "resolve_service", "services"})


class ServiceProxy:
    """Calls ``method(*args, **kwargs)`` on whichever plugin provides ``service``."""

    def __init__(self, directory: RayServiceDirectory, service: str) -> None:
        self._directory = directory
        self._service = service

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if "caller" in kwargs:
                # The hub says who is calling; a plugin may not claim to be another.
                raise TypeError("`caller` is filled in by the hub and cannot be passed")
            return await self._directory.call(self._service, method, args, kwargs)

        return call


class KernelProxy:
    """The built-in ``kernel`` service: a few read-only kernel methods."""

    def __getattr__(self, method: str) -> Any:
        if method not in KERNEL_SERVICE_METHODS:
            raise AttributeError(f"the kernel service has no method {method!r}")

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await getattr(get_kernel(), method).remote(*args, **kwargs)

        return call


class RayServiceDirectory:
    """ServiceDirectory over the kernel's registry and plugin host actors."""

    def __init__(self, caller: str) -> None:
        self.caller = caller
        self._providers: dict[str, str] = {}

    def get(self, name: str) -> Any:
        if name == "kernel":
            return KernelProxy()
        return ServiceProxy(self, name)

    async def names(self) -> list[str]:
        return sorted(await get_kernel().services.remote())

    async def _provider(self, service: str, refresh: bool = False) -> Any:
        if refresh or service not in self._providers:
            plugin_id = await get_kernel().resolve_service.remote(service)
            if plugin_id is None:
                raise ServiceUnavailable(
                    f"no running plugin provides service {service!r}",
                    details={"service": service},
                )
            self._providers[service] = plugin_id
        host = get_plugin_host(self._providers[service])
        if host is None:
            raise ServiceUnavailable(
                f"the provider of service {service!r} is not running",
                details={"service": service, "plugin": self._providers[service]},
            )
        return host

    async def call(
        self, service: str, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # One retry after re-resolving: the provider may have been restarted
        # by the kernel since we cached its name.
        for attempt in range(2):
            try:
                host = await self._provider(service, refresh=attempt > 0)
                return await host.call_service.remote(
                    service, method, list(args), kwargs, self.caller
                )
            except (RayActorError, ServiceUnavailable):
                if attempt:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")


class RayEventPublisher:
    """Triggers an event in every plugin that hooked it, in priority order."""

    async def trigger(self, event: str, payload: dict[str, Any]) -> list[Any]:
        handlers: list[tuple[str, int]] = await get_kernel().hooks_for.remote(event)
        results: list[Any] = []
        for plugin_id, _priority in handlers:
            host = get_plugin_host(plugin_id)
            if host is None:
                continue
            results.extend(await host.run_hooks.remote(event, payload))
        return results
