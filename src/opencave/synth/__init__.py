"""The deterministic synthetic ``minnie65_public`` datastack, at any scale."""

from .build import BuildReport, build, is_complete

__all__ = ["BuildReport", "build", "is_complete"]
