"""How long write_report takes (tables, plots, HTML, appendix) for the configured plan on simulated data.

Usage: .venv/bin/python benchmarks/report_speed.py [scale]
Prints the seconds of run_analysis (no sensitivity analyses) and of write_report, and the file sizes.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from cohortflow.analysis.models import run_analysis
from cohortflow.analysis.plan import load_analysis_plan
from cohortflow.analysis.report import default_run_info, write_report
from cohortflow.analysis.simulate import default_spec, simulate_study
from cohortflow.config.study import load_study
from cohortflow.instruments.registry import load_instruments


def main(scale: float = 0.5) -> None:
    study, plan = load_study(), load_analysis_plan()
    plan.defaults.engine = "profiled"
    waves = [w.code for w in sorted(study.waves, key=lambda w: w.offset_days)]
    frames = []
    for i, spec_o in enumerate(plan.outcomes):
        if spec_o.family != "gaussian":
            continue
        spec = default_spec(plan.cohort_arms, waves, effect=-3.0, scale=scale)
        spec.outcome, spec.role, spec.cutoff = spec_o.name, spec_o.role or "child", 30.0
        frames.append(simulate_study(spec, seed=i + 1))
    data = pd.concat(frames, ignore_index=True)
    t0 = time.perf_counter()
    res = run_analysis(data, plan, study, sensitivity=False)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_report(res, plan, study, load_instruments(), Path(tmp), default_run_info("bench", "-"))
        t2 = time.perf_counter()
        sizes = {p.name: p.stat().st_size for p in (paths.html, paths.appendix, paths.xlsx, paths.csv, paths.md)}
    print(f"rows {len(data)}, outcomes {len(res.outcomes)}: run_analysis {t1 - t0:.1f} s, "
          f"write_report {t2 - t1:.1f} s ({len(paths.plots)} plots)")
    print("file sizes (bytes): " + ", ".join(f"{k} {v}" for k, v in sizes.items()))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.5)
