"""Attrition and flow: who was expected, who responded, who was linked and analysed, and why not.

Counted per informant person (the one who fills in questionnaires) per arm, site and wave. A person is
*eligible* at a wave of their arm when they are known to the study in any wave (loaded or quarantined row).
Each eligible person gets exactly one status per wave, in this order of precedence:
`analysed` (an included response) > `outside_window` > `conflict` (loaded but excluded by a linkage rule) >
`quarantined` (rows only in quarantine) > `not_responded`. The counting identities, checked by
`check_identities`, are

    eligible    = responded + not_responded
    responded   = linked + quarantined
    linked      = analysed + excluded_outside_window + excluded_conflict
    quarantined = quarantined_outside_window + quarantined_conflict + quarantined_other

(the last split by the first quarantine reason's rule: QUARANTINE_WINDOW_RULES, QUARANTINE_CONFLICT_RULES).

`target_households` / `target_respondents` from study.yaml are given per arm where known.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from cohortflow.config.study import Study

# quarantine rules (as named by ingest/validation) that mean "outside the wave window" or "conflict";
# the breakdown of `quarantined` into these and `quarantined_other` is reported beside the identities
QUARANTINE_WINDOW_RULES = {"date_outside_window"}
QUARANTINE_CONFLICT_RULES = {"sex_conflict", "conflicting_duplicate", "conflicts_with_loaded"}
STATUSES = ["analysed", "outside_window", "conflict", "quarantined", "not_responded"]
COUNT_COLUMNS = ["eligible", "responded", "not_responded", "linked", "quarantined", "analysed",
                 "excluded_outside_window", "excluded_conflict"]


def quarantine_people(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Flatten warehouse `quarantine_row` rows (reasons and pseudonymised payload as JSON or Python objects)
    into `arm, site, wave, role, household_id, person_id, rule` (first reason's rule)."""
    cols = ["arm", "site", "wave", "role", "household_id", "person_id", "rule"]
    if quarantine is None or quarantine.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for rec in quarantine.itertuples(index=False):
        payload = rec.payload if isinstance(rec.payload, dict) else json.loads(rec.payload or "{}")
        reasons = rec.reasons if isinstance(rec.reasons, list) else json.loads(rec.reasons or "[]")
        rows.append({c: payload.get(c) for c in cols[:-1]} | {"rule": reasons[0]["rule"] if reasons else None})
    return pd.DataFrame(rows, columns=cols)


