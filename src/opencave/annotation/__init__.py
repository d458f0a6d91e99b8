"""Annotation tables: metadata, bulk segments and (API-written) live rows."""

from .tables import PERMISSIONS, AnnotationTable, AnnotationTables

__all__ = ["PERMISSIONS", "AnnotationTable", "AnnotationTables"]
