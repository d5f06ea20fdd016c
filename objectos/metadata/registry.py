"""The MetadataRegistry: the loaded metadata of a hub, with ETags and reload.

Engines read objects from it; the REST layer serves
``GET /api/v1/meta/{kind}[/{name}]`` from :meth:`MetadataRegistry.items` and
:meth:`MetadataRegistry.get`, answering ``If-None-Match`` with the item's
:attr:`~objectos.metadata.loader.MetadataItem.etag`.

:meth:`MetadataRegistry.reload` re-reads the files; when they are broken it
raises and keeps serving the previous, consistent metadata. Loading reads
files, so from async code call it as ``await asyncio.to_thread(registry.reload)``.
:meth:`MetadataRegistry.files_fingerprint` is the cheap way to notice that the
files changed (a ``stat`` per file, nothing parsed): processes that follow the
metadata on their own poll it and reload when it moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objectos.errors import NotFound, ObjectNotFound
from objectos.metadata.loader import (
    MetadataItem,
    MetadataSnapshot,
    load_metadata,
    metadata_files,
    snapshot_of_objects,
)
from objectos.metadata.relations import Relation, relations_of, summary_link
from objectos.protocol.object import ObjectSchema

MetadataKey = tuple[str, str]


@dataclass(frozen=True)
class MetadataChanges:
    """What a reload changed, as ``(kind, name)`` pairs."""

    added: list[MetadataKey] = field(default_factory=list)
    changed: list[MetadataKey] = field(default_factory=list)
    removed: list[MetadataKey] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def objects(self) -> set[str]:
        """Names of objects added, changed or removed."""
        return {
            name for kind, name in [*self.added, *self.changed, *self.removed] if kind == "object"
        }


def diff_snapshots(old: MetadataSnapshot, new: MetadataSnapshot) -> MetadataChanges:
    """Compare two snapshots item by item (by ETag)."""
    added = sorted(k for k in new.items if k not in old.items)
    removed = sorted(k for k in old.items if k not in new.items)
    changed = sorted(
        k for k in new.items if k in old.items and new.items[k].etag != old.items[k].etag
    )
    return MetadataChanges(added, changed, removed)


class MetadataRegistry:
    """The current metadata: objects and raw items of other kinds, by name.

    ``MetadataRegistry.load(["configs/metadata"])`` reads directories;
    ``MetadataRegistry.from_objects([...])`` wraps objects built in code.
    Either way every object was cross-checked before the registry exists.
    """

    def __init__(self, snapshot: MetadataSnapshot, roots: Sequence[Path] = ()) -> None:
        """Wrap an already checked snapshot; ``roots`` are re-read by :meth:`reload`."""
        self._roots = tuple(roots)
        self._snapshot = snapshot
        self._objects = snapshot.objects
        self._relations = relations_of(self._objects)
        #: Increments whenever a reload changes anything (engines rebuild their tables on it).
        self.version = 1

    @classmethod
    def load(cls, roots: Iterable[str | Path]) -> MetadataRegistry:
        """Read every metadata file under ``roots`` (ManifestError lists all problems)."""
        paths = [Path(r) for r in roots]
        return cls(load_metadata(paths), paths)

    @classmethod
    def from_objects(cls, objects: Iterable[ObjectSchema | Mapping[str, Any]]) -> MetadataRegistry:
        """A registry of objects defined in code (models or mappings shaped like the YAML)."""
        return cls(snapshot_of_objects(objects))

    @property
    def roots(self) -> tuple[Path, ...]:
        """The directories :meth:`reload` reads."""
        return self._roots

    @property
    def objects(self) -> Mapping[str, ObjectSchema]:
        """Every object, by name."""
        return self._objects

    def get_object(self, name: str) -> ObjectSchema:
        """The object called ``name``; ObjectNotFound (404) when there is none."""
        try:
            return self._objects[name]
        except KeyError:
            raise ObjectNotFound(
                f"object {name!r} does not exist", details={"object": name}
            ) from None

    def kinds(self) -> list[str]:
        """Kinds that have at least one item."""
        return sorted({kind for kind, _ in self._snapshot.items})

    def items(self, kind: str) -> list[MetadataItem]:
        """All items of ``kind``, by name."""
        return sorted(
            (item for (k, _), item in self._snapshot.items.items() if k == kind),
            key=lambda item: item.name,
        )

    def get(self, kind: str, name: str) -> MetadataItem:
        """One item; ObjectNotFound for objects, NotFound for other kinds."""
        item = self._snapshot.items.get((kind, name))
        if item is None:
            if kind == "object":
                self.get_object(name)
            raise NotFound(f"{kind} {name!r} does not exist", details={"type": kind, "name": name})
        return item

    def etag(self, kind: str, name: str) -> str:
        """The ETag of one item (changes exactly when its content changes)."""
        return self.get(kind, name).etag

    def relations(self) -> list[Relation]:
        """Every reference field of every object."""
        return list(self._relations)

    def children_of(self, parent: str) -> list[Relation]:
        """Reference fields (of any object) pointing at ``parent``."""
        return [r for r in self._relations if r.parent == parent]

    def summary_link(self, parent: str, child: str) -> str:
        """The field of ``child`` through which summaries of ``parent`` roll up."""
        link = summary_link(parent, self.get_object(child))
        if link is None:  # the loader's checks make this unreachable for loaded metadata
            raise ObjectNotFound(f"{child!r} is not a child of {parent!r}")
        return link

    def files_fingerprint(self) -> str:
        """:func:`files_fingerprint` of this registry's roots ("" without roots)."""
        return files_fingerprint(self._roots)

    def reload(self) -> MetadataChanges:
        """Re-read the roots; return what changed. On errors raise and keep the old state."""
        if not self._roots:
            return MetadataChanges()
        snapshot = load_metadata(self._roots)
        changes = diff_snapshots(self._snapshot, snapshot)
        if changes:
            self._snapshot = snapshot
            self._objects = snapshot.objects
            self._relations = relations_of(self._objects)
            self.version += 1
        return changes


def files_fingerprint(roots: Iterable[str | Path]) -> str:
    """A token that changes when a metadata file under ``roots`` is added, removed,
    renamed or rewritten: path, size and modification time of each, nothing parsed.
    Empty without roots. Reads the file system: from async code,
    ``await asyncio.to_thread(files_fingerprint, roots)``."""
    paths = [Path(root) for root in roots]
    if not paths:
        return ""
    digest = hashlib.sha256()
    for path, _ in metadata_files(root for root in paths if root.is_dir()):
        try:
            stat = path.stat()
        except OSError:  # removed while we looked: the next check sees it gone
            continue
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


__all__ = ["MetadataChanges", "MetadataRegistry", "diff_snapshots", "files_fingerprint"]
