"""Structural checks ingest always applies, and the basic validation used when no validator is given.

Always: the study knows the arm/site/wave/role; every row has a household and person id. Without a
validator: item codes are among the instrument's response codes (or declared missing codes).
Duplicates are found by the loader (they need the warehouse).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from .outcome import ROW_FAILURE_COLUMNS, RULE_RESULT_COLUMNS, MappedFile, ValidationOutcome


def _examples(values: list[Any], k: int = 5) -> list[Any]:
    return [v if isinstance(v, str | int | float) or v is None else str(v) for v in values[:k]]


def study_field_checks(mapped: MappedFile, study: Study) -> tuple[list[str], list[dict[str, Any]]]:
    """File errors for unknown file-level arm/site/wave/role; row failures when they vary per row."""
    name = mapped.meta["file_name"]
    frame = mapped.frame
    errors: list[str] = []
    rows: list[dict[str, Any]] = []
    known_roles = {r.code for r in study.roles}
    fl = mapped.meta["file_level"]

    def allowed(field: str, arm: str | None) -> set[str]:
        if field == "arm":
            return set(study.arm_codes)
        if field == "role":
            return known_roles
        if arm is None or arm not in study.arm_codes:
            return set()
        if field == "site":
            return {s.code for s in study.arm(arm).sites}
        return set(study.waves_of(arm))

    for field in ("arm", "site", "wave", "role"):
        if fl.get(field) is not None:
            ok = allowed(field, fl.get("arm"))
            if fl[field] not in ok and (field == "arm" or fl.get("arm") in study.arm_codes):
                where = f" of arm {fl['arm']!r}" if field in ("site", "wave") else ""
                errors.append(
                    f"{name}: {field} {fl[field]!r} is not a {field}{where} in the study configuration "
                    f"(known: {sorted(ok)}). Rename the file or fix the column, or add it to config/study.yaml."
                )
            continue
        vals = frame[field].to_numpy(dtype=object)
        arms = frame["arm"].to_numpy(dtype=object)
        for i, (v, a) in enumerate(zip(vals, arms, strict=True)):
            if v is None or v not in allowed(field, a):
                rows.append({"row_number": int(frame["row_number"].iat[i]), "rule": f"unknown_{field}",
                             "column": field, "value": v, "severity": "quarantine"})
    return errors, rows


def id_checks(mapped: MappedFile) -> list[dict[str, Any]]:
    """Rows without a household or person id cannot be loaded."""
    rows: list[dict[str, Any]] = []
    f = mapped.frame
    for col, rule in (("household_raw", "missing_household_id"), ("person_raw", "missing_person_id")):
        miss = f[col].isna().to_numpy()
        for rn in f["row_number"].to_numpy()[miss]:
            rows.append({"row_number": int(rn), "rule": rule, "column": col.replace("_raw", "_id"),
                         "value": None, "severity": "quarantine"})
    return rows


def allowed_codes(instruments: dict[str, Instrument], key: str) -> tuple[set[float] | None, tuple[float, float] | None]:
    """(allowed categorical codes, numeric range) of an item key."""
    for inst in instruments.values():
        prefix = inst.code + "_"
        if key.startswith(prefix) and key[len(prefix):] in inst.item_codes:
            rs = inst.response_scale_of(key[len(prefix):])
            if rs.options:
                return {float(c) for c in rs.codes}, None
            return None, rs.numeric
    return None, None


def basic_validation(mapped: MappedFile, instruments: dict[str, Instrument]) -> ValidationOutcome:
    """Codes allowed by the instrument definitions (declared missing codes pass); Contract 2 outcome."""
    failures: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    f = mapped.frame
    rn = f["row_number"].to_numpy()
    for key in mapped.item_columns:
        codes = f[key].to_numpy(dtype="float64")
        missing = set(mapped.meta["missing_codes"].get(key, {}))
        ok_codes, rng = allowed_codes(instruments, key)
        present = ~np.isnan(codes)
        if missing:
            present &= ~np.isin(codes, list(missing))
        if ok_codes is not None:
            bad = present & ~np.isin(codes, list(ok_codes))
            expected = f"one of {sorted(int(c) if c.is_integer() else c for c in ok_codes)}"
        elif rng is not None:
            bad = present & ((codes < rng[0]) | (codes > rng[1]))
            expected = f"between {rng[0]} and {rng[1]}"
        else:
            continue
        idx = np.flatnonzero(bad)
        for i in idx:
            v = codes[i]
            failures.append({"row_number": int(rn[i]), "rule": "code_not_allowed", "column": key,
                             "value": int(v) if float(v).is_integer() else float(v), "severity": "quarantine",
                             "expected": expected})
        results.append({"rule": f"code_allowed:{key}", "severity": "quarantine", "n_checked": int(present.sum()),
                        "n_failed": int(len(idx)), "examples": _examples([codes[i] for i in idx])})
    rf = pd.DataFrame(failures, columns=[*ROW_FAILURE_COLUMNS, "expected"])
    rr = pd.DataFrame(results, columns=RULE_RESULT_COLUMNS)
    return ValidationOutcome(file_errors=[], row_failures=rf, rule_results=rr)
