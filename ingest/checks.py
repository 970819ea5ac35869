"""Structural checks ingest always applies, and the basic validation used when no validator is given.

Always: the study knows the arm/site/wave/role; every row has a household and person id. Without a
validator: item codes are among the instrument's response codes (or declared missing codes).
Duplicates are found by the loader (they need the warehouse).
"""

from __future__ import annotations

import re
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
    """Rows without a household or person id cannot be loaded; ids must fit the source's person_pattern."""
    rows: list[dict[str, Any]] = []
    f = mapped.frame
    for col, rule in (("household_raw", "missing_household_id"), ("person_raw", "missing_person_id")):
        miss = f[col].isna().to_numpy()
        for rn in f["row_number"].to_numpy()[miss]:
            rows.append({"row_number": int(rn), "rule": rule, "column": col.replace("_raw", "_id"),
                         "value": None, "severity": "quarantine"})
    pattern = mapped.meta.get("person_pattern")
    if pattern:
        rx = re.compile(pattern.replace("{household}", "(?P<_household>.*?)", 1))
        hh = f["household_raw"].to_numpy(dtype=object)
        for col, raw in (("person_id", f["person_raw"]), ("subject_id", f["subject_raw"])):
            vals = raw.to_numpy(dtype=object)
            for i in np.flatnonzero(~pd.isna(vals) & ~pd.isna(hh)):
                m = rx.fullmatch(str(vals[i]))
                if m is None or ("_household" in rx.groupindex and m.group("_household") != str(hh[i])):
                    rows.append({"row_number": int(f["row_number"].iat[i]), "rule": "id_not_of_household",
                                 "column": col, "value": "<redacted>", "severity": "quarantine",
                                 "expected": "an id of the form given by the source's person_pattern "
                                             "(the household id followed by the respondent code)"})
    return rows


def design_checks(mapped: MappedFile, study: Study) -> list[dict[str, Any]]:
    """Response date inside the wave's window after registration; subject age within the role's range."""
    f = mapped.frame
    rows: list[dict[str, Any]] = []
    rn = f["row_number"].to_numpy()
    days = (pd.to_datetime(f["response_date"]) - pd.to_datetime(f["registration_date"])).dt.days.to_numpy()
    b, a = pd.to_datetime(f["subject_birth_date"]), pd.to_datetime(f["response_date"])
    months = ((a.dt.year - b.dt.year) * 12 + (a.dt.month - b.dt.month) - (a.dt.day < b.dt.day)).to_numpy(dtype=float)
    waves = {w.code: w for w in study.waves}
    roles = {r.code: r for r in study.roles}
    for i, (w, r) in enumerate(zip(f["wave"], f["role"], strict=True)):
        if w in waves and not np.isnan(days[i]):
            lo, hi = waves[w].window_days
            if not lo <= days[i] <= hi:
                rows.append({"row_number": int(rn[i]), "rule": "date_outside_window", "column": "response_date",
                             "value": int(days[i]), "severity": "quarantine",
                             "expected": f"{lo}..{hi} days after registration for wave {w}"})
        role = roles.get(r)
        if role is not None and not np.isnan(months[i]):
            years = months[i] / 12
            if (role.min_age_years is not None and years < role.min_age_years) or (
                    role.max_age_years is not None and years >= role.max_age_years + 1):
                rows.append({"row_number": int(rn[i]), "rule": "age_outside_role", "column": "subject_age",
                             "value": int(years), "severity": "quarantine",
                             "expected": f"age {role.min_age_years or 0:g}..{role.max_age_years or 'any'} "
                                         f"for role {r}"})
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


def basic_validation(mapped: MappedFile, instruments: dict[str, Instrument],
                     study: Study | None = None) -> ValidationOutcome:
    """Codes allowed by the instrument definitions (declared missing codes pass), and with `study` the wave
    window and the role's age range; Contract 2 outcome."""
    failures: list[dict[str, Any]] = list(design_checks(mapped, study)) if study is not None else []
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
