"""The change feed: tails the change log and hands each change to the rooms that want it.

One :class:`ChangeFeed` reads the change log (:class:`~objectos.data.ChangeLog`,
or anything with its ``since``/``latest``) from a cursor, page by page, and
dispatches the entries to *targets* — subscription rooms — by object::

    feed = ChangeFeed(data.change_log, dispatch)        # dispatch(target, entries)
    async with feed:                                      # owns its polling task
        registration = feed.register("room:records:case", ["case"])
        ...
        feed.nudge()                                      # a commit happened: look now

**When it reads.** It polls with exponential backoff while idle (``idle``:
50 ms doubling to 2 s by default) and immediately while it is behind. After-commit
events make it look at once: :meth:`ChangeFeed.nudge`, or wrap the data engine's
hooks in :class:`NudgeOnCommit`. A lost nudge costs latency, never an event.

**Order.** A page is cut into *runs*: consecutive entries that go to the same set
of targets. Runs are dispatched one after the other, each awaited, so a client
subscribed to two objects (two rooms) still sees their changes in server order;
the targets of one run are called concurrently.

**At least once.** The feed's cursor advances past a page only when every target
took it. A dispatch that raises is retried with the whole page after a backoff
(``retry``), so targets see entries again and must drop those at or below their
own cursor (rooms do). After ``max_attempts`` failures the failing target is
unregistered and the feed moves on; a target that raises :class:`TargetGone`
is unregistered at once. An unregistered room that is still alive finds out when
it registers again (rooms do so periodically): :meth:`ChangeFeed.register`
answers ``known=False`` and the room reads what it missed from the log itself.

**Registration horizon.** :meth:`register` returns the *horizon*: every entry
after it will be dispatched to the target, none at or before it will. A room
serves new subscribers from the log up to at least that point, so there is no
gap between what it reads itself and what the feed pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from objectos.data.changelog import ChangeEntry, ChangePage
from objectos.data.hooks import DataHooks

logger = logging.getLogger("objectos.realtime.feed")

#: Data hooks after which the change log has new entries.
WRITE_HOOKS = ("afterInsert", "afterUpdate", "afterDelete")


class ChangeSource(Protocol):
    """What the realtime engines read: :class:`~objectos.data.ChangeLog` fits as is."""

    async def since(
        self, cursor: int = 0, objects: Iterable[str] | None = None, limit: int = 100
    ) -> ChangePage:
        """Entries above ``cursor`` (of ``objects`` only, if given), oldest first."""
        ...

    async def latest(self) -> int:
        """The newest committed server version."""
        ...


_Run = tuple[frozenset[str], list[ChangeEntry]]  # targets, and the entries they all get

Dispatch = Callable[[str, Sequence[ChangeEntry]], Awaitable[None]]
"""``await dispatch(target, entries)``: hand a run of entries to one target (a room)."""


class TargetGone(LookupError):
    """Raised by a dispatch whose target no longer exists: the feed forgets it."""


@dataclass(frozen=True)
class Registration:
    """The answer to :meth:`ChangeFeed.register`.

    ``horizon``: entries above it will be dispatched to the target, entries at or
    below it will not. ``known``: the target was registered already, so it missed
    nothing; ``False`` after a feed restart or a forced unregistration means the
    target must read the log from its own cursor up to ``horizon``.
    """

    horizon: int
    known: bool


class Backoff:
    """Delays that start at ``initial`` and grow by ``factor`` up to ``maximum``."""

    def __init__(self, initial: float = 0.05, maximum: float = 2.0, factor: float = 2.0) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._next = initial

    def next(self) -> float:
        """The delay to wait now; the following one is longer (up to the maximum)."""
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay

    def reset(self) -> None:
        """Start again from ``initial``."""
        self._next = self.initial


class ChangeFeed:
    """Tails a change log and dispatches entries to registered targets (module docstring)."""

    def __init__(
        self,
        log: ChangeSource,
        dispatch: Dispatch,
        *,
        cursor: int | None = None,
        page_size: int = 500,
        idle: Backoff | None = None,
        retry: Backoff | None = None,
        max_attempts: int = 5,
    ) -> None:
        """Create a stopped feed.

        ``cursor``: the server version to start after (default: the log's newest
        at :meth:`start`, i.e. only new changes). ``idle``: polling delays while
        nothing happens; ``retry``: delays after a failed dispatch, which is
        tried ``max_attempts`` times per page before its target is dropped.
        """
        if page_size < 1 or max_attempts < 1:
            raise ValueError("page_size and max_attempts must be at least 1")
        self._log = log
        self._dispatch = dispatch
        self._cursor = cursor
        self._horizon = cursor or 0
        self._page_size = page_size
        self._idle = idle or Backoff()
        self._retry = retry or Backoff(0.1, 5.0)
        self._max_attempts = max_attempts
        self._attempts = 0
        self._behind = False
        self._targets: dict[str, frozenset[str]] = {}
        self._by_object: dict[str, set[str]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.stats = {"polls": 0, "entries": 0, "dispatches": 0, "failures": 0, "dropped": 0}

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Fix the start cursor and start polling; a feed starts once."""
        if self._task is not None or self._stopped:
            raise RuntimeError("a ChangeFeed starts once")
        if self._cursor is None:
            self._cursor = await self._log.latest()
        self._horizon = max(self._horizon, self._cursor)
        self._task = asyncio.create_task(self._run(), name="objectos-change-feed")

    async def stop(self) -> None:
        """Stop polling (a dispatch in progress is cancelled)."""
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> ChangeFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def cursor(self) -> int:
        """The server version up to which every registered target got its entries."""
        return self._cursor or 0

    @property
    def running(self) -> bool:
        """Whether the polling task is alive."""
        return self._task is not None and not self._task.done()

    # -- targets ---------------------------------------------------------------------------

    def register(self, target: str, objects: Iterable[str]) -> Registration:
        """Dispatch entries of ``objects`` to ``target`` from now on (adds to earlier ones)."""
        known = target in self._targets
        wanted = frozenset(objects)
        self._set_objects(target, self._targets.get(target, frozenset()) | wanted)
        self.nudge()
        return Registration(max(self._horizon, self.cursor), known)

    def unregister(self, target: str, objects: Iterable[str] | None = None) -> bool:
        """Stop dispatching ``objects`` (default: all) to ``target``; False if it had none."""
        current = self._targets.get(target)
        if current is None:
            return False
        remaining = frozenset() if objects is None else current - frozenset(objects)
        self._set_objects(target, remaining)
        return True

    def targets(self) -> dict[str, list[str]]:
        """Registered targets and their objects."""
        return {target: sorted(objects) for target, objects in self._targets.items()}

    def _set_objects(self, target: str, objects: frozenset[str]) -> None:
        for name in self._targets.get(target, frozenset()) - objects:
            holders = self._by_object.get(name)
            if holders is not None:
                holders.discard(target)
                if not holders:
                    del self._by_object[name]
        if objects:
            self._targets[target] = objects
            for name in objects:
                self._by_object.setdefault(name, set()).add(target)
        else:
            self._targets.pop(target, None)

    # -- reading ---------------------------------------------------------------------------

    def nudge(self) -> None:
        """Something was committed: poll now instead of waiting out the idle delay."""
        self._wake.set()

    async def poll(self) -> int:
        """Read one page and dispatch it; return how many entries the page held.

        Raises :class:`DispatchFailed` when a target failed and the page will be
        retried (the cursor did not move).
        """
        if self._cursor is None:
            self._cursor = await self._log.latest()
        self.stats["polls"] += 1
        page = await self._log.since(self._cursor, None, self._page_size)
        # From here on a new registration starts after this page: its runs are
        # cut below, against the targets registered at this very moment.
        self._horizon = max(self._horizon, page.cursor)
        failed: dict[str, BaseException] = {}
        for targets, entries in self._runs(page.changes):
            live = [t for t in sorted(targets) if t in self._targets and t not in failed]
            results = await asyncio.gather(
                *(self._dispatch(target, entries) for target in live), return_exceptions=True
            )
            self.stats["dispatches"] += len(live)
            for target, result in zip(live, results, strict=True):
                if isinstance(result, TargetGone):
                    self.unregister(target)
                elif isinstance(result, Exception):
                    failed[target] = result
        if failed:
            self.stats["failures"] += 1
            self._attempts += 1
            if self._attempts < self._max_attempts:
                raise DispatchFailed(failed)
            for target, error in failed.items():
                logger.error(
                    "dropping feed target %s after %d failed dispatches: %r",
                    target,
                    self._attempts,
                    error,
                )
                self.stats["dropped"] += 1
                self.unregister(target)
        self._attempts = 0
        self._cursor = max(self._cursor, page.cursor)
        self._behind = page.has_more
        self.stats["entries"] += len(page.changes)
        return len(page.changes)

    def _runs(self, entries: Sequence[ChangeEntry]) -> list[_Run]:
        runs: list[_Run] = []
        for entry in entries:
            targets = frozenset(self._by_object.get(entry.object, ()))
            if not targets:
                continue  # nobody wants it; runs on either side may merge
            if runs and runs[-1][0] == targets:
                runs[-1][1].append(entry)
            else:
                runs.append((targets, [entry]))
        return runs

    async def _run(self) -> None:
        while True:
            # Cleared before reading: a nudge that lands during the poll is kept.
            self._wake.clear()
            try:
                read = await self.poll()
            except Exception as exc:
                if not isinstance(exc, DispatchFailed):
                    logger.warning("change feed poll failed", exc_info=exc)
                await self._sleep(self._retry.next())
                continue
            self._retry.reset()
            if self._behind:
                continue
            if read:
                self._idle.reset()
            await self._sleep(self._idle.next())

    async def _sleep(self, delay: float) -> None:
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            return
        self._idle.reset()  # woken by a nudge: activity is likely to follow


