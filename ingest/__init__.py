"""Ingestion: read survey exports, map columns to items, and hand a MappedFile to validation and loading.

Loading into the warehouse (one transaction per file) is `cohortflow.warehouse.load.ingest_file`.
"""

from .mapping import load_sources, match_source, read_export
from .outcome import MappedFile, ValidationOutcome

__all__ = ["MappedFile", "ValidationOutcome", "load_sources", "match_source", "read_export"]
