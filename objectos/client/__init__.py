"""A Python client of the hub: REST data and auth, realtime subscriptions and presence,
collaborative Yjs documents. Pure asyncio (httpx, python-socketio, pycrdt); no Ray.

::

    from objectos.client import HubClient

    async with HubClient("http://127.0.0.1:8000") as hub:
        await hub.sign_in("ada@example.com", "secret")
        page = await hub.objects("account").find(filter={"industry": "retail"}, top=10)
        sub = await hub.realtime.subscribe(objects=["account"], on_event=print)
        doc = await hub.document("account/42/notes")

See :mod:`objectos.client.hub` (REST, tokens, documents), :mod:`objectos.client.realtime`
(``/realtime``: subscriptions with resume, presence) and :mod:`objectos.client.errors`
(typed errors).
"""

from objectos.client.errors import HubError, error_class, error_from_payload
from objectos.client.hub import HubClient, ObjectAPI, Page
from objectos.client.realtime import (
    Presence,
    RealtimeClient,
    RealtimeClosed,
    Subscription,
    SubscriptionGap,
    parse_event,
)
from objectos.realtime.subscriptions import RecordEvent

__all__ = [
    "HubClient",
    "HubError",
    "ObjectAPI",
    "Page",
    "Presence",
    "RealtimeClient",
    "RealtimeClosed",
    "RecordEvent",
    "Subscription",
    "SubscriptionGap",
    "error_class",
    "error_from_payload",
    "parse_event",
]
