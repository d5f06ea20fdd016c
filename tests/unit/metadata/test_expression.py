"""The formula language: safe, exact, and null like SQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from objectos.metadata.expression import Expression, ExpressionError


def test_arithmetic_is_exact_decimal() -> None:
    revenue = Expression("amount * probability / 100")

    assert revenue.evaluate({"amount": Decimal("1234.50"), "probability": 25}) == Decimal("308.625")
    assert Expression("0.1 + 0.2").evaluate({}) == Decimal("0.3")
    assert Expression("price * 3").evaluate({"price": 0.1}) == Decimal("0.3")


def test_names_are_the_fields_an_expression_reads() -> None:
    expression = Expression("iif(is_blank(email), lower(name), email) if active else null")

    assert expression.names == {"email", "name", "active"}
    assert expression.functions == {"iif", "is_blank", "lower"}


def test_null_operands_make_the_result_null() -> None:
    assert Expression("amount * 2").evaluate({"amount": None}) is None
    assert Expression("amount > 3").is_true({}) is None
    assert Expression("1 / 0").evaluate({}) is None


def test_conditions_and_functions() -> None:
    won = Expression("stage != 'closed_won' or not is_blank(close_date)")

    assert won.is_true({"stage": "closed_won", "close_date": None}) is False
    assert won.is_true({"stage": "closed_won", "close_date": dt.date(2026, 1, 1)}) is True
    assert won.is_true({"stage": "prospecting"}) is True
    assert Expression("stage in ['a', 'b']").evaluate({"stage": "b"}) is True
    assert Expression("concat(first, ' ', last)").evaluate({"first": "Ada", "last": None}) == "Ada "
    assert Expression("round(10 / 3, 2)").evaluate({}) == Decimal("3.33")
    assert (
        Expression("days_between(start, end)").evaluate(
            {"start": dt.date(2026, 1, 1), "end": "2026-01-31"}
        )
        == 30
    )


def test_now_and_today_read_the_given_clock() -> None:
    moment = dt.datetime(2026, 7, 4, 12, 0, tzinfo=dt.UTC)

    assert Expression("today()").evaluate({}, now=moment) == dt.date(2026, 7, 4)
    assert Expression("year(now())").evaluate({}, now=moment) == 2026


@pytest.mark.parametrize(
    "source",
    [
        "name.__class__",
        "open('/etc/passwd')",
        "__import__('os')",
        "items[0]",
        "[x for x in items]",
        "lambda: 1",
        "f(x=1)",
        "lower(s=name)",
        "a = 1",
        "",
    ],
)
def test_anything_but_the_formula_language_is_refused_when_parsed(source: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(source)
