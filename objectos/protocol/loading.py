"""Load YAML into protocol models; every error names the file, the key and the line.

``load_model(path, Model)`` parses with PyYAML's composer so each mapping key
keeps its position, validates with pydantic, and turns every pydantic error into
a :class:`~objectos.errors.FieldError` whose ``field`` is ``file:line key.path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from objectos.errors import FieldError, ManifestError

M = TypeVar("M", bound=BaseModel)


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the deepest node along ``loc`` that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = None
            for key_node, value_node in node.value:
                if key_node.value == part:
                    found = value_node
                    line = key_node.start_mark.line + 1
                    break
            if found is None:
                return line
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _key_path(loc: Sequence[int | str]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + part)
    return "".join(parts) or "<root>"


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """Parse ``text``; a syntax error becomes a ManifestError naming ``source``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ManifestError(
            f"{source}:{line or '?'}: invalid YAML: {getattr(exc, 'problem', exc)}",
            details={"file": source, "line": line},
        ) from None
    return data, node


def validate_model(model: type[M], data: Any, *, source: str, node: yaml.Node | None = None) -> M:
    """Validate ``data`` as ``model``; errors name ``source``, key path and line."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        errors: list[FieldError] = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
            line = _line_of(node, loc)
            key = _key_path(loc)
            where = f"{source}:{line}" if line else source
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = "unknown key"
            errors.append(FieldError(field=f"{where} {key}", code=err["type"], message=reason))
        first = errors[0]
        summary = "; ".join(f"{fe.field}: {fe.message}" for fe in errors[:5])
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        raise ManifestError(
            f"invalid {model.__name__} in {summary}{more}",
            details={"file": source, "model": model.__name__, "first": first.to_dict()},
            field_errors=errors,
        ) from None


def load_model(path: str | Path, model: type[M]) -> M:
    """Read a YAML file and validate it as ``model``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(
            f"{path}: cannot read: {exc.strerror or exc}", details={"file": str(path)}
        ) from None
    data, node = parse_yaml(text, str(path))
    if data is None:
        data = {}
    return validate_model(model, data, source=str(path), node=node)
