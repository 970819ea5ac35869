"""Effect rows, the small-cell rule, the plain-language reading and the table files."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from report_builders import build_result, diff_in_change, simple_plan, simulate

from cohortflow.analysis import tables as T
from cohortflow.analysis.labels import fmt_number, fmt_p, text
from cohortflow.config.study import load_study
from cohortflow.instruments.registry import load_instruments

STUDY = load_study()
INSTRUMENTS = load_instruments()
PLAN = simple_plan(STUDY)
I = PLAN.intervention_arm  # noqa: E741
C = PLAN.comparison_arms[0]
WAVES = [w.code for w in sorted(STUDY.waves, key=lambda w: w.offset_days)]
BASE, LAST = WAVES[0], WAVES[-1]


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return simulate(STUDY, PLAN)


@pytest.fixture(scope="module")
def result(data):
    return build_result(data, PLAN, STUDY)


def test_effect_rows_one_row_per_outcome_and_follow_up(result):
    rows = T.effect_rows(result, PLAN, STUDY)
    assert len(rows) == len(PLAN.outcomes) * (len(WAVES) - 1)
    assert set(rows["wave"]) == set(WAVES[1:])
    assert list(rows["outcome_family"].unique()) == ["primary", "secondary"]


def test_effect_rows_carry_the_numbers_of_the_data(data, result):
    """Each cell is recomputed here from the simulated data, independently of the builder's frames."""
    rows = T.effect_rows(result, PLAN, STUDY).set_index(["outcome", "wave"])
    r = rows.loc[("sim.total", LAST)]
    at = data[(data.arm == C) & (data.wave == LAST)]
    assert r[T.col("n", C)] == at.person_id.nunique()
    base_c = set(data.loc[(data.arm == C) & (data.wave == BASE), "person_id"])
    assert r[T.col("retained", C)] == pytest.approx(100 * len(base_c & set(at.person_id)) / len(base_c))
    b = data.loc[(data.arm == I) & (data.wave == BASE), "score"]
    assert r[T.col("base_mean", I)] == pytest.approx(b.mean())
    assert r[T.col("base_sd", I)] == pytest.approx(b.std(ddof=1))
    est, se = diff_in_change(data, "score", I, C, BASE, LAST)
    assert r[T.col("diff", I, C)] == pytest.approx(est)
    assert r[T.col("diff_upper", I, C)] - r[T.col("diff_lower", I, C)] == pytest.approx(2 * 1.96 * se)
    assert r[T.col("emm", I)] == pytest.approx(data.loc[(data.arm == I) & (data.wave == LAST), "score"].mean())
    # binary outcome: proportions become % and percentage points
    rb = rows.loc[("sim.above", LAST)]
    p_i = data.loc[(data.arm == I) & (data.wave == LAST), "above_cutoff"].mean()
    assert rb[T.col("emm", I)] == pytest.approx(100 * p_i)
    est_b, _ = diff_in_change(data, "above_cutoff", I, C, BASE, LAST)
    assert rb[T.col("diff", I, C)] == pytest.approx(100 * est_b)


def test_small_cell_rule_hides_cells_below_the_threshold(data):
    """An arm with 6 respondents at the last wave: its n, means, % and the contrasts on it become '<10'."""
    keep = data[(data.arm == C) & (data.wave == LAST)].person_id.unique()[:6]
    small = data[~((data.arm == C) & (data.wave == LAST) & ~data.person_id.isin(keep))]
    res = build_result(small, PLAN, STUDY)
    rows = T.effect_rows(res, PLAN, STUDY)
    shown = T.suppress_small_cells(rows, PLAN).set_index(["outcome", "wave"])
    r = shown.loc[("sim.total", LAST)]
    assert rows.set_index(["outcome", "wave"]).loc[("sim.total", LAST), T.col("n", C)] == 6
    for k in ("n", "retained", "emm", "emm_lower", "emm_upper", "above_pct", "improved_pct", "deteriorated_pct"):
        assert r[T.col(k, C)] == "<10", k
    for k in ("diff", "diff_lower", "diff_upper", "p", "p_adj", "d", "mi", "sens_changed"):
        assert r[T.col(k, I, C)] == "<10", k
    # the other comparison and the other wave are untouched
    other = PLAN.comparison_arms[1]
    assert isinstance(r[T.col("diff", I, other)], float)
    assert isinstance(shown.loc[("sim.total", WAVES[1]), T.col("n", C)], float)
    # the reading says so instead of giving numbers
    line = T.reading(r.to_dict() | {"outcome": "sim.total", "wave": LAST}, C, PLAN, STUDY, INSTRUMENTS, "en")
    assert "fewer than 10" in line and "difference" not in line
    # and the formatted tables show the marker in both languages
    for lang in ("nl", "en"):
        disp = T.display_table(shown.reset_index(), PLAN, STUDY, INSTRUMENTS, lang)
        row = disp[(disp["outcome_key"] == "sim.total")].iloc[-1]
        assert row[text(lang, "col_n", arm=T.arm_label(STUDY, C, lang),
                        baseline=T.wave_label(STUDY, BASE, lang))] == "<10"


