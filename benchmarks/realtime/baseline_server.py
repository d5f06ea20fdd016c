"""The baseline of benchmarks/realtime: one plain python-socketio process broadcasting events.

    python benchmarks/realtime/baseline_server.py --port 9000 --token secret

What a hand-written single-process server would do, and nothing more: ``/realtime``
checks the handshake token, ``subscribe`` joins the socket to a room per object and
acks ``{ok, cursor}``; ``POST /api/v1/data/<object>`` makes a record (in memory, no
database, no permissions) and emits the same ``event`` payload the hub sends to the
object's room. The hub is measured against this under the same load generator.
"""

from __future__ import annotations

import argparse
import itertools
import time
import uuid
from typing import Any

import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build(token: str) -> socketio.ASGIApp:
    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*")
    versions = itertools.count(1)

    @sio.on("connect", namespace="/realtime")  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
        return isinstance(auth, dict) and auth.get("token") == token

    @sio.on("subscribe", namespace="/realtime")  # type: ignore[untyped-decorator]
    async def subscribe(sid: str, spec: dict[str, Any]) -> dict[str, Any]:
        for name in spec.get("objects", []):
            await sio.enter_room(sid, f"object:{name}", namespace="/realtime")
        return {"ok": True, "cursor": 0}

    async def create(request: Request) -> JSONResponse:
        name = request.path_params["object"]
        body = await request.json()
        version = next(versions)
        record = {"id": uuid.uuid4().hex, **body, "version": 1}
        await sio.emit(
            "event",
            {
                "subscriptionId": "bench",
                "eventName": "record.created",
                "object": name,
                "recordId": record["id"],
                "record": record,
                "changedFields": sorted(body),
                "version": 1,
                "cursor": version,
                "timestamp": time.time(),
            },
            room=f"object:{name}",
            namespace="/realtime",
        )
        return JSONResponse({"data": record}, status_code=201)

    http = Starlette(routes=[Route("/api/v1/data/{object}", create, methods=["POST"])])
    return socketio.ASGIApp(sio, other_asgi_app=http)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    uvicorn.run(build(args.token), host=args.host, port=args.port, log_level="warning", ws="auto")


if __name__ == "__main__":
    main()
