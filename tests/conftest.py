"""Shared test configuration: unit tests must never start Ray."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _forbid_ray_in_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Unit tests cover the pure library; a ``ray.init`` there is a layering bug."""
    if "integration" in request.node.nodeid.split("/")[:2] or "/integration/" in str(
        request.node.fspath
    ):
        yield
        return
    try:
        import ray
    except ImportError:  # pragma: no cover
        yield
        return

    def _refuse(*args, **kwargs):
        raise RuntimeError("unit tests must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", _refuse)
    yield
