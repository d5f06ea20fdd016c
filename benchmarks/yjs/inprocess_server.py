"""Baseline for ``run.py``: the same y-socket.io handler and rooms, in one plain process.

    python benchmarks/yjs/inprocess_server.py --port 4011 --token T --database-url URL

python-socketio + ``register_yjs`` + :class:`LocalRoomDirectory` (rooms in this
process, ``SQLUpdateStore`` on the given database) under uvicorn: exactly what the
gateway actor runs, minus the actors. Prints ``ready <pid>`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import socket
from typing import Any

import socketio
import uvicorn
from sqlalchemy.ext.asyncio import create_async_engine

from objectos.errors import InvalidToken
from objectos.realtime.yjs import (
    Access,
    LocalRoomDirectory,
    SQLUpdateStore,
    create_yjs_tables,
    register_yjs,
)


async def serve(port: int, token: str, database_url: str) -> None:
    engine = create_async_engine(database_url)
    await create_yjs_tables(engine)

    async def authorize(doc_name: str, auth: dict[str, Any] | None) -> Access:
        if not hmac.compare_digest(str((auth or {}).get("token", "")), token):
            raise InvalidToken("invalid token")
        return Access(read=True, write=True)

    async with LocalRoomDirectory(lambda doc: SQLUpdateStore(engine, doc)) as rooms:
        sio = socketio.AsyncServer(async_mode="asgi", namespaces="*", cors_allowed_origins="*")
        register_yjs(sio, rooms, authorize)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        server = uvicorn.Server(
            uvicorn.Config(
                socketio.ASGIApp(sio), log_level="warning", lifespan="off", access_log=False
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:  # noqa: ASYNC110 -- uvicorn offers no startup event
            await asyncio.sleep(0.02)
        print(f"ready {os.getpid()}", flush=True)
        await task
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.token, args.database_url))


if __name__ == "__main__":
    main()
