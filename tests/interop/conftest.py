"""Interop with stock Yjs clients: Node scripts in this directory, driven by pytest.

``node_modules`` is installed once from ``package-lock.json`` (``npm ci``) when it is
missing; without ``node``/``npm`` the tests are skipped and say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import socketio
import uvicorn
from sqlalchemy.ext.asyncio import create_async_engine
from yjs_interop_hub import INTEROP_DIR, InteropHub, authorize

from objectos.realtime.yjs import (
    LocalRoomDirectory,
    SQLUpdateStore,
    create_yjs_tables,
    register_yjs,
)


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``tests/interop/node_modules`` with the pinned yjs / y-socket.io / socket.io-client."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node/npm not found on PATH: the stock-Yjs-client interop tests need Node 20+")
    modules = INTEROP_DIR / "node_modules"
    if not (modules / "y-socket.io" / "package.json").exists():
        # --ignore-scripts: y-socket.io depends on y-leveldb -> leveldown, whose native
        # build the clients never use.
        result = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=INTEROP_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {INTEROP_DIR}:\n{result.stdout}\n{result.stderr}")
    return modules


@pytest.fixture
async def interop_hub(tmp_path: Path) -> AsyncIterator[InteropHub]:
    """The hub's y-socket.io endpoint on a free 127.0.0.1 port, documents in SQLite."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    await create_yjs_tables(engine)
    rooms = LocalRoomDirectory(lambda doc: SQLUpdateStore(engine, doc), compact_every=50)
    sio = socketio.AsyncServer(async_mode="asgi", namespaces="*")
    register_yjs(sio, rooms, authorize)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(socketio.ASGIApp(sio), log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield InteropHub(f"http://127.0.0.1:{sock.getsockname()[1]}", rooms, engine)
    finally:
        server.should_exit = True
        await task
        sock.close()
        with contextlib.suppress(Exception):
            await rooms.close()
        await engine.dispose()
