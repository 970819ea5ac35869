"""Residual plots of large fits draw a bounded number of points (analysis/plots.py: plot_sample, qq_points) while
small fits draw every value exactly as before; the QQ points of a large fit lie on the full QQ curve."""

from __future__ import annotations

import numpy as np
from scipy import stats


def _full_qq(x):
    x = np.sort(np.asarray(x, float))
    n = len(x)
    return stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n), x


def test_small_fit_draws_every_value():
    from cohortflow.analysis.plots import plot_sample, qq_points

    x = np.random.default_rng(1).normal(size=800)
    theo, xs = qq_points(x, max_points=1000)
    t0, x0 = _full_qq(x)
    np.testing.assert_array_equal(xs, x0)
    np.testing.assert_allclose(theo, t0, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(plot_sample(800, max_points=1000), np.arange(800))


def test_large_fit_draws_a_bounded_subset_of_the_full_qq_curve():
    from cohortflow.analysis.plots import plot_sample, qq_points

    x = np.random.default_rng(2).standard_t(5, size=200_000)
    theo, xs = qq_points(x, max_points=1000)
    t0, x0 = _full_qq(x)
    assert len(xs) <= 1000 and len(theo) == len(xs)
    # every drawn point is a point of the full QQ plot, the extremes included
    idx = np.searchsorted(t0, theo)
    np.testing.assert_allclose(t0[idx], theo, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(x0[idx], xs)
    assert xs[0] == x.min() and xs[-1] == x.max()
    pick = plot_sample(200_000, max_points=1000)
    assert len(pick) == 1000 and len(np.unique(pick)) == 1000 and np.all(np.diff(pick) > 0)
    np.testing.assert_array_equal(pick, plot_sample(200_000, max_points=1000))  # seeded: same plot every run


def test_residual_figure_of_a_large_fit_has_bounded_markers():
    import pandas as pd

    from cohortflow.analysis.diagnostics import LmmResiduals
    from cohortflow.analysis.plots import MAX_PLOT_POINTS, plot_residual_diagnostics

    rng = np.random.default_rng(3)
    n = 60_000
    fitted = rng.normal(10, 3, n)
    res = LmmResiduals(fitted=fitted, resid=rng.normal(0, 2, n), sigma=2.0,
                       blups={"person": pd.Series(rng.normal(0, 1, 30_000))})
    fig = plot_residual_diagnostics(res, "t")
    sizes = [len(c.get_offsets()) for ax in fig.axes for c in ax.collections]
    assert sizes and max(sizes) <= MAX_PLOT_POINTS
    assert "n=60000" in fig.axes[1].get_title() and "n=30000" in fig.axes[2].get_title()
