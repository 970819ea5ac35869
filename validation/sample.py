"""Generated mapped frames (Contract 1) for tests and benchmarks, with faults injected on purpose.

`valid_frame` builds rows that pass every rule, from the study and instrument definitions only (no names in
code); `inject` breaks chosen rows for one rule. The truth of what was broken is the caller's list of rows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument


def _age_band(study: Study, instruments: dict[str, Instrument], role: str) -> tuple[int, int, list[Instrument]]:
    """Whole ages [lo, hi] for generated subjects of `role`, and the role's instruments valid at all of them.

    Instruments of one role may have age ranges that do not overlap (versions for younger and older
    children), so no age suits them all. The band starts at the youngest whole age inside the role's range
    that most of the role's instruments accept, and reaches as far as every one of those instruments allows;
    the other instruments stay out of the frame.
    """
    r = study.role(role)
    r_lo, r_hi = int(np.ceil(r.min_age_years or 0)), int(np.floor(r.max_age_years or 90))
    insts = [i for i in instruments.values() if role in i.roles]

    def fits(inst: Instrument, age: int) -> bool:
        return inst.age_range_years is None or inst.age_range_years[0] <= age < inst.age_range_years[1]  # [from, to)

    if r_lo > r_hi:
        raise ValueError(f"role {role!r}: min_age_years {r.min_age_years} is above max_age_years {r.max_age_years}")
    best = max(range(r_lo, r_hi + 1), key=lambda a: (sum(fits(i, a) for i in insts), -a))
    chosen = [i for i in insts if fits(i, best)]
    lo = max([r_lo] + [int(np.ceil(i.age_range_years[0])) for i in chosen if i.age_range_years])
    hi = min([r_hi] + [int(np.ceil(i.age_range_years[1])) - 1 for i in chosen if i.age_range_years])
    return lo, hi, chosen


def valid_frame(study: Study, instruments: dict[str, Instrument], arm: str, wave: str, role: str,
                n: int = 50, seed: int = 1, site: str | None = None) -> pd.DataFrame:
    """A mapped frame of `n` rows that passes every rule: ids, dates in the window, ages, valid codes.

    Subjects' ages are drawn inside the role's age range and the age ranges of the instruments the frame
    carries (see `_age_band`); every item carries a response code, categorical or numeric. In instruments of
    10 or more items about 3% of the answers are a declared missing code, at most one per instrument and row
    (at most 10% of the items: well under the warning threshold).
    """
    rng = np.random.default_rng(seed)
    a = study.arm(arm)
    site = site or (a.sites[0].code if a.sites else "X")
    r = study.role(role)
    w = study.wave(wave)
    lo_age, hi_age, insts = _age_band(study, instruments, role)
    reg = pd.Timestamp("2024-01-15") + pd.to_timedelta(rng.integers(0, 200, n), "D")
    days = rng.integers(w.window_days[0], w.window_days[1] + 1, n)
    resp = reg + pd.to_timedelta(days, "D")
    # birth dates such that the completed age at the response date is lo_age..hi_age (whole years inside)
    ages = rng.integers(lo_age, hi_age + 1, n)
    birth = resp - pd.to_timedelta(ages * 365.25 + rng.integers(20, 300, n), "D")
    hh = [f"H-{site}-{i:04d}" for i in range(n)]
    informant = r.informant
    person = [f"{h}-P1" for h in hh]
    subject = person if informant == "self" else [f"{h}-C1" for h in hh]
    frame = pd.DataFrame({
        "row_number": np.arange(1, n + 1),
        "arm": pd.Series([arm] * n, dtype=object), "site": pd.Series([site] * n, dtype=object),
        "wave": pd.Series([wave] * n, dtype=object), "role": pd.Series([role] * n, dtype=object),
        "household_raw": pd.Series(hh, dtype=object), "person_raw": pd.Series(person, dtype=object),
        "subject_raw": pd.Series(subject, dtype=object),
        "response_date": resp, "registration_date": reg,
        "subject_birth_date": birth,
        "subject_sex": pd.Series(rng.choice(["male", "female"], n), dtype=object),
        "informant_birth_date": birth if informant == "self" else birth - pd.to_timedelta(30 * 365, "D"),
        "informant_sex": pd.Series(["female"] * n, dtype=object),
    })
    if informant == "self":
        frame["informant_sex"] = frame["subject_sex"]
    items: dict[str, np.ndarray] = {}
    for inst in insts:
        block = np.empty((n, len(inst.items)), dtype="float64")
        for j, item in enumerate(inst.items):
            rs = inst.response_scale_of(item)
            if rs.options:
                block[:, j] = rng.choice(rs.codes, n)
            else:
                lo, hi = rs.numeric  # type: ignore[misc]
                block[:, j] = (rng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, n) if rs.integer
                               else rng.uniform(lo, hi, n))
        if len(inst.items) >= 10:  # in short instruments one missing item already passes the warning share
            hit = np.flatnonzero(rng.random(n) < min(1.0, 0.03 * len(inst.items)))
            block[hit, rng.integers(0, len(inst.items), len(hit))] = -9.0
        for j, item in enumerate(inst.items):
            items[inst.item_key(item.code)] = block[:, j]
    return pd.concat([frame, pd.DataFrame(items)], axis=1)


def item_columns(frame: pd.DataFrame, instruments: dict[str, Instrument], code: str | None = None) -> list[str]:
    """Item columns of the frame (of one instrument when `code` is given), in definition order."""
    out = []
    for inst in instruments.values():
        if code is not None and inst.code != code:
            continue
        out += [inst.item_key(i.code) for i in inst.items if inst.item_key(i.code) in frame.columns]
    return out


def categorical_item_columns(frame: pd.DataFrame, instruments: dict[str, Instrument]) -> list[str]:
    """Item columns of the frame whose answers are response codes (not numeric), in definition order."""
    out = []
    for inst in instruments.values():
        out += [inst.item_key(i.code) for i in inst.items
                if inst.response_scale_of(i).options and inst.item_key(i.code) in frame.columns]
    return out


# --- faults ------------------------------------------------------------------------------------------

Fault = Callable[[pd.DataFrame, list[int], Study, dict[str, Instrument]], pd.DataFrame]


def _first_item(f: pd.DataFrame, instruments: dict[str, Instrument]) -> str:
    return item_columns(f, instruments)[0]


def _bad_id(f, rows, study, insts):
    f.loc[rows, "household_raw"] = "bad id with spaces"
    return f


def _bad_site(f, rows, study, insts):
    f.loc[rows, "site"] = "NOSUCHSITE"
    return f


def _conflicting_duplicate(f, rows, study, insts):
    # rows[i] becomes a second answer of the person in the row before it, with a different first item
    col = _first_item(f, insts)
    for r in rows:
        src = r - 1
        items = set(item_columns(f, insts))
        for c in f.columns:
            if c != "row_number" and c not in items:
                f.loc[r, c] = f.loc[src, c]
        codes = [v for v in f[col].dropna().unique() if v >= 0 and v != f.loc[src, col]]
        f.loc[r, col] = codes[0]
    return f


def _outside_window(f, rows, study, insts):
    wave = study.wave(f.loc[rows[0], "wave"])
    f.loc[rows, "response_date"] = f.loc[rows, "registration_date"] + pd.Timedelta(days=wave.window_days[1] + 30)
    return f


def _too_young(f, rows, study, insts):
    role = study.role(f.loc[rows[0], "role"])
    age = (role.min_age_years or 1) - 1
    f.loc[rows, "subject_birth_date"] = f.loc[rows, "response_date"] - pd.Timedelta(days=int(age * 365.25 + 100))
    # the instruments' answers stay: only the role's age rule is meant to fail, so keep them in range
    return f


def _wrong_subject(f, rows, study, insts):
    role = study.role(f.loc[rows[0], "role"])
    if role.informant == "self":
        f.loc[rows, "subject_raw"] = f.loc[rows, "household_raw"] + "-P9"
    else:
        f.loc[rows, "subject_raw"] = f.loc[rows, "person_raw"]
    return f


def _bad_code(f, rows, study, insts):
    # a code outside the options of a categorical item (on a numeric item it is a numeric_range failure)
    f.loc[rows, categorical_item_columns(f, insts)[0]] = 99.0
    return f


def _many_missing(share: float) -> Fault:
    """Blank just over `share` of the items (the fewest k with k / items > share) of the instrument in the
    frame with the most items (the finest steps of share); answer the rest."""

    def fault(f, rows, study, insts):
        present = [i for i in insts.values() if item_columns(f, insts, i.code)]
        first = max(present, key=lambda i: len(i.items))  # the first of the longest
        cols = item_columns(f, insts, first.code)
        k = min(len(first.items), int(np.floor(share * len(first.items))) + 1)
        for r in rows:
            f.loc[r, cols[:k]] = np.nan
            f.loc[r, cols[k:]] = [_valid_code(insts, c) for c in cols[k:]]
        return f

    return fault


def _valid_code(insts: dict[str, Instrument], key: str) -> float:
    for inst in insts.values():
        for item in inst.items:
            if inst.item_key(item.code) == key:
                rs = inst.response_scale_of(item)
                return float(rs.codes[0] if rs.options else rs.numeric[0])  # type: ignore[index]
    raise KeyError(key)


FAULTS: dict[str, Fault] = {
    "id_format": _bad_id,
    "study_codes": _bad_site,
    "duplicate_key": _conflicting_duplicate,
    "wave_window": _outside_window,
    "age_rule": _too_young,
    "role_consistency": _wrong_subject,
    "allowed_codes": _bad_code,
    "missing_share": _many_missing(0.5),
    "missing_share_high": _many_missing(0.9),
}


def inject(frame: pd.DataFrame, rule: str, rows: list[int], study: Study,
           instruments: dict[str, Instrument]) -> pd.DataFrame:
    """A copy of `frame` with the rows at positions `rows` broken for `rule`."""
    return FAULTS[rule](frame.copy(), list(rows), study, instruments)
