"""Wave linkage: responses linked to persons and households across waves and files, conflicts resolved by
stated rules, and the analysis dataset of docs/design.md Contract 5.

The core, `link_waves(responses, scores, persons, study, instruments, rules) -> LinkedData`, is pure pandas on
frames shaped like the warehouse tables (Contract 3); `build_analysis_dataset(engine, study, instruments)`
reads the tables and calls it.

Conflict rules (defaults; override in a `linkage:` section of `config/analysis.yaml`, see `LinkageRules`):

* `outside_window` - a response whose days since T0 lie outside its wave's `window_days`: flagged, and
  excluded from analysis unless `outside_window: include`.
* `duplicate_response` - the same informant answered the same role's questionnaire about the same subject
  twice in one wave (so every instrument of it twice): the response closest to the wave's planned day
  (`offset_days`) is kept (`duplicate: closest_to_planned`; or `earliest`, `latest`), the others are flagged
  and excluded. Ties go to the lower response id.
* `sex_disagrees` - a subject's sex differs across responses: the most frequent value is used
  (`sex: most_frequent`; ties go to the baseline wave's value, then the earliest response), or the
  baseline wave's value (`sex: baseline`). Flagged once per subject; the responses stay in the analysis.
* `birth_year_disagrees` - a subject's birth year (reported, or implied by age in months at the response
  date) spans more than `birth_year_tolerance` years (default 1: the implied year can slip by one): the
  most frequent (or baseline) year is used, flagged; responses stay.
* `household_disagrees` - one person appears in two households: the baseline (else most frequent)
  household is used, flagged; responses stay (`household: baseline`).
* `subject_not_in_household` - a parent report about a child who belongs to another household: flagged and
  excluded (`subject_elsewhere: exclude`, or `include`).
* `registration_date_disagrees` - responses of one household carry different registration (T0) dates: the
  earliest is the household's T0 and follow-up time is recomputed from it, flagged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from cohortflow.config.loading import ConfigError, load_yaml, parse_model
from cohortflow.config.study import Study, config_dir
from cohortflow.instruments.model import Instrument

from .snapshot import pack_sort_keys, snapshot_hash

__all__ = ["LinkageRules", "LinkedData", "link_waves", "build_analysis_dataset", "load_linkage_rules",
           "release_memory", "snapshot_hash", "wide_frame", "write_and_hash", "write_long_parquet", "DAYS_PER_MONTH", "LONG_COLUMNS", "CONFLICT_COLUMNS"]

DAYS_PER_MONTH = 365.25 / 12
LONG_COLUMNS = ["household_id", "person_id", "informant_id", "role", "arm", "site", "wave", "days_since_t0",
                "months_since_t0", "age_years", "sex", "outcome", "score", "above_cutoff", "baseline_score"]
CONFLICT_COLUMNS = ["rule", "person_id", "household_id", "wave", "response_id", "detail", "resolution", "excluded"]
RESPONSE_COLUMNS = ["response_id", "household_id", "person_id", "subject_id", "role", "arm", "site", "wave",
                    "response_date", "registration_date", "days_since_t0", "subject_age_months", "subject_sex"]


def release_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc's `malloc_trim`, the unused memory of
    Arrow's pool, which backs pandas' text columns), so that a stage's peak memory is what is in use rather
    than what earlier stages freed but the allocators kept. Values are untouched; a no-op where unsupported."""
    import contextlib

    with contextlib.suppress(ImportError):
        import pyarrow as pa

        pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim():  # noqa: ANN202 - a ctypes function or None
    """glibc's `malloc_trim`, looked up once in the symbols this process already has loaded (`CDLL(None)`:
    no `ctypes.util.find_library`, which runs `ldconfig` in a child process, a fork of a possibly large
    process, every call); None where there is none (not glibc)."""
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


class LinkageRules(BaseModel):
    """How each linkage conflict is resolved (the `linkage:` section of config/analysis.yaml)."""

    model_config = ConfigDict(extra="forbid")
    outside_window: Literal["exclude", "include"] = "exclude"
    duplicate: Literal["closest_to_planned", "earliest", "latest"] = "closest_to_planned"
    sex: Literal["most_frequent", "baseline"] = "most_frequent"
    birth_year: Literal["most_frequent", "baseline"] = "most_frequent"
    birth_year_tolerance: int = Field(default=1, ge=0, description="years a birth year may vary without a flag")
    household: Literal["baseline", "most_frequent"] = "baseline"
    subject_elsewhere: Literal["exclude", "include"] = "exclude"
    household_constructs: list[str] = Field(
        default_factory=lambda: ["legal_measures", "help_received"],
        description="constructs whose scales are also attached to every row of the household and wave as "
                    "`hh_<instrument>_<scale>` (highest value reported by any informant of the household)")


