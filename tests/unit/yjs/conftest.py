"""Fixtures of the yjs tests (the harness itself is in ``yjs_harness.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from yjs_harness import Hub, running_hub


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    """A running hub with default directory options."""
    async with running_hub() as running:
        yield running
