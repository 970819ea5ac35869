"""Row checks derived from the study and instrument definitions.

Each check looks at the mapped frame (positional index 0..n-1) and returns its failures as a frame
`pos, column, value` (one line per failing cell; `value` is a short, identifier-free text). The engine turns
each check into one derived column that Great Expectations validates, so every result flows through one GX
validation per file; the details here say which column and value failed.

Values never carry raw identifiers or exact birth dates: identifiers are shown by their form (letters as
`A`, digits as `9`), birth dates as ages or birth years.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from .contract import ID_COLUMNS
from .policy import Policy

FAIL_COLUMNS = ["pos", "column", "value"]
FILE_COLUMN = "_file"  # in frames stacked from several files: the file's position; rows compare within a file


_NO_FAILURES = pd.DataFrame({"pos": pd.Series(dtype="int64"), "column": pd.Series(dtype="object"),
                             "value": pd.Series(dtype="object")})


def no_failures() -> pd.DataFrame:
    """An empty failure frame (pos, column, value); a shallow copy of one built once (copy-on-write)."""
    return _NO_FAILURES.copy(deep=False)


def _failures(pos: np.ndarray | pd.Index, column: str | pd.Series | list, value: pd.Series | list | str) -> pd.DataFrame:
    pos = np.asarray(pos, dtype="int64")
    if len(pos) == 0:
        return no_failures()
    col = [column] * len(pos) if isinstance(column, str) else list(column)
    val = [value] * len(pos) if isinstance(value, str) else [str(v) for v in value]
    return pd.DataFrame({"pos": pos, "column": col, "value": val})


def mask_identifier(value: object) -> str:
    """The form of an identifier without the identifier: letters -> 'A', digits -> '9', empty -> 'missing'."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "missing"
    text = str(value)
    if text.strip() == "":
        return "empty"
    return "'" + re.sub(r"[0-9]", "9", re.sub(r"[^\W\d_]", "A", text)) + "'"


@dataclass(frozen=True)
class ItemSpec:
    """What the definitions say an item column may hold."""

    key: str
    instrument: str
    codes: tuple[float, ...] | None  # categorical response codes, or None for numeric items
    numeric: tuple[float, float] | None
    integer: bool


@dataclass
class Context:
    """Everything a check needs, computed once per file."""

    frame: pd.DataFrame
    study: Study
    instruments: dict[str, Instrument]
    items: dict[str, ItemSpec]  # item columns present in the frame
    policy: Policy
    history: pd.DataFrame | None
    values: np.ndarray  # item columns as floats, rows x items (non-numeric text -> NaN)
    not_numeric: np.ndarray  # True where a cell holds text that is not a number
    missing: np.ndarray  # True where an item is missing (blank or a declared missing code)
    column_index: dict[str, int]  # item key -> column of `values`
    by_instrument: dict[str, list[int]]  # instrument code -> its columns in `values`
    age_years: pd.Series  # completed years of the subject at the response date (NaN when unknown)
    missing_codes: tuple[float, ...] = ()  # declared missing codes: the policy's and the file's own

    def instrument_columns(self, code: str) -> list[str]:
        return [k for k, s in self.items.items() if s.instrument == code]

    def answered(self, code: str) -> pd.Series:
        """Rows with at least one item of the instrument answered (a value that is not a missing code)."""
        cols = self.by_instrument.get(code, [])
        if not cols:
            return pd.Series(False, index=self.frame.index)
        return pd.Series((~self.missing[:, cols]).any(axis=1), index=self.frame.index)


def completed_years(birth: pd.Series, at: pd.Series) -> pd.Series:
    """Age in completed years at a date (calendar arithmetic, birthday counts); NaN when a date is missing."""
    b = pd.to_datetime(birth, errors="coerce")
    a = pd.to_datetime(at, errors="coerce")
    years = a.dt.year - b.dt.year
    before_birthday = (a.dt.month < b.dt.month) | ((a.dt.month == b.dt.month) & (a.dt.day < b.dt.day))
    out = years - before_birthday.astype("float64")
    return out.astype("float64").where(b.notna() & a.notna())


