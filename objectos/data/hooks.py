"""Data hooks: how plugins observe and shape reads and writes.

The engine calls :class:`DataHooks` around every operation with event names
``data.<hook>.<object>``, ``<hook>`` one of
:data:`objectos.kernel.events.DATA_HOOK_EVENTS` (PROTOCOL.md; the names are
built by :func:`objectos.kernel.events.data_event`).
The payload follows @objectstack/spec's HookContext::

    {"object": "opportunity", "event": "beforeUpdate",
     "input": {"id": "...", "doc": {"stage": "proposal"}},   # mutable in before hooks
     "previous": {...record before...},                        # update/delete
     "result": {...record after...} | [records],               # after hooks
     "session": {"userId": "u1", "roles": ["sales"], "system": false}}

``run_before`` returns the payload to continue with: a hook may change
``input.doc`` (insert/update) or ``input.query`` (find), or veto the
operation by raising (an :class:`~objectos.errors.ObjectOSError` reaches the
client as is). Before hooks run *outside* the database transaction — they may
be actor calls and must not hold the write lock — so ``previous`` is the
record as read just before. ``run_after`` is called after commit and cannot
change the result; writes cascaded by the engine (cascade deletes, set_null,
roll-ups) reach after hooks too and are always in the change log.

Reads: ``beforeFind``/``afterFind`` wrap ``find`` and ``find_one``
(``input.operation`` says which); ``count`` and ``aggregate`` run ``beforeFind``
only (there are no records to show an after hook).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DataHooks(Protocol):
    """What the data engine needs from whoever runs plugin hooks (the kernel's event bus)."""

    async def run_before(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Run the before hooks of ``event``; return the (possibly changed) payload or raise."""
        ...

    async def run_after(self, event: str, payload: dict[str, Any]) -> None:
        """Run the after hooks of ``event`` (after commit)."""
        ...


__all__ = ["DataHooks"]
