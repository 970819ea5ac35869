"""The coupling with `ingest` (Contracts 1 and 2), kept in one place.

`ingest` defines MappedFile and ValidationOutcome; until its branch is merged this module falls back to
a local stand-in with the same fields, so validation can be built and tested against the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

ROW_FAILURE_COLUMNS = ["row_number", "rule", "column", "value", "severity"]
RULE_RESULT_COLUMNS = ["rule", "severity", "n_checked", "n_failed", "examples"]

# Canonical columns of the mapped frame (docs/design.md, Contract 1).
ID_COLUMNS: tuple[str, ...] = ("household_raw", "person_raw", "subject_raw")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "row_number",
    "arm",
    "site",
    "wave",
    "role",
    *ID_COLUMNS,
    "response_date",
    "registration_date",
)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "subject_birth_date",
    "subject_sex",
    "informant_birth_date",
    "informant_sex",
    "household_id",
    "person_id",
    "subject_id",
)

try:  # the real types, once the ingest branch has landed
    from cohortflow.ingest.outcome import ValidationOutcome  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - exercised only before the merge

    @dataclass
    class ValidationOutcome:  # type: ignore[no-redef]
        """Stand-in for ingest's ValidationOutcome (Contract 2)."""

        file_errors: list[str] = field(default_factory=list)
        row_failures: pd.DataFrame = field(default_factory=lambda: empty_frame(ROW_FAILURE_COLUMNS))
        rule_results: pd.DataFrame = field(default_factory=lambda: empty_frame(RULE_RESULT_COLUMNS))


_EMPTY: dict[tuple[str, ...], pd.DataFrame] = {}


def empty_frame(columns: list[str]) -> pd.DataFrame:
    """An empty frame with these object columns (a shallow copy of one built once per column list)."""
    cols = tuple(columns)
    if cols not in _EMPTY:
        _EMPTY[cols] = pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
    return _EMPTY[cols].copy(deep=False)


@dataclass
class MappedInput:
    """What validation needs from a MappedFile: the frame, its meta, and ingest's own row issues."""

    frame: pd.DataFrame
    meta: dict[str, Any]
    row_issues: pd.DataFrame | None = None

    @property
    def file_name(self) -> str:
        from pathlib import Path

        path = self.meta.get("path") or self.meta.get("file_name") or "<unnamed file>"
        return Path(str(path)).name


def as_mapped_input(mapped: object) -> MappedInput:
    """Accept ingest's MappedFile, a (frame, meta) pair or a bare frame; return a MappedInput."""
    if isinstance(mapped, pd.DataFrame):
        return MappedInput(mapped, {})
    if isinstance(mapped, tuple) and len(mapped) == 2:
        return MappedInput(mapped[0], dict(mapped[1] or {}))
    frame = getattr(mapped, "frame", None)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"validate_mapped_file needs a MappedFile (frame + meta), got {type(mapped).__name__}")
    issues = getattr(mapped, "row_issues", None)
    return MappedInput(frame, dict(getattr(mapped, "meta", None) or {}), issues)


def make_outcome(file_errors: list[str], row_failures: pd.DataFrame, rule_results: pd.DataFrame) -> ValidationOutcome:
    """Build the Contract 2 outcome with its columns in the agreed order."""
    return ValidationOutcome(
        file_errors=list(file_errors),
        row_failures=_ordered(row_failures, ROW_FAILURE_COLUMNS),
        rule_results=_ordered(rule_results, RULE_RESULT_COLUMNS),
    )


def _ordered(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` with exactly `columns` in that order and a 0..n-1 index (itself when it already is)."""
    if list(frame.columns) == columns and isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 \
            and frame.index.step == 1:
        return frame
    return frame[columns].reset_index(drop=True)


def file_missing_codes(meta: dict[str, Any]) -> tuple[float, ...]:
    """Missing codes the file declares (ingest's meta['missing_codes']: item key -> {code: reason})."""
    codes: set[float] = set()
    for per_item in (meta.get("missing_codes") or {}).values():
        for c in per_item or {}:
            try:
                codes.add(float(c))
            except (TypeError, ValueError):
                continue
    return tuple(sorted(codes))


_SOURCES: dict[tuple[str, str], object] = {}


def source_of(meta: dict[str, Any]) -> object | None:
    """The source definition named in the meta (source_name, source_version), loaded once; else None."""
    name, version = meta.get("source_name"), meta.get("source_version")
    if meta.get("source") is not None:
        return meta["source"]
    if not name:
        return None
    if (str(name), str(version)) not in _SOURCES:
        try:
            from cohortflow.config.sources import load_source_definitions

            for src in load_source_definitions():
                _SOURCES[(src.name, str(src.version))] = src
        except ImportError:  # pragma: no cover - before the ingest branch lands
            pass
    return _SOURCES.get((str(name), str(version)), {"name": name, "version": version})


def with_pseudonyms(frame: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Add person_id / subject_id pseudonyms (ingest's function) when the frame lacks them."""
    from cohortflow.ingest.pseudonymise import pseudonyms

    add = {pseudo: pseudonyms(key, "person", frame[raw]) for raw, pseudo in
           (("person_raw", "person_id"), ("subject_raw", "subject_id"))
           if pseudo not in frame.columns and raw in frame.columns}
    if not add:
        return frame.copy(deep=False)
    return frame.assign(**{c: pd.Series(v, index=frame.index, dtype=object) for c, v in add.items()})
