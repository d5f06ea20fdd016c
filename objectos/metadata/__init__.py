"""Metadata: ``configs/metadata/**`` loaded, cross-checked and served by a registry."""

from objectos.metadata.expression import Expression, ExpressionError
from objectos.metadata.loader import MetadataItem, load_metadata
from objectos.metadata.registry import MetadataChanges, MetadataRegistry

__all__ = [
    "Expression",
    "ExpressionError",
    "MetadataChanges",
    "MetadataItem",
    "MetadataRegistry",
    "load_metadata",
]
