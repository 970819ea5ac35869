"""Calibration benchmark: simulate studies with a known pilot-vs-comparison effect, fit, report bias/coverage.

Usage: .venv/bin/python benchmarks/calibration.py --studies 200 [--scale 1.0] [--engine profiled] [--seed 1]
Prints bias, RMSE, mean SE vs SD of the estimates, 95% CI coverage (Satterthwaite t and normal), and the
time per fit. Record the figures in benchmarks/RESULTS.md (section "Model calibration").
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cohortflow.analysis.calibration import calibrate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--scale", type=float, default=1.0, help="households per arm x (70, 80, 60)")
    ap.add_argument("--effect", type=float, default=-3.0)
    ap.add_argument("--engine", choices=["profiled", "statsmodels"], default="profiled")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--informative-dropout", type=float, default=0.0,
                    help="logit slope of dropout on the previous score (MAR); 0 = MCAR")
    ap.add_argument("--csv", help="write per-study results here")
    a = ap.parse_args()
    t0 = time.perf_counter()
    s = calibrate(a.studies, scale=a.scale, effect=a.effect, seed=a.seed, engine=a.engine,
                  informative_dropout=a.informative_dropout)
    wall = time.perf_counter() - t0
    n = s.studies
    mc = np.sqrt(0.95 * 0.05 / n)
    print(f"studies: {n}  (scale {a.scale}, engine {a.engine}, seed {a.seed}, informative dropout "
          f"{a.informative_dropout}, mean n_obs {s.per_study.n_obs.mean():.0f})")
    print(f"truth (difference in change to last wave): {s.truth:.3f}")
    print(f"bias: {s.bias:+.4f}  (MC SE {s.sd_estimate / np.sqrt(n):.4f})   RMSE: {s.rmse:.4f}")
    print(f"mean SE: {s.mean_se:.4f}   SD of estimates: {s.sd_estimate:.4f}   mean Satterthwaite df: {s.mean_df:.1f}")
    print(f"coverage 95% CI (Satterthwaite t): {100 * s.coverage:.1f}%  (MC SE {100 * mc:.1f} points)")
    print(f"coverage 95% CI (normal z):        {100 * s.coverage_z:.1f}%")
    print(f"fits with a fallback applied: {s.fallbacks}")
    print(f"time per fit: {s.seconds_per_fit:.2f} s   wall: {wall:.0f} s")
    if a.csv:
        s.per_study.to_csv(a.csv, index=False)


if __name__ == "__main__":
    main()
