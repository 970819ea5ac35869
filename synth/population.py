"""Households, persons and wave dates of a synthetic study (vectorised with numpy)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cohortflow.config.study import Study

from .config import Questionnaires, SynthModel
from .identity import fake_identities

DAYS_PER_YEAR = 365.25


@dataclass
class Population:
    """The true structure: `households` (one row per household) and `persons` (one row per person).

    `wave_dates` holds one datetime64[D] column per wave code per person (NaT when the person's arm is not
    measured at that wave): the date the person would complete the questionnaire.
    """

    households: pd.DataFrame
    persons: pd.DataFrame
    wave_dates: pd.DataFrame


def sizes(study: Study, factor: float) -> dict[str, int]:
    """Households per arm (respondents for reference groups, one household each) at `factor`."""
    out: dict[str, int] = {}
    for arm in study.arms:
        target = arm.target_households or arm.target_respondents
        if target is None:
            raise ValueError(
                f"config/study.yaml: arm {arm.code!r} has neither target_households nor target_respondents; "
                "give one so the generator knows how many to make"
            )
        out[arm.code] = max(1, int(round(target * factor)))
    return out


def age_years(birth: pd.Series | np.ndarray, at: pd.Series | np.ndarray) -> np.ndarray:
    """Completed years between `birth` and `at` (calendar age; NaN where either is missing)."""
    b = pd.DatetimeIndex(birth)
    a = pd.DatetimeIndex(at)
    years = (a.year - b.year).astype(float)
    before = (a.month < b.month) | ((a.month == b.month) & (a.day < b.day))
    out = years - before.astype(float)
    out = np.asarray(out, dtype=float)
    out[np.asarray(b.isna() | a.isna())] = np.nan
    return out


def build_population(
    study: Study, model: SynthModel, quest: Questionnaires, factor: float, rng: np.random.Generator
) -> Population:
    """Draw households over arms and sites, members with sex and birth dates, identifiers and wave dates."""
    hcfg = model.households
    n_by_arm = sizes(study, factor)
    start = np.datetime64(hcfg.registration_start, "D")

    hh_parts = []
    for arm in study.arms:
        n = n_by_arm[arm.code]
        sites = [s.code for s in arm.sites] or [arm.code.upper()]
        share = rng.dirichlet(np.full(len(sites), hcfg.site_concentration))
        site = np.array(sites, dtype=object)[rng.choice(len(sites), size=n, p=share)]
        reg = start + rng.integers(0, hcfg.registration_span_days, n).astype("timedelta64[D]")
        if arm.role == "reference":
            n_adults = np.zeros(n, dtype=int)
            n_children = np.ones(n, dtype=int)
        else:
            n_adults = 1 + (rng.random(n) < hcfg.two_adults).astype(int)
            probs = np.asarray(hcfg.children, dtype=float)
            n_children = 1 + rng.choice(len(probs), size=n, p=probs / probs.sum())
        hh_parts.append(pd.DataFrame({
            "arm": arm.code, "arm_role": arm.role, "site": site, "registration": reg,
            "n_adults": n_adults, "n_children": n_children,
        }))
    hh = pd.concat(hh_parts, ignore_index=True)
    hh["registration"] = hh["registration"].astype("datetime64[s]")
    # household numbers within site in registration order: G-<site>-<nnnn>
    hh = hh.sort_values(["arm", "site", "registration"], kind="stable").reset_index(drop=True)
    hh["number"] = hh.groupby(["arm", "site"]).cumcount() + 1
    hh["gezin_id"] = "G-" + hh["site"].astype(str) + "-" + hh["number"].astype(str).str.zfill(4)
    hh.index.name = "hh_idx"

    # wave dates per household: offset plus jitter inside the window (days after registration)
    waves = study.waves
    hh_wave_day = {}
    for w in waves:
        lo, hi = w.window_days
        sd = (hi - lo) / 6.0
        jit = np.clip(np.round(rng.normal(0.0, sd, len(hh))), lo - w.offset_days + 1, hi - w.offset_days - 11)
        day = (w.offset_days + jit).astype(float)
        measured = hh["arm"].isin([a for a in study.arm_codes if w.code in study.waves_of(a)]).to_numpy(bool)
        day[~measured] = np.nan
        hh_wave_day[w.code] = day

    # persons: adults V1, V2; children K1.. (oldest first)
    H = len(hh)
    n_ad = hh["n_adults"].to_numpy()
    n_ch = hh["n_children"].to_numpy()
    ad_hh = np.repeat(np.arange(H), n_ad)
    ch_hh = np.repeat(np.arange(H), n_ch)
    reg_days = (hh["registration"].to_numpy().astype("datetime64[D]") - start).astype(int)

    is_ref = (hh["arm_role"] == "reference").to_numpy()
    ref_lo, ref_hi = quest.reference.child_age_years
    ch_age_days = np.where(
        is_ref[ch_hh],
        rng.uniform(ref_lo * DAYS_PER_YEAR, ref_hi * DAYS_PER_YEAR - 1, len(ch_hh)),
        rng.uniform(0, 18 * DAYS_PER_YEAR - 1, len(ch_hh)),
    )
    # reference respondents: age is drawn at their first wave date, cohort children at registration
    first_wave = waves[0].code
    anchor_extra = np.where(is_ref[ch_hh], np.nan_to_num(hh_wave_day[first_wave][ch_hh]), 0.0)
    ch_birth_day = reg_days[ch_hh] + anchor_extra - ch_age_days
    ch_order = np.lexsort((ch_birth_day, ch_hh))  # within household oldest first
    ch_hh, ch_birth_day = ch_hh[ch_order], ch_birth_day[ch_order]
    ch_rank = pd.Series(ch_hh).groupby(ch_hh).cumcount().to_numpy() + 1
    oldest_age = pd.Series(ch_age_days[ch_order]).groupby(ch_hh).max().reindex(range(H)).fillna(0).to_numpy()

    ad_rank = pd.Series(ad_hh).groupby(ad_hh).cumcount().to_numpy() + 1
    v1_age = oldest_age[ad_hh] + rng.uniform(18, 34, len(ad_hh)) * DAYS_PER_YEAR
    v1_age = np.maximum(v1_age, 20 * DAYS_PER_YEAR)
    ad_age = np.where(ad_rank == 1, v1_age, np.maximum(v1_age + rng.normal(2, 4, len(ad_hh)) * DAYS_PER_YEAR,
                                                       19 * DAYS_PER_YEAR))
    ad_birth_day = reg_days[ad_hh] - ad_age
    v1_female = rng.random(H) < 0.8
    ad_female = np.where(ad_rank == 1, v1_female[ad_hh], np.where(rng.random(len(ad_hh)) < 0.95,
                                                                   ~v1_female[ad_hh], v1_female[ad_hh]))
    ch_female = rng.random(len(ch_hh)) < 0.5

    persons = pd.DataFrame({
        "hh_idx": np.concatenate([ad_hh, ch_hh]),
        "member": np.array(["adult"] * len(ad_hh) + ["child"] * len(ch_hh), dtype=object),
        "suffix": np.concatenate([np.char.add("V", ad_rank.astype(str)), np.char.add("K", ch_rank.astype(str))]),
        "sex": np.where(np.concatenate([ad_female, ch_female]), 2, 1),
        "birth_day": np.round(np.concatenate([ad_birth_day, ch_birth_day])).astype(int),
    })
    persons = persons.sort_values(["hh_idx", "member", "suffix"], kind="stable").reset_index(drop=True)
    persons.index.name = "person_idx"
    persons["birth_date"] = (start + persons["birth_day"].to_numpy().astype("timedelta64[D]")).astype(
        "datetime64[s]")
    hp = hh.loc[persons["hh_idx"].to_numpy()]
    persons["arm"] = hp["arm"].to_numpy()
    persons["site"] = hp["site"].to_numpy()
    persons["gezin_id"] = hp["gezin_id"].to_numpy()
    persons["resp_id"] = persons["gezin_id"] + "-" + persons["suffix"]
    persons["primary"] = persons.groupby("hh_idx").cumcount() == 0

    # completion date per person and wave: the household's date plus a few days, inside the window
    dates = {}
    p_reg = reg_days[persons["hh_idx"].to_numpy()]
    for w in waves:
        day = hh_wave_day[w.code][persons["hh_idx"].to_numpy()] + rng.integers(0, 10, len(persons))
        day = np.minimum(day, w.window_days[1])
        d = np.full(len(persons), np.datetime64("NaT"), dtype="datetime64[D]")
        ok = ~np.isnan(day)
        d[ok] = start + (p_reg[ok] + day[ok]).astype(int).astype("timedelta64[D]")
        dates[w.code] = d.astype("datetime64[s]")
    wave_dates = pd.DataFrame(dates, index=persons.index)

    base_age = age_years(persons["birth_date"], hh.loc[persons["hh_idx"], "registration"].to_numpy())
    ids = fake_identities(rng, persons["sex"].to_numpy(), persons["hh_idx"].to_numpy(),
                          (persons["member"] == "child").to_numpy(), base_age)
    for k, v in ids.items():
        persons[k] = v
    persons = persons.drop(columns=["birth_day"])
    return Population(households=hh, persons=persons, wave_dates=wave_dates)
