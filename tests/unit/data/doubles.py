"""Test doubles and fixtures' constants for the data engine tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from objectos.data import Actor

#: The sample CRM metadata.
CRM = Path(__file__).resolve().parents[3] / "configs" / "metadata"

ALICE = Actor.user("alice", ["sales"])
BOB = Actor.user("bob", ["support"])
SYSTEM = Actor.system_actor("seed")


class RecordingHooks:
    """DataHooks that record every call and run per-event before functions.

    ``hooks.before["data.beforeInsert.case"] = fn`` makes ``fn(payload)``
    (sync) the before hook of that event; it may change and return the
    payload, or raise to veto.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.before: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    async def run_before(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((event, payload))
        handler = self.before.get(event)
        return handler(payload) if handler is not None else payload

    async def run_after(self, event: str, payload: dict[str, Any]) -> None:
        self.calls.append((event, payload))

    def events(self) -> list[str]:
        """The event names seen, in order."""
        return [event for event, _ in self.calls]