def test_small_cell_threshold_is_a_strict_lower_bound(data):
    """Exactly `threshold` respondents are shown; one fewer is hidden (threshold from the plan)."""
    rows = T.effect_rows(build_result(data, PLAN, STUDY), PLAN, STUDY)
    n = float(rows.loc[0, T.col("n", C)])
    at = T.suppress_small_cells(rows, simple_plan(STUDY, threshold=int(n)))
    assert at.loc[0, T.col("n", C)] == n
    above = T.suppress_small_cells(rows, simple_plan(STUDY, threshold=int(n) + 1))
    assert above.loc[0, T.col("n", C)] == f"<{int(n) + 1}"


def _row(est, lo, hi, p_adj, direction="higher_worse", family="gaussian", kind="diff_in_change"):
    return pd.Series({"outcome": "sim.total", "wave": LAST, "baseline_wave": BASE, "direction": direction,
                      "family": family, "contrast_kind": kind, T.col("diff", I, C): est, T.col("diff_lower", I, C): lo,
                      T.col("diff_upper", I, C): hi, T.col("p", I, C): p_adj / 2, T.col("p_adj", I, C): p_adj})


def test_reading_by_direction_and_ci():
    arm, comp = T.arm_label(STUDY, I, "en"), T.arm_label(STUDY, C, "en")
    better = T.reading(_row(-3.1, -5.0, -1.2, 0.004), C, PLAN, STUDY, INSTRUMENTS, "en")
    assert f"{arm} improved more than {comp}" in better
    assert "\u22123.1 points, 95% CI \u22125.0 to \u22121.2" in better
    assert "unlikely to be chance (adjusted p = 0.004)" in better
    # higher is better: a negative difference means the pilots improved less
    worse = T.reading(_row(-3.1, -5.0, -1.2, 0.004, "higher_better"), C, PLAN, STUDY, INSTRUMENTS, "en")
    assert f"{arm} improved less than {comp}" in worse
    unclear = T.reading(_row(-1.0, -3.0, 1.0, 0.3), C, PLAN, STUDY, INSTRUMENTS, "en")
    assert "did not differ clearly" in unclear and "may well be chance (adjusted p = 0.300)" in unclear
    nl = T.reading(_row(-3.1, -5.0, -1.2, 0.004), C, PLAN, STUDY, INSTRUMENTS, "nl")
    assert f"verbeterde {T.arm_label(STUDY, I, 'nl')} meer dan" in nl and "\u22123,1 punten" in nl
    assert "gecorrigeerde p = 0,004" in nl
    # the unadjusted CI excludes 0 but the adjusted p does not: say that the correction is what makes it unclear
    corrected = T.reading(_row(-4.8, -8.9, -0.6, 0.268), C, PLAN, STUDY, INSTRUMENTS, "en")
    assert f"{arm} improved more than {comp}" in corrected
    assert "but after correction for the number of comparisons it may be chance (adjusted p = 0.268)" in corrected
    pp = T.reading(_row(-8.0, -12.0, -4.0, 0.01, family="binomial"), C, PLAN, STUDY, INSTRUMENTS, "en")
    assert "percentage points" in pp
    for s in (better, worse, unclear, nl, pp, corrected):
        assert "caus" not in s.lower() and "veroorza" not in s.lower()


def test_number_formats():
    assert fmt_number(-3.14, "nl") == "\u22123,1" and fmt_number(-0.04, "en") == "0.0"
    assert fmt_p(0.0004, "en") == "<0.001" and fmt_p(0.0214, "nl") == "0,021"
    assert fmt_number(float("nan"), "en") == ""


def test_labels_come_from_configuration(result):
    shown = T.suppress_small_cells(T.effect_rows(result, PLAN, STUDY), PLAN)
    for lang in ("nl", "en"):
        disp = T.display_table(shown, PLAN, STUDY, INSTRUMENTS, lang)
        for a in PLAN.cohort_arms:
            assert any(STUDY.arm(a).label.get(lang) in c for c in disp.columns)
        assert disp[text(lang, "col_outcome")].str.startswith(PLAN.outcome("sim.total").label.get(lang)).any()
    # without a plan label, the instrument definition's label is used
    assert T.outcome_label("cries13.total", simple_plan(STUDY, outcomes=[{"name": "cries13.total"}]),
                           INSTRUMENTS, "nl") == "{}: {}".format(INSTRUMENTS["cries13"].label.nl,
                                                                 INSTRUMENTS["cries13"].scale("total").label.nl)


