"""The formula language of metadata: formulas, validation rules, conditions.

Expressions are a small, safe subset of Python syntax evaluated by simpleeval —
never ``eval``::

    amount * probability / 100
    stage != 'closed_won' or close_date != null
    iif(is_blank(email), 'no email', lower(email))

Allowed: literals (numbers, strings, true/false/null, lists), field names,
arithmetic, comparisons, ``and``/``or``/``not``, ``in``, ``x if c else y`` and
calls of the functions in :data:`FUNCTION_NAMES`. Attribute access,
subscripts, lambdas and comprehensions are refused when the metadata loads,
so a bad formula is a metadata error and not a runtime surprise.

Numbers are exact: every float (literal or value) becomes a ``Decimal`` and
``/`` always divides decimals, so ``amount * probability / 100`` on currency
values gives cents, not binary-float noise.

Null semantics follow SQL: an operation on a null operand (``null > 3``,
``amount * null``) or a division by zero makes the whole expression null
(``None``) instead of failing. A formula then stores null, and a validation
rule whose condition is null passes — exactly like a SQL CHECK constraint.
Rules that must reject blanks say so (``not is_blank(close_date)``).
"""

from __future__ import annotations

import ast
import datetime as dt
import decimal
import operator
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

import simpleeval

#: Names that are constants, not fields.
CONSTANTS: dict[str, Any] = {
    "null": None,
    "None": None,
    "true": True,
    "True": True,
    "false": False,
    "False": False,
}

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression,
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.Name,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.Load,
    ast.And,
    ast.Or,
    ast.Not,
    ast.USub,
    ast.UAdd,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.FloorDiv,
    ast.Mod,
    ast.Pow,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Is,
    ast.IsNot,
)


class ExpressionError(ValueError):
    """An expression is not valid formula language (raised when it is parsed)."""


def _decimal(value: Any) -> Any:
    if isinstance(value, float):
        # str() keeps the shortest repr: 0.1 -> Decimal("0.1"), not 0.1000000000000000055...
        return Decimal(str(value))
    return value


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return Decimal(str(value))
    return value


def _true_div(left: Any, right: Any) -> Any:
    # int / int would give a float in Python; keep the arithmetic decimal.
    return _number(left) / _number(right)


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, list | tuple | dict | set):
        return len(value) == 0
    return False


def _coalesce(*values: Any) -> Any:
    for value in values:
        if not _is_blank(value):
            return value
    return None


def _concat(*values: Any) -> str:
    return "".join("" if v is None else str(v) for v in values)


def _iif(condition: Any, then: Any, otherwise: Any) -> Any:
    return then if condition else otherwise


def _as_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    raise TypeError(f"not a date: {value!r}")


def _days_between(start: Any, end: Any) -> int:
    return (_as_date(end) - _as_date(start)).days


def _add_days(value: Any, days: Any) -> dt.date:
    return _as_date(value) + dt.timedelta(days=int(days))


def _contains(haystack: Any, needle: Any) -> bool:
    return needle in haystack


def _round(value: Any, digits: Any = 0) -> Any:
    value = _number(value)
    if isinstance(value, Decimal):
        return value.quantize(Decimal(1).scaleb(-int(digits)), rounding=decimal.ROUND_HALF_UP)
    return round(value, int(digits))


_PURE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": _round,
    "min": min,
    "max": max,
    "len": len,
    "int": int,
    "str": str,
    "bool": bool,
    "decimal": lambda v: Decimal(str(v)),
    "lower": lambda s: s.lower(),
    "upper": lambda s: s.upper(),
    "trim": lambda s: s.strip(),
    "concat": _concat,
    "contains": _contains,
    "includes": _contains,
    "startswith": lambda s, p: s.startswith(p),
    "endswith": lambda s, p: s.endswith(p),
    "is_blank": _is_blank,
    "isblank": _is_blank,
    "coalesce": _coalesce,
    "iif": _iif,
    "year": lambda d: _as_date(d).year,
    "month": lambda d: _as_date(d).month,
    "day": lambda d: _as_date(d).day,
    "days_between": _days_between,
    "add_days": _add_days,
}

