"""A real y-socket.io hub for the yjs tests: python-socketio under uvicorn on 127.0.0.1.

Nothing here is faked: the server is python-socketio's ASGI app served by uvicorn on a
free port, the rooms are real ``DocumentRoom``s over :class:`FaultyStore` (a memory
store with failure switches, off by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
import uvicorn
from yjs_doubles import FaultyStore

from objectos.errors import InvalidToken
from objectos.realtime.yjs import (
    Access,
    LocalRoomDirectory,
    YSocketIOClient,
    YSocketIONamespace,
    register_yjs,
)

TOKENS = {
    "writer-token": Access(read=True, write=True),
    "reader-token": Access(read=True, write=False),
    "blind-token": Access(read=False, write=False),
}


async def authorize_by_token(doc_name: str, auth: dict[str, Any] | None) -> Access:
    token = (auth or {}).get("token")
    if token not in TOKENS:
        raise InvalidToken("invalid or missing token")
    return TOKENS[token]


@contextlib.asynccontextmanager
async def serve_asgi(app: Any) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free 127.0.0.1 port; yields its base URL."""
    # Bind first and hand uvicorn the socket: no window in which the port is free.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Hub:
    url: str
    sio: socketio.AsyncServer
    rooms: LocalRoomDirectory
    handler: YSocketIONamespace
    stores: dict[str, FaultyStore] = field(default_factory=dict)

    def client(
        self, doc: str, token: str | None = "writer-token", **kwargs: Any
    ) -> YSocketIOClient:
        return YSocketIOClient(self.url, doc, auth={"token": token} if token else None, **kwargs)


@contextlib.asynccontextmanager
async def running_hub(**directory_options: Any) -> AsyncIterator[Hub]:
    stores: dict[str, FaultyStore] = {}
    rooms = LocalRoomDirectory(
        lambda name: stores.setdefault(name, FaultyStore()), **directory_options
    )
    sio = socketio.AsyncServer(async_mode="asgi", namespaces="*")
    handler = register_yjs(sio, rooms, authorize_by_token)
    async with serve_asgi(socketio.ASGIApp(sio)) as url:
        try:
            yield Hub(url, sio, rooms, handler, stores)
        finally:
            await rooms.close()


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float = 5.0) -> None:
    """Poll ``check`` until it is true (for state on the server side, which has no event)."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)
