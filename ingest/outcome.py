"""Contract 1 and 2 data types: the MappedFile ingest produces and the ValidationOutcome it consumes.

`validation` imports ValidationOutcome from here and returns it; `ingest` never imports `validation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

ROW_FAILURE_COLUMNS = ["row_number", "rule", "column", "value", "severity"]
RULE_RESULT_COLUMNS = ["rule", "severity", "n_checked", "n_failed", "examples"]


def empty_row_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in ROW_FAILURE_COLUMNS})


def empty_rule_results() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in RULE_RESULT_COLUMNS})


@dataclass
class MappedFile:
    """One export read and mapped onto the study (Contract 1).

    `frame`: one row per data row: row_number, arm, site, wave, role, household_raw, person_raw,
    subject_raw, response_date, registration_date, subject_birth_date, subject_sex (plus
    informant_birth_date, informant_sex), then one column per mapped item named by item key holding the
    code as it arrived (after the source's value map; declared missing codes still present).
    `meta`: path, sha256, size, source name/version, format, labels, missing codes per item, unmapped and
    missing columns, file-level arm/site/wave/role (None where they vary per row).
    """

    frame: pd.DataFrame
    meta: dict[str, Any]
    missing_reasons: pd.DataFrame | None = None  # per item column: reason of each missing cell, else None
    row_issues: pd.DataFrame | None = None  # structural problems found while reading (Contract 2 columns)

    @property
    def item_columns(self) -> list[str]:
        return list(self.meta.get("item_columns", []))


@dataclass
class ValidationOutcome:
    """What validation decided about one MappedFile (Contract 2).

    `file_errors` non-empty refuses the whole file. `row_failures` has row_number, rule, column, value,
    severity (`quarantine` or `warn`). `rule_results` has rule, severity, n_checked, n_failed, examples.
    """

    file_errors: list[str] = field(default_factory=list)
    row_failures: pd.DataFrame = field(default_factory=empty_row_failures)
    rule_results: pd.DataFrame = field(default_factory=empty_rule_results)
