"""Protocol models (pydantic v2, ``extra="forbid"``): manifests, metadata, wire shapes."""

from objectos.protocol.manifest import HubManifest, PluginEntry, PluginManifest

__all__ = ["HubManifest", "PluginEntry", "PluginManifest"]
