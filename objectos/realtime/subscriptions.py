"""Record subscriptions: the engine behind Socket.IO ``subscribe`` and the SSE stream.

A :class:`SubscriptionRoom` holds the subscribers of some objects (a Ray room
actor ``room:records:<object>`` holds one object's; the SSE endpoint one room
for all). Each subscriber is one ``subscribe`` of one connection: which
objects, which events, a filter, and the :class:`~objectos.data.Actor` it acts
for. The room receives committed changes (:class:`~objectos.data.ChangeEntry`,
pushed by the :class:`~objectos.realtime.feed.ChangeFeed`) and turns each into
the events every subscriber may see, batched per gateway::

    room = SubscriptionRoom("room:records:case", log=data.change_log,
                            visibility=permissions, deliver=deliver, objects=["case"])
    spec = SubscriptionSpec.parse(payload)              # the client's subscribe
    cursor = await room.subscribe(spec, connection_id=sid, gateway="gateway:n1", actor=alice)
    await room.push(entries)                            # called by the feed

**What a subscriber gets.** For a change of an object it subscribed to, whose
record it may read (:meth:`RecordVisibility.can_read`; for a delete, of the
record as it was before) and which matches its filter (evaluated in memory,
:mod:`objectos.realtime.matcher`): ``record.created|updated|deleted`` and, for
an update, one ``field.changed`` per changed field — only events it asked for
(``record.*`` means all three record events). ``record`` holds only the fields
it may read (:meth:`RecordVisibility.readable_fields`), ``changedFields`` only
those too, and an update that changed nothing it may read is not sent at all.
The filter may only name readable fields (anything else is an unknown field,
as in REST). Readable fields are looked up once, at subscribe.

**Catch-up without gap or duplicate.** Every subscriber has a cursor, the
server version up to which it has been served. ``subscribe`` with ``since``
replays the change log from there (what a reconnecting client missed) while
changes pushed meanwhile wait in the subscriber's backlog; then the backlog
is drained and the subscriber goes live, all without yielding in between. A
change reaches a subscriber only if its version is above the subscriber's
cursor, which then moves to it: pushes repeated by an at-least-once feed are
dropped, and replay and live delivery meet exactly at the seam. Without
``since`` the subscriber starts at the log's newest version. The acknowledged
cursor is where live delivery starts. Order is server order per room; a feed
dispatches runs of changes in order, so live events of several rooms arrive in
server order too, but the *replays* of several rooms for one multi-object
subscription run independently (one room for all objects, as the SSE stream
uses, has no such seam).

**Delivery.** All events of one push (or one replay page) for one gateway go in
one :class:`EventBatch` through ``deliver(gateway, batch)``; deliveries of a
room happen one at a time, in the order the events were produced. A gateway
that is gone (:class:`GatewayGone`) loses its subscribers here; one that fails
``delivery_attempts`` times in a row too (logged), since its connections
would otherwise silently miss events.

Known gaps: a record that stops matching a filter, or becomes unreadable,
produces no event (the change log keeps no pre-image of updates); permission
changes apply to subscriptions made after them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from objectos.data.actor import Actor
from objectos.data.changelog import ChangeEntry
from objectos.data.filter import ColumnInfo, normalize_filter
from objectos.errors import FieldError, InvalidField, ObjectNotFound
from objectos.realtime.feed import ChangeSource, Registration
from objectos.realtime.matcher import RecordMatcher, compile_matcher

logger = logging.getLogger("objectos.realtime.subscriptions")

RECORD_CREATED = "record.created"
RECORD_UPDATED = "record.updated"
RECORD_DELETED = "record.deleted"
FIELD_CHANGED = "field.changed"
RECORD_ANY = "record.*"
#: Event names a subscription may ask for (PROTOCOL.md, Socket.IO ``/realtime``).
EVENT_NAMES = (RECORD_CREATED, RECORD_UPDATED, RECORD_DELETED, FIELD_CHANGED, RECORD_ANY)
_RECORD_EVENTS = frozenset({RECORD_CREATED, RECORD_UPDATED, RECORD_DELETED})
_EVENT_OF_OPERATION = {"create": RECORD_CREATED, "update": RECORD_UPDATED, "delete": RECORD_DELETED}

#: The Socket.IO event name under which gateways emit record events.
SOCKET_EVENT = "event"

MAX_OBJECTS = 50
"""Most objects one subscription may name."""
MAX_ID_LENGTH = 128
"""Longest subscription id (and connection id) accepted."""

_OBJECT_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_SPEC_KEYS = frozenset({"subscriptionId", "objects", "events", "filter", "since"})


class RecordVisibility(Protocol):
    """Record- and field-level read permission, as the permission engine answers it.

    Both are called synchronously on the delivery path: answer from compiled
    rules, not from the database.
    """

    def can_read(self, actor: Actor, object_name: str, record: Mapping[str, Any]) -> bool:
        """Whether ``actor`` may read ``record`` (a full record of ``object_name``)."""
        ...

    def readable_fields(self, actor: Actor, object_name: str) -> set[str]:
        """The fields of ``object_name`` that ``actor`` may read."""
        ...


# --- the subscribe request ---------------------------------------------------------------------


def _bad(field_name: str, reason: str, **details: Any) -> InvalidField:
    return InvalidField(
        f"invalid subscription: {field_name} {reason}",
        details={"field": field_name, "reason": reason, **details},
        field_errors=[FieldError(field_name, "invalid_field", f"{field_name} {reason}")],
    )


def parse_cursor(value: Any, field_name: str = "since") -> int | None:
    """A cursor (server version) from JSON or text: None, or an integer >= 0."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 19:
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63:
        return value
    raise _bad(field_name, "must be a cursor (a server version: an integer >= 0)")


