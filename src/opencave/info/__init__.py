"""Aligned volumes and datastacks: what the info service describes."""

from .service import AlignedVolume, Datastack, InfoService

__all__ = ["AlignedVolume", "Datastack", "InfoService"]