class DispatchFailed(Exception):
    """Some targets refused a page; it will be dispatched again. ``failures``: target → error."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        super().__init__(f"dispatch failed for {', '.join(sorted(failures))}")
        self.failures = failures


class NudgeOnCommit:
    """Data hooks that nudge a feed after every committed write, around optional inner hooks.

    ``nudge`` may be a plain function (``feed.nudge``) or return an awaitable (an
    actor call). The nudge is sent *before* the inner after-hooks run and is never
    waited for by the write: inner hooks may take their time (a plugin's after-hook
    queue applying backpressure) without delaying realtime delivery. An awaitable
    nudge is awaited in a task this object owns; nudges coalesce: while one is in
    flight, the writes that commit meanwhile cause one more nudge after it, not one
    each. :meth:`close` waits for the nudge in flight (briefly), then closes the inner hooks.
    """

    def __init__(
        self,
        nudge: Callable[[], Any],
        inner: DataHooks | None = None,
        *,
        close_timeout_s: float = 5.0,
    ) -> None:
        self._nudge = nudge
        self._inner = inner
        self._close_timeout_s = close_timeout_s
        self._in_flight: asyncio.Task[None] | None = None
        self._pending = False

    async def run_before(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The inner hooks' before semantics (or the payload unchanged)."""
        if self._inner is None:
            return payload
        return await self._inner.run_before(event, payload)

    async def run_after(self, event: str, payload: dict[str, Any]) -> None:
        """Nudge the feed for writes (without waiting for it), then run the inner after hooks."""
        parts = event.split(".")
        if len(parts) >= 2 and parts[1] in WRITE_HOOKS:
            self._kick()
        if self._inner is not None:
            await self._inner.run_after(event, payload)

    def _kick(self) -> None:
        if self._in_flight is not None and not self._in_flight.done():
            # The nudge in flight may already have been read: send one more after it.
            self._pending = True
            return
        result = self._send()
        if result is not None:
            self._in_flight = asyncio.get_running_loop().create_task(self._follow(result))

    def _send(self) -> Awaitable[Any] | None:
        """Nudge once; the awaitable to wait for, if the nudge returned one."""
        self._pending = False
        try:
            result = self._nudge()
        except Exception as exc:
            # The write is committed; a lost nudge only delays delivery.
            logger.warning("nudging the change feed failed: %r", exc)
            return None
        return result if inspect.isawaitable(result) else None

    async def _follow(self, result: Awaitable[Any]) -> None:
        """Await a nudge in flight, then send the one the writes meanwhile asked for."""
        while True:
            try:
                await result
            except Exception as exc:
                logger.warning("nudging the change feed failed: %r", exc)
            if not self._pending:
                return
            following = self._send()
            if following is None:
                return
            result = following

    async def close(self) -> None:
        """Let the nudge in flight finish (up to ``close_timeout_s``), then close the inner hooks
        if they can be closed (so this wraps them as a drop-in)."""
        if self._in_flight is not None:
            if not self._in_flight.done():
                await asyncio.wait({self._in_flight}, timeout=self._close_timeout_s)
                self._in_flight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._in_flight
            self._in_flight = None
        close = getattr(self._inner, "close", None)
        if close is not None:
            result = close()
            if inspect.isawaitable(result):
                await result


__all__ = [
    "WRITE_HOOKS",
    "Backoff",
    "ChangeFeed",
    "ChangeSource",
    "Dispatch",
    "DispatchFailed",
    "NudgeOnCommit",
    "Registration",
    "TargetGone",
]
