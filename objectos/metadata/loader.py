"""Read ``configs/metadata/**`` into a :class:`MetadataSnapshot`, reporting every error.

Files are recognised by suffix: ``<name>.object.yml`` (and ``.yaml``), likewise
``.permission``, ``.workflow``, ``.automation``, ``.job``, ``.endpoint`` and
``.app``. Objects are validated as :class:`~objectos.protocol.object.ObjectSchema`
and cross-checked (:mod:`objectos.metadata.checks`); the other kinds are kept as
plain mappings until their engines type them.

Loading never stops at the first mistake: all problems of all files are
collected and raised together as one :class:`~objectos.errors.ManifestError`
whose ``field_errors`` each name ``file:line key.path`` and the reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from objectos.errors import FieldError, ManifestError
from objectos.metadata.checks import Problem, check_objects

# loading.py keeps its line lookup private; reusing it keeps one notion of "line of a key".
from objectos.protocol.loading import _line_of, parse_yaml, validate_model
from objectos.protocol.object import ObjectSchema

#: Metadata kinds, recognised by the file suffix ``.<kind>.yml``.
KINDS: tuple[str, ...] = (
    "object",
    "permission",
    "workflow",
    "automation",
    "job",
    "endpoint",
    "app",
)
_EXTENSIONS = (".yml", ".yaml")


@dataclass(frozen=True)
class MetadataItem:
    """One named piece of metadata as served by ``GET /api/v1/meta/{kind}/{name}``."""

    kind: str
    name: str
    source: str
    body: dict[str, Any]
    etag: str
    model: ObjectSchema | None = None


@dataclass
class MetadataSnapshot:
    """Everything loaded at one moment, keyed by ``(kind, name)``."""

    items: dict[tuple[str, str], MetadataItem] = field(default_factory=dict)

    @property
    def objects(self) -> dict[str, ObjectSchema]:
        """The object models by name."""
        return {
            name: item.model
            for (kind, name), item in self.items.items()
            if kind == "object" and item.model is not None
        }


def content_etag(body: Mapping[str, Any]) -> str:
    """A strong HTTP ETag of a JSON-ready mapping (stable across key order)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def kind_of(path: Path) -> str | None:
    """The metadata kind of a file name (``account.object.yml`` -> ``object``)."""
    for ext in _EXTENSIONS:
        if path.name.endswith(ext):
            stem = path.name[: -len(ext)]
            _, dot, kind = stem.rpartition(".")
            return kind if dot and kind in KINDS else None
    return None


def _stem(path: Path, kind: str) -> str:
    for ext in _EXTENSIONS:
        suffix = f".{kind}{ext}"
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _key_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + part)
    return out or "<root>"


def _object_body(model: ObjectSchema) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def _raise_if(errors: list[FieldError], files: list[str]) -> None:
    if not errors:
        return
    shown = "; ".join(f"{fe.field}: {fe.message}" for fe in errors[:5])
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    raise ManifestError(
        f"{len(errors)} metadata problem(s): {shown}{more}",
        details={"files": sorted(set(files)), "count": len(errors)},
        field_errors=errors,
    )


