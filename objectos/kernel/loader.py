"""Find plugin classes and check a hub manifest before anything starts.

``check_hub(hub)`` imports every enabled plugin class named in the manifest,
checks that its manifest id matches the key it is listed under, resolves its
configuration against its schema and resolves the dependency graph. It is what
``objectos up`` runs first, so a bad manifest, an unknown plugin or a cycle is a
clear error and nothing is left half-started.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objectos.errors import FieldError, ManifestError, UnknownPlugin
from objectos.kernel.graph import resolve_load_order
from objectos.kernel.plugin import Plugin
from objectos.protocol.loading import load_model
from objectos.protocol.manifest import HubManifest, PluginManifest


def load_plugin_class(ref: str, *, reload: bool = False) -> type[Plugin]:
    """Import ``package.module:Class`` and check it is a Plugin with a manifest."""
    module_name, _, class_name = ref.partition(":")
    try:
        module = sys.modules.get(module_name)
        if module is not None and reload:
            importlib.invalidate_caches()
            module = importlib.reload(module)
        elif module is None:
            module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownPlugin(
            f"cannot import plugin module {module_name!r}: {exc}", details={"module": ref}
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise UnknownPlugin(
            f"module {module_name!r} has no plugin class {class_name!r}", details={"module": ref}
        )
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise UnknownPlugin(f"{ref} is not a Plugin subclass", details={"module": ref})
    if not isinstance(getattr(cls, "manifest", None), PluginManifest):
        raise UnknownPlugin(f"{ref} has no PluginManifest `manifest`", details={"module": ref})
    return cls


def plugin_module_file(ref: str) -> Path | None:
    """The source file of a plugin's module (what ``--dev`` watches)."""
    module = sys.modules.get(ref.partition(":")[0])
    path = getattr(module, "__file__", None)
    return Path(path) if path else None


@dataclass(frozen=True)
class CheckedHub:
    """A hub manifest whose plugins import, configure and resolve."""

    hub: HubManifest
    manifests: dict[str, PluginManifest]
    configs: dict[str, dict[str, Any]]
    order: list[str]


def check_hub(hub: HubManifest, *, source: str = "objectos.yaml") -> CheckedHub:
    """Import, configure and order every plugin; report all problems at once."""
    manifests: dict[str, PluginManifest] = {}
    configs: dict[str, dict[str, Any]] = {}
    problems: list[FieldError] = []
    for plugin_id, entry in hub.plugins.items():
        key = f"plugins.{plugin_id}"
        try:
            cls = load_plugin_class(entry.module)
        except UnknownPlugin as exc:
            problems.append(FieldError(f"{key}.module", exc.code, exc.message))
            continue
        manifest = cls.manifest
        if manifest.id != plugin_id:
            problems.append(
                FieldError(
                    key,
                    "id_mismatch",
                    f"{entry.module} declares id {manifest.id!r}, listed as {plugin_id!r}",
                )
            )
            continue
        try:
            configs[plugin_id] = manifest.resolve_config(entry.config)
        except ValueError as exc:
            problems.append(FieldError(f"{key}.config", "invalid_config", str(exc)))
        manifests[plugin_id] = manifest
    if problems:
        raise ManifestError(
            f"{source}: " + "; ".join(f"{p.field}: {p.message}" for p in problems),
            details={"file": source},
            field_errors=problems,
        )
    enabled = {pid: m for pid, m in manifests.items() if hub.plugins[pid].enabled}
    order = resolve_load_order(enabled)
    return CheckedHub(hub, manifests, configs, order)


def load_hub(path: str | Path) -> HubManifest:
    """Read ``configs/objectos.yaml``; relative paths in it resolve against its folder."""
    path = Path(path).resolve()
    hub = load_model(path, HubManifest)
    base = path.parent
    data_dir = (base / hub.dataDir).resolve()
    hub.dataDir = str(data_dir)
    hub.database.url = hub.database.url.replace("{dataDir}", str(data_dir))
    hub.metadata = [str((base / m).resolve()) for m in hub.metadata]
    return hub


def manifests_of(hub: HubManifest) -> Mapping[str, PluginManifest]:
    """The manifests of a hub's plugins (imports their modules)."""
    return {pid: load_plugin_class(e.module).manifest for pid, e in hub.plugins.items()}