#: Every function an expression may call (``today()`` and ``now()`` read the engine's clock).
FUNCTION_NAMES: frozenset[str] = frozenset({*_PURE_FUNCTIONS, "today", "now"})

_OPERATORS = dict(simpleeval.DEFAULT_OPERATORS)
_OPERATORS[ast.Div] = _true_div
_OPERATORS[ast.Is] = operator.is_
_OPERATORS[ast.IsNot] = operator.is_not

#: What makes a whole expression null rather than an error (see module docstring).
_NULL_RESULT_ERRORS = (TypeError, ArithmeticError, ValueError, AttributeError)


class _DecimalEval(simpleeval.EvalWithCompoundTypes):
    """simpleeval with decimal float literals."""

    def _eval_constant(self, node: ast.Constant) -> Any:
        return _decimal(super()._eval_constant(node))


class Expression:
    """One parsed expression: check it once, evaluate it many times.

    ``Expression("amount * probability / 100").names`` is the set of fields it
    reads; ``evaluate({"amount": Decimal("10"), "probability": 50})`` gives
    ``Decimal("5")``.
    """

    __slots__ = ("_tree", "functions", "names", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"syntax error in {source!r}: {exc.msg}") from None
        # A called function's name is an ast.Name too; it is not a field.
        callees = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
        names: set[str] = set()
        functions: set[str] = set()
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED_NODES):
                raise ExpressionError(
                    f"{type(node).__name__} is not allowed in formulas ({source!r})"
                )
            if isinstance(node, ast.Call):
                if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTION_NAMES:
                    called = node.func.id if isinstance(node.func, ast.Name) else "?"
                    raise ExpressionError(
                        f"unknown function {called!r} in {source!r} "
                        f"(known: {', '.join(sorted(FUNCTION_NAMES))})"
                    )
                if node.keywords:
                    raise ExpressionError(f"keyword arguments are not allowed ({source!r})")
                functions.add(node.func.id)
            elif (
                isinstance(node, ast.Name) and id(node) not in callees and node.id not in CONSTANTS
            ):
                names.add(node.id)
        self.names: frozenset[str] = frozenset(names)
        self.functions: frozenset[str] = frozenset(functions)
        self._tree = tree.body

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, values: Mapping[str, Any], *, now: dt.datetime | None = None) -> Any:
        """The value of the expression for one record (``values`` by field name).

        Fields the expression reads but ``values`` lacks count as null. ``now``
        is what ``now()``/``today()`` return (default: the current UTC time).
        """
        moment = now or dt.datetime.now(dt.UTC)
        functions = dict(_PURE_FUNCTIONS)
        functions["now"] = lambda: moment
        functions["today"] = lambda: moment.date()
        names: dict[str, Any] = {name: None for name in self.names}
        names.update((k, _decimal(v)) for k, v in values.items() if k in self.names)
        names.update(CONSTANTS)
        evaluator = _DecimalEval(operators=_OPERATORS, functions=functions, names=names)
        try:
            return evaluator.eval(self.source, previously_parsed=self._tree)
        except _NULL_RESULT_ERRORS:
            return None
        except simpleeval.InvalidExpression as exc:
            raise ExpressionError(f"cannot evaluate {self.source!r}: {exc}") from None

    def is_true(self, values: Mapping[str, Any], *, now: dt.datetime | None = None) -> bool | None:
        """Evaluate as a condition: True, False, or None when the result is null."""
        result = self.evaluate(values, now=now)
        return None if result is None else bool(result)


def referenced_names(sources: Iterable[str]) -> set[str]:
    """The field names a group of expressions reads (syntax errors raise ExpressionError)."""
    found: set[str] = set()
    for source in sources:
        found |= Expression(source).names
    return found


__all__ = ["CONSTANTS", "FUNCTION_NAMES", "Expression", "ExpressionError", "referenced_names"]