def load_linkage_rules(path: Path | None = None) -> LinkageRules:
    """The `linkage:` section of `config/analysis.yaml` (or `path`); built-in defaults when absent."""
    p = Path(path) if path else config_dir() / "analysis.yaml"
    if not p.is_file():
        if path:
            raise ConfigError(f"{p}: file not found. Give an existing analysis plan or leave it out for defaults.")
        return LinkageRules()
    data = load_yaml(p) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return parse_model(LinkageRules, data.get("linkage") or {}, f"{p} (linkage)")


@dataclass
class LinkedData:
    """What linkage produced.

    * `responses`: every input response with resolved household, sex, birth year, T0 date, follow-up days
      and months, `in_window`, `included` and `exclusion_reason` (NA when included).
    * `persons`: one row per linked person (informant or subject): household, arm, site, resolved sex and
      birth year, waves with an included response.
    * `households`: household, arm, site, T0 (registration) date.
    * `conflicts`: one row per flagged conflict: rule, person, household, wave, response, detail,
      resolution, excluded (for the data manager).
    * `long`: the Contract 5 analysis frame (plus `response_id`, `instrument`, `scale`, `response_date`).
    """

    responses: pd.DataFrame
    persons: pd.DataFrame
    households: pd.DataFrame
    conflicts: pd.DataFrame
    long: pd.DataFrame
    rules: LinkageRules = field(default_factory=LinkageRules)

    @property
    def snapshot(self) -> str:
        return snapshot_hash(self.long)


def _check_columns(frame: pd.DataFrame, needed: list[str], what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"link_waves: the {what} frame lacks column(s) {missing}; it has {list(frame.columns)}. "
                         f"Pass a frame shaped like the warehouse `{what}` table (docs/design.md, Contract 3).")


def _mode_with_fallback(values: pd.DataFrame, key: str, value: str, prefer: str, rule: str) -> pd.Series:
    """Per `key`: the most frequent `value` (rule most_frequent) or the one of the preferred row (rule
    baseline); ties and fallbacks go to the preferred row (`prefer` = 0 sorts first), then first seen."""
    v = values.dropna(subset=[value])
    if v.empty:
        return pd.Series(dtype=object)
    pref = v.sort_values([key, prefer, "_order"]).groupby(key, sort=False)[value].first()
    if rule == "baseline":
        return pref
    counts = v.groupby([key, value], sort=False).size().rename("n").reset_index()
    counts["_pref"] = counts[key].map(pref) == counts[value]
    counts = counts.sort_values([key, "n", "_pref"], ascending=[True, False, False])
    return counts.groupby(key, sort=False)[value].first()


PSEUDONYM_COLUMNS = ["person_id", "subject_id", "household_id"]


class _Pseudonyms:
    """The responses' pseudonyms (person, subject, household) as integer codes into one sorted table of their
    distinct texts, so that linkage groups, maps, merges and sorts integers instead of 64-character texts
    (sorting by code sorts by text) and turns them back into text only where text is shown or returned.

    `texts`: the distinct pseudonyms in sorted order, in the responses' own text dtype."""

    def __init__(self, texts: pd.api.extensions.ExtensionArray) -> None:
        self.texts = texts

    @classmethod
    def encode(cls, r: pd.DataFrame, persons: pd.DataFrame | None) -> tuple[_Pseudonyms | None, pd.DataFrame | None]:
        """Replace the pseudonym columns of `r` (in place) by codes; `persons` coded alike (rows of persons
        without a response dropped: linkage only looks persons up by a response's pseudonym). (None, persons)
        and `r` unchanged when the columns are not all text of one string dtype without missing values."""
        cols = [r[c] for c in PSEUDONYM_COLUMNS]
        dtype = cols[0].dtype
        if not isinstance(dtype, pd.StringDtype) or any(c.dtype != dtype or c.isna().any() for c in cols):
            return None, persons
        codes, uniques = pd.factorize(pd.concat(cols, ignore_index=True))
        order = uniques.argsort()
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        codes = rank[codes]
        for j, c in enumerate(PSEUDONYM_COLUMNS):
            r[c] = codes[j * len(r):(j + 1) * len(r)]
        self = cls(uniques.take(order))
        if persons is not None and len(persons):
            at = pd.Index(self.texts).get_indexer(persons["person_id"])
            persons = persons[at >= 0].assign(person_id=at[at >= 0])
        return self, persons

    def decode(self, codes: pd.Series | np.ndarray) -> pd.api.extensions.ExtensionArray:
        """The texts of `codes` (missing where the code is missing or negative), in the responses' dtype."""
        c = pd.to_numeric(pd.Series(np.asarray(codes))).to_numpy(dtype=np.float64, na_value=np.nan)
        return self.texts.take(np.where(np.isnan(c), -1, c).astype(np.int64), allow_fill=True)

    def category(self, codes: np.ndarray) -> pd.Categorical:
        """`codes` as a categorical of their texts, categories = the distinct texts present, sorted (as
        `_as_category` makes of the texts)."""
        present, inverse = np.unique(np.asarray(codes, dtype=np.int64), return_inverse=True)
        cats = pd.Index(self.texts.take(present), dtype="str")
        return pd.Categorical.from_codes(inverse.ravel(), categories=cats)


