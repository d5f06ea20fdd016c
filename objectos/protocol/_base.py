"""The base of every protocol model: strict, described, camelCase on the wire."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ProtocolModel(BaseModel):
    """A pydantic model that refuses unknown keys.

    Field names are the spec's (camelCase where @objectstack/spec uses it), so
    a model dumps to exactly the wire/metadata shape without aliases.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False)
