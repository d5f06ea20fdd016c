"""The in-process event bus: named events, prioritised handlers, data hooks.

Every plugin host holds one :class:`EventBus` for its plugin's handlers; the
kernel's :class:`~objectos.kernel.registry.ServiceRegistry` knows which host has
handlers for which event. Event names are dotted; a subscription may end in a
wildcard, ``"data.*"`` (everything below ``data.``) or ``"*"`` (everything).

Three ways to fire an event, for three kinds of hooks:

- :meth:`EventBus.trigger` runs the handlers one after another and returns their
  results; the first exception stops it and propagates.
- :meth:`EventBus.run_before` is for before-hooks of the data engine: each
  handler sees the payload as the previous one left it and may return a new
  dict to replace it; an exception vetoes the operation and reaches the client
  unchanged (a ``ValidationError`` stays a 400).
- :meth:`EventBus.run_after` is for after-hooks: the write is committed, so every
  handler runs even if some fail; the errors are logged and returned.

Data hook events are named ``data.<hook>.<object>`` (:func:`data_event`), so a
handler on ``"data.beforeInsert.*"`` sees inserts into every object.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("objectos.kernel.events")

#: Data hooks of PROTOCOL.md (@objectstack/spec ``HookEvent``), in operation order.
DATA_HOOK_EVENTS: tuple[str, ...] = (
    "beforeFind",
    "afterFind",
    "beforeInsert",
    "afterInsert",
    "beforeUpdate",
    "afterUpdate",
    "beforeDelete",
    "afterDelete",
    "beforeUpdateMany",
    "afterUpdateMany",
    "beforeDeleteMany",
    "afterDeleteMany",
)
BEFORE_HOOKS: tuple[str, ...] = tuple(h for h in DATA_HOOK_EVENTS if h.startswith("before"))
AFTER_HOOKS: tuple[str, ...] = tuple(h for h in DATA_HOOK_EVENTS if h.startswith("after"))

#: The owner under which handlers registered without one are counted in :meth:`EventBus.stats`.
ANONYMOUS_OWNER = "anonymous"

Handler = Callable[[Any], Any]
"""A handler takes the payload; it may be a plain function or a coroutine function."""


def data_event(hook: str, object_name: str) -> str:
    """The event name of a data hook on an object, e.g. ``data.beforeInsert.account``.

    ``object_name`` may be ``"*"`` to get the pattern for every object.
    Raises ValueError for a hook name that is not in :data:`DATA_HOOK_EVENTS`.
    """
    if hook not in DATA_HOOK_EVENTS:
        raise ValueError(
            f"unknown data hook {hook!r}; expected one of {', '.join(DATA_HOOK_EVENTS)}"
        )
    return f"data.{hook}.{object_name}"


def check_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a valid subscription; raise ValueError otherwise.

    A pattern is an event name, ``"*"``, or a dotted prefix followed by ``".*"``.
    """
    body = pattern[:-2] if pattern.endswith(".*") else pattern
    if pattern != "*" and (not body or "*" in body):
        raise ValueError(
            f"invalid event pattern {pattern!r}: use a name, 'prefix.*' or '*' "
            "(a wildcard is only allowed as the last part)"
        )
    return pattern


def event_matches(pattern: str, event: str) -> bool:
    """Whether a subscription ``pattern`` covers the concrete ``event`` name.

    ``"*"`` covers everything; ``"data.*"`` covers every name that starts with
    ``"data."``, however deep (``"data.beforeInsert.account"``), but not ``"data"``.
    """
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event.startswith(pattern[:-1])
    return pattern == event


@dataclass(frozen=True, eq=False)
class Subscription:
    """One handler on one event pattern; hand it back to :meth:`EventBus.off`."""

    event: str
    handler: Handler
    priority: int
    owner: str | None
    timeout_s: float | None
    sequence: int

    @property
    def name(self) -> str:
        """A readable name of the handler for logs and errors."""
        return getattr(self.handler, "__qualname__", None) or repr(self.handler)


@dataclass
class HandlerStats:
    """Calls, errors and latency of the handlers of one owner for one event."""

    calls: int = 0
    errors: int = 0
    timeouts: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        """JSON-friendly form."""
        return {
            "calls": self.calls,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "total_s": self.total_s,
            "max_s": self.max_s,
        }