def _texts(codec: _Pseudonyms | None, values: pd.Series) -> pd.Series:
    """Pseudonyms as text (decoded when coded), same index."""
    return values if codec is None else pd.Series(codec.decode(values), index=values.index)


def link_waves(
    responses: pd.DataFrame,
    scores: pd.DataFrame | Callable[[], pd.DataFrame],
    persons: pd.DataFrame | None,
    study: Study,
    instruments: dict[str, Instrument] | None = None,
    rules: LinkageRules | None = None,
) -> LinkedData:
    """Link responses across waves and files by pseudonym and build the Contract 5 long frame.

    In: `responses` (warehouse `response` rows: response_id, household_id, person_id = informant,
    subject_id, role, arm, site, wave, response_date, registration_date, days_since_t0, subject_age_months,
    subject_sex; optional subject_birth_year), `scores` (warehouse `score` rows: response_id, instrument,
    scale, score, above_cutoff), `persons` (warehouse `person` rows, optional: person_id, household_id, sex,
    birth_year), the study, instrument definitions (to restrict outcomes to defined scales; None = all) and
    the conflict rules. Out: `LinkedData`. `scores` may be a function returning the frame: it is called
    after the response-level steps, just before the long frame needs the scores (so they can be read
    meanwhile, e.g. by a forked process).
    """
    rules = rules or LinkageRules()
    _check_columns(responses, [c for c in RESPONSE_COLUMNS if c != "days_since_t0"], "response")
    if not callable(scores):
        _check_columns(scores, ["response_id", "instrument", "scale", "score"], "score")
    r = responses.copy(deep=False).reset_index(drop=True)  # copy-on-write: the caller's frame is never changed
    r["_order"] = np.arange(len(r))
    for c in ("response_date", "registration_date"):
        r[c] = pd.to_datetime(r[c])
    waves = {w.code: w for w in study.waves}
    unknown = sorted(set(r["wave"].dropna()) - set(waves))
    if unknown:
        raise ValueError(f"link_waves: response wave(s) {unknown} are not in the study's waves {sorted(waves)}; "
                         "add them to config/study.yaml")
    base = study.baseline_wave
    r["_not_base"] = (r["wave"] != base).astype(int)
    codec, persons = _Pseudonyms.encode(r, persons)
    conflicts: list[pd.DataFrame] = []
    excluded = pd.Series(pd.NA, index=r.index, dtype="string")

    def flag(rule: str, rows: pd.DataFrame, detail: pd.Series | str, resolution: str, excl: bool,
             person_col: str = "subject_id") -> None:
        if rows.empty:
            return
        who, where = rows[person_col].to_numpy(), rows["household_id"].to_numpy()
        if codec is not None:  # back to text, as plain strings (as the text columns give them)
            who, where = (np.asarray(codec.decode(v), dtype=object) for v in (who, where))
        conflicts.append(pd.DataFrame({
            "rule": rule, "person_id": who, "household_id": where,
            "wave": rows["wave"].to_numpy(), "response_id": rows["response_id"].to_numpy(),
            "detail": detail.to_numpy() if isinstance(detail, pd.Series) else detail,
            "resolution": resolution, "excluded": excl}))

    # --- households: one per person; T0 = earliest registration date of the household ---------------------
    member = pd.concat([r[["person_id", "household_id", "_not_base", "_order"]],
                        r[["subject_id", "household_id", "_not_base", "_order"]].rename(columns={"subject_id": "person_id"})])
    if persons is not None and len(persons):
        _check_columns(persons, ["person_id", "household_id"], "person")
    home = _mode_with_fallback(member, "person_id", "household_id", "_not_base",
                               "baseline" if rules.household == "baseline" else "most_frequent")
    n_homes = member.groupby("person_id")["household_id"].nunique()
    for pid in n_homes.index[n_homes > 1]:
        rows = r[(r["person_id"] == pid) & (r["household_id"] != home[pid])]
        flag("household_disagrees", rows.assign(subject_id=pid),
             f"person in households {_texts(codec, pd.Series(sorted(member.loc[member.person_id == pid, 'household_id'].unique()))).tolist()}",
             f"household {_texts(codec, pd.Series([home[pid]])).iloc[0]} ({rules.household})", False)
    del member, n_homes
    r["household_id"] = r["person_id"].map(home)
    subj_home = r["subject_id"].map(home)
    elsewhere = subj_home != r["household_id"]
    if elsewhere.any():
        rows = r[elsewhere]
        excl = rules.subject_elsewhere == "exclude"
        flag("subject_not_in_household", rows, "subject belongs to household " + _texts(codec, subj_home[elsewhere]).astype(str),
             "excluded" if excl else "included", excl)
        if excl:
            excluded[elsewhere & excluded.isna()] = "conflict"

    t0 = r.groupby("household_id")["registration_date"].min()
    n_t0 = r.groupby("household_id")["registration_date"].nunique()
    for hid in n_t0.index[n_t0 > 1]:
        rows = r[(r["household_id"] == hid) & (r["registration_date"] != t0[hid])]
        flag("registration_date_disagrees", rows,
             "registration date " + rows["registration_date"].dt.strftime("%Y-%m-%d"),
             f"T0 = earliest registration date {t0[hid]:%Y-%m-%d}", False)
    r["t0_date"] = r["household_id"].map(t0)
    r["days_since_t0"] = (r["response_date"] - r["t0_date"]).dt.days.astype("Int64")
    r["months_since_t0"] = r["days_since_t0"].astype("Float64") / DAYS_PER_MONTH

    # --- wave window ----------------------------------------------------------------------------------------
    lo = r["wave"].map({k: w.window_days[0] for k, w in waves.items()})
    hi = r["wave"].map({k: w.window_days[1] for k, w in waves.items()})
    planned = r["wave"].map({k: w.offset_days for k, w in waves.items()})
    d = r["days_since_t0"].astype("Float64")
    r["in_window"] = ((d >= lo) & (d <= hi)).fillna(False).astype(bool)
    out = ~r["in_window"]
    if out.any():
        rows = r[out]
        excl = rules.outside_window == "exclude"
        flag("outside_window", rows,
             rows["days_since_t0"].astype(str) + " days after T0; window of " + rows["wave"] + " is "
             + lo[out].astype(str) + ".." + hi[out].astype(str),
             "excluded" if excl else "included", excl)
        if excl:
            excluded[out & excluded.isna()] = "outside_window"

    # --- duplicate responses: same informant, subject, role, wave ------------------------------------------
    key = ["person_id", "subject_id", "role", "wave"]
    dist = (d - planned).abs().fillna(np.inf)
    if rules.duplicate == "closest_to_planned":
        rank = dist
    elif rules.duplicate == "earliest":
        rank = r["response_date"].astype("int64").where(r["response_date"].notna(), np.iinfo("int64").max)
    else:
        rank = -r["response_date"].astype("int64").where(r["response_date"].notna(), np.iinfo("int64").min + 1)
    # prefer responses not already excluded for another reason, then by the rule, then lower response id
    tmp = r[key + ["response_id"]].assign(_bad=excluded.notna().to_numpy(), _rank=np.asarray(rank, dtype=float))
    tmp = tmp.sort_values(["_bad", "_rank", "response_id"])
    keep_id = tmp.groupby(key, sort=False)["response_id"].first()
    del tmp
    kept = r[key].merge(keep_id.rename("_kept").reset_index(), on=key, how="left")["_kept"].to_numpy()
    dup = pd.Series(np.asarray(kept) != r["response_id"].to_numpy(), index=r.index)
    if dup.any():
        rows = r[dup]
        flag("duplicate_response", rows,
             "second response of informant " + _texts(codec, rows["person_id"]).str[:12] + " (" + rows["role"] + ") in "
             + rows["wave"] + "; kept response " + pd.Series(np.asarray(kept)[dup.to_numpy()], index=rows.index).astype(str),
             f"excluded ({rules.duplicate})", True, person_col="subject_id")
        excluded[dup & excluded.isna()] = "conflict"

    # --- sex and birth year of the subject -------------------------------------------------------------------
    sex = _mode_with_fallback(r, "subject_id", "subject_sex", "_not_base", rules.sex)
    n_sex = r.dropna(subset=["subject_sex"]).groupby("subject_id")["subject_sex"].nunique()
    for pid in n_sex.index[n_sex > 1]:
        rows = r[(r["subject_id"] == pid) & r["subject_sex"].notna() & (r["subject_sex"] != sex[pid])]
        flag("sex_disagrees", rows, "sex " + rows["subject_sex"].astype(str) + " here, " + str(sex[pid]) + " resolved",
             f"sex {sex[pid]} ({rules.sex})", False)
    r["sex"] = r["subject_id"].map(sex)
    if "subject_birth_year_reported" in r.columns:
        by = pd.to_numeric(r["subject_birth_year_reported"], errors="coerce")
    else:
        months = r["response_date"].dt.year * 12 + (r["response_date"].dt.month - 1) - r["subject_age_months"]
        by = np.floor(months.astype("Float64") / 12)
    r["_birth_year"] = by.astype("Float64")
    by_res = _mode_with_fallback(r, "subject_id", "_birth_year", "_not_base", rules.birth_year)
    g = r.groupby("subject_id")["_birth_year"]
    span = (g.max() - g.min()).fillna(0)
    for pid in span.index[span > rules.birth_year_tolerance]:
        rows = r[(r["subject_id"] == pid) & ((r["_birth_year"] - by_res[pid]).abs() > rules.birth_year_tolerance)]
        flag("birth_year_disagrees", rows,
             "birth year " + rows["_birth_year"].astype("Int64").astype(str) + f" here, {int(by_res[pid])} resolved",
             f"birth year {int(by_res[pid])} ({rules.birth_year})", False)
    r["birth_year"] = r["subject_id"].map(by_res).astype("Int64")
    r["age_years"] = r["subject_age_months"].astype("Float64") / 12.0

    r["included"] = excluded.isna().to_numpy()
    r["exclusion_reason"] = excluded
    conflict_frame = (pd.concat(conflicts, ignore_index=True) if conflicts
                      else pd.DataFrame({c: pd.Series(dtype=object) for c in CONFLICT_COLUMNS}))
    conflict_frame = conflict_frame[CONFLICT_COLUMNS].sort_values(["rule", "household_id", "person_id", "wave",
                                                                   "response_id"], ignore_index=True)

    # --- persons and households ----------------------------------------------------------------------------
    inc = r[r["included"]]
    people = pd.DataFrame({"person_id": pd.unique(pd.concat([r["person_id"], r["subject_id"]]))})
    people["household_id"] = people["person_id"].map(home)
    hh = r.drop_duplicates("household_id").set_index("household_id")[["arm", "site"]]
    people["arm"] = people["household_id"].map(hh["arm"])
    people["site"] = people["household_id"].map(hh["site"])
    people["sex"] = people["person_id"].map(sex)
    people["birth_year"] = people["person_id"].map(by_res).astype("Int64")
    if persons is not None and len(persons):
        known = persons.set_index("person_id")  # coded like the responses when they are
        if "sex" in known:
            people["sex"] = people["sex"].fillna(people["person_id"].map(known["sex"]))
        if "birth_year" in known:
            people["birth_year"] = people["birth_year"].fillna(people["person_id"].map(known["birth_year"]).astype("Int64"))
    order = {w: i for i, w in enumerate(study.wave_codes)}
    def waves_of(col: str) -> pd.Series:
        pw = inc[[col, "wave"]].drop_duplicates()
        mask = (2 ** pw["wave"].map(order).astype("int64")).groupby(pw[col]).sum()
        names = {m: ",".join(w for w, i in order.items() if m >> i & 1) for m in mask.unique()}
        return mask.map(names)

    as_informant, as_subject = waves_of("person_id"), waves_of("subject_id")
    people["waves_as_informant"] = people["person_id"].map(as_informant).fillna("")
    people["waves_as_subject"] = people["person_id"].map(as_subject).fillna("")
    households = hh.reset_index()
    households["t0_date"] = households["household_id"].map(t0)
    if codec is not None:
        for frame, cols in ((people, ["person_id", "household_id"]), (households, ["household_id"])):
            for c in cols:
                frame[c] = codec.decode(frame[c])

    del g, span, keep_id, kept, dup, dist, rank, lo, hi, planned, d, out
    release_memory()  # the response-level steps above leave freed text buffers in the allocators
    if callable(scores):
        scores = scores()
        _check_columns(scores, ["response_id", "instrument", "scale", "score"], "score")
    long = _long_frame(inc, scores, instruments, base, codec)
    long = _attach_household_context(long, instruments, rules.household_constructs)
    if codec is not None:
        for c in PSEUDONYM_COLUMNS:
            r[c] = codec.decode(r[c])
    return LinkedData(responses=r.drop(columns=["_order", "_not_base", "_birth_year"]), persons=people,
                      households=households, conflicts=conflict_frame, long=long, rules=rules)


