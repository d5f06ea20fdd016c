"""Field values in and out: client JSON → checked Python values → JSON again.

:func:`coerce` turns one client value into what the column stores (a
``Decimal`` for a currency, a ``date`` for a date, ...) or raises
:class:`InvalidValue` with a protocol field-error code. :func:`to_json` is
the way back; records leave the engine as plain JSON-ready dicts:

- ``Decimal`` becomes a JSON **number** (``float``; ``int`` when the field has
  no decimal places, e.g. ``NUMERIC(9, 0)``). ObjectStack clients and
  formulas expect numbers; a stored ``NUMERIC(18, 2)`` fits a double exactly
  up to 15 significant digits, which covers every amount below ten trillion
  with cents.
- datetimes become ISO 8601 UTC strings ending in ``Z``; dates ``YYYY-MM-DD``;
  times ``HH:MM:SS``.
- password fields never leave the engine (not in records, not in the change log).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from objectos.protocol.object import FieldType, ObjectField

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PHONE = re.compile(r"^\+?[0-9 ().\-/]{5,32}$")
_ID = re.compile(r"^[A-Za-z0-9_\-]{1,36}$")
_ADDRESS_KEYS = frozenset(
    {"street", "city", "state", "postalCode", "country", "countryCode", "formatted"}
)
_LOCATION_KEYS = frozenset({"latitude", "longitude", "altitude", "accuracy"})
_TEXT = frozenset(
    {
        FieldType.TEXT,
        FieldType.TEXTAREA,
        FieldType.PASSWORD,
        FieldType.MARKDOWN,
        FieldType.HTML,
        FieldType.RICHTEXT,
        FieldType.CODE,
        FieldType.COLOR,
        FieldType.AUTONUMBER,
        FieldType.IMAGE,
        FieldType.FILE,
        FieldType.AVATAR,
    }
)
_DECIMAL_TYPES = frozenset({FieldType.CURRENCY, FieldType.PERCENT})
_DEFAULT_SCALE = {FieldType.CURRENCY: 2, FieldType.PERCENT: 2, FieldType.NUMBER: 0}
_DEFAULT_PRECISION = {FieldType.CURRENCY: 18, FieldType.PERCENT: 9, FieldType.NUMBER: 18}


class InvalidValue(ValueError):
    """A value does not fit its field; ``code`` is the protocol field-error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_blank(value: Any) -> bool:
    """None, an empty/whitespace string, or an empty list: what ``required`` refuses."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | dict) and not value


def valid_id(value: Any) -> bool:
    """Whether ``value`` may be a record id (client-chosen ids included)."""
    return isinstance(value, str) and bool(_ID.match(value))


def decimal_places(field: ObjectField, kind: FieldType) -> tuple[int, int] | None:
    """``(precision, scale)`` of an exact-decimal field, None for a float one."""
    if kind in _DECIMAL_TYPES or (
        kind == FieldType.NUMBER and (field.scale is not None or field.precision is not None)
    ):
        scale = field.scale if field.scale is not None else _DEFAULT_SCALE[kind]
        return field.precision or _DEFAULT_PRECISION[kind], scale
    return None


def _number(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise InvalidValue("invalid_field", "expected a number, not true/false")
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValue("invalid_field", "expected a finite number")
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidValue("invalid_field", f"expected a number, got {value!r}") from None
    else:
        raise InvalidValue("invalid_field", f"expected a number, got {type(value).__name__}")
    if not number.is_finite():
        raise InvalidValue("invalid_field", "expected a finite number")
    return number


def _coerce_number(field: ObjectField, kind: FieldType, value: Any) -> Decimal | float:
    number = _number(value)
    if field.min is not None and number < Decimal(repr(field.min)):
        raise InvalidValue("value_out_of_range", f"must be at least {field.min:g}")
    if field.max is not None and number > Decimal(repr(field.max)):
        raise InvalidValue("value_out_of_range", f"must be at most {field.max:g}")
    places = decimal_places(field, kind)
    if places is None:
        return float(number)
    precision, scale = places
    rounded = number.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
    if rounded.adjusted() >= precision - scale:
        raise InvalidValue(
            "value_out_of_range",
            f"has more than {precision - scale} digits before the decimal point",
        )
    return rounded


def _coerce_text(field: ObjectField, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue("invalid_field", f"expected text, got {type(value).__name__}")
    if field.maxLength is not None and len(value) > field.maxLength:
        raise InvalidValue("value_too_long", f"is longer than {field.maxLength} characters")
    if field.minLength is not None and len(value) < field.minLength:
        raise InvalidValue("value_too_short", f"is shorter than {field.minLength} characters")
    return value


def _coerce_scalar(field: ObjectField, kind: FieldType, value: Any) -> Any:
    if kind in _TEXT:
        return _coerce_text(field, value)
    if kind == FieldType.EMAIL:
        text = _coerce_text(field, value).strip()
        if not _EMAIL.match(text):
            raise InvalidValue("invalid_format", f"{text!r} is not an email address")
        return text
    if kind == FieldType.URL:
        text = _coerce_text(field, value).strip()
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidValue("invalid_format", f"{text!r} is not an http(s) URL")
        return text
    if kind == FieldType.PHONE:
        text = _coerce_text(field, value).strip()
        if not _PHONE.match(text) or sum(c.isdigit() for c in text) < 5:
            raise InvalidValue("invalid_format", f"{text!r} is not a phone number")
        return text
    if kind in (FieldType.SELECT, FieldType.RADIO):
        return _option(field, value)
    if kind in (
        FieldType.NUMBER,
        FieldType.CURRENCY,
        FieldType.PERCENT,
        FieldType.RATING,
        FieldType.SLIDER,
    ):
        return _coerce_number(field, kind, value)
    if kind in (FieldType.BOOLEAN, FieldType.TOGGLE):
        if not isinstance(value, bool):
            raise InvalidValue("invalid_field", "expected true or false")
        return value
    if kind == FieldType.DATE:
        return parse_date(value)
    if kind == FieldType.DATETIME:
        return parse_datetime(value)
    if kind == FieldType.TIME:
        return _parse_time(value)
    if kind in (FieldType.LOOKUP, FieldType.MASTER_DETAIL, FieldType.TREE):
        if not valid_id(value):
            raise InvalidValue("invalid_field", f"expected a record id, got {value!r}")
        return value
    raise InvalidValue("invalid_field", f"unsupported value for a {kind.value} field")


def _option(field: ObjectField, value: Any) -> str:
    allowed = [o.value for o in field.options or ()]
    if not isinstance(value, str) or value not in allowed:
        raise InvalidValue(
            "invalid_option", f"{value!r} is not one of {', '.join(map(repr, allowed))}"
        )
    return value


def parse_date(value: Any) -> dt.date:
    """A date from a ``date`` or ``YYYY-MM-DD`` text (InvalidValue otherwise)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InvalidValue("invalid_field", f"expected a date (YYYY-MM-DD), got {value!r}")


