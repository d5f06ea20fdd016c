"""The role directory of a running hub: who holds which role, read from the user store.

The permission engine asks a :class:`~objectos.security.sharing.RoleDirectory`
*synchronously* whose records sit below a manager in the role hierarchy and
who the users of a role-targeted sharing rule are. :class:`StoreRoleDirectory`
answers from a copy in memory of ``user id -> roles``, loaded from the
identity store (``_auth_users``, shared by every replica and process) and
kept fresh in the background:

- every ``refresh_interval_s`` it reads the store's change marker (one
  primary-key read, :meth:`~objectos.security.store.SQLUserStore.role_marker`)
  and reloads the memberships only when the marker moved;
- when this process itself adds an account or changes roles (an
  :class:`~objectos.security.identity.AuthEvent` handed to
  :meth:`StoreRoleDirectory.on_auth_event`), it reloads before the call that
  made the change returns, so this process never reads its own write stale.

``version`` grows whenever the memberships it serves change (not on every
poll), so the permission engine drops its compiled predicates only then. A
change made by another process shows within ``refresh_interval_s`` plus a
read. If the store cannot be read, the last copy stays in use and the next
tick retries.

Other processes (the realtime gateway, room actors) build the very engine
the HTTP replicas use with :func:`start_permission_engine`::

    permissions = await start_permission_engine(registry, hub_database_url)
    permissions.engine.record_condition(actor, "opportunity", "read")
    ...
    await permissions.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.metadata.registry import MetadataRegistry
from objectos.security.identity import AuthEvent
from objectos.security.permissions import PermissionEngine
from objectos.security.store import AuthDatabase

logger = logging.getLogger("objectos.security.directory")

#: Auth events after which this process's directory reloads at once.
MEMBERSHIP_EVENTS = frozenset(
    {
        "user.signed_up",
        "user.created",
        "user.provisioned",
        "user.roles_changed",
        "service_account.created",
    }
)
#: Seconds between two looks at the change marker (a change elsewhere shows this late).
DEFAULT_REFRESH_INTERVAL_S = 2.0


@runtime_checkable
class RoleSource(Protocol):
    """Where memberships come from (:class:`~objectos.security.store.SQLUserStore`)."""

    async def role_marker(self) -> int:
        """A number that changes whenever a membership may have changed."""
        ...

    async def role_memberships(self) -> Mapping[str, tuple[str, ...]]:
        """user id -> roles, for every user holding a role."""
        ...


class StoreRoleDirectory:
    """A :class:`~objectos.security.sharing.RoleDirectory` over a :class:`RoleSource`.

    Reads (:meth:`users_with_role`, :meth:`roles_of`, :attr:`version`) never
    wait: they answer from the last loaded copy. Call :meth:`start` once in
    the event loop that should own the refresh task (it loads the first copy
    and raises if it cannot), and :meth:`aclose` when done.
    """

    def __init__(
        self,
        source: RoleSource,
        *,
        refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
    ) -> None:
        if refresh_interval_s <= 0:
            raise ValueError("refresh_interval_s must be positive")
        self._source = source
        self.refresh_interval_s = refresh_interval_s
        self._roles: dict[str, frozenset[str]] = {}
        self._holders: dict[str, frozenset[str]] = {}
        self._version = 0
        self._marker: int | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.loads = 0
        self.failures = 0

    # -- RoleDirectory ----------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Grows each time the memberships served change."""
        return self._version

    def users_with_role(self, role: str) -> frozenset[str]:
        """Ids of the users holding ``role``."""
        return self._holders.get(role, frozenset())

    def roles_of(self, user_id: str) -> frozenset[str]:
        """The roles ``user_id`` holds (empty for unknown users)."""
        return self._roles.get(user_id, frozenset())

    @property
    def started(self) -> bool:
        """Whether the first copy is loaded and the refresh task runs."""
        return self._task is not None and not self._task.done()

    # -- keeping fresh ----------------------------------------------------------------------

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload if the store's marker moved (always, with ``force``).

        Returns whether the memberships changed. Store errors propagate.
        """
        async with self._lock:
            # The marker first: a change landing between the two reads is in the
            # memberships, and the next look sees a marker newer than ours.
            marker = await self._source.role_marker()
            if not force and marker == self._marker:
                return False
            memberships = await self._source.role_memberships()
            self._marker = marker
            self.loads += 1
            roles = {user: frozenset(held) for user, held in memberships.items() if held}
            if roles == self._roles:
                return False
            holders: dict[str, set[str]] = {}
            for user, held in roles.items():
                for role in held:
                    holders.setdefault(role, set()).add(user)
            self._roles = roles
            self._holders = {role: frozenset(users) for role, users in holders.items()}
            self._version += 1
            logger.debug("role directory v%d: %d users", self._version, len(roles))
            return True

    async def start(self) -> None:
        """Load the first copy (errors propagate) and start the refresh task; idempotent."""
        if self.started:
            return
        await self.refresh(force=True)
        self._task = asyncio.create_task(self._run(), name="role-directory-refresh")

    def changed(self) -> None:
        """Ask the refresh task to reload now (something changed memberships)."""
        self._wake.set()

    async def on_auth_event(self, event: AuthEvent) -> None:
        """An identity service's ``on_event``: reload at once after a membership change.

        Awaited by the service before the call that made the change returns.
        Never raises: if the reload fails, the refresh task retries.
        """
        if event.type not in MEMBERSHIP_EVENTS:
            return
        try:
            await self.refresh(force=True)
        except Exception:
            self.failures += 1
            logger.warning("role directory reload failed; retrying soon", exc_info=True)
            self.changed()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_interval_s)
            forced = self._wake.is_set()
            self._wake.clear()
            try:
                await self.refresh(force=forced)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Keep serving the last copy; a database that is down fails the data
                # path anyway, and it comes back here on the next tick.
                self.failures += 1
                logger.warning("role directory refresh failed", exc_info=True)

    async def aclose(self) -> None:
        """Stop the refresh task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class HubPermissions:
    """A permission engine over the hub's metadata and the identity store's roles."""

    engine: PermissionEngine
    directory: StoreRoleDirectory
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    async def aclose(self) -> None:
        """Stop the directory's refresh task and release what was opened for it."""
        while self._closers:
            await self._closers.pop()()


