"""Validation: Great Expectations suites generated from the source, study and instrument definitions.

Public entry points: `validate_mapped_file` (one file), `validate_mapped_files` (many, one GX run per
source version), `validate_again` (a file again with another history), `write_data_docs` (Data Docs pages of
several files in one site build), `build_suite`, `summarise`, `resolve_policy`.
Importing this package does not import Great Expectations; validating a file does.
"""

from .engine import validate_again, validate_mapped_file, validate_mapped_files, write_data_docs
from .policy import resolve_policy
from .suite import build_suite
from .summary import summarise

__all__ = ["build_suite", "resolve_policy", "summarise", "validate_again", "validate_mapped_file", "validate_mapped_files",
           "write_data_docs"]
