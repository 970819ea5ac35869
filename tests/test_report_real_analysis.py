"""The report on a real `run_analysis` result (mixed models, GEE, IPW and MI): the adapter and the files."""

from __future__ import annotations

import pytest
from report_builders import simple_plan, simulate

from cohortflow.analysis import tables as T
from cohortflow.analysis.models import run_analysis
from cohortflow.analysis.report import write_report
from cohortflow.config.study import load_study
from cohortflow.instruments.registry import load_instruments

STUDY = load_study()


@pytest.mark.slow
def test_report_from_run_analysis(tmp_path):
    plan = simple_plan(STUDY).model_copy(deep=True)
    plan.defaults.engine = "profiled"
    plan.defaults.random_effects.slope = None
    plan.sensitivity.multiple_imputation.imputations = 2
    plan.sensitivity.multiple_imputation.iterations = 2
    data = simulate(STUDY, plan, scale=0.4)
    result = run_analysis(data, plan, STUDY)
    assert result.failures == {}
    rows = T.effect_rows(result, plan, STUDY)
    i = plan.intervention_arm
    for comp in plan.comparison_arms:
        c = result.outcomes["sim.total"].contrasts
        c = c[(c.kind == "diff_in_change") & (c.arm2 == comp)].set_index("wave")
        r = rows[rows.outcome == "sim.total"].set_index("wave")
        assert r[T.col("diff", i, comp)].to_dict() == pytest.approx(c["estimate"].to_dict())
        assert r[T.col("p_adj", i, comp)].to_dict() == pytest.approx(c["p_adj"].to_dict())
        assert r[T.col("d", i, comp)].notna().all() and r[T.col("mi", i, comp)].notna().all()
        s = result.sensitivity[result.sensitivity.arm2 == comp].set_index("wave")
        assert r[T.col("mi", i, comp)].to_dict() == pytest.approx(s["mi_estimate"].to_dict())
        rb = rows[rows.outcome == "sim.above"].set_index("wave")
        cb = result.outcomes["sim.above"].contrasts
        cb = cb[(cb.kind == "diff_in_change") & (cb.arm2 == comp)].set_index("wave")
        assert rb[T.col("diff", i, comp)].to_dict() == pytest.approx((100 * cb["estimate"]).to_dict(), nan_ok=True)
        assert rb[T.col("ratio", i, comp)].to_dict() == pytest.approx(cb["ratio"].to_dict(), nan_ok=True)
    paths = write_report(result, plan, STUDY, load_instruments(), tmp_path, {"run_id": "r1", "snapshot_hash": "h"})
    page = paths.appendix.read_text(encoding="utf-8")
    assert "Linear mixed model, REML" in page and "GEE" in page and "mi_estimate" in page
    # residual diagnostics: the summary table and the plot of the mixed model; GEE says why there are none
    diag = result.outcomes["sim.total"].residual_diagnostics
    assert list(diag["quantity"][:2]) == ["conditional residuals", "BLUPs household:(Intercept)"]
    assert 'alt="Residual diagnostics of sim.total"' in page and "Not provided by the model stage" not in page
    assert "Not applicable: GEE is a marginal model" in page
    assert (tmp_path / "plots" / "residuals_sim-total.png").stat().st_size > 10_000
