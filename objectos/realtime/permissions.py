"""Record permissions for the realtime engines, answered in memory.

The subscription rooms decide per change and subscriber whether a record may be
seen (:class:`~objectos.realtime.subscriptions.RecordVisibility`), and the Yjs
gateway decides per connection what a user may do with a record's rich-text
field. Both ask :class:`RecordPermissions`, an adapter over the hub's
:class:`~objectos.security.permissions.PermissionEngine` that evaluates the very
rules REST compiles to SQL -- the sharing grants ORed, AND the RLS ``using``
policies that restrict the actor -- against one record held in memory, with the
filter semantics of :mod:`objectos.realtime.matcher`::

    permissions = RecordPermissions(PermissionEngine.from_registry(registry))
    permissions.can_read(actor, "opportunity", record)   # sharing AND RLS, in memory
    permissions.readable_fields(actor, "opportunity")     # field-level security
    await record_field_access(permissions, read_record, actor, "case", "42", "notes")

**Fail closed.** A grant ``controlled_by_parent`` reaches a detail record through
its master record, which is not in memory: it counts only when the actor
reaches *every* master record (then a set master field suffices); otherwise the
record is treated as unreadable. Anything the engine refuses to answer
(``ServiceUnavailable`` after a broken metadata reload) also means no.

:class:`HubRecordPermissions` is the picklable form the gateway and the room
actors are given: the metadata directories, from which each process builds its
own engine on first use (a compiled engine holds SQLAlchemy objects and caches
that are not worth shipping between processes); in a running hub with the
identity store's role directory, like the REST replicas. Once built it follows
the metadata files: every ``reload_check_s`` it compares their
:func:`~objectos.metadata.registry.files_fingerprint` (a ``stat`` per file) with
the one it loaded and reloads the registry when they differ, so tightened
permission sets, RLS, FLS or sharing apply to live subscriptions, record rooms
and record documents without a restart (the engine and the predicate cache
recompile on the registry's version).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from objectos.data.actor import Actor
from objectos.data.filter import ColumnInfo
from objectos.errors import (
    FieldNotAccessible,
    ObjectOSError,
    RecordNotFound,
    ServiceUnavailable,
)
from objectos.metadata.registry import MetadataRegistry, files_fingerprint
from objectos.realtime.matcher import RecordMatcher, compile_matcher
from objectos.realtime.yjs.protocol import Access
from objectos.security.permissions import Action, PermissionEngine
from objectos.security.rls import OPERATION_OF_ACTION, bind_user

logger = logging.getLogger("objectos.realtime.permissions")

Record = Mapping[str, Any]
_Predicate = Callable[[Record], bool]


def _always(record: Record) -> bool:
    return True


def _never(record: Record) -> bool:
    return False


def _field_is_set(name: str) -> _Predicate:
    def predicate(record: Record) -> bool:
        return record.get(name) is not None

    return predicate


def _any_of(predicates: Sequence[_Predicate]) -> _Predicate:
    if not predicates:
        return _never
    if len(predicates) == 1:
        return predicates[0]
    return lambda record: any(p(record) for p in predicates)


def _all_of(predicates: Sequence[_Predicate]) -> _Predicate:
    if not predicates:
        return _always
    if len(predicates) == 1:
        return predicates[0]
    return lambda record: all(p(record) for p in predicates)


class RecordPermissions:
    """Record- and field-level permissions of a :class:`PermissionEngine`, in memory.

    Implements :class:`~objectos.realtime.subscriptions.RecordVisibility`. The
    record predicate of an (actor, object, action) is compiled once and cached
    (bounded), and recompiled when the metadata or the role directory changes.
    """

    def __init__(self, engine: PermissionEngine, *, cache_size: int = 4096) -> None:
        self.engine = engine
        self._cache_size = cache_size
        self._predicates: OrderedDict[tuple[Any, ...], _Predicate] = OrderedDict()

    # -- RecordVisibility ----------------------------------------------------------------

    def can_read(self, actor: Actor, object_name: str, record: Record) -> bool:
        """Whether ``actor`` may read ``record`` (sharing AND RLS, as REST's queries)."""
        return self.allows(actor, object_name, "read", record)

    def readable_fields(self, actor: Actor, object_name: str) -> set[str]:
        """The fields of ``object_name`` ``actor`` may read (system fields included; none
        without read access to the object)."""
        access = self.engine.object_access(actor, object_name)
        return set(access.readable) if access.allows("read") else set()

    # -- more --------------------------------------------------------------------------------

    def can_edit(self, actor: Actor, object_name: str, record: Record) -> bool:
        """Whether ``actor`` may edit ``record`` (object permission, sharing, RLS)."""
        return self.allows(actor, object_name, "edit", record)

    def editable_fields(self, actor: Actor, object_name: str) -> set[str]:
        """The fields of ``object_name`` ``actor`` may write."""
        return set(self.engine.object_access(actor, object_name).editable)

    def allows(self, actor: Actor, object_name: str, action: Action, record: Record) -> bool:
        """Whether ``actor`` may ``action`` (read, edit, delete) this existing record."""
        if action == "create":
            raise ValueError("create has no existing record to evaluate")
        try:
            predicate = self._predicate(actor, object_name, action)
            return predicate(record)
        except ObjectOSError as exc:
            logger.info("no %s of %s for %s: %s", action, object_name, actor.user_id, exc)
            return False

    # -- compilation ---------------------------------------------------------------------

    def _predicate(self, actor: Actor, object_name: str, action: Action) -> _Predicate:
        engine = self.engine
        subject = engine.subject(actor)  # refreshes the engine after a reload
        key = (
            actor,
            object_name,
            action,
            engine.registry.version,
            engine.directory.version,
        )
        found = self._predicates.get(key)
        if found is not None:
            self._predicates.move_to_end(key)
            return found
        predicate = self._compile(actor, subject, object_name, action)
        self._predicates[key] = predicate
        if len(self._predicates) > self._cache_size:
            self._predicates.popitem(last=False)
        return predicate

    def _compile(self, actor: Actor, subject: Any, object_name: str, action: Action) -> _Predicate:
        # Mirrors PermissionEngine._build_condition, with matchers instead of SQL.
        engine = self.engine
        if subject.system:
            return _always
        access = engine.object_access(actor, object_name)
        if not access.allows(action) or subject.user is None:
            return _never
        columns = engine.tables().columns(object_name)
        parts: list[_Predicate] = []
        if not access.all_records(action):
            parts.append(self._sharing(actor, object_name, action, columns))
        rls_skipped = subject.modify_all_data or (action == "read" and subject.view_all_data)
        if not rls_skipped:
            operation = OPERATION_OF_ACTION[action]
            policies = engine.rls.applicable(object_name, operation, engine.holds(subject))
            usings = [policy.using for policy in policies]
            if usings and all(using is not None for using in usings):
                parts.append(
                    _any_of(
                        [
                            self._matcher(bind_user(using, subject.user), columns)
                            for using in usings
                            if using is not None
                        ]
                    )
                )
        return _all_of(parts)

    def _sharing(
        self, actor: Actor, object_name: str, action: Action, columns: Mapping[str, ColumnInfo]
    ) -> _Predicate:
        grants = self.engine.grants(actor, object_name, action)
        if any(grant.kind == "all" for grant in grants):
            return _always
        predicates: list[_Predicate] = []
        for grant in grants:
            if grant.kind == "parent":
                assert grant.parent_field is not None and grant.parent_object is not None
                parent_action: Action = "read" if action == "read" else "edit"
                parent = self.engine.record_condition(actor, grant.parent_object, parent_action)
                if parent is None:  # every master record: a set master field suffices
                    predicates.append(_field_is_set(grant.parent_field))
                # else: the master record would have to be read; fail closed.
                continue
            predicates.append(self._matcher(grant.filter, columns))
        return _any_of(predicates)

    @staticmethod
    def _matcher(where: Any, columns: Mapping[str, ColumnInfo]) -> RecordMatcher:
        return compile_matcher(where, columns)


class HubRecordPermissions:
    """:class:`RecordPermissions` of a hub, built in whichever process uses it.

    Pickles as its configuration -- the metadata directories and, in a running
    hub, the database holding the identity store -- so the gateway can hand it
    to every room actor it activates. Each process builds its own engine on
    first use: with a ``database_url``, :meth:`ready` builds the very engine the
    REST replicas use (:func:`~objectos.security.directory.start_permission_engine`:
    roles of other users from the identity store, refreshed in the background),
    so the role hierarchy and role-targeted sharing rules decide as in REST;
    without one, only the caller's own roles are known (tests, embedded use).

    After :meth:`ready`, a task of this process checks the metadata files every
    ``reload_check_s`` and reloads the registry when they changed (broken files
    are logged and the previous metadata stays, as in REST); :meth:`aclose`
    stops it. The synchronous :attr:`permissions` (no database) does not follow
    the files until :meth:`ready` was awaited.
    """

    def __init__(
        self,
        metadata_dirs: Sequence[str],
        database_url: str | None = None,
        data_dir: str | None = None,
        *,
        reload_check_s: float = 5.0,
    ) -> None:
        self.metadata_dirs = [str(d) for d in metadata_dirs]
        self.database_url = database_url
        self.data_dir = data_dir
        self.reload_check_s = reload_check_s
        self._permissions: RecordPermissions | None = None
        self._hub: Any = None
        self._starting: asyncio.Task[RecordPermissions] | None = None
        self._following: asyncio.Task[None] | None = None
        self._fingerprint: str | None = None  # of the files the registry was loaded from
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "_permissions": None,
            "_hub": None,
            "_starting": None,
            "_following": None,
            "_fingerprint": None,
            "_closed": False,
        }

    async def ready(self) -> RecordPermissions:
        """Build this process's engine (once; concurrent callers share the build).

        A cancelled caller leaves the build running for the others; only a
        build that failed lets the next call try again.
        """
        if self._permissions is not None:
            self._follow()
            return self._permissions
        starting = self._starting
        if starting is None:
            starting = asyncio.get_running_loop().create_task(self._start())
            starting.add_done_callback(self._started)
            self._starting = starting
        return await asyncio.shield(starting)

    def _started(self, task: asyncio.Task[RecordPermissions]) -> None:
        # exception() also marks a failure as retrieved (no "never retrieved" warning).
        failed = task.cancelled() or task.exception() is not None
        if failed and self._starting is task:
            self._starting = None  # the next call tries again

    async def _start(self) -> RecordPermissions:
        # Fingerprinted before loading: a change during the load is reloaded later.
        fingerprint = await asyncio.to_thread(files_fingerprint, self.metadata_dirs)
        registry = await asyncio.to_thread(MetadataRegistry.load, self.metadata_dirs)
        self._fingerprint = fingerprint
        if self.database_url is None:
            engine = PermissionEngine.from_registry(registry)
        else:
            # Imported here: the identity store's SQL is only needed in a running hub.
            from objectos.security.directory import start_permission_engine

            self._hub = await start_permission_engine(
                registry, self.database_url, data_dir=self.data_dir
            )
            engine = self._hub.engine
        self._permissions = RecordPermissions(engine)
        self._follow()
        return self._permissions

    def _follow(self) -> None:
        """Start following the metadata files (once per process, in the running loop)."""
        if self._following is None and self._permissions is not None and not self._closed:
            self._following = asyncio.get_running_loop().create_task(
                self._follow_metadata(self._permissions.engine.registry)
            )

    async def _follow_metadata(self, registry: MetadataRegistry) -> None:
        fingerprint = self._fingerprint
        while True:
            await asyncio.sleep(self.reload_check_s)
            try:
                current = await asyncio.to_thread(registry.files_fingerprint)
            except Exception:
                logger.warning("cannot check the metadata files", exc_info=True)
                continue
            if current == fingerprint:
                continue
            fingerprint = current  # broken files are not re-read until they change again
            try:
                changes = await asyncio.to_thread(registry.reload)
            except Exception:  # keep the metadata we have, as REST does
                logger.warning("metadata reload failed; keeping the previous", exc_info=True)
                continue
            if changes:
                logger.info("record permissions follow the reloaded metadata: %s", changes)

    @property
    def permissions(self) -> RecordPermissions:
        """The adapter over this process's engine.

        Without a database it is built here on first use; with one,
        :meth:`ready` must have been awaited (the role directory loads first).
        """
        if self._permissions is None:
            if self.database_url is not None:
                raise ServiceUnavailable(
                    "record permissions are still loading", details={"service": "permissions"}
                )
            self._fingerprint = files_fingerprint(self.metadata_dirs)
            registry = MetadataRegistry.load(self.metadata_dirs)
            self._permissions = RecordPermissions(PermissionEngine.from_registry(registry))
        return self._permissions

    @property
    def registry(self) -> MetadataRegistry:
        return self.permissions.engine.registry

    def columns(self, object_name: str) -> dict[str, ColumnInfo]:
        """ColumnInfo per field of an object (ObjectNotFound for unknown objects)."""
        return dict(self.permissions.engine.tables().columns(object_name))

    def can_read(self, actor: Actor, object_name: str, record: Record) -> bool:
        return self.permissions.can_read(actor, object_name, record)

    def readable_fields(self, actor: Actor, object_name: str) -> set[str]:
        return self.permissions.readable_fields(actor, object_name)

    async def aclose(self) -> None:
        """Stop following the metadata and the role directory's refresh (if this
        process started them). Safe to call more than once."""
        self._closed = True
        starting = self._starting
        if starting is not None and not starting.done():
            # A build still running would start a role directory after this returned.
            with contextlib.suppress(Exception):
                await asyncio.shield(starting)
        following, self._following = self._following, None
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        hub, self._hub = self._hub, None
        if hub is not None:
            await hub.aclose()


