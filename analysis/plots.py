"""Plots for the report (matplotlib, Agg backend): marginal means per arm over waves, and a forest plot of d.

`plot_emms(result_outcome, ...) -> Figure` and `plot_forest(rows, ...) -> Figure`; `save_png(fig, path)` writes
a PNG and returns its bytes (the HTML report inlines them as base64). Colours are the Okabe-Ito palette
(colour-blind safe), with a distinct marker per arm so the plots also read in grey.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cohortflow.config.study import Study  # noqa: E402

from .labels import text  # noqa: E402
from .plan import AnalysisPlan  # noqa: E402
from .tables import arm_label, col, wave_label  # noqa: E402

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def arm_style(plan: AnalysisPlan) -> dict[str, tuple[str, str]]:
    """Colour and marker per cohort arm, in the plan's order (intervention first)."""
    return {a: (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[i % len(MARKERS)]) for i, a in enumerate(plan.cohort_arms)}


def plot_emms(res, plan: AnalysisPlan, study: Study, title: str, lang: str, threshold: int) -> Figure:
    """Model-adjusted mean (95% CI) per arm over the waves of one outcome.

    Cells with fewer than `threshold` persons (from `res.counts`) are left out (the small-cell rule).
    Binary outcomes are shown in %.
    """
    order = [w.code for w in sorted(study.waves, key=lambda w: w.offset_days)]
    emms = res.emms.copy()
    binary = res.family == "binomial"
    scale = 100.0 if binary else 1.0
    counts = res.counts.set_index(["arm", "wave"])["n_persons"] if not res.counts.empty else pd.Series(dtype=float)
    waves = [w for w in order if w in set(emms["wave"])]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    style = arm_style(plan)
    arms = [a for a in plan.cohort_arms if a in set(emms["arm"])]
    width = 0.08
    for k, a in enumerate(arms):
        colour, mk = style[a]
        sub = emms[emms["arm"] == a].set_index("wave")
        xs, ys, lo, hi = [], [], [], []
        for i, w in enumerate(waves):
            if w not in sub.index:
                continue
            n = float(counts.get((a, w), math.nan))
            if not (math.isfinite(n) and n >= threshold):
                continue
            xs.append(i + (k - (len(arms) - 1) / 2) * width)
            ys.append(sub.loc[w, "emmean"] * scale)
            lo.append(sub.loc[w, "lower"] * scale)
            hi.append(sub.loc[w, "upper"] * scale)
        if not xs:
            continue
        err = [[y - l_ for y, l_ in zip(ys, lo, strict=True)], [h - y for y, h in zip(ys, hi, strict=True)]]
        ax.errorbar(xs, ys, yerr=err, color=colour, marker=mk, capsize=3, linewidth=1.8, markersize=6,
                    label=arm_label(study, a, lang))
    ax.set_xticks(range(len(waves)), [wave_label(study, w, lang) for w in waves])
    ax.set_xlabel(text(lang, "plot_wave"))
    ax.set_ylabel(text(lang, "plot_emm_binary" if binary else "plot_emm"))
    ax.set_title(title, fontsize=11, loc="left")
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_forest(shown: pd.DataFrame, plan: AnalysisPlan, study: Study, outcome_labels: dict[str, str],
                lang: str) -> Figure:
    """Forest plot of d (95% CI) per outcome x comparison x follow-up wave, from suppressed effect rows.

    Rows without d (binary outcomes, suppressed cells) are left out. Sign is turned so that right = the
    intervention arm did better when the outcome has a direction (higher_worse flips the sign).
    """
    I = plan.intervention_arm  # noqa: E741
    style = arm_style(plan)
    items = []
    for _, r in shown.iterrows():
        for comp in plan.comparison_arms:
            vals = [r.get(col(k, I, comp)) for k in ("d", "d_lower", "d_upper")]
            try:
                d, lo, hi = (float(v) for v in vals)
            except (TypeError, ValueError):
                continue
            if not all(map(math.isfinite, (d, lo, hi))):
                continue
            flip = -1.0 if r["direction"] == "higher_worse" else 1.0
            d, lo, hi = flip * d, *sorted((flip * lo, flip * hi))
            label = f"{outcome_labels[r['outcome']]}\n" + text(lang, "plot_vs", arm=arm_label(study, I, lang),
                                                                arm2=arm_label(study, comp, lang),
                                                                wave=wave_label(study, r["wave"], lang))
            items.append((label, d, lo, hi, comp))
    height = max(2.5, 0.42 * len(items) + 1.2)
    fig, ax = plt.subplots(figsize=(7.6, height), dpi=110)
    for i, (_, d, lo, hi, comp) in enumerate(items):
        y = len(items) - 1 - i
        colour, mk = style[comp]
        ax.plot([lo, hi], [y, y], color=colour, linewidth=2)
        ax.plot([d], [y], marker=mk, color=colour, markersize=7)
    from matplotlib.lines import Line2D

    shown_comps = list(dict.fromkeys(it[4] for it in items))
    if shown_comps:
        handles = [Line2D([], [], color=style[c][0], marker=style[c][1], linewidth=2,
                          label=text(lang, "plot_vs", arm=arm_label(study, I, lang), arm2=arm_label(study, c, lang),
                                     wave="").rstrip(", ")) for c in shown_comps]
        ax.legend(handles=handles, frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=1)
    ax.axvline(0, color="#555555", linewidth=1)
    for x in (-0.5, -0.2, 0.2, 0.5):
        ax.axvline(x, color="#dddddd", linewidth=0.6, zorder=0)
    ax.set_yticks(range(len(items)), [it[0] for it in reversed(items)], fontsize=7.5)
    ax.set_xlabel(text(lang, "plot_d") + "\n\u2192 " + text(lang, "plot_favours", arm=arm_label(study, I, lang)),
                  fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    if not items:
        ax.text(0.5, 0.5, text(lang, "not_available"), transform=ax.transAxes, ha="center")
    fig.tight_layout()
    return fig


def save_png(fig: Figure, path: Path) -> bytes:
    """Write `fig` to `path` as PNG, close it, return the PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = buf.getvalue()
    Path(path).write_bytes(data)
    return data


#: figures to render, shared with forked workers by `render_pngs` (set in the parent before the fork)
_PNG_JOBS: list = []


def _render_png_job(i: int) -> bytes:
    path, make, args = _PNG_JOBS[i]
    return save_png(make(*args), path)


def _render_png_chunk(idx: list[int]) -> list[bytes]:
    return [_render_png_job(i) for i in idx]


def render_pngs(jobs: list[tuple[Path, object, tuple]], workers: int = 2) -> dict[Path, bytes]:
    """Render figures and write them as PNG: `jobs` = (path, figure function, its arguments); returns
    path -> PNG bytes. With `workers` > 1 (and fork available, outside daemonic processes) the figures are
    drawn in forked processes, split evenly in job order; the bytes are those of drawing them one by one
    (matplotlib's Agg output does not depend on the process)."""
    from cohortflow.warehouse.memory import can_fork_workers

    workers = min(workers, len(jobs))
    if workers <= 1 or not can_fork_workers():
        return {path: save_png(make(*args), path) for path, make, args in jobs}
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    _PNG_JOBS[:] = jobs
    try:
        chunks = [list(range(k, len(jobs), workers)) for k in range(workers)]
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(_render_png_chunk, chunks))
    finally:
        _PNG_JOBS.clear()
    out: dict[Path, bytes] = {}
    for idx, pngs in zip(chunks, parts, strict=True):
        out.update({jobs[i][0]: png for i, png in zip(idx, pngs, strict=True)})
    return {path: out[path] for path, _, _ in jobs}


#: at most this many points are drawn per scatter panel of the residual diagnostics (an even, seeded sample
#: of the observations) and per QQ panel (quantiles at evenly spaced probabilities); the lowess curve is
#: smoothed over the drawn sample. The summary numbers beside the plot (residual_summary) use every value.
MAX_PLOT_POINTS = 5000


def plot_sample(n: int, max_points: int = MAX_PLOT_POINTS, seed: int = 0):
    """Indices of at most `max_points` of `n` observations (all when n <= max_points; else a seeded random
    sample without replacement, sorted), so a plot of millions of residuals draws as fast as one of thousands."""
    import numpy as np

    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def qq_points(x, max_points: int = MAX_PLOT_POINTS):
    """(normal quantiles, sample quantiles) of `x` for a QQ plot: every sorted value with plotting positions
    (i - 0.5) / n when n <= max_points, else the sorted values at `max_points` evenly spaced ranks (first
    and last included), so the extremes and the shape stay exact while the marker count is bounded."""
    import numpy as np
    from scipy import stats

    x = np.sort(np.asarray(x, float))
    n = len(x)
    ranks = np.arange(n) if n <= max_points else np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return stats.norm.ppf((ranks + 0.5) / n), x[ranks]


def plot_residual_diagnostics(res, title: str) -> Figure:
    """Three panels for a mixed model (`diagnostics.LmmResiduals`): conditional residuals against fitted values
    (with a lowess curve), a normal QQ plot of the standardised residuals (resid / sigma) and one of the person
    BLUPs (standardised by their SD; the household BLUPs when persons have no intercept). English: the
    technical appendix. Large fits draw at most MAX_PLOT_POINTS points per panel (`plot_sample`, `qq_points`)."""
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    ax = axes[0]
    pick = plot_sample(len(res.fitted))
    fitted, resid = np.asarray(res.fitted)[pick], np.asarray(res.resid)[pick]
    ax.scatter(fitted, resid, s=6, alpha=0.35, color=OKABE_ITO[0], edgecolors="none")
    ax.axhline(0, color="#555555", lw=0.8)
    if len(fitted) > 10:
        from statsmodels.nonparametric.smoothers_lowess import lowess

        sm = lowess(resid, fitted, frac=0.3, it=1, return_sorted=True)
        ax.plot(sm[:, 0], sm[:, 1], color="#D55E00", lw=1.2, label="lowess")
        ax.legend(fontsize=8, frameon=False, loc="upper left")
    ax.set_xlabel("fitted value (conditional on the BLUPs)")
    ax.set_ylabel("conditional residual")
    ax.set_title("Residuals vs fitted" + (f" (sample of {len(pick):,})"
                                          if len(pick) < len(res.fitted) else ""), fontsize=10)

    def qq(ax, x: np.ndarray, what: str) -> None:
        theo, xs = qq_points(x)
        ax.scatter(theo, xs, s=6, alpha=0.5, color=OKABE_ITO[0], edgecolors="none")
        lim = [min(theo.min(), xs.min()), max(theo.max(), xs.max())]
        ax.plot(lim, lim, color="#D55E00", lw=0.9)
        ax.set_xlabel("normal quantile")
        ax.set_ylabel(f"standardised {what}")
        ax.set_title(f"Normal QQ: {what} (n={len(x)})", fontsize=10)

    qq(axes[1], res.resid / res.sigma if res.sigma > 0 else res.resid, "residuals")
    blup_name = next((k for k in ("person", "person:(Intercept)") if k in res.blups), next(iter(res.blups), None))
    if blup_name is not None:
        b = res.blups[blup_name].to_numpy()
        sd = b.std(ddof=1)
        qq(axes[2], b / sd if sd > 0 else b, f"BLUPs ({blup_name})")
    else:
        axes[2].set_axis_off()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
