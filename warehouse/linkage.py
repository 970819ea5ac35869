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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from cohortflow.config.loading import ConfigError, load_yaml, parse_model
from cohortflow.config.study import Study, config_dir
from cohortflow.instruments.model import Instrument

from .snapshot import snapshot_hash

__all__ = ["LinkageRules", "LinkedData", "link_waves", "build_analysis_dataset", "load_linkage_rules",
           "snapshot_hash", "wide_frame", "DAYS_PER_MONTH", "LONG_COLUMNS", "CONFLICT_COLUMNS"]

DAYS_PER_MONTH = 365.25 / 12
LONG_COLUMNS = ["household_id", "person_id", "informant_id", "role", "arm", "site", "wave", "days_since_t0",
                "months_since_t0", "age_years", "sex", "outcome", "score", "above_cutoff", "baseline_score"]
CONFLICT_COLUMNS = ["rule", "person_id", "household_id", "wave", "response_id", "detail", "resolution", "excluded"]
RESPONSE_COLUMNS = ["response_id", "household_id", "person_id", "subject_id", "role", "arm", "site", "wave",
                    "response_date", "registration_date", "days_since_t0", "subject_age_months", "subject_sex"]


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


def link_waves(
    responses: pd.DataFrame,
    scores: pd.DataFrame,
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
    the conflict rules. Out: `LinkedData`.
    """
    rules = rules or LinkageRules()
    _check_columns(responses, [c for c in RESPONSE_COLUMNS if c != "days_since_t0"], "response")
    _check_columns(scores, ["response_id", "instrument", "scale", "score"], "score")
    r = responses.copy().reset_index(drop=True)
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
    conflicts: list[pd.DataFrame] = []
    excluded = pd.Series(pd.NA, index=r.index, dtype="string")

    def flag(rule: str, rows: pd.DataFrame, detail: pd.Series | str, resolution: str, excl: bool,
             person_col: str = "subject_id") -> None:
        if rows.empty:
            return
        conflicts.append(pd.DataFrame({
            "rule": rule, "person_id": rows[person_col].to_numpy(), "household_id": rows["household_id"].to_numpy(),
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
             f"person in households {sorted(member.loc[member.person_id == pid, 'household_id'].unique())}",
             f"household {home[pid]} ({rules.household})", False)
    r["household_id"] = r["person_id"].map(home)
    subj_home = r["subject_id"].map(home)
    elsewhere = subj_home != r["household_id"]
    if elsewhere.any():
        rows = r[elsewhere]
        excl = rules.subject_elsewhere == "exclude"
        flag("subject_not_in_household", rows, "subject belongs to household " + subj_home[elsewhere].astype(str),
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
    kept = r[key].merge(keep_id.rename("_kept").reset_index(), on=key, how="left")["_kept"].to_numpy()
    dup = pd.Series(np.asarray(kept) != r["response_id"].to_numpy(), index=r.index)
    if dup.any():
        rows = r[dup]
        flag("duplicate_response", rows,
             "second response of informant " + rows["person_id"].str[:12] + " (" + rows["role"] + ") in "
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
        known = persons.set_index("person_id")
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

    long = _long_frame(r[r["included"]], scores, instruments, base)
    long = _attach_household_context(long, instruments, rules.household_constructs)
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


def _long_frame(inc: pd.DataFrame, scores: pd.DataFrame, instruments: dict[str, Instrument] | None,
                base: str) -> pd.DataFrame:
    """Contract 5 long frame from included responses and their scores (scored scales only; classification
    rows without a score are kept when they carry `above_cutoff`). Text columns are categoricals
    (`CATEGORICAL_COLUMNS`, categories in sorted order); rows sorted as documented."""
    s = scores[[c for c in ("response_id", "instrument", "scale", "score", "above_cutoff") if c in scores]]
    inst, scale = _as_category(s["instrument"]), _as_category(s["scale"])
    keep = s["response_id"].isin(inc["response_id"]).to_numpy().copy()
    if instruments is not None:
        keep &= inst.isin(list(instruments)).to_numpy()
    s = s.assign(instrument=inst, scale=scale)[keep]
    if "above_cutoff" not in s:
        s = s.assign(above_cutoff=pd.NA)
    # outcome = instrument.scale, built once per distinct pair
    n_scale = max(len(s["scale"].cat.categories), 1)
    pair = s["instrument"].cat.codes.to_numpy(np.int64) * n_scale + s["scale"].cat.codes.to_numpy(np.int64)
    codes, uniq = pd.factorize(pair)
    icat, scat = s["instrument"].cat.categories, s["scale"].cat.categories
    names = np.array([f"{icat[u // n_scale]}.{scat[u % n_scale]}" for u in uniq], dtype=object)
    order = np.argsort(names, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    outcome = pd.Categorical.from_codes(rank[codes] if len(codes) else codes,
                                        categories=pd.Index(names[order].tolist(), dtype="str"))
    s = s.assign(outcome=outcome)
    cols = ["response_id", "household_id", "subject_id", "person_id", "role", "arm", "site", "wave", "response_date",
            "days_since_t0", "months_since_t0", "age_years", "sex"]
    left = inc[cols].rename(columns={"person_id": "informant_id", "subject_id": "person_id"})
    left = left.assign(**{c: _as_category(left[c]) for c in
                          ("household_id", "person_id", "informant_id", "role", "arm", "site", "wave", "sex")})
    m = left.merge(s, on="response_id")
    m["score"] = pd.to_numeric(m["score"], errors="coerce").astype("float64")
    m["above_cutoff"] = m["above_cutoff"].astype("boolean")
    key = ["person_id", "role", "outcome"]
    b = m[m["wave"] == base].groupby(key, sort=False, observed=True)["score"].first().rename("baseline_score")
    m = m.merge(b.reset_index(), on=key, how="left")
    m = m[LONG_COLUMNS + ["response_id", "instrument", "scale", "response_date"]]
    return m.sort_values(["household_id", "person_id", "role", "outcome", "days_since_t0", "response_id"],
                         ignore_index=True)


def _attach_household_context(long: pd.DataFrame, instruments: dict[str, Instrument] | None,
                               constructs: list[str]) -> pd.DataFrame:
    """Add `hh_<instrument>_<scale>` columns: per (household, wave) the highest score of that scale reported
    by any informant of the household (e.g. legal measures, help received), on every row of it."""
    if not instruments or not constructs or long.empty:
        return long
    codes = [c for c, i in instruments.items() if i.construct_code in constructs]
    ctx = long[long["instrument"].isin(codes)]
    if ctx.empty:
        return long
    t = ctx.groupby(["household_id", "wave", "outcome"], observed=True)["score"].max().unstack("outcome")
    t.columns = ["hh_" + str(c).replace(".", "_") for c in t.columns]
    return long.merge(t.reset_index(), on=["household_id", "wave"], how="left")


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


def build_analysis_dataset(engine, study: Study, instruments: dict[str, Instrument] | None) -> pd.DataFrame:  # noqa: ANN001
    """Read the warehouse (current responses, persons, scores) and return the Contract 5 long frame."""
    return link_warehouse(engine, study, instruments).long


def link_warehouse(engine, study: Study, instruments: dict[str, Instrument] | None,  # noqa: ANN001
                   rules: LinkageRules | None = None) -> LinkedData:
    """Read the warehouse tables and run `link_waves` on them (rules from config/analysis.yaml by default)."""
    from sqlalchemy import select

    from .models import Person
    from .read import responses_frame, scores_compact

    responses = responses_frame(engine)
    scores = scores_compact(engine)
    with engine.connect() as conn:
        persons = pd.read_sql(select(Person.person_id, Person.household_id, Person.sex, Person.birth_year), conn)
    return link_waves(responses.drop(columns=["subject_birth_year"], errors="ignore"), scores, persons, study,
                      instruments, rules or load_linkage_rules())
