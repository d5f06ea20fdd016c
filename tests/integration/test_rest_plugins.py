"""A plugin the REST integration tests run (imported by Ray workers via PYTHONPATH).

It hooks data events, so the tests can see plugin before-hooks on the
write path of the HTTP replicas: inserting a case whose subject says "veto"
is refused with the plugin's own error, and a new contact without a title
gets one. An after-hook keeps the subjects of inserted cases, in the order it
saw them, readable through its ``case-log`` service.
"""

from __future__ import annotations

from typing import Any

from objectos.errors import FieldError, ValidationError
from objectos.kernel.plugin import Plugin
from objectos.protocol.manifest import PluginManifest


class CaseLog:
    """The ``case-log`` service: what the after-hook saw."""

    def __init__(self) -> None:
        self.inserted: list[str] = []

    async def subjects(self) -> list[str]:
        return list(self.inserted)


class CaseGuardPlugin(Plugin):
    """Vetoes "veto" cases; stamps contacts; logs inserted cases."""

    manifest = PluginManifest(id="com.test.case-guard", version="1.0.0")

    async def on_load(self) -> None:
        self.log = CaseLog()
        self.context.register_service("case-log", self.log)
        self.context.hook("data.beforeInsert.case", self.guard_case)
        self.context.hook("data.beforeInsert.contact", self.stamp_contact)
        self.context.hook("data.afterInsert.case", self.log_case)

    async def log_case(self, payload: dict[str, Any]) -> None:
        self.log.inserted.append(str(payload["result"].get("subject")))

    async def guard_case(self, payload: dict[str, Any]) -> None:
        subject = str(payload["input"]["doc"].get("subject", ""))
        if "veto" in subject.lower():
            raise ValidationError(
                "the case guard refuses this subject",
                details={"plugin": self.manifest.id},
                field_errors=[FieldError("subject", "vetoed", "subjects may not say veto")],
            )

    async def stamp_contact(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload["input"]["doc"].setdefault("title", "Stamped by plugin")
        return payload