async def start_permission_engine(
    registry: MetadataRegistry,
    database: str | sa.URL | AsyncEngine | AuthDatabase,
    *,
    data_dir: str | None = None,
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S,
) -> HubPermissions:
    """The permission engine every process of a hub shares the decisions of.

    ``registry`` holds the hub's metadata (``*.permission.yml`` included; the
    engine recompiles when it reloads). ``database`` is the hub's database
    (``manifest.database.url``; ``{dataDir}`` is replaced by ``data_dir``),
    an engine on it (left open), or an :class:`AuthDatabase` (left open). The
    role directory is loaded before this returns (errors propagate) and then
    refreshes in the background of the calling event loop; ``await
    result.aclose()`` stops it. Raises :class:`~objectos.errors.ManifestError`
    when the security metadata does not fit the objects.
    """
    closers: list[Callable[[], Awaitable[None]]] = []
    if isinstance(database, AuthDatabase):
        db = database
    else:
        if isinstance(database, str) and data_dir is not None:
            database = database.replace("{dataDir}", data_dir)
        db = AuthDatabase(database)
        closers.append(db.aclose)
    directory = StoreRoleDirectory(db.users, refresh_interval_s=refresh_interval_s)
    try:
        await directory.start()
        closers.append(directory.aclose)
        engine = PermissionEngine.from_registry(registry, directory)
    except BaseException:
        for close in reversed(closers):
            await close()
        raise
    return HubPermissions(engine, directory, closers)


__all__ = [
    "DEFAULT_REFRESH_INTERVAL_S",
    "MEMBERSHIP_EVENTS",
    "HubPermissions",
    "RoleSource",
    "StoreRoleDirectory",
    "start_permission_engine",
]
