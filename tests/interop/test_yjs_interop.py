"""Stock Yjs clients nobody here wrote (yjs 13 + y-socket.io 1.1.3 in Node) against the hub.

Three kinds of writers edit one ``Y.Text`` at the same time: two stock
``SocketIOProvider`` clients (``yjs_clients.mjs``), the hub's Python client on
pycrdt, and the hub itself (``DocumentRoom.insert_text``). Tokens carry non-ASCII
and astral characters, so UTF-16 (Yjs), UTF-8 (pycrdt) and Python-character (hub)
indices all take part. Everybody must end with the same text, and so must a room
reloaded from SQLite.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

from yjs_interop_hub import INTEROP_DIR, InteropHub

from objectos.realtime.yjs import YSocketIOClient

EDITS = 10
FIELD = "content"
DOC = "interop/notes/content"


def node_token(who: str, i: int) -> str:
    return f"[{who}{i}\U0001f600]"  # same format as tokenOf() in yjs_clients.mjs


def python_token(i: int) -> str:
    return f"[P{i}é]"


def hub_token(i: int) -> str:
    return f"[H{i}ü]"


def boundaries(text: str) -> list[int]:
    """Character positions that are not inside any token."""
    return [0] + [i + 1 for i, ch in enumerate(text) if ch == "]"]


async def python_writer(client: YSocketIOClient, rng: random.Random) -> None:
    text = client.text(FIELD)
    for i in range(EDITS):
        await asyncio.sleep(rng.random() * 0.015)
        current = str(text)
        at = rng.choice(boundaries(current))
        async with client.transact():
            text.insert(len(current[:at].encode("utf-8")), python_token(i))  # pycrdt: bytes
    current = str(text)
    start = current.index(python_token(0))
    async with client.transact():
        del text[
            len(current[:start].encode("utf-8")) : len(
                current[: start + len(python_token(0))].encode("utf-8")
            )
        ]


async def hub_writer(hub: InteropHub, rng: random.Random) -> None:
    room = await hub.rooms.get(DOC)
    for i in range(EDITS):
        await asyncio.sleep(rng.random() * 0.015)
        # Start and end are token boundaries whatever arrives meanwhile.
        await room.insert_text(FIELD, 0 if rng.random() < 0.5 else 10**9, hub_token(i))


async def read_events(stream: asyncio.StreamReader) -> list[dict[str, Any]]:
    events = []
    while line := await stream.readline():
        events.append(json.loads(line))
        if events[-1]["event"] == "result":
            break
    return events


async def test_stock_clients_python_client_and_hub_converge(
    interop_hub: InteropHub, node_modules: Path
) -> None:
    expected = (
        [node_token(w, i) for w in "AB" for i in range(1, EDITS)]
        + [python_token(i) for i in range(1, EDITS)]
        + [hub_token(i) for i in range(EDITS)]
    )
    absent = [node_token("A", 0), node_token("B", 0), python_token(0)]
    node = await asyncio.create_subprocess_exec(
        "node",
        "yjs_clients.mjs",
        interop_hub.url,
        "--doc",
        DOC,
        "--field",
        FIELD,
        "--token",
        "writer-token",
        "--edits",
        str(EDITS),
        "--expect",
        ",".join(t for t in expected if not t.startswith(("[A", "[B"))),
        "--absent",
        python_token(0),
        "--timeout",
        "30000",
        cwd=INTEROP_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert node.stdout is not None
        first = json.loads(await asyncio.wait_for(node.stdout.readline(), 30))
        assert first["event"] == "synced", first
        # The Node clients start typing now; so do we.
        rng = random.Random(7)
        async with YSocketIOClient(interop_hub.url, DOC, auth={"token": "writer-token"}) as py:
            async with asyncio.TaskGroup() as tg:
                events = tg.create_task(read_events(node.stdout))
                tg.create_task(python_writer(py, rng))
                tg.create_task(hub_writer(interop_hub, rng))

            def converged() -> bool:
                text = str(py.text(FIELD))
                return all(t in text for t in expected) and not any(t in text for t in absent)

            async with asyncio.timeout(30):
                await py.wait_until(converged)
            python_text = str(py.text(FIELD))
            assert py.errors == []
        await asyncio.wait_for(node.wait(), 30)
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
        stderr = (await node.stderr.read()).decode() if node.stderr else ""

    result = events.result()[-1]
    assert result["event"] == "result" and result["ok"], (result, stderr)
    assert not [e for e in events.result() if e["event"] == "server-error"]
    assert node.returncode == 0, stderr
    room = await interop_hub.rooms.get(DOC)
    assert result["a"] == result["b"] == python_text == room.read_text(FIELD)
    assert all(0 <= cid < 2**32 for cid in [*result["clientIds"], py.doc.client_id])

    # And it was all durable: a fresh activation from SQLite reads the same text.
    await interop_hub.rooms.passivate(DOC)
    reloaded = await interop_hub.rooms.get(DOC)
    assert reloaded.read_text(FIELD) == python_text
    print(f"converged text ({len(python_text)} chars): {python_text}")


async def test_stock_clients_with_read_access_get_error_events_and_change_nothing(
    interop_hub: InteropHub, node_modules: Path
) -> None:
    room = await interop_hub.rooms.get(DOC)
    await room.write_text(FIELD, "read me, do not edit me")
    node = await asyncio.create_subprocess_exec(
        "node",
        "yjs_clients.mjs",
        interop_hub.url,
        "--doc",
        DOC,
        "--field",
        FIELD,
        "--token",
        "reader-token",
        "--edits",
        "2",
        "--timeout",
        "1500",  # they cannot converge: the server relays none of their edits
        cwd=INTEROP_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert node.stdout is not None
    events = await asyncio.wait_for(read_events(node.stdout), 30)
    await asyncio.wait_for(node.wait(), 30)

    assert events[0]["event"] == "synced"  # readers connect and sync normally
    errors = [e["payload"] for e in events if e["event"] == "server-error"]
    assert errors and all(e["code"] == "permission_denied" for e in errors)
    assert {e["event"] for e in errors} == {"sync-update"}
    result = events[-1]
    assert result["event"] == "result" and not result["ok"]  # ran to the end, no crash
    # They did receive the document (the provider's "synced" fires when it answers the
    # server's sync-step-1, possibly before the server's content arrives, so their
    # local edits may sit on either side of it).
    assert "read me, do not edit me" in result["a"]
    assert room.read_text(FIELD) == "read me, do not edit me"
