"""The hub side of the interop tests: an authorizer and what the fixture hands out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from objectos.errors import InvalidToken
from objectos.realtime.yjs import Access, LocalRoomDirectory

INTEROP_DIR = Path(__file__).parent

TOKENS = {
    "writer-token": Access(read=True, write=True),
    "reader-token": Access(read=True, write=False),
}


async def authorize(doc_name: str, auth: dict[str, Any] | None) -> Access:
    token = (auth or {}).get("token")
    if token not in TOKENS:
        raise InvalidToken("invalid or missing token")
    return TOKENS[token]


@dataclass
class InteropHub:
    url: str
    rooms: LocalRoomDirectory
    engine: AsyncEngine