class _Collector:
    """Loads files one by one, remembering every error instead of raising."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []
        self.bad_files: list[str] = []
        self.items: dict[tuple[str, str], MetadataItem] = {}
        self.nodes: dict[str, tuple[str, yaml.Node | None]] = {}  # object -> (file, node)
        # Objects whose own file is broken: already reported, so references to them are not.
        self.invalid_objects: set[str] = set()

    def fail(self, source: str, errors: Iterable[FieldError]) -> None:
        self.errors.extend(errors)
        self.bad_files.append(source)

    def add(self, item: MetadataItem) -> None:
        key = (item.kind, item.name)
        if key in self.items:
            other = self.items[key].source
            self.fail(
                item.source,
                [
                    FieldError(
                        field=f"{item.source} name",
                        code="duplicate_name",
                        message=f"{item.kind} {item.name!r} is already defined in {other}",
                    )
                ],
            )
            return
        self.items[key] = item

    def load_file(self, path: Path, kind: str) -> None:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
            data, node = parse_yaml(text, source)
        except OSError as exc:
            self.fail(source, [FieldError(f"{source}", "unreadable", str(exc))])
            return
        except ManifestError as exc:
            where = f"{source}:{exc.details.get('line') or '?'}"
            message = exc.message.removeprefix(f"{where}: ")
            self.fail(source, [FieldError(where, "invalid_yaml", message)])
            return
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(
                source,
                [
                    FieldError(
                        f"{source}:1 <root>", "invalid_type", f"a {kind} file holds one mapping"
                    )
                ],
            )
            return
        if "name" not in data:
            # ObjectQL names metadata after its file; keep that convenience.
            data = {"name": _stem(path, kind), **data}
        if kind == "object":
            try:
                model = validate_model(ObjectSchema, data, source=source, node=node)
            except ManifestError as exc:
                self.fail(source, [_tidy(fe) for fe in exc.field_errors])
                if isinstance(data.get("name"), str):
                    self.invalid_objects.add(data["name"])
                return
            body = _object_body(model)
            self.nodes[model.name] = (source, node)
            self.add(MetadataItem("object", model.name, source, body, content_etag(body), model))
            return
        name = data.get("name")
        if not isinstance(name, str) or not name:
            self.fail(
                source,
                [
                    FieldError(
                        f"{source}:{_line_of(node, ['name'])} name",
                        "invalid_type",
                        "name must be a non-empty string",
                    )
                ],
            )
            return
        body = json.loads(json.dumps(data, default=str))
        self.add(MetadataItem(kind, name, source, body, content_etag(body)))

    def cross_check(self) -> None:
        objects = {
            name: item.model
            for (kind, name), item in self.items.items()
            if kind == "object" and item.model is not None
        }
        for problem in check_objects(objects):
            if problem.target in self.invalid_objects:
                continue
            source, node = self.nodes.get(problem.object, ("<memory>", None))
            self.fail(source, [problem_error(problem, source, node)])


def _tidy(error: FieldError) -> FieldError:
    """Drop pydantic's noise ('Value error, ', '.[key]') from a schema error."""
    return FieldError(
        field=error.field.replace(".[key]", ""),
        code=error.code,
        message=error.message.removeprefix("Value error, "),
    )


def problem_error(problem: Problem, source: str, node: yaml.Node | None) -> FieldError:
    """A cross-object Problem as a FieldError naming ``file:line key``."""
    line = _line_of(node, list(problem.path)) if node is not None else None
    where = f"{source}:{line}" if line else source
    key = _key_path(problem.path)
    if node is None:
        key = f"{problem.object}.{key}"
    return FieldError(field=f"{where} {key}", code=problem.code, message=problem.message)


def metadata_files(roots: Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Every metadata file under ``roots`` with its kind, in a stable order."""
    found: list[tuple[Path, str]] = []
    for root in roots:
        for path in sorted(Path(root).rglob("*")):
            kind = kind_of(path) if path.is_file() else None
            if kind is not None:
                found.append((path, kind))
    return found


def load_metadata(roots: Iterable[str | Path]) -> MetadataSnapshot:
    """Load every metadata file under ``roots``; raise one ManifestError listing all problems."""
    collector = _Collector()
    paths = [Path(r) for r in roots]
    for root in paths:
        if not root.is_dir():
            collector.fail(
                str(root), [FieldError(str(root), "not_found", "metadata directory does not exist")]
            )
    for path, kind in metadata_files(r for r in paths if r.is_dir()):
        collector.load_file(path, kind)
    collector.cross_check()
    _raise_if(collector.errors, collector.bad_files)
    return MetadataSnapshot(collector.items)


def snapshot_of_objects(
    objects: Iterable[ObjectSchema | Mapping[str, Any]], *, source: str = "<memory>"
) -> MetadataSnapshot:
    """Build a checked snapshot from object models or plain mappings (tests, plugins)."""
    collector = _Collector()
    for i, obj in enumerate(objects):
        where = f"{source}[{i}]"
        if not isinstance(obj, ObjectSchema):
            try:
                obj = validate_model(ObjectSchema, dict(obj), source=where)
            except ManifestError as exc:
                collector.fail(where, [_tidy(fe) for fe in exc.field_errors])
                continue
        body = _object_body(obj)
        collector.nodes[obj.name] = (where, None)
        collector.add(MetadataItem("object", obj.name, where, body, content_etag(body), obj))
    collector.cross_check()
    _raise_if(collector.errors, collector.bad_files)
    return MetadataSnapshot(collector.items)


__all__ = [
    "KINDS",
    "MetadataItem",
    "MetadataSnapshot",
    "content_etag",
    "kind_of",
    "load_metadata",
    "metadata_files",
    "snapshot_of_objects",
]
