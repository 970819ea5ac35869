"""Questionnaire occasions (who answers which role's questionnaire about whom, when) and their items."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cohortflow.config.study import Role, Study
from cohortflow.instruments.model import Instrument

from .config import Questionnaires, SynthModel
from .items import ItemParams, ItemScorer, instrument_direction, item_params, primary_scale, sample_items
from .population import Population, age_years

NOT_ANSWERED = -9
DONT_KNOW = -7


@dataclass
class RoleBlock:
    """All candidate questionnaires of one role at one wave, before attrition.

    `rows`: informant/subject person index, arm, date, subject age; `codes`: item codes (rows x `item_keys`,
    float32, column-major; NaN = system-missing, -9/-7 missing codes) for the instruments in `instruments`.
    """

    wave: str
    role: str
    rows: pd.DataFrame
    codes: np.ndarray
    item_keys: list[str]
    instruments: dict[str, list[str]] = field(default_factory=dict)  # arm -> instrument codes

    @property
    def items(self) -> pd.DataFrame:
        """The item codes as a frame (columns = item keys, index = rows' index)."""
        return pd.DataFrame(self.codes, columns=self.item_keys, index=self.rows.index)


def available_instruments(
    study: Study, quest: Questionnaires, instruments: dict[str, Instrument]
) -> dict[tuple[str, str], list[str]]:
    """(arm, role) -> instrument codes that are defined, listed for the role and declare the role."""
    out: dict[tuple[str, str], list[str]] = {}
    for arm in study.arms:
        for role in study.roles:
            codes = [c for c in quest.instruments_for(arm, role.code)
                     if c in instruments and role.code in instruments[c].roles]
            if codes:
                out[(arm.code, role.code)] = codes
    return out


def candidate_rows(pop: Population, role: Role, wave: str, arms: list[str], rng: np.random.Generator,
                   second_parent: float) -> pd.DataFrame:
    """Questionnaires of `role` at `wave` whose subject's age at the date fits the role (before response)."""
    p = pop.persons
    in_arm = p["arm"].isin(arms).to_numpy()
    subject_member = "adult" if role.subject == "adult" else "child"
    if role.informant == "self":
        subj = p.index[in_arm & (p["member"] == subject_member).to_numpy()]
        rows = pd.DataFrame({"informant": subj, "subject": subj})
    else:
        kids = p.loc[in_arm & (p["member"] == subject_member).to_numpy(), ["hh_idx"]]
        adults = p.loc[in_arm & (p["member"] == "adult").to_numpy(), ["hh_idx", "suffix"]]
        pairs = kids.reset_index().merge(adults.reset_index(), on="hh_idx", suffixes=("_s", "_i"))
        pairs = pairs.sort_values(["person_idx_s", "person_idx_i"], kind="stable")
        first = pairs.groupby("person_idx_s").cumcount() == 0
        keep = first.to_numpy() | (rng.random(len(pairs)) < second_parent)
        pairs = pairs[keep]
        rows = pd.DataFrame({"informant": pairs["person_idx_i"].to_numpy(), "subject": pairs["person_idx_s"].to_numpy()})
    date = pop.wave_dates[wave].to_numpy()[rows["informant"].to_numpy()]
    rows["date"] = date
    rows["subject_age"] = age_years(p["birth_date"].to_numpy()[rows["subject"].to_numpy()], date)
    ok = ~np.isnat(date)
    lo = role.min_age_years if role.min_age_years is not None else -np.inf
    hi = role.max_age_years if role.max_age_years is not None else np.inf
    ok &= (rows["subject_age"].to_numpy() >= lo) & (rows["subject_age"].to_numpy() < hi)
    rows = rows[ok].reset_index(drop=True)
    rows["arm"] = p["arm"].to_numpy()[rows["informant"].to_numpy()]
    return rows


def item_block(
    rows: pd.DataFrame, inst: Instrument, params: list[ItemParams], problem: pd.DataFrame, wave: str,
    model: SynthModel, rng: np.random.Generator,
) -> np.ndarray:
    """Item codes of `inst` for `rows` (subject's latent problem at `wave`), with missing codes and age range."""
    sign = 1.0 if instrument_direction(inst) != "higher_better" else -1.0
    theta = sign * problem[wave].to_numpy()[rows["subject"].to_numpy()]
    codes = sample_items(theta, params, rng)
    n, k = codes.shape
    im = model.items
    codes[rng.random((n, k)) < im.not_answered] = NOT_ANSWERED
    if im.dont_know_items and k:
        dk_rng = np.random.default_rng(zlib.crc32(f"dont_know:{inst.code}".encode()))
        dk_cols = np.sort(dk_rng.choice(k, size=min(im.dont_know_items, k), replace=False))
        dk = rng.random((n, len(dk_cols))) < im.dont_know
        sub = codes[:, dk_cols]
        sub[dk & (sub != NOT_ANSWERED)] = DONT_KNOW
        codes[:, dk_cols] = sub
    if inst.age_range_years is not None:
        lo, hi = inst.age_range_years
        age = rows["subject_age"].to_numpy()
        codes[~((age >= lo) & (age < hi))] = np.nan
    return codes


def build_role_blocks(
    study: Study, pop: Population, instruments: dict[str, Instrument], avail: dict[tuple[str, str], list[str]],
    problems: dict[str, pd.DataFrame], model: SynthModel, rng: np.random.Generator,
    waves: list[str] | None = None, responded: pd.DataFrame | None = None,
) -> list[RoleBlock]:
    """Candidate rows and items per (wave, role), over all arms whose questionnaire has instruments.

    `waves` (default all, in study order) limits the waves; with `responded` (person x wave booleans) only
    the rows whose informant responds get items (follow-ups, after attrition: less memory and work)."""
    params = {c: item_params(inst, model.items) for c, inst in instruments.items()}
    blocks: list[RoleBlock] = []
    for wave in waves if waves is not None else study.wave_codes:
        for role in study.roles:
            arm_insts = {a: codes for (a, r), codes in avail.items() if r == role.code and wave in study.waves_of(a)}
            if not arm_insts:
                continue
            rows = candidate_rows(pop, role, wave, sorted(arm_insts), rng, model.households.second_parent_report)
            if responded is not None:
                rows = rows[responded[wave].to_numpy()[rows["informant"].to_numpy()]].reset_index(drop=True)
            inst_codes = list(dict.fromkeys(c for codes in arm_insts.values() for c in codes))
            keys = [p.key for code in inst_codes for p in params[code]]
            # float32 halves the memory of a study's items: codes, -9/-7 and integers are exact; one-decimal
            # numbers are rounded back to one decimal when exported
            codes = np.empty((len(rows), len(keys)), dtype=np.float32, order="F")
            j = 0
            for code in inst_codes:
                inst = instruments[code]
                block = item_block(rows, inst, params[code], problems[inst.construct_code], wave, model, rng)
                arms_using = [a for a, cs in arm_insts.items() if code in cs]
                uses = rows["arm"].isin(arms_using).to_numpy(bool)
                block[~uses] = np.nan
                codes[:, j:j + block.shape[1]] = block
                j += block.shape[1]
            blocks.append(RoleBlock(wave, role.code, rows, codes, keys, arm_insts))
    return blocks


def observed_severity(
    blocks: list[RoleBlock], baseline: str, pop: Population, instruments: dict[str, Instrument],
    responded: pd.DataFrame,
) -> np.ndarray:
    """Household baseline severity from OBSERVED baseline item codes (z per instrument, + = worse), standardised.

    Uses every answered baseline questionnaire of the household; households without one get 0.
    """
    hh_of = pop.persons["hh_idx"].to_numpy()
    parts = []
    for b in blocks:
        if b.wave != baseline:
            continue
        keep = np.flatnonzero(responded[baseline].to_numpy()[b.rows["informant"].to_numpy()])
        col_of = {k: j for j, k in enumerate(b.item_keys)}

        def answered_codes(key: str, b: RoleBlock = b, keep: np.ndarray = keep,
                           col_of: dict[str, int] = col_of) -> np.ndarray:
            v = b.codes[keep, col_of[key]].astype(np.float64)
            v[v < 0] = np.nan  # -9/-7 are missing here
            return v

        for code in dict.fromkeys(c for codes in b.instruments.values() for c in codes):
            inst = instruments[code]
            sc = primary_scale(inst)
            if sc is None:
                continue
            s = ItemScorer(inst, answered_codes).score(sc)
            if not np.isfinite(s).any():
                continue
            sd = np.nanstd(s, ddof=1) if np.sum(~np.isnan(s)) > 1 else np.nan
            z = (s - np.nanmean(s)) / (sd if sd > 0 else 1.0)
            if sc.direction == "higher_better":
                z = -z
            parts.append(pd.DataFrame({"hh": hh_of[b.rows["informant"].to_numpy()[keep]], "z": z}))
    sev = np.zeros(len(pop.households))
    if parts:
        allz = pd.concat(parts).dropna()
        m = allz.groupby("hh")["z"].mean()
        sev[m.index.to_numpy()] = m.to_numpy()
    cohort = (pop.households["arm_role"] != "reference").to_numpy()
    if cohort.any() and sev[cohort].std() > 0:
        sev[cohort] = (sev[cohort] - sev[cohort].mean()) / sev[cohort].std()
    return sev


def _solve_intercept(z: np.ndarray, slope: float, target: float) -> float:
    """alpha such that mean(logistic(alpha - slope * z)) == target (bisection)."""
    lo, hi = -20.0, 20.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid - slope * z)))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def participation(
    study: Study, model: SynthModel, pop: Population, severity: np.ndarray | None, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.Series]:
    """Which households answer each wave (monotone dropout, MAR on observed baseline severity).

    Returns (household x wave booleans, dropout wave per household or NA).
    """
    hh = pop.households
    waves = sorted(study.waves, key=lambda w: w.offset_days)
    cohort = (hh["arm_role"] != "reference").to_numpy()
    resp = pd.DataFrame(False, index=hh.index, columns=study.wave_codes)
    prev = np.ones(len(hh), dtype=bool)
    prev_ret = 1.0
    dropout = pd.Series(pd.NA, index=hh.index, dtype="string")
    sev = np.zeros(len(hh)) if severity is None else severity
    for i, w in enumerate(waves):
        measured = hh["arm"].isin([a for a in study.arm_codes if w.code in study.waves_of(a)]).to_numpy(bool)
        if i == 0:
            now = measured.copy()
        else:
            ret = model.attrition.retention.get(w.code, prev_ret * model.attrition.default_step)
            cond = min(ret / prev_ret, 1.0)
            at_risk = prev & measured & cohort
            u = rng.random(len(hh))
            if at_risk.any():
                alpha = _solve_intercept(sev[at_risk], model.attrition.severity_log_odds, cond)
                p = 1 / (1 + np.exp(-(alpha - model.attrition.severity_log_odds * sev)))
            else:
                p = np.zeros(len(hh))
            now = at_risk & (u < p)
            newly = at_risk & ~now
            dropout[newly & dropout.isna().to_numpy()] = w.code
            prev_ret = ret
        resp[w.code] = now
        prev = now
    return resp, dropout


def person_response(
    study: Study, model: SynthModel, pop: Population, hh_resp: pd.DataFrame, u: np.ndarray
) -> pd.DataFrame:
    """Person x wave booleans: the household answers and the person does (the first member always).

    `u` holds one uniform draw per person (rows) and wave (columns, in study order).
    """
    p = pop.persons
    baseline = study.baseline_wave
    out = {}
    for j, w in enumerate(study.wave_codes):
        share = model.households.baseline_response if w == baseline else model.households.followup_person_response
        out[w] = hh_resp[w].to_numpy()[p["hh_idx"].to_numpy()] & (p["primary"].to_numpy() | (u[:, j] < share))
    return pd.DataFrame(out, index=p.index)