@dataclass(frozen=True)
class SubscriptionSpec:
    """One checked ``subscribe``: ``{subscriptionId, objects[], events[], filter, since?}``.

    ``events`` is expanded (``record.*`` becomes the three record events; it is
    also the default) and ``filter`` normalized; both parse errors and unknown keys are
    :class:`~objectos.errors.InvalidField` (or InvalidFilter) naming the field.
    """

    subscription_id: str
    objects: tuple[str, ...]
    events: frozenset[str]
    filter: dict[str, Any] | None = None
    since: int | None = None

    @classmethod
    def parse(cls, payload: Any) -> SubscriptionSpec:
        """Check a client's subscribe payload (any JSON value) and build the spec."""
        if not isinstance(payload, Mapping):
            raise _bad("subscription", "must be an object")
        unknown = sorted(str(k) for k in payload if k not in _SPEC_KEYS)
        if unknown:
            raise _bad(unknown[0], "is not a subscription key", unknown=unknown)
        subscription_id = payload.get("subscriptionId")
        if not isinstance(subscription_id, str) or not 0 < len(subscription_id) <= MAX_ID_LENGTH:
            raise _bad("subscriptionId", f"must be text of 1 to {MAX_ID_LENGTH} characters")
        objects = payload.get("objects")
        if isinstance(objects, str):
            objects = [objects]
        if not isinstance(objects, list | tuple) or not objects:
            raise _bad("objects", "must be a non-empty array of object names")
        if len(objects) > MAX_OBJECTS:
            raise _bad("objects", f"may name at most {MAX_OBJECTS} objects")
        for name in objects:
            if not isinstance(name, str) or not _OBJECT_NAME.fullmatch(name):
                raise _bad("objects", f"holds {name!r}, which is not an object name")
        events = payload.get("events", [RECORD_ANY])
        if isinstance(events, str):
            events = [events]
        if not isinstance(events, list | tuple) or not events:
            raise _bad("events", f"must be a non-empty array of {', '.join(EVENT_NAMES)}")
        expanded: set[str] = set()
        for name in events:
            if name not in EVENT_NAMES:
                raise _bad("events", f"holds {name!r}; expected {', '.join(EVENT_NAMES)}")
            expanded |= _RECORD_EVENTS if name == RECORD_ANY else {name}
        return cls(
            subscription_id=subscription_id,
            objects=tuple(dict.fromkeys(objects)),
            events=frozenset(expanded),
            filter=normalize_filter(payload.get("filter")),
            since=parse_cursor(payload.get("since")),
        )

    def for_objects(self, objects: Iterable[str]) -> SubscriptionSpec:
        """The same subscription narrowed to ``objects`` (one room's share of it)."""
        wanted = set(objects)
        return replace(self, objects=tuple(o for o in self.objects if o in wanted))

    def to_dict(self) -> dict[str, Any]:
        """The protocol form again (events sorted, filter normalized)."""
        return {
            "subscriptionId": self.subscription_id,
            "objects": list(self.objects),
            "events": sorted(self.events),
            "filter": self.filter,
            "since": self.since,
        }


