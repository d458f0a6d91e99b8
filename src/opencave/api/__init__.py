"""The HTTP layer: parses, authorizes, calls one component, serializes."""

from .app import create_app

__all__ = ["create_app"]