def _as_float(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A column as floats plus a mask of cells that hold non-numeric text."""
    if pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype):
        vals = col.to_numpy(dtype="float64", na_value=np.nan)
        return vals, np.zeros(len(col), dtype=bool)
    num = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return num, col.notna().to_numpy() & np.isnan(num)


def build_context(frame: pd.DataFrame, study: Study, instruments: dict[str, Instrument],
                  items: dict[str, ItemSpec], policy: Policy, history: pd.DataFrame | None,
                  extra_missing: tuple[float, ...] = ()) -> Context:
    """Prepare the shared derived values of one file (`extra_missing`: codes the file itself declares)."""
    cols = list(items)
    n = len(frame)
    values = np.empty((n, len(cols)), dtype="float64")
    not_numeric = np.zeros((n, len(cols)), dtype=bool)
    for j, c in enumerate(cols):
        values[:, j], not_numeric[:, j] = _as_float(frame[c])
    missing_codes = sorted(set(policy.missing_codes) | set(extra_missing))
    missing = (np.isnan(values) & ~not_numeric) | np.isin(values, missing_codes)
    by_instrument: dict[str, list[int]] = {}
    for j, c in enumerate(cols):
        by_instrument.setdefault(items[c].instrument, []).append(j)
    if "subject_birth_date" in frame.columns:
        age = completed_years(frame["subject_birth_date"], frame["response_date"])
    else:
        age = pd.Series(np.nan, index=frame.index)
    return Context(frame, study, instruments, items, policy, history, values, not_numeric, missing,
                   {c: j for j, c in enumerate(cols)}, by_instrument, age, tuple(missing_codes))


# --- identifiers and study codes -----------------------------------------------------------------------

def _id_pattern_ok(values: pd.Series, pattern: str, frame: pd.DataFrame) -> np.ndarray:
    """Match each value against the pattern; `{column}` in the pattern stands for that row's (escaped) value."""
    fields = re.findall(r"\{([a-z_]+)\}", pattern)
    text = values.astype("object").where(values.notna(), None).tolist()
    if not fields:
        rx = re.compile(pattern)
        return np.array([v is not None and rx.fullmatch(str(v)) is not None for v in text], dtype=bool)
    # fast path: each {column} becomes a capture group; a row passes when the groups equal its own values
    generic = pattern
    for k, name in enumerate(fields):
        generic = generic.replace("{" + name + "}", f"(?P<f{k}>.+)", 1)
    rx_generic = re.compile(generic)
    others = [frame[c].astype("object").where(frame[c].notna(), None).tolist() if c in frame.columns
              else [None] * len(frame) for c in fields]
    ok = np.zeros(len(text), dtype=bool)
    for i, v in enumerate(text):
        sub = tuple(o[i] for o in others)
        if v is None or any(x is None for x in sub):
            continue
        m = rx_generic.fullmatch(str(v))
        if m is None:
            continue
        if all(m.group(f"f{k}") == str(x) for k, x in enumerate(sub)):
            ok[i] = True
            continue
        filled = pattern  # the greedy groups split differently: check this row exactly
        for name, val in zip(fields, sub, strict=True):
            filled = filled.replace("{" + name + "}", re.escape(str(val)))
        ok[i] = re.fullmatch(filled, str(v)) is not None
    return ok


def check_id_format(ctx: Context) -> pd.DataFrame:
    """Identifiers present and matching the declared pattern of their column.

    A pattern may name another column in braces, e.g. person ids that extend the household id:
    `^{household_raw}-[A-Z][0-9]+$`.
    """
    parts = []
    for col in ID_COLUMNS:
        if col not in ctx.frame.columns:
            continue
        s = ctx.frame[col]
        pattern = ctx.policy.id_patterns.get(col, r".+")
        bad = np.flatnonzero(~_id_pattern_ok(s, pattern, ctx.frame))
        parts.append(_failures(bad, col, [mask_identifier(s.iloc[i]) for i in bad]))
    return pd.concat(parts, ignore_index=True) if parts else no_failures()


def check_study_codes(ctx: Context) -> pd.DataFrame:
    """Arm, site, wave and role are study codes; the site belongs to the arm; the arm is measured at the wave."""
    f, study = ctx.frame, ctx.study
    arms = {a.code: a for a in study.arms}
    sites = {a.code: {s.code for s in a.sites} for a in study.arms}
    roles = {r.code for r in study.roles}
    waves = set(study.wave_codes)
    cols = ["arm", "site", "wave", "role"]
    combos = f[cols].astype("object").where(f[cols].notna(), None)
    problems: dict[tuple, list[tuple[str, str]]] = {}
    for arm, site, wave, role in combos.drop_duplicates().itertuples(index=False):  # each combination once
        out: list[tuple[str, str]] = []
        a = arms.get(arm)
        if a is None:
            out.append(("arm", f"arm {arm!r} is not an arm of the study {sorted(arms)}"))
        elif sites[arm] and site not in sites[arm]:
            out.append(("site", f"site {site!r} is not a site of arm {arm!r}"))
        if wave not in waves:
            out.append(("wave", f"wave {wave!r} is not a wave of the study {sorted(waves)}"))
        elif a is not None and wave not in study.waves_of(arm):
            out.append(("wave", f"arm {arm!r} is not measured at wave {wave!r}"))
        if role not in roles:
            out.append(("role", f"role {role!r} is not a role of the study {sorted(roles)}"))
        if out:
            problems[(arm, site, wave, role)] = out
    if not problems:
        return no_failures()
    rows = []
    for pos, combo in enumerate(combos.itertuples(index=False, name=None)):
        for col, text in problems.get(combo, []):
            rows.append((pos, col, text))
    return pd.DataFrame(rows, columns=FAIL_COLUMNS)


def check_duplicate_key(ctx: Context) -> pd.DataFrame:
    """A later row with the same (subject, informant, wave, role) as an earlier row of the file.

    The first row stays; each later one fails, saying whether it is an exact copy or answers differently.
    """
    key = ["subject_raw", "person_raw", "wave", "role"]
    f = ctx.frame
    if FILE_COLUMN in f.columns:
        key = [FILE_COLUMN, *key]
    later = f.duplicated(subset=key, keep="first").to_numpy()
    if not later.any():
        return no_failures()
    groups = [f[k].astype("object").fillna("") for k in key]
    first_pos = pd.Series(np.arange(len(f)), index=f.index).groupby(groups, sort=False).transform("first").to_numpy()
    content = [c for c in f.columns if c not in ("row_number", FILE_COLUMN)]
    texts = []
    bad = np.flatnonzero(later)
    for i in bad:
        j = int(first_pos[i])
        a, b = f.iloc[i][content], f.iloc[j][content]
        same = bool(((a == b) | (a.isna() & b.isna())).all())
        first_row = int(f["row_number"].iloc[j])
        texts.append(f"exact copy of row {first_row}" if same else
                     f"same subject, informant, wave and role as row {first_row}, with different answers")
    return _failures(bad, "subject_raw,person_raw,wave,role", texts)


# --- dates and ages ----------------------------------------------------------------------------------

def check_wave_window(ctx: Context) -> pd.DataFrame:
    """Response date within the wave's window of days after the registration date (T0)."""
    f = ctx.frame
    resp = pd.to_datetime(f["response_date"], errors="coerce")
    reg = pd.to_datetime(f["registration_date"], errors="coerce")
    days = (resp - reg).dt.days
    lo = f["wave"].map({w.code: w.window_days[0] for w in ctx.study.waves})
    hi = f["wave"].map({w.code: w.window_days[1] for w in ctx.study.waves})
    known_wave = lo.notna()
    no_date = known_wave & (resp.isna() | reg.isna())
    outside = known_wave & days.notna() & ((days < lo) | (days > hi))
    parts = []
    bad = np.flatnonzero(no_date.to_numpy())
    parts.append(_failures(bad, ["response_date" if pd.isna(resp.iloc[i]) else "registration_date" for i in bad],
                           "date missing: cannot place the response in its wave"))
    bad = np.flatnonzero(outside.to_numpy())
    parts.append(_failures(bad, "response_date",
                           [f"{int(days.iloc[i])} days after T0; wave {f['wave'].iloc[i]} window is "
                            f"{int(lo.iloc[i])}..{int(hi.iloc[i])}" for i in bad]))
    return pd.concat(parts, ignore_index=True)


def _role_bounds(study: Study, attr: str) -> dict[str, float]:
    return {r.code: getattr(r, attr) for r in study.roles if getattr(r, attr) is not None}


def check_age_rule(ctx: Context) -> pd.DataFrame:
    """Subject's completed age at the response date within the role's [min, max] years."""
    f, age = ctx.frame, ctx.age_years
    lo = f["role"].map(_role_bounds(ctx.study, "min_age_years")).astype("float64")
    hi = f["role"].map(_role_bounds(ctx.study, "max_age_years")).astype("float64")
    bad_mask = age.notna() & ((lo.notna() & (age < lo)) | (hi.notna() & (age > hi)))
    bad = np.flatnonzero(bad_mask.to_numpy())

    def text(i: int) -> str:
        rng = f"{'' if pd.isna(lo.iloc[i]) else f'{lo.iloc[i]:g}'}..{'' if pd.isna(hi.iloc[i]) else f'{hi.iloc[i]:g}'}"
        return f"subject aged {int(age.iloc[i])} at the response date; role {f['role'].iloc[i]} needs {rng} years"

    return _failures(bad, "subject_birth_date", [text(i) for i in bad])


def check_role_consistency(ctx: Context) -> pd.DataFrame:
    """Self-reports are about the informant, parent reports about another person, instruments fit the role."""
    f = ctx.frame
    informant = f["role"].map({r.code: r.informant for r in ctx.study.roles})
    same = f["subject_raw"].astype("object").eq(f["person_raw"].astype("object")) & f["subject_raw"].notna()
    parts = []
    bad = np.flatnonzero(((informant == "self") & ~same & f["subject_raw"].notna()).to_numpy())
    parts.append(_failures(bad, "subject_raw", "self-report row about another person than the informant"))
    bad = np.flatnonzero(((informant == "parent") & same).to_numpy())
    parts.append(_failures(bad, "subject_raw", "parent-report row about the informant themself"))
    for code, inst in ctx.instruments.items():
        if not ctx.by_instrument.get(code):
            continue
        wrong = ctx.answered(code) & f["role"].notna() & ~f["role"].isin(inst.roles)
        bad = np.flatnonzero(wrong.to_numpy())
        parts.append(_failures(bad, code, [f"role {f['role'].iloc[i]} answered {code}, which is for roles "
                                           f"{', '.join(inst.roles)}" for i in bad]))
    return pd.concat(parts, ignore_index=True)


def check_instrument_age_range(ctx: Context) -> pd.DataFrame:
    """Answers to an instrument only from subjects inside its age range."""
    parts = [no_failures()]
    for code, inst in ctx.instruments.items():
        if inst.age_range_years is None or not ctx.by_instrument.get(code):
            continue
        lo, hi = inst.age_range_years
        outside = ctx.answered(code) & ctx.age_years.notna() & ((ctx.age_years < lo) | (ctx.age_years >= hi))
        bad = np.flatnonzero(outside.to_numpy())
        parts.append(_failures(bad, code, [f"subject aged {int(ctx.age_years.iloc[i])} answered {code} "
                                           f"(ages {lo:g} to under {hi:g})" for i in bad]))
    return pd.concat(parts, ignore_index=True)


# --- persons across rows and waves --------------------------------------------------------------------

def _person_views(f: pd.DataFrame) -> list[tuple[str, str, str | None, str | None, str | None]]:
    """(raw id column, pseudonym column, sex column, birth date column, label) for subject and informant."""
    views = []
    if "subject_raw" in f.columns:
        views.append(("subject_raw", "subject_id", "subject_sex", "subject_birth_date", "subject"))
    if "person_raw" in f.columns and ({"informant_sex", "informant_birth_date"} & set(f.columns)):
        views.append(("person_raw", "person_id", "informant_sex", "informant_birth_date", "informant"))
    return views


def check_sex_birth_year(ctx: Context) -> pd.DataFrame:
    """Sex and birth year of a person agree with earlier waves (history) and with the person's other rows.

    Within the file a row fails when it differs from the value most rows of the person give (all rows of
    the person fail when there is no majority). Against history a row fails when it differs from the
    value stored for the same pseudonym.
    """
    f = ctx.frame
    out: list[tuple[int, str, str]] = []
    hist = ctx.history
    per_file = FILE_COLUMN in f.columns and hist is not None and FILE_COLUMN in hist.columns
    if hist is not None and len(hist):
        if per_file:  # stacked files, one history each: look persons up by (file, pseudonym)
            hist = hist.assign(pseudonym=_per_file(hist[FILE_COLUMN], hist["pseudonym"]))
        hist = hist.drop_duplicates("pseudonym", keep="last").set_index("pseudonym")
    for raw_col, pseudo_col, sex_col, birth_col, label in _person_views(f):
        attrs: dict[str, pd.Series] = {}
        if sex_col in f.columns:
            attrs["sex"] = f[sex_col].astype("object").where(f[sex_col].notna(), None)
        if birth_col in f.columns:
            by = pd.to_datetime(f[birth_col], errors="coerce").dt.year
            attrs["birth_year"] = by.astype("object").where(by.notna(), None)
        keys = f[raw_col].astype("object")
        if FILE_COLUMN in f.columns:
            keys = _per_file(f[FILE_COLUMN], keys)
        repeated = keys.notna() & keys.duplicated(keep=False)  # only persons with several rows can disagree
        has_repeats = bool(repeated.any())
        flagged: set[tuple[int, str]] = set()
        looked_up: pd.Series | None = None  # the rows' history keys, built once per person view
        for attr, values in attrs.items():
            col = sex_col if attr == "sex" else birth_col
            data = (pd.DataFrame({"k": keys[repeated], "v": values[repeated]}).dropna() if has_repeats
                    else None)
            if data is not None and len(data):
                counts = data.groupby(["k", "v"], sort=False).size()
                multi = counts.groupby(level=0).size()
                for k in multi[multi > 1].index:
                    c = counts.loc[k]
                    top = c[c == c.max()]
                    majority = top.index[0] if len(top) == 1 else None
                    sel = data["k"] == k
                    if majority is not None:
                        sel &= data["v"] != majority
                    for pos in data.index[sel]:
                        shown = values.iloc[pos]
                        why = (f"{label} {attr} {shown} differs from {majority} in other rows of the same person"
                               if majority is not None else f"{label} {attr} differs between rows of the same person")
                        out.append((int(pos), col, why))
                        flagged.add((int(pos), attr))
            if hist is not None and len(hist) and pseudo_col in f.columns and attr in hist.columns:
                if looked_up is None:
                    looked_up = _per_file(f[FILE_COLUMN], f[pseudo_col]) if per_file else f[pseudo_col]
                earlier = looked_up.map(hist[attr])
                both = np.flatnonzero((earlier.notna() & values.notna()).to_numpy())
                now_all, before_all = values.to_numpy(dtype=object), earlier.to_numpy(dtype=object)
                for pos, now, before in zip(both.tolist(), now_all[both].tolist(), before_all[both].tolist(),
                                            strict=True):
                    if _differs(now, before) and (pos, attr) not in flagged:
                        out.append((pos, col, f"{label} {attr} {now} differs from {before} in an earlier wave"))
    if not out:
        return no_failures()
    return pd.DataFrame(out, columns=FAIL_COLUMNS)


def _per_file(file: pd.Series, ids: pd.Series) -> pd.Series:
    """Identifiers made unique per file of a stacked frame ('<file>:<id>'; missing stays missing)."""
    vals = ids.to_numpy(dtype=object)
    out = np.empty(len(vals), dtype=object)
    out[:] = [None if m else f"{k}:{v}" for k, v, m in zip(file.to_numpy(dtype="int64").tolist(), vals.tolist(),
                                                          pd.isna(vals).tolist(), strict=True)]
    return pd.Series(out, index=ids.index, dtype=object)


def _differs(a: object, b: object) -> bool:
    try:
        return float(a) != float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(a) != str(b)


# --- items -------------------------------------------------------------------------------------------

def _fmt_code(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _cell_failures(ctx: Context, cols: list[int], invalid: np.ndarray) -> pd.DataFrame:
    """Failures for the True cells of `invalid` (rows x cols block): column = item key, value = the code."""
    rows, js = np.nonzero(invalid)
    if len(rows) == 0:
        return no_failures()
    keys = list(ctx.column_index)
    names = [keys[cols[j]] for j in js]
    vals = [repr(ctx.frame[name].iloc[r]) if ctx.not_numeric[r, cols[j]] else _fmt_code(ctx.values[r, cols[j]])
            for r, j, name in zip(rows, js, names, strict=True)]
    return _failures(rows, names, vals)


def check_allowed_codes(ctx: Context) -> pd.DataFrame:
    """Categorical items hold a response code, a declared missing code, or nothing."""
    groups: dict[tuple[float, ...], list[int]] = {}
    for key, j in ctx.column_index.items():
        codes = ctx.items[key].codes
        if codes is not None:
            groups.setdefault(codes, []).append(j)
    parts = [no_failures()]
    missing = list(ctx.missing_codes)
    for codes, cols in groups.items():
        block = ctx.values[:, cols]
        invalid = ctx.not_numeric[:, cols] | (~np.isnan(block) & ~np.isin(block, list(codes) + missing))
        if invalid.any():
            parts.append(_cell_failures(ctx, cols, invalid))
    return pd.concat(parts, ignore_index=True)


def check_numeric_range(ctx: Context) -> pd.DataFrame:
    """Numeric items lie in their declared [min, max] (integers where declared) or hold a missing code."""
    parts = [no_failures()]
    missing = list(ctx.missing_codes)
    for key, j in ctx.column_index.items():
        spec = ctx.items[key]
        if spec.numeric is None:
            continue
        lo, hi = spec.numeric
        v = ctx.values[:, [j]]
        present = ~np.isnan(v) & ~np.isin(v, missing)
        with np.errstate(invalid="ignore"):
            invalid = ctx.not_numeric[:, [j]] | (present & ((v < lo) | (v > hi)))
            if spec.integer:
                invalid |= present & (v != np.round(v))
        if invalid.any():
            parts.append(_cell_failures(ctx, [j], invalid))
    return pd.concat(parts, ignore_index=True)


def _missing_shares(ctx: Context) -> list[tuple[str, pd.Series, int, pd.Series]]:
    """Per instrument present: (code, share missing, n items, applies) for rows the instrument applies to."""
    out = []
    for code, inst in ctx.instruments.items():
        cols = ctx.by_instrument.get(code)
        if not cols:
            continue
        applies = ctx.frame["role"].isin(inst.roles)
        if inst.age_range_years is not None:
            lo, hi = inst.age_range_years
            applies &= ctx.age_years.isna() | ((ctx.age_years >= lo) & (ctx.age_years < hi))
        n_items = len(inst.items)
        # items of the instrument that the file does not carry count as missing
        share = pd.Series((ctx.missing[:, cols].sum(axis=1) + (n_items - len(cols))) / n_items, index=ctx.frame.index)
        out.append((code, share, n_items, applies))
    return out


def _share_failures(ctx: Context, lower: float, upper: float | None) -> pd.DataFrame:
    parts = []
    for code, share, n_items, applies in _missing_shares(ctx):
        hit = applies & (share > lower)
        if upper is not None:
            hit &= share <= upper
        bad = np.flatnonzero(hit.to_numpy())
        if len(bad) == 0:
            continue
        parts.append(_failures(bad, code, [f"{round(share.iloc[i] * n_items)} of {n_items} items missing "
                                           f"({share.iloc[i]:.0%}; limit {lower:.0%})" for i in bad]))
    return pd.concat(parts, ignore_index=True) if parts else no_failures()


def check_missing_share(ctx: Context) -> pd.DataFrame:
    """Share of an instrument's items missing above the warning threshold (and not above the high one)."""
    t = ctx.policy.thresholds
    return _share_failures(ctx, t["missing_share_warn"], t["missing_share_high"])


def check_missing_share_high(ctx: Context) -> pd.DataFrame:
    """Share of an instrument's items missing above the quarantine threshold."""
    return _share_failures(ctx, ctx.policy.thresholds["missing_share_high"], None)


CHECKS: dict[str, Callable[[Context], pd.DataFrame]] = {
    "id_format": check_id_format,
    "study_codes": check_study_codes,
    "duplicate_key": check_duplicate_key,
    "wave_window": check_wave_window,
    "age_rule": check_age_rule,
    "role_consistency": check_role_consistency,
    "sex_birth_year_consistency": check_sex_birth_year,
    "allowed_codes": check_allowed_codes,
    "numeric_range": check_numeric_range,
    "instrument_age_range": check_instrument_age_range,
    "missing_share": check_missing_share,
    "missing_share_high": check_missing_share_high,
}
HISTORY_RULES = frozenset({"sex_birth_year_consistency"})  # the checks that read the persons history