# --- what rooms hand to gateways ---------------------------------------------------------------


@dataclass(frozen=True)
class RecordEvent:
    """One ``event`` message of PROTOCOL.md for one subscription.

    ``version`` is the record's version, ``cursor`` the server version of the
    change (what a client sends back as ``since``); events of one change share
    the cursor and are always delivered together, in one batch.
    """

    subscription_id: str
    event_name: str
    object: str
    record_id: str
    record: dict[str, Any]
    changed_fields: tuple[str, ...]
    version: int
    cursor: int
    timestamp: str

    def to_dict(self) -> dict[str, Any]:
        """The protocol payload: ``{subscriptionId, eventName, object, recordId, record,
        changedFields, version, cursor, timestamp}``."""
        return {
            "subscriptionId": self.subscription_id,
            "eventName": self.event_name,
            "object": self.object,
            "recordId": self.record_id,
            "record": dict(self.record),
            "changedFields": list(self.changed_fields),
            "version": self.version,
            "cursor": self.cursor,
            "timestamp": self.timestamp,
        }


@dataclass(frozen=True)
class Delivery:
    """The events for one connection, in order."""

    connection_id: str
    events: tuple[RecordEvent, ...]


@dataclass(frozen=True)
class EventBatch:
    """What a room hands one gateway in one ``deliver(gateway, batch)`` call.

    ``room`` names the sender, ``deliveries`` hold the events per connection
    (each connection at most once) and ``cursor`` is the highest server version
    in the batch. A gateway emits, per delivery and in order, each event as the
    Socket.IO ``event`` message to that connection — :meth:`messages` lists
    exactly those ``(connection_id, event_name, payload)`` triples. Batches are
    plain frozen dataclasses, so they pickle across Ray.
    """

    room: str
    deliveries: tuple[Delivery, ...]
    cursor: int

    def messages(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(connection_id, "event", payload)`` for every event, in delivery order."""
        for delivery in self.deliveries:
            for event in delivery.events:
                yield delivery.connection_id, SOCKET_EVENT, event.to_dict()

    @property
    def event_count(self) -> int:
        """How many events the batch carries."""
        return sum(len(d.events) for d in self.deliveries)


Deliver = Callable[[str, Any], Awaitable[None]]
"""``await deliver(gateway_name, batch)``: hand a batch to the gateway holding its connections."""


class GatewayGone(LookupError):
    """Raised by a ``deliver`` whose gateway no longer exists: its subscribers are dropped."""


# --- the room ----------------------------------------------------------------------------------


@dataclass(eq=False)
class _Subscriber:
    connection_id: str
    subscription_id: str
    gateway: str
    actor: Actor
    objects: frozenset[str]
    events: frozenset[str]
    matchers: dict[str, RecordMatcher]
    readable: dict[str, frozenset[str]]
    cursor: int = 0
    live: bool = False
    backlog: list[ChangeEntry] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.connection_id, self.subscription_id)


class _Change:
    """One change as every subscriber sees it, so shared work is done once per change."""

    __slots__ = ("entry", "event_name", "timestamp", "views")

    def __init__(self, entry: ChangeEntry) -> None:
        self.entry = entry
        self.event_name = _EVENT_OF_OPERATION.get(entry.operation)
        self.timestamp = entry.at.isoformat().replace("+00:00", "Z")
        self.views: dict[frozenset[str], tuple[dict[str, Any], tuple[str, ...]]] = {}

    def view(self, readable: frozenset[str]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The record and changed fields restricted to ``readable`` (shared, never mutated)."""
        view = self.views.get(readable)
        if view is None:
            record = self.entry.record or {}
            view = (
                {k: v for k, v in record.items() if k in readable},
                tuple(f for f in self.entry.changed_fields if f in readable),
            )
            self.views[readable] = view
        return view


def compile_filters(
    spec: SubscriptionSpec,
    actor: Actor,
    visibility: RecordVisibility,
    columns: Mapping[str, Mapping[str, ColumnInfo]] | None,
    *,
    field_sets: dict[frozenset[str], frozenset[str]] | None = None,
) -> tuple[dict[str, RecordMatcher], dict[str, frozenset[str]]]:
    """The filter of ``spec`` compiled per object, and the fields ``actor`` may read.

    Raises what a refused subscription answers: ObjectNotFound (an object not in
    ``columns``), InvalidFilter / InvalidField (a bad filter, or one naming a field the
    actor may not read). A gateway calls it before asking any room, so a subscription
    that one room would refuse touches none; rooms call it again for themselves.
    ``field_sets`` interns the readable sets: subscribers with the same fields then
    share one view of each change.
    """
    matchers: dict[str, RecordMatcher] = {}
    readable: dict[str, frozenset[str]] = {}
    for name in sorted(frozenset(spec.objects)):
        typed = None
        if columns is not None:
            known = columns.get(name)
            if known is None:
                raise ObjectNotFound(f"object {name!r} does not exist", details={"object": name})
            typed = known
        fields = frozenset(visibility.readable_fields(actor, name))
        if field_sets is not None:
            fields = field_sets.setdefault(fields, fields)
        readable[name] = fields
        if typed is not None:
            typed = {k: v for k, v in typed.items() if k in fields}
        matcher = compile_matcher(spec.filter, typed)
        if typed is None and not matcher.fields <= fields:
            # Untyped: still refuse what the actor may not read, as REST does.
            hidden = sorted(matcher.fields - fields)
            raise InvalidField(
                f"Unknown field {hidden[0]!r} in filter",
                details={"field": hidden[0], "reason": "unknown field", "usage": "filter"},
            )
        matchers[name] = matcher
    return matchers, readable


Register = Callable[[frozenset[str]], Awaitable[Registration]]
"""``await register(objects)``: make the feed push changes of ``objects`` to this room."""


class SubscriptionRoom:
    """Subscribers of some objects and the events they get (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        log: ChangeSource,
        visibility: RecordVisibility,
        deliver: Deliver,
        objects: Iterable[str] | None = None,
        columns: Mapping[str, Mapping[str, ColumnInfo]] | None = None,
        register: Register | None = None,
        page_size: int = 500,
        delivery_attempts: int = 3,
        retry_delay_s: float = 0.05,
    ) -> None:
        """Create an empty room.

        ``objects``: the objects it serves (None: any). ``columns``: ColumnInfo
        per field per object (``DataEngine.tables.columns``): filters are then
        checked and compared by type, and an object missing from it is
        ObjectNotFound. ``register``: called before a subscriber's replay so
        that the feed pushes its objects here (see :meth:`attach`); without it
        the caller wires the feed. ``log``: where replays read from.
        """
        self.name = name
        self._log = log
        self._visibility = visibility
        self._deliver = deliver
        self._objects = frozenset(objects) if objects is not None else None
        self._columns = columns
        self._register = register
        self._page_size = page_size
        self._delivery_attempts = max(1, delivery_attempts)
        self._retry_delay_s = retry_delay_s
        self._subscribers: dict[tuple[str, str], _Subscriber] = {}
        self._field_sets: dict[frozenset[str], frozenset[str]] = {}
        self._attached: frozenset[str] = frozenset()
        self._cursor: int | None = None
        self._ingest_lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()
        self.stats = {"pushed": 0, "events": 0, "batches": 0, "replayed": 0, "dropped": 0}

    # -- state ---------------------------------------------------------------------------

    @property
    def cursor(self) -> int | None:
        """The newest server version pushed to (or caught up by) this room; None before any."""
        return self._cursor

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions the room holds."""
        return len(self._subscribers)

    @property
    def wanted_objects(self) -> frozenset[str]:
        """The objects some subscriber wants (what the feed must push here)."""
        if self._objects is not None:
            return self._objects
        wanted: set[str] = set()
        for subscriber in self._subscribers.values():
            wanted |= subscriber.objects
        return frozenset(wanted)

    def subscriptions(self) -> list[dict[str, Any]]:
        """The subscriptions held, for operators: connection, subscription, objects, cursor."""
        return [
            {
                "connectionId": s.connection_id,
                "subscriptionId": s.subscription_id,
                "gateway": s.gateway,
                "userId": s.actor.user_id,
                "objects": sorted(s.objects),
                "events": sorted(s.events),
                "cursor": s.cursor,
                "live": s.live,
            }
            for s in self._subscribers.values()
        ]

    # -- subscribing -----------------------------------------------------------------------

    async def subscribe(
        self, spec: SubscriptionSpec, *, connection_id: str, gateway: str, actor: Actor
    ) -> int:
        """Add (or replace) a subscription; replay from ``spec.since``; return the cursor.

        Events up to the returned cursor have been delivered when this returns;
        everything after it follows live. Raises InvalidField (objects this room
        does not serve, a bad or expired ``since``), InvalidFilter, ObjectNotFound.
        """
        if not isinstance(connection_id, str) or not 0 < len(connection_id) <= MAX_ID_LENGTH:
            raise _bad("connectionId", f"must be text of 1 to {MAX_ID_LENGTH} characters")
        subscriber = self._new_subscriber(spec, connection_id, gateway, actor)
        if self._register is not None and not subscriber.objects <= self._attached:
            await self.attach(self._attached | subscriber.objects)
        head = await self._log.latest()
        since = head if spec.since is None else spec.since
        if spec.since is not None:
            await self._check_since(since, head)
        subscriber.cursor = since
        previous = self._subscribers.pop(subscriber.key, None)
        if previous is not None:
            previous.live = False  # a resubscribe replaces it; it must not get more events
        self._subscribers[subscriber.key] = subscriber
        try:
            return await self._replay(subscriber)
        except BaseException:
            if self._subscribers.get(subscriber.key) is subscriber:
                del self._subscribers[subscriber.key]
            raise

    def _new_subscriber(
        self, spec: SubscriptionSpec, connection_id: str, gateway: str, actor: Actor
    ) -> _Subscriber:
        objects = frozenset(spec.objects)
        if not objects:
            raise _bad("objects", "must name at least one object")
        if self._objects is not None and not objects <= self._objects:
            others = sorted(objects - self._objects)
            raise _bad(
                "objects",
                f"names {', '.join(others)}, which room {self.name} does not serve",
                objects=others,
            )
        matchers, readable = compile_filters(
            spec, actor, self._visibility, self._columns, field_sets=self._field_sets
        )
        return _Subscriber(
            connection_id=connection_id,
            subscription_id=spec.subscription_id,
            gateway=gateway,
            actor=actor,
            objects=objects,
            events=spec.events,
            matchers=matchers,
            readable=readable,
        )

    async def _check_since(self, since: int, head: int) -> None:
        if since > head:
            raise _bad("since", f"is ahead of the server (newest version is {head})", head=head)
        if since == head:
            return
        # Versions are gapless, so the first entry after `since` is since + 1
        # unless the log was pruned past it: then a replay would miss changes.
        probe = await self._log.since(since, None, 1)
        if not probe.changes or probe.changes[0].seq != since + 1:
            raise _bad(
                "since",
                "is older than the retained change log; reload and subscribe without since",
                expired=True,
            )

    async def _replay(self, subscriber: _Subscriber) -> int:
        objects = sorted(subscriber.objects)
        while True:
            page = await self._log.since(subscriber.cursor, objects, self._page_size)
            events = self._events_for(subscriber, page.changes)
            subscriber.cursor = max(subscriber.cursor, page.cursor)
            self.stats["replayed"] += len(events)
            if events:
                await self._send({subscriber.gateway: {subscriber.connection_id: events}})
            if not page.has_more:
                break
        if self._subscribers.get(subscriber.key) is not subscriber:
            return subscriber.cursor  # unsubscribed or replaced while replaying
        # The seam: no await from here until the subscriber is live.
        backlog, subscriber.backlog = subscriber.backlog, []
        events = self._events_for(subscriber, backlog)
        subscriber.live = True
        acknowledged = subscriber.cursor
        if events:
            await self._send({subscriber.gateway: {subscriber.connection_id: events}})
        return acknowledged

    async def unsubscribe(self, connection_id: str, subscription_id: str) -> bool:
        """Remove one subscription; False if it was not here."""
        subscriber = self._subscribers.pop((connection_id, subscription_id), None)
        if subscriber is None:
            return False
        subscriber.live = False
        return True

    def disconnect(self, connection_id: str) -> int:
        """Remove every subscription of a connection; return how many."""
        keys = [key for key in self._subscribers if key[0] == connection_id]
        for key in keys:
            self._subscribers.pop(key).live = False
        return len(keys)

    def drop_gateway(self, gateway: str) -> int:
        """Remove every subscription served through ``gateway``; return how many."""
        keys = [key for key, s in self._subscribers.items() if s.gateway == gateway]
        for key in keys:
            self._subscribers.pop(key).live = False
        self.stats["dropped"] += len(keys)
        return len(keys)

    # -- the feed side ---------------------------------------------------------------------

    async def attach(self, objects: Collection[str] | None = None) -> Registration | None:
        """(Re-)register with the feed and read from the log what it did not push.

        Calls ``register`` for ``objects`` (default: :attr:`wanted_objects`) while
        pushes wait. When the feed did not know this room (it restarted, or
        dropped the room after failures), the changes between the room's cursor
        and the feed's horizon are read from the log and processed like a push.
        Rooms call this before a replay and periodically; it is cheap when
        nothing was missed.
        """
        if self._register is None:
            return None
        wanted = frozenset(objects) if objects is not None else self.wanted_objects
        if not wanted:
            return None
        async with self._ingest_lock:
            registration = await self._register(wanted)
            self._attached = wanted
            if self._cursor is None:
                self._cursor = registration.horizon
            elif not registration.known and self._cursor < registration.horizon:
                await self._catch_up(registration.horizon, wanted)
            return registration

    async def _catch_up(self, until: int, objects: frozenset[str]) -> None:
        cursor = self._cursor or 0
        while cursor < until:
            page = await self._log.since(cursor, sorted(objects), self._page_size)
            batches = self._ingest(page.changes)
            cursor = max(cursor, page.cursor)
            self._cursor = max(self._cursor or 0, cursor)
            if batches:
                await self._send(batches)
            if not page.has_more:
                break

    async def push(self, entries: Sequence[ChangeEntry]) -> int:
        """Process committed changes (oldest first); return how many events went out.

        Entries at or below the room's cursor were seen before and are skipped.
        Returns after the resulting batches were delivered.
        """
        async with self._ingest_lock:
            batches = self._ingest(entries)
        # Nothing awaited between producing and queueing: delivery keeps push order.
        if not batches:
            return 0
        return await self._send(batches)

    def _ingest(self, entries: Sequence[ChangeEntry]) -> dict[str, dict[str, list[RecordEvent]]]:
        out: dict[str, dict[str, list[RecordEvent]]] = {}
        for entry in entries:
            if self._objects is not None and entry.object not in self._objects:
                continue
            if self._cursor is not None and entry.seq <= self._cursor:
                continue
            self._cursor = entry.seq
            self.stats["pushed"] += 1
            change: _Change | None = None
            for subscriber in list(self._subscribers.values()):
                if entry.object not in subscriber.objects:
                    continue
                if not subscriber.live:
                    subscriber.backlog.append(entry)
                    continue
                if entry.seq <= subscriber.cursor:
                    continue
                subscriber.cursor = entry.seq
                if change is None:
                    change = _Change(entry)  # what all subscribers share, computed once
                events = self._events_of(subscriber, change)
                if events:
                    per_gateway = out.setdefault(subscriber.gateway, {})
                    per_gateway.setdefault(subscriber.connection_id, []).extend(events)
        return out

    def _events_for(
        self, subscriber: _Subscriber, entries: Iterable[ChangeEntry]
    ) -> list[RecordEvent]:
        """The events ``subscriber`` gets for ``entries``, advancing its cursor."""
        events: list[RecordEvent] = []
        for entry in entries:
            if entry.seq <= subscriber.cursor:
                continue
            subscriber.cursor = entry.seq
            events.extend(self._events_of(subscriber, _Change(entry)))
        return events

    def _events_of(self, subscriber: _Subscriber, change: _Change) -> list[RecordEvent]:
        try:
            return self._evaluate(subscriber, change)
        except Exception as exc:
            # A permission check that breaks must not stop everyone's events.
            logger.error(
                "room %s: cannot evaluate change %d for %s: %r",
                self.name,
                change.entry.seq,
                subscriber.key,
                exc,
            )
            return []

    def _evaluate(self, subscriber: _Subscriber, change: _Change) -> list[RecordEvent]:
        entry, record, event_name = change.entry, change.entry.record, change.event_name
        if record is None or event_name is None or entry.object not in subscriber.objects:
            return []
        wants_fields = entry.operation == "update" and FIELD_CHANGED in subscriber.events
        if event_name not in subscriber.events and not wants_fields:
            return []
        # A delete's record is the pre-image: it goes to those who could read that.
        if not self._visibility.can_read(subscriber.actor, entry.object, record):
            return []
        if not subscriber.matchers[entry.object](record):
            return []
        visible, changed = change.view(subscriber.readable[entry.object])
        if entry.operation == "update" and not changed:
            return []  # nothing this subscriber may read changed

        def event(name: str, fields: tuple[str, ...]) -> RecordEvent:
            return RecordEvent(
                subscription_id=subscriber.subscription_id,
                event_name=name,
                object=entry.object,
                record_id=entry.record_id,
                record=visible,
                changed_fields=fields,
                version=entry.version,
                cursor=entry.seq,
                timestamp=change.timestamp,
            )

        events: list[RecordEvent] = []
        if event_name in subscriber.events:
            events.append(event(event_name, changed))
        if wants_fields:
            events.extend(event(FIELD_CHANGED, (name,)) for name in changed)
        return events

    # -- delivery ----------------------------------------------------------------------------

    async def _send(self, batches: Mapping[str, Mapping[str, list[RecordEvent]]]) -> int:
        prepared = {
            gateway: EventBatch(
                room=self.name,
                deliveries=tuple(Delivery(c, tuple(events)) for c, events in per.items()),
                cursor=max(e.cursor for events in per.values() for e in events),
            )
            for gateway, per in batches.items()
            if any(per.values())
        }
        async with self._send_lock:
            await asyncio.gather(*(self._deliver_one(g, b) for g, b in prepared.items()))
        sent = sum(batch.event_count for batch in prepared.values())
        self.stats["events"] += sent
        self.stats["batches"] += len(prepared)
        return sent

    async def _deliver_one(self, gateway: str, batch: EventBatch) -> None:
        for attempt in range(1, self._delivery_attempts + 1):
            try:
                await self._deliver(gateway, batch)
                return
            except GatewayGone:
                dropped = self.drop_gateway(gateway)
                logger.info("room %s: gateway %s is gone (%d dropped)", self.name, gateway, dropped)
                return
            except Exception as exc:
                if attempt == self._delivery_attempts:
                    dropped = self.drop_gateway(gateway)
                    logger.error(
                        "room %s: delivery to %s failed %d times, %d subscriptions dropped: %r",
                        self.name,
                        gateway,
                        attempt,
                        dropped,
                        exc,
                    )
                    return
                await asyncio.sleep(self._retry_delay_s * attempt)


__all__ = [
    "EVENT_NAMES",
    "FIELD_CHANGED",
    "MAX_ID_LENGTH",
    "MAX_OBJECTS",
    "RECORD_ANY",
    "RECORD_CREATED",
    "RECORD_DELETED",
    "RECORD_UPDATED",
    "SOCKET_EVENT",
    "Deliver",
    "Delivery",
    "EventBatch",
    "GatewayGone",
    "RecordEvent",
    "RecordVisibility",
    "Register",
    "SubscriptionRoom",
    "SubscriptionSpec",
    "compile_filters",
    "parse_cursor",
]