def _as_category(col: pd.Series) -> pd.Series:
    """`col` as a categorical with lexically sorted categories, so sorting by it sorts by text (as for plain
    strings) while storing a small integer code per row."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        ordered = sorted(cats)
        return col if list(cats) == ordered else col.cat.reorder_categories(ordered)
    values = col.dropna().unique()
    return col.astype(pd.CategoricalDtype(pd.Index(sorted(values), dtype="str")))


# Contract 5 text columns stored as categoricals in the long frame: the same values as text, a code per row
# (at factor 100 the long frame has ~24 M rows; three 64-character pseudonyms as text alone would be ~5 GB).
CATEGORICAL_COLUMNS = ["household_id", "person_id", "informant_id", "role", "arm", "site", "wave", "sex",
                       "outcome", "instrument", "scale"]


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `keys` in the sorted unique array `sorted_keys` and whether each was found."""
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
    pos = np.searchsorted(sorted_keys, keys)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == keys


def _last_codes(col: pd.Series) -> tuple[np.ndarray, int]:
    """Codes of a categorical (sorted categories) with missing values last, as pandas sorts them, and the
    number of distinct codes."""
    codes = np.asarray(col.cat.codes, dtype=np.int64)
    n = len(col.cat.categories)
    return np.where(codes < 0, n, codes), n + 1