def person_wave_status(responses: pd.DataFrame, quarantined: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per (eligible informant, wave of their arm): arm, site, household_id, person_id, wave, status.

    `responses` is `LinkedData.responses` (with `included`, `exclusion_reason`); `quarantined` comes from
    `quarantine_people`. Quarantined rows without a person pseudonym cannot be attributed and are left out
    (count them at row level from the batch table)."""
    q = quarantined.dropna(subset=["person_id"]) if len(quarantined) else quarantined
    known = pd.concat([responses[["person_id", "household_id", "arm", "site"]],
                       q[["person_id", "household_id", "arm", "site"]]], ignore_index=True)
    known = known.drop_duplicates("person_id")
    frames = []
    for arm in known["arm"].unique():
        sub = known[known["arm"] == arm]
        for w in study.waves_of(arm) if arm in study.arm_codes else sorted(set(responses["wave"])):
            frames.append(sub.assign(wave=w))
    grid = pd.concat(frames, ignore_index=True) if frames else known.assign(wave=pd.Series(dtype=str))
    rank = {s: i for i, s in enumerate(STATUSES)}
    r = responses.assign(status=np.where(responses["included"], "analysed",
                                         responses["exclusion_reason"].astype(object).fillna("analysed")))
    parts = [r[["person_id", "wave", "status"]]]
    if len(q):
        parts.append(q[["person_id", "wave", "rule"]].rename(columns={"rule": "quarantine_rule"})
                     .assign(status="quarantined"))
    st = pd.concat(parts, ignore_index=True)
    if "quarantine_rule" not in st:
        st["quarantine_rule"] = None
    st["_rank"] = st["status"].map(rank)
    best = st.sort_values("_rank", kind="mergesort").drop_duplicates(["person_id", "wave"])
    grid = grid.merge(best[["person_id", "wave", "status", "quarantine_rule"]], on=["person_id", "wave"], how="left")
    grid["status"] = grid["status"].fillna("not_responded")
    return grid


def attrition_table(status: pd.DataFrame, study: Study, batches: pd.DataFrame | None = None) -> pd.DataFrame:
    """Counts per arm, site and wave from `person_wave_status`, with the identity columns (module docstring).

    With `batches` (warehouse `batch` rows: status, arm, site, wave, rows_in) the column `refused_file_rows`
    counts the data rows of refused files: their respondents cannot be identified (nothing of a refused
    file is stored), so they stand beside the person counts, outside the identities."""
    c = status.groupby(["arm", "site", "wave", "status"]).size().unstack("status", fill_value=0)
    c = c.reindex(columns=STATUSES, fill_value=0)
    out = pd.DataFrame(index=c.index)
    out["analysed"] = c["analysed"]
    out["excluded_outside_window"] = c["outside_window"]
    out["excluded_conflict"] = c["conflict"]
    out["quarantined"] = c["quarantined"]
    out["not_responded"] = c["not_responded"]
    out["linked"] = out["analysed"] + out["excluded_outside_window"] + out["excluded_conflict"]
    out["responded"] = out["linked"] + out["quarantined"]
    out["eligible"] = c.sum(axis=1)
    out = out[COUNT_COLUMNS].reset_index()
    if "quarantine_rule" in status:
        qs = status[status["status"] == "quarantined"]
        kind = np.where(qs["quarantine_rule"].isin(QUARANTINE_WINDOW_RULES), "quarantined_outside_window",
                        np.where(qs["quarantine_rule"].isin(QUARANTINE_CONFLICT_RULES), "quarantined_conflict",
                                 "quarantined_other"))
        kinds = ["quarantined_outside_window", "quarantined_conflict", "quarantined_other"]
        qk = qs.assign(kind=kind).groupby(["arm", "site", "wave", "kind"]).size().unstack("kind", fill_value=0)
        qk = qk.reindex(columns=kinds, fill_value=0).reset_index()
        out = out.merge(qk, on=["arm", "site", "wave"], how="left")
        out[kinds] = out[kinds].fillna(0).astype("int64")
    if batches is not None:
        ref = batches[(batches["status"] == "refused") & batches["arm"].notna() & batches["wave"].notna()]
        ref = ref.assign(site=ref["site"].fillna("*")).groupby(["arm", "site", "wave"])["rows_in"].sum()
        out = out.merge(ref.rename("refused_file_rows").reset_index(), on=["arm", "site", "wave"], how="outer")
        for c in [c for c in out.columns if c not in ("arm", "site", "wave")]:
            out[c] = out[c].fillna(0).astype("int64")
    wave_order = {w: i for i, w in enumerate(study.wave_codes)}
    out["_w"] = out["wave"].map(wave_order)
    return out.sort_values(["arm", "site", "_w"]).drop(columns="_w").reset_index(drop=True)


def attrition_by_arm(table: pd.DataFrame, study: Study) -> pd.DataFrame:
    """`attrition_table` summed over sites per arm and wave, with targets and % of baseline responders."""
    cols = [c for c in table.columns if c not in ("arm", "site", "wave")]
    a = table.groupby(["arm", "wave"], sort=False)[cols].sum().reset_index()
    targets = {x.code: (x.target_households, x.target_respondents) for x in study.arms}
    a["target_households"] = a["arm"].map(lambda x: targets.get(x, (None, None))[0]).astype("Int64")
    a["target_respondents"] = a["arm"].map(lambda x: targets.get(x, (None, None))[1]).astype("Int64")
    base = a[a["wave"] == study.baseline_wave].set_index("arm")["analysed"]
    a["pct_of_baseline_analysed"] = (100 * a["analysed"] / a["arm"].map(base)).round(1)
    return a


def check_identities(table: pd.DataFrame) -> list[str]:
    """The rows (as messages) where a counting identity fails; empty when all add up."""
    bad = []
    checks = {
        "eligible = responded + not_responded": table["eligible"] == table["responded"] + table["not_responded"],
        "responded = linked + quarantined": table["responded"] == table["linked"] + table["quarantined"],
        "linked = analysed + excluded_outside_window + excluded_conflict":
            table["linked"] == table["analysed"] + table["excluded_outside_window"] + table["excluded_conflict"],
    }
    if "quarantined_other" in table:
        checks["quarantined = quarantined_outside_window + quarantined_conflict + quarantined_other"] = (
            table["quarantined"] == table["quarantined_outside_window"] + table["quarantined_conflict"]
            + table["quarantined_other"])
    for name, ok in checks.items():
        for i in np.flatnonzero(~ok.to_numpy()):
            row = table.iloc[i]
            bad.append(f"{name} fails for {dict(row[[c for c in ('arm', 'site', 'wave') if c in row]])}")
    return bad


def baseline_comparison(long: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Baseline characteristics of subjects who stayed (a later-wave score of the same outcome and informant
    role) and those who left, per arm, role and outcome: n, mean, SD of each group and the standardised mean
    difference (stayed - left) / pooled SD. Age and `sex_female` (share) are included as outcomes."""
    base = study.baseline_wave
    key = ["person_id", "role", "outcome"]
    later = long.loc[long["wave"] != base, key].drop_duplicates()
    b = long[long["wave"] == base].drop_duplicates(key).merge(later.assign(stayed=True), on=key, how="left")
    b["stayed"] = b["stayed"].fillna(False).astype(bool)
    person = b.drop_duplicates(["person_id", "role"])
    extra = []
    for name, values in (("age_years", person["age_years"].astype(float)),
                         ("sex_female", (person["sex"] == "female").astype(float).where(person["sex"].notna()))):
        extra.append(person[["arm", "role", "person_id", "stayed"]].assign(outcome=name, score=values.to_numpy()))
    data = pd.concat([b[["arm", "role", "person_id", "stayed", "outcome", "score"]], *extra], ignore_index=True)
    rows = []
    for (arm, role, outcome), g in data.groupby(["arm", "role", "outcome"], sort=True):
        s = g.loc[g["stayed"], "score"].dropna().astype(float)
        lft = g.loc[~g["stayed"], "score"].dropna().astype(float)
        rec = {"arm": arm, "role": role, "outcome": outcome, "n_stayed": len(s), "mean_stayed": s.mean(),
               "sd_stayed": s.std(ddof=1), "n_left": len(lft), "mean_left": lft.mean(), "sd_left": lft.std(ddof=1)}
        pooled = np.sqrt(((len(s) - 1) * s.var(ddof=1) + (len(lft) - 1) * lft.var(ddof=1)) / (len(s) + len(lft) - 2)) \
            if len(s) > 1 and len(lft) > 1 else np.nan
        rec["smd"] = (rec["mean_stayed"] - rec["mean_left"]) / pooled if pooled and pooled > 0 else np.nan
        rows.append(rec)
    return pd.DataFrame(rows)


_TEXT = {
    "nl": {"eligible": "bekend", "responded": "gerespondeerd", "not_responded": "geen respons",
           "analysed": "geanalyseerd", "quarantined": "in quarantaine", "outside_window": "buiten venster",
           "conflict": "conflict", "title": "Stroomdiagram respondenten", "target": "beoogd", "hh": "huishoudens", "resp": "respondenten"},
    "en": {"eligible": "known", "responded": "responded", "not_responded": "no response", "analysed": "analysed",
           "quarantined": "quarantined", "outside_window": "outside window", "conflict": "conflict",
           "title": "Flow of respondents", "target": "target", "hh": "households", "resp": "respondents"},
}


def flow_diagram(by_arm: pd.DataFrame, study: Study, out_base: Path, lang: str = "en") -> list[Path]:
    """CONSORT-style flow diagram (one column per arm, one box per wave, exclusions beside it) written as
    `<out_base>.png` and `<out_base>.svg`; labels of arms and waves from study.yaml in `lang`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = _TEXT.get(lang, _TEXT["en"])
    arms = [a for a in study.arm_codes if a in set(by_arm["arm"])]
    n_w = len(study.wave_codes)
    fig, ax = plt.subplots(figsize=(4.2 * max(len(arms), 1), 1.9 * n_w + 1.2))
    ax.set_xlim(0, 4.2 * max(len(arms), 1))
    ax.set_ylim(0, 1.9 * n_w + 1.2)
    ax.axis("off")
    ax.set_title(t["title"], fontsize=12)
    for i, arm in enumerate(arms):
        a = study.arm(arm)
        x = 4.2 * i + 0.2
        tgt = f"{a.target_households} {t['hh']}" if a.target_households else (
            f"{a.target_respondents} {t['resp']}" if a.target_respondents else "")
        head = a.label.get(lang) + (f"\n{t['target']}: {tgt}" if tgt else "")
        ax.text(x + 1.2, 1.9 * n_w + 0.7, head, ha="center", va="center", fontsize=9, weight="bold")
        prev_y = None
        for w in study.waves_of(arm):
            row = by_arm[(by_arm["arm"] == arm) & (by_arm["wave"] == w)]
            if row.empty:
                continue
            r = row.iloc[0]
            y = 1.9 * (n_w - 1 - study.wave_codes.index(w)) + 0.3
            main = (f"{study.wave(w).label.get(lang)}\n{t['eligible']} {r.eligible}  {t['responded']} {r.responded}"
                    f"\n{t['analysed']} {r.analysed}")
            ax.add_patch(plt.Rectangle((x, y), 2.4, 1.2, fill=False, lw=1.2))
            ax.text(x + 1.2, y + 0.6, main, ha="center", va="center", fontsize=7.5)
            side = (f"{t['not_responded']} {r.not_responded}\n{t['quarantined']} {r.quarantined}\n"
                    f"{t['outside_window']} {r.excluded_outside_window}\n{t['conflict']} {r.excluded_conflict}")
            ax.add_patch(plt.Rectangle((x + 2.6, y + 0.1), 1.4, 1.0, fill=False, lw=0.8, ls="--"))
            ax.text(x + 3.3, y + 0.6, side, ha="center", va="center", fontsize=6.5)
            ax.annotate("", xy=(x + 2.6, y + 0.6), xytext=(x + 2.4, y + 0.6), arrowprops={"arrowstyle": "->"})
            if prev_y is not None:
                ax.annotate("", xy=(x + 1.2, y + 1.2), xytext=(x + 1.2, prev_y), arrowprops={"arrowstyle": "->"})
            prev_y = y
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = [out_base.with_suffix(".png"), out_base.with_suffix(".svg")]
    with plt.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG (searchable, translatable)
        for p in paths:
            fig.savefig(p, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return paths


def read_quarantine(engine) -> pd.DataFrame:  # noqa: ANN001
    """Unreleased quarantine rows (reasons and payload) from the warehouse, flattened by `quarantine_people`."""
    from sqlalchemy import select

    from .models import QuarantineRow

    q = select(QuarantineRow.reasons, QuarantineRow.payload).where(QuarantineRow.released_at.is_(None))
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return quarantine_people(pd.DataFrame(rows, columns=["reasons", "payload"]))
