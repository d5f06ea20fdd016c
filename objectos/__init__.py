"""ObjectOS Hub: the domain library (no Ray here; see ARCHITECTURE.md)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