def _long_frame(inc: pd.DataFrame, scores: pd.DataFrame, instruments: dict[str, Instrument] | None,
                base: str, codec: _Pseudonyms | None = None) -> pd.DataFrame:
    """Contract 5 long frame from included responses and their scores (scored scales only; classification
    rows without a score are kept when they carry `above_cutoff`). Text columns are categoricals
    (`CATEGORICAL_COLUMNS`, categories in sorted order); rows sorted as documented.

    Built by look-ups, not merges: each score row finds its response's row by response id (a sorted-id
    search), the baseline score of its (person, role, outcome) by a packed integer key, and the final row
    order is one lexsort of packed codes; the response columns are gathered once, in final order. Same
    values, dtypes and row order as the merge-and-sort definition (tests/test_linkage_long_frame.py)."""
    inst, scale = _as_category(scores["instrument"]), _as_category(scores["scale"])
    s_ids = scores["response_id"].to_numpy(dtype=np.int64)
    inc_ids = inc["response_id"].to_numpy(dtype=np.int64)
    top = int(max(inc_ids.max(initial=-1), s_ids.max(initial=-1)))
    if inc_ids.min(initial=0) >= 0 and s_ids.min(initial=0) >= 0 and top < 4 * (len(inc_ids) + len(s_ids)) + 1_000_000:
        lut = np.full(top + 1, -1, dtype=np.int64)  # response id -> row in `inc` (ids are dense integers)
        lut[inc_ids] = np.arange(len(inc_ids))
        at = lut[s_ids]
        del lut
        keep = at >= 0
    else:
        sorter = np.argsort(inc_ids, kind="stable")
        at, keep = _lookup(inc_ids[sorter], s_ids)
        at = sorter[at]
    if instruments is not None:
        keep &= np.asarray(inst.isin(list(instruments)), dtype=bool)
    rows = np.flatnonzero(keep)  # score rows kept, in scores order
    pos = at[rows]  # response row (in `inc`) of each kept score row
    del at, keep
    # outcome = instrument.scale, built once per distinct pair; categories sorted
    icodes = np.asarray(inst.cat.codes, dtype=np.int64)[rows]
    scodes = np.asarray(scale.cat.codes, dtype=np.int64)[rows]
    n_scale = max(len(scale.cat.categories), 1)
    ocodes, uniq = pd.factorize(icodes * n_scale + scodes)
    icat, scat = inst.cat.categories, scale.cat.categories
    names = np.array([f"{icat[u // n_scale]}.{scat[u % n_scale]}" for u in uniq], dtype=object)
    order_names = np.argsort(names, kind="stable")
    rank = np.empty(len(order_names), dtype=np.int64)
    rank[order_names] = np.arange(len(order_names))
    ocodes = rank[ocodes] if len(ocodes) else ocodes.astype(np.int64)
    n_outcome = len(uniq)

    cols = ["response_id", "household_id", "subject_id", "person_id", "role", "arm", "site", "wave", "response_date",
            "days_since_t0", "months_since_t0", "age_years", "sex"]
    left = inc[cols].rename(columns={"person_id": "informant_id", "subject_id": "person_id"}).reset_index(drop=True)
    coded = ("household_id", "person_id", "informant_id") if codec is not None else ()
    left = left.assign(**{c: codec.category(left[c].to_numpy()) if c in coded else _as_category(left[c]) for c in
                          ("household_id", "person_id", "informant_id", "role", "arm", "site", "wave", "sex")})
    score = pd.to_numeric(scores["score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)[rows]

    # baseline score: per (person, role, outcome) the first non-missing baseline-wave score, in merge order
    # (response row, then score row); keys with a missing person or role have none
    person, n_person = _last_codes(left["person_id"])
    role, n_role = _last_codes(left["role"])
    wave_codes = np.asarray(left["wave"].cat.codes, dtype=np.int64)
    base_code = left["wave"].cat.categories.get_indexer([base])[0]
    key = (person[pos] * n_role + role[pos]) * max(n_outcome, 1) + ocodes
    valid = (person[pos] < n_person - 1) & (role[pos] < n_role - 1)
    group = pd.factorize(key)[0]  # one hash pass: a group number per (person, role, outcome)
    del key
    n_group = int(group.max(initial=-1)) + 1
    cand = np.flatnonzero(valid & (wave_codes[pos] == base_code) & ~np.isnan(score)) if base_code >= 0 else \
        np.array([], dtype=np.int64)
    cand = cand[np.argsort(pos[cand], kind="stable")]  # merge order: response row, then score row
    firsts, first = np.unique(group[cand], return_index=True)
    per_group = np.full(n_group, np.nan)
    per_group[firsts] = score[cand[first]]
    baseline = np.where(valid, per_group[group], np.nan)
    del cand, first, firsts, per_group, group, valid

    # row order: household, person, role, outcome, days since T0 (missing last), response id, merge order
    hh, n_hh = _last_codes(left["household_id"])
    days = left["days_since_t0"]
    d_vals = days.to_numpy(dtype=np.float64, na_value=np.nan)
    d_uniq, d_rank = np.unique(d_vals, return_inverse=True)  # NaN sorts last
    d_rank = d_rank.astype(np.int64).ravel()
    keys = pack_sort_keys([(hh[pos], n_hh), (person[pos], n_person), (role[pos], n_role), (ocodes, max(n_outcome, 1)),
                  (d_rank[pos], max(len(d_uniq), 1))])
    merge_rank = np.argsort(pos, kind="stable")  # rows are already in score order within a response
    merge_pos = np.empty(len(pos), dtype=np.int64)
    merge_pos[merge_rank] = np.arange(len(pos))
    del merge_rank
    keys += [left["response_id"].to_numpy(dtype=np.int64)[pos], merge_pos]
    order = np.lexsort(keys[::-1]) if len(pos) else np.arange(0)
    del keys, merge_pos

    # every column gathered once (no frame-wide copy afterwards); each score-level intermediate is freed as
    # soon as its column is gathered, so at most a few of them are alive beside the growing output
    got: dict[str, object] = {}
    got["outcome"] = pd.Categorical.from_codes(ocodes[order], categories=pd.Index(names[order_names].tolist(),
                                                                                  dtype="str"))
    del ocodes
    got["score"] = score[order]
    del score
    got["baseline_score"] = baseline[order]
    del baseline
    sub = rows[order]
    del rows
    take = pos[order]
    del pos, order
    above = (scores["above_cutoff"].astype("boolean").array if "above_cutoff" in scores
             else pd.array([pd.NA] * len(scores), dtype="boolean"))
    got["above_cutoff"] = above.take(sub)
    del above
    got["instrument"] = inst.array.take(sub)
    got["scale"] = scale.array.take(sub)
    del sub, inst, scale
    got["response_id"] = inc_ids[take]
    out: dict[str, object] = {}
    for c in [*LONG_COLUMNS, "response_id", "instrument", "scale", "response_date"]:
        out[c] = got.pop(c) if c in got else left[c].array.take(take)
    del take
    return pd.DataFrame(out, copy=False)


def _attach_household_context(long: pd.DataFrame, instruments: dict[str, Instrument] | None,
                               constructs: list[str]) -> pd.DataFrame:
    """Add `hh_<instrument>_<scale>` columns: per (household, wave) the highest score of that scale reported
    by any informant of the household (e.g. legal measures, help received), on every row of it.

    By look-ups: per context outcome, the maxima per packed (household, wave) code are computed with a sort
    and spread to the rows by a search, with no merge of the long frame."""
    if not instruments or not constructs or long.empty:
        return long
    codes = [c for c, i in instruments.items() if i.construct_code in constructs]
    is_ctx = np.asarray(long["instrument"].isin(codes), dtype=bool)
    if not is_ctx.any():
        return long
    hh = np.asarray(long["household_id"].cat.codes, dtype=np.int64)
    wave = np.asarray(long["wave"].cat.codes, dtype=np.int64)
    n_wave = len(long["wave"].cat.categories) + 1
    cell = hh * n_wave + wave
    cell_ok = (hh >= 0) & (wave >= 0)
    outcome = np.asarray(long["outcome"].cat.codes, dtype=np.int64)
    score = long["score"].to_numpy(dtype=np.float64, na_value=np.nan)
    sel = np.flatnonzero(is_ctx & cell_ok & (outcome >= 0))
    for oc in np.unique(outcome[sel]):  # categories order = sorted outcome names, as unstack gives them
        part = sel[outcome[sel] == oc]
        c, v = cell[part], score[part]
        srt = np.argsort(c, kind="stable")
        c, v = c[srt], v[srt]
        starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        vv = np.where(np.isnan(v), -np.inf, v)
        mx = np.maximum.reduceat(vv, starts)
        all_nan = np.logical_and.reduceat(np.isnan(v), starts)
        mx = np.where(all_nan, np.nan, mx)
        at, hit = _lookup(c[starts], cell)
        name = "hh_" + str(long["outcome"].cat.categories[oc]).replace(".", "_")
        long[name] = np.where(hit & cell_ok, mx[at], np.nan)
    return long


def wide_frame(long: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Wide analysis frame: one row per (household, subject person, informant role, informant), columns
    household/arm/site/sex, `age_years_<wave>`, `days_since_t0_<wave>`, and `<instrument>_<scale>_<wave>`.

    Names use `_` instead of `.` so SPSS accepts them. Waves are in study order."""
    idx = ["household_id", "person_id", "role", "informant_id"]
    if long.empty:
        return pd.DataFrame(columns=[*idx, "arm", "site", "sex"])
    fixed = long.groupby(idx, sort=True)[["arm", "site", "sex"]].first()
    present = set(pd.unique(long["wave"]))
    order = [w for w in study.wave_codes if w in present]
    hh_cols = [c for c in long.columns if c.startswith("hh_")]
    per_wave = long.drop_duplicates([*idx, "wave"]).set_index([*idx, "wave"])[["age_years", "days_since_t0", *hh_cols]]
    parts = [fixed]
    for col in ("age_years", "days_since_t0", *hh_cols):
        p = per_wave[col].unstack("wave").reindex(columns=order)
        p.columns = [f"{col}_{w}" for w in p.columns]
        parts.append(p)
    sc = (long.drop_duplicates([*idx, "outcome", "wave"]).set_index([*idx, "outcome", "wave"])["score"]
          .unstack(["outcome", "wave"]))
    outcomes = sorted(long["outcome"].unique())
    sc = sc.reindex(columns=pd.MultiIndex.from_product([outcomes, order]))
    sc.columns = [f"{o.replace('.', '_')}_{w}" for o, w in sc.columns]
    sc = sc.dropna(axis=1, how="all")
    parts.append(sc)
    return pd.concat(parts, axis=1).reset_index()


def write_long_parquet(long: pd.DataFrame, path: Path | str, rows_per_group: int = 1_000_000) -> Path:
    """Write the long frame to Parquet one row group at a time (same file content as
    `long.to_parquet(path, index=False)`: schema, pandas metadata, values), so only one row group is held in
    Arrow form at once instead of a second copy of the whole frame. Returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    schema = pa.Schema.from_pandas(long.iloc[:0], preserve_index=False)
    with pq.ParquetWriter(path, schema) as writer:
        for lo in range(0, max(len(long), 1), rows_per_group):
            part = long.iloc[lo:lo + rows_per_group]
            writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False),
                               row_group_size=rows_per_group)
    return path


def write_and_hash(long: pd.DataFrame, path: Path | str) -> str:
    """Write the long frame to Parquet (`write_long_parquet`) and return its `snapshot_hash`, the two at the
    same time: the hash runs in a second thread while this one writes (Arrow's conversion and Parquet
    encoding, NumPy's sorts and gathers and hashlib release the GIL for most of their work, so the two share
    the machine's cores). Same file and digest as one after the other; an error in either is raised (the
    write's first), after both have ended."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot-hash") as pool:
        digest = pool.submit(snapshot_hash, long)
        try:
            write_long_parquet(long, path)
        finally:
            wait_error = digest.exception()  # the hash thread has ended (it cannot be interrupted)
        if wait_error is not None:
            raise wait_error
        return digest.result()


def build_analysis_dataset(engine, study: Study, instruments: dict[str, Instrument] | None) -> pd.DataFrame:  # noqa: ANN001
    """Read the warehouse (current responses, persons, scores) and return the Contract 5 long frame.
    Freed memory is handed back to the operating system before (what earlier stages left) and after."""
    release_memory()
    long = link_warehouse(engine, study, instruments, lean=True).long
    release_memory()
    return long


def _linkage_responses(engine) -> pd.DataFrame:  # noqa: ANN001
    """Current responses with only the columns `link_waves` reads (no person join, no batch columns): the
    same values and dtypes as those columns of `read.responses_frame`."""
    from sqlalchemy import select

    from .models import Response
    from .read import read_frame

    q = (select(Response.id.label("response_id"), Response.household_id, Response.person_id, Response.subject_id,
                Response.role, Response.arm, Response.site, Response.wave, Response.response_date,
                Response.registration_date, Response.days_since_t0, Response.subject_age_months,
                Response.subject_sex).where(Response.superseded.is_(False)).order_by(Response.id))
    return read_frame(engine, q, ("response_date", "registration_date"))


def link_warehouse(engine, study: Study, instruments: dict[str, Instrument] | None,  # noqa: ANN001
                   rules: LinkageRules | None = None, lean: bool = False) -> LinkedData:
    """Read the warehouse tables and run `link_waves` on them (rules from config/analysis.yaml by default).
    `lean`: read only the response columns linkage needs (`LinkedData.responses` then lacks batch, row and
    age-in-years columns; the long frame is the same)."""
    from sqlalchemy import select

    from .models import Person
    from .read import responses_frame, scores_compact_forked

    scores = scores_compact_forked(engine)  # read by a forked process while this one reads and links responses
    try:
        responses = _linkage_responses(engine) if lean else responses_frame(engine)
        with engine.connect() as conn:
            persons = pd.read_sql(select(Person.person_id, Person.household_id, Person.sex, Person.birth_year), conn)
        return link_waves(responses.drop(columns=["subject_birth_year"], errors="ignore"), scores.result, persons,
                          study, instruments, rules or load_linkage_rules())
    finally:
        scores.close()
