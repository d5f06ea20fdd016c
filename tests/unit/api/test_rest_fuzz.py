"""Schema-driven fuzzing: schemathesis against the REST app, driven by its own OpenAPI.

Every operation of ``/api/v1/openapi.json`` gets generated requests, valid
ones (positive) and ones that break the document (negative), record
operations also against ids that exist. Each response must be a non-5xx
whose status, content type, headers and body the document allows. The
number of examples is bounded so the run stays well under a minute.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.pool import NullPool

from objectos.data import Actor, DataEngine, create_engine
from objectos.metadata import MetadataRegistry

from .conftest import CRM, build_app

EXAMPLES_PER_OPERATION = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


async def _seed(engine: DataEngine) -> dict[str, list[str]]:
    await engine.migrate()
    seed = Actor.system_actor("seed")
    account = await engine.insert("account", {"name": "Acme", "industry": "retail"}, actor=seed)
    contact = await engine.insert(
        "contact", {"last_name": "Doe", "account": account["id"], "phone": "+1 555 01"}, actor=seed
    )
    case = await engine.insert(
        "case", {"subject": "Printer on fire", "contact": contact["id"]}, actor=seed
    )
    deal = await engine.insert(
        "opportunity", {"name": "Big deal", "account": account["id"], "amount": 1000}, actor=seed
    )
    item = await engine.insert(
        "opportunity_line_item",
        {"opportunity": deal["id"], "product": "Widget", "unit_price": 5},
        actor=seed,
    )
    code = await engine.insert("industry_code", {"code": "5112", "title": "Software"}, actor=seed)
    return {
        "account": [account["id"]],
        "contact": [contact["id"]],
        "case": [case["id"]],
        "opportunity": [deal["id"]],
        "opportunity_line_item": [item["id"]],
        "industry_code": [code["id"]],
    }


@pytest.fixture
def fuzzed(tmp_path: Path) -> tuple[Any, dict[str, list[str]]]:
    # The app runs in schemathesis' own event loop, one per request: NullPool keeps
    # no aiosqlite connection alive across loops.
    url = f"sqlite+aiosqlite:///{tmp_path / 'fuzz.db'}"
    engine = DataEngine(create_engine(url, poolclass=NullPool), MetadataRegistry.load([CRM]))
    ids = asyncio.run(_seed(engine))
    app = build_app(engine)
    return schemathesis.openapi.from_asgi("/api/v1/openapi.json", app), ids


def test_fuzzing_finds_no_server_error_and_no_response_outside_the_document(
    fuzzed: tuple[Any, dict[str, list[str]]],
) -> None:
    schema, ids = fuzzed
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]

    def run(strategy: Any) -> bool:
        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call_and_validate(checks=CHECKS)
            statuses[response.status_code] += 1

        try:
            call()
        except Unsatisfiable:
            return False  # nothing about this operation can be made invalid
        return True

    unbreakable = []
    for operation in operations:
        assert run(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        if not run(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)):
            unbreakable.append(operation.label)
        if "{id}" in operation.path:
            obj = operation.path.split("/")[4]
            run(operation.as_strategy(path_parameters={"id": ids[obj][0]}))

    print(
        f"fuzz: {len(operations)} operations, {sum(statuses.values())} requests, "
        f"statuses {dict(sorted(statuses.items()))}, no negative case for {unbreakable}"
    )
    assert len(operations) >= 30
    assert not [s for s in statuses if s >= 500]
    # Both sides were exercised: accepted requests and refused ones.
    assert any(200 <= s < 300 for s in statuses)
    assert any(400 <= s < 500 for s in statuses)