def test_binary_outcome_shows_odds_ratio_in_effect_column(result):
    shown = T.suppress_small_cells(T.effect_rows(result, PLAN, STUDY), PLAN)
    disp = T.display_table(shown, PLAN, STUDY, INSTRUMENTS, "en")
    col = text("en", "col_d", arm=T.arm_label(STUDY, I, "en"), arm2=T.arm_label(STUDY, C, "en"))
    b = disp[disp["outcome_key"] == "sim.above"][col]
    assert b.str.startswith("OR ").all()
    g = disp[disp["outcome_key"] == "sim.total"][col].iloc[-1]
    d = float(shown[shown.outcome == "sim.total"].iloc[-1][T.col("d", I, C)])
    assert g.startswith(fmt_number(d, "en", 2)) and math.isfinite(d)
    assert not np.isnan(d)


def test_effect_contrasts_read_back_from_the_csv(result, tmp_path):
    rows = T.effect_rows(result, PLAN, STUDY)
    path = T.write_csv(T.suppress_small_cells(rows, PLAN), tmp_path / "effect_table.csv")
    long = T.effect_contrasts(pd.read_csv(path), PLAN)
    assert len(long) == len(rows) * len(PLAN.comparison_arms)
    c = result.outcomes["sim.total"].contrasts.set_index(["arm2", "wave"])
    got = long[long.outcome == "sim.total"].set_index(["arm2", "wave"])
    for idx in got.index:
        assert got.loc[idx, "estimate"] == pytest.approx(c.loc[idx, "estimate"])
        assert got.loc[idx, "upper"] == pytest.approx(c.loc[idx, "upper"])
        assert got.loc[idx, "contrast"] == c.loc[idx, "contrast"]
    assert not long["suppressed"].any()
    hidden = T.effect_contrasts(T.suppress_small_cells(rows, simple_plan(STUDY, threshold=10_000)), PLAN)
    assert hidden["suppressed"].all() and hidden["estimate"].isna().all()


def test_no_cut_off_is_empty_not_suppressed_and_the_mi_cell_uses_the_mi_flag(result):
    """An outcome without a cut-off (0 flags) shows nothing, not '<10'; the MI column's 'conclusion changes'
    is the imputation's own flag, not IPW's."""
    rows = T.effect_rows(result, PLAN, STUDY)
    rows[T.col("above_n", I)] = 0.0
    rows[T.col("above_pct", I)] = np.nan
    shown = T.suppress_small_cells(rows, PLAN)
    assert not any(str(v).startswith("<") for v in shown[T.col("above_pct", I)])
    rows.loc[rows.index[0], T.col("above_n", I)] = 3.0  # a real small count is still hidden
    assert T.suppress_small_cells(rows, PLAN).at[rows.index[0], T.col("above_pct", I)] == "<10"
    sens = result.sensitivity.copy()
    sens["mi_changes"] = False
    sens["ipw_changes"] = True
    sens["conclusion_changes"] = True
    res2 = type(result)(**{**result.__dict__, "sensitivity": sens})
    disp = T.display_table(T.effect_rows(res2, PLAN, STUDY), PLAN, STUDY, INSTRUMENTS, "en")
    names = {"arm": STUDY.arm(I).label.en, "arm2": STUDY.arm(C).label.en}
    mi = disp[text("en", "col_sens", **names)]
    assert mi.str.contains(text("en", "sens_same")).any()
    assert not mi.str.contains(text("en", "sens_changed")).any()


def test_between_arm_rows_fill_their_own_column_and_counts_are_in_times(result):
    rows = T.effect_rows(result, PLAN, STUDY)
    rows.loc[rows.outcome == "sim.above", "contrast_kind"] = "between_arm"
    disp = T.display_table(rows, PLAN, STUDY, INSTRUMENTS, "en").set_index("outcome_key")
    names = {"arm": STUDY.arm(I).label.en, "arm2": STUDY.arm(C).label.en}
    change, between = text("en", "col_diff", **names), text("en", "col_diff_between", **names)
    assert (disp.loc["sim.above", change] == "").all() and (disp.loc["sim.above", between] != "").all()
    assert (disp.loc["sim.total", between] == "").all() and (disp.loc["sim.total", change] != "").all()
    r = rows[rows.outcome == "sim.total"].iloc[0].copy()
    r["family"] = "negative_binomial"
    assert " times" in T.reading(r, C, PLAN, STUDY, INSTRUMENTS, "en")


def test_yes_no_outcomes_show_percentages_under_percentage_headers(result):
    disp = T.display_table(T.effect_rows(result, PLAN, STUDY), PLAN, STUDY, INSTRUMENTS, "nl").set_index("outcome_key")
    al = STUDY.arm(I).label.nl
    for kind in ("baseline", "emm"):
        mean_col, pct_col = text("nl", f"col_{kind}", arm=al), text("nl", f"col_{kind}_pct", arm=al)
        assert (disp.loc["sim.above", mean_col] == "").all() and (disp.loc["sim.above", pct_col] != "").all()
        assert (disp.loc["sim.total", pct_col] == "").all() and (disp.loc["sim.total", mean_col] != "").all()