def parse_datetime(value: Any) -> dt.datetime:
    """An aware UTC datetime from a datetime or ISO 8601 text; naive means UTC."""
    parsed: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = None
    if parsed is None:
        raise InvalidValue("invalid_field", f"expected an ISO 8601 date-time, got {value!r}")
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _parse_time(value: Any) -> dt.time:
    if isinstance(value, dt.time):
        return value
    if isinstance(value, str):
        try:
            return dt.time.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InvalidValue("invalid_field", f"expected a time (HH:MM[:SS]), got {value!r}")


def _coerce_structured(kind: FieldType, value: Any) -> Any:
    if kind == FieldType.ADDRESS:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise InvalidValue("invalid_field", "expected an address object")
        unknown = set(value) - _ADDRESS_KEYS
        if unknown:
            raise InvalidValue(
                "invalid_field", f"unknown address keys: {', '.join(sorted(unknown))}"
            )
        if not all(v is None or isinstance(v, str) for v in value.values()):
            raise InvalidValue("invalid_field", "address parts are text")
        return dict(value)
    if kind == FieldType.LOCATION:
        if not isinstance(value, Mapping) or not {"latitude", "longitude"} <= set(value):
            raise InvalidValue("invalid_field", "expected {latitude, longitude}")
        unknown = set(value) - _LOCATION_KEYS
        if unknown:
            raise InvalidValue(
                "invalid_field", f"unknown location keys: {', '.join(sorted(unknown))}"
            )
        parts = {k: float(_number(v)) for k, v in value.items() if v is not None}
        if not -90 <= parts["latitude"] <= 90 or not -180 <= parts["longitude"] <= 180:
            raise InvalidValue("value_out_of_range", "latitude/longitude out of range")
        return parts
    # json: anything JSON can carry
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise InvalidValue("invalid_field", "expected a JSON value") from None


def coerce(field: ObjectField, value: Any, kind: FieldType | None = None) -> Any:
    """Check one client value against ``field`` and convert it to its stored form.

    ``None`` passes through (``required`` is checked separately). ``kind``
    overrides the field's value type (a formula stores its ``returnType``).
    """
    if value is None:
        return None
    kind = kind or field.value_type
    if kind in (FieldType.MULTISELECT, FieldType.CHECKBOXES):
        if not isinstance(value, list):
            raise InvalidValue("invalid_field", "expected a list of options")
        return list(dict.fromkeys(_option(field, v) for v in value))
    if kind == FieldType.TAGS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidValue("invalid_field", "expected a list of tags (text)")
        return list(dict.fromkeys(value))
    if kind in (FieldType.JSON, FieldType.ADDRESS, FieldType.LOCATION):
        return _coerce_structured(kind, value)
    if field.multiple:
        if not isinstance(value, list):
            raise InvalidValue("invalid_field", "expected a list")
        return [_coerce_scalar(field, kind, v) for v in value]
    return _coerce_scalar(field, kind, value)


def computed_value(field: ObjectField, value: Any) -> Any:
    """A formula result converted to the field's ``returnType`` (None when it does not fit)."""
    if value is None:
        return None
    kind = field.value_type
    try:
        if kind in (FieldType.TEXT,):
            return value if isinstance(value, str) else str(value)
        if kind in (FieldType.BOOLEAN,):
            return bool(value)
        if kind in (FieldType.NUMBER, FieldType.CURRENCY, FieldType.PERCENT):
            number = _number(value)
            places = decimal_places(field, kind)
            if places is None:
                return float(number)
            return number.quantize(Decimal(1).scaleb(-places[1]), rounding=ROUND_HALF_UP)
        if kind == FieldType.DATE:
            return parse_date(value)
        if kind == FieldType.DATETIME:
            return parse_datetime(value)
    except (InvalidValue, InvalidOperation, ValueError, TypeError):
        return None
    return None


def to_json(value: Any) -> Any:
    """A stored value as JSON (see the module docstring for the rules)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        # Decimals carry their field's scale: NUMERIC(9, 0) gives ints, currency floats.
        exponent = value.as_tuple().exponent
        if isinstance(exponent, int) and exponent >= 0:
            return int(value)
        return float(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return value


__all__ = [
    "InvalidValue",
    "coerce",
    "computed_value",
    "decimal_places",
    "is_blank",
    "parse_date",
    "parse_datetime",
    "to_json",
    "valid_id",
]