ReadRecord = Callable[[str, str], Awaitable[Record | None]]
"""``await read(object_name, record_id)``: the whole record (read as the system), or None."""


async def record_field_access(
    permissions: RecordPermissions,
    read: ReadRecord,
    actor: Actor,
    object_name: str,
    record_id: str,
    field_name: str,
) -> Access:
    """What ``actor`` may do with the rich-text field ``field_name`` of one record.

    No read permission on the object, the record or the field: refused
    (``PermissionDenied`` / ``RecordNotAccessible`` / ``FieldNotAccessible``);
    an unknown field: ``InvalidField``; a missing record: ``RecordNotFound`` --
    the same answer as an unreadable one would leak that it exists, so both say
    "not found" unless the actor may read the object at all. Readable but not
    editable (object, record or field): read-only. Otherwise read-write.
    """
    engine = permissions.engine
    engine.check_field(object_name, field_name)  # ObjectNotFound / InvalidField
    engine.require(actor, object_name, "read")
    record = await read(object_name, record_id)
    if record is None or not permissions.can_read(actor, object_name, record):
        raise RecordNotFound(
            f"{object_name} record {record_id!r} does not exist or is not readable",
            details={"object": object_name, "id": record_id},
        )
    if field_name not in permissions.readable_fields(actor, object_name):
        raise FieldNotAccessible(
            f"you may not read {object_name}.{field_name}",
            details={"object": object_name, "field": field_name},
        )
    writable = field_name in permissions.editable_fields(actor, object_name) and (
        permissions.can_edit(actor, object_name, record)
    )
    return Access(read=True, write=writable)


__all__ = [
    "HubRecordPermissions",
    "ReadRecord",
    "RecordPermissions",
    "record_field_access",
]