class EventBus:
    """Handlers by event pattern, run in priority order.

    Lower ``priority`` runs first; equal priorities run in registration order.
    """

    def __init__(
        self,
        *,
        default_timeout_s: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Create an empty bus.

        ``default_timeout_s`` limits each async handler that sets no timeout of
        its own (None: no limit); ``clock`` measures handler latency.
        """
        self.default_timeout_s = default_timeout_s
        self._clock = clock
        self._subscriptions: list[Subscription] = []
        self._sequence = itertools.count()
        self._stats: dict[tuple[str, str], HandlerStats] = {}

    def on(
        self,
        event: str,
        handler: Handler,
        *,
        priority: int = 100,
        owner: str | None = None,
        timeout_s: float | None = None,
    ) -> Subscription:
        """Run ``handler(payload)`` for every event that ``event`` (a pattern) matches.

        ``owner`` is the plugin id, for :meth:`off_owner` and :meth:`stats`;
        ``timeout_s`` overrides the bus's default timeout for this handler.
        """
        subscription = Subscription(
            event=check_pattern(event),
            handler=handler,
            priority=priority,
            owner=owner,
            timeout_s=timeout_s,
            sequence=next(self._sequence),
        )
        self._subscriptions.append(subscription)
        return subscription

    def off(self, subscription: Subscription) -> bool:
        """Remove one subscription; False if it was not (or no longer) registered."""
        for index, candidate in enumerate(self._subscriptions):
            if candidate is subscription:
                del self._subscriptions[index]
                return True
        return False

    def off_owner(self, owner: str) -> int:
        """Remove every handler of ``owner`` (a plugin that stops); returns how many."""
        before = len(self._subscriptions)
        self._subscriptions = [s for s in self._subscriptions if s.owner != owner]
        return before - len(self._subscriptions)

    def handlers(self, event: str = "*") -> list[Subscription]:
        """The subscriptions that run for ``event``, in the order they run.

        ``"*"`` (the default) lists every subscription, since no concrete event
        is named ``*``.
        """
        if event == "*":
            matching = list(self._subscriptions)
        else:
            matching = [s for s in self._subscriptions if event_matches(s.event, event)]
        return sorted(matching, key=lambda s: (s.priority, s.sequence))

    async def trigger(self, event: str, payload: Any) -> list[Any]:
        """Run every handler of ``event`` in order; return their results.

        The first handler that raises stops the run, and its exception propagates.
        """
        # A handler may subscribe or unsubscribe others; this run keeps the list it started with.
        return [await self._call(s, event, payload) for s in self.handlers(event)]

    async def run_before(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Before-hook semantics: each handler may replace the payload; raising vetoes.

        A handler returns a dict to replace the payload, or None to keep it
        (changing the dict in place also counts). Any other return value is a
        bug in the handler and raises TypeError. An exception propagates
        unchanged and later handlers do not run.
        """
        for subscription in self.handlers(event):
            result = await self._call(subscription, event, payload)
            if result is None:
                continue
            if not isinstance(result, dict):
                raise TypeError(
                    f"before-hook {subscription.name} for {event} returned "
                    f"{type(result).__name__}; expected a dict or None"
                )
            payload = result
        return payload

    async def run_after(self, event: str, payload: Any) -> list[Exception]:
        """After-hook semantics: every handler runs; errors are logged and returned."""
        errors: list[Exception] = []
        for subscription in self.handlers(event):
            try:
                await self._call(subscription, event, payload)
            except Exception as exc:
                logger.warning(
                    "after-hook %s of %s for %s failed",
                    subscription.name,
                    subscription.owner or ANONYMOUS_OWNER,
                    event,
                    exc_info=exc,
                )
                errors.append(exc)
        return errors

    def stats(self) -> dict[str, dict[str, dict[str, float | int]]]:
        """``{event: {owner: {calls, errors, timeouts, total_s, max_s}}}``, JSON-friendly.

        ``event`` is the concrete event name that was fired; handlers without an
        owner are counted under :data:`ANONYMOUS_OWNER`.
        """
        result: dict[str, dict[str, dict[str, float | int]]] = {}
        for (event, owner), stats in sorted(self._stats.items()):
            result.setdefault(event, {})[owner] = stats.to_dict()
        return result

    async def _call(self, subscription: Subscription, event: str, payload: Any) -> Any:
        key = (event, subscription.owner or ANONYMOUS_OWNER)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = HandlerStats()
        timeout = (
            subscription.timeout_s if subscription.timeout_s is not None else self.default_timeout_s
        )
        started = self._clock()
        try:
            result = subscription.handler(payload)
            if inspect.isawaitable(result):
                scope = asyncio.timeout(timeout)
                try:
                    async with scope:
                        result = await result
                except TimeoutError as exc:
                    if not scope.expired():
                        raise  # the handler's own TimeoutError, not ours
                    stats.timeouts += 1
                    raise TimeoutError(
                        f"handler {subscription.name} of "
                        f"{subscription.owner or ANONYMOUS_OWNER} for {event} "
                        f"timed out after {timeout}s"
                    ) from exc
            return result
        except Exception:
            stats.errors += 1
            raise
        finally:
            elapsed = self._clock() - started
            stats.calls += 1
            stats.total_s += elapsed
            stats.max_s = max(stats.max_s, elapsed)
