"""Time of the whole model flow (`run_analysis`: every outcome of config/analysis.yaml, IPW, MI) per study size.

Data: `cohortflow.synth.generate_study` at each factor, run through the pipeline by `cohortflow demo`
(ingest -> warehouse -> `build_analysis_dataset`), which writes `<dir>/outputs/analysis_long.parquet`; an
existing parquet is reused. Prints one line per factor and engine, plus the household bootstrap of issue #8
(`cluster_bootstrap`, 1,000 refits of the primary outcome's main model at factor 1) when asked.

Usage: .venv/bin/python benchmarks/bench_model_flow.py [--factors 0.2 1 10] [--engines fast statsmodels]
       [--imputations 20] [--data-root /tmp/cohortflow_bench] [--bootstrap 1000] [--workers 2] [--tile]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

from cohortflow.analysis.models import run_analysis
from cohortflow.analysis.plan import load_analysis_plan
from cohortflow.config.study import load_study


def analysis_dataset(root: Path, factor: float) -> pd.DataFrame:
    """The pipeline's analysis dataset of a generated study at `factor` (made with `cohortflow demo` once)."""
    d = root / f"factor_{factor:g}"
    path = d / "outputs" / "analysis_long.parquet"
    if not path.exists():
        env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300"}
        exe = Path(sys.executable).with_name("cohortflow")
        print(f"generating factor {factor:g} with `cohortflow demo` (once) ...", flush=True)
        subprocess.run([str(exe), "demo", "--data-dir", str(d), "--factor", str(factor)], env=env, check=False,
                       stdout=subprocess.DEVNULL)
        if not path.exists():
            raise SystemExit(f"{path} was not written: run `cohortflow demo --data-dir {d} --factor {factor}`")
    return pd.read_parquet(path)


def tiled(data: pd.DataFrame, copies: int) -> pd.DataFrame:
    """`copies` copies of an analysis dataset with households and persons relabelled per copy (a larger study
    with the same design, for sizes the demo pipeline cannot ingest in reasonable time)."""
    parts = []
    for i in range(copies):
        d = data.copy()
        for col in ("household_id", "person_id"):
            d[col] = d[col].astype(str) + f"~{i}"
        parts.append(d)
    return pd.concat(parts, ignore_index=True)


def time_flow(data: pd.DataFrame, engine: str, imputations: int) -> tuple[float, object]:
    """Seconds of one `run_analysis` with the plan's engine set to `engine`, and the result."""
    plan = load_analysis_plan()
    plan.defaults.engine = engine
    study = load_study()
    t0 = time.perf_counter()
    res = run_analysis(data, plan, study, imputations=imputations)
    return time.perf_counter() - t0, res


def time_bootstrap(data: pd.DataFrame, n_boot: int, workers: int) -> float:
    """Seconds for `n_boot` household-bootstrap refits of the first primary outcome's main model."""
    from cohortflow.analysis.fastlmm import cluster_bootstrap, fit_mixed
    from cohortflow.analysis.models import fill_planned_time, select_outcome_rows

    plan = load_analysis_plan()
    study = load_study()
    spec = next(o for o in plan.outcomes if o.primary and o.family == "gaussian")
    re = plan.random_effects_of(spec)
    covariates = plan.covariates_of(spec)
    extra = [c for c in [re.slope] if c]
    filled, _ = fill_planned_time(data, study, extra, spec)
    df, _ = select_outcome_rows(filled, spec, plan, study, covariates, extra)
    df = df.dropna(subset=["score", *covariates, *extra]).copy()
    fixed = "score ~ C(arm) * C(wave)" + "".join(f" + {c}" for c in covariates)
    vc = {"person_id": "1" + (f" + {re.slope}" if re.slope else "")}
    fit = fit_mixed(fixed, df, groups="household_id", re_formula="1", vc=vc, vc_cov="diag")
    t0 = time.perf_counter()
    cluster_bootstrap(fit, df, cluster="household_id", n=n_boot, seed=1, n_jobs=workers)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--factors", type=float, nargs="+", default=[0.2, 1.0, 10.0])
    ap.add_argument("--engines", nargs="+", default=["fast"], choices=["fast", "statsmodels", "profiled"])
    ap.add_argument("--imputations", type=int, default=20)
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/cohortflow_bench"))
    ap.add_argument("--bootstrap", type=int, default=0, help="also time this many bootstrap refits at factor 1")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tile", action="store_true",
                    help="factors above 1: relabelled copies of the factor-1 dataset instead of a demo run")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    print(f"cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.1f}")
    for factor in a.factors:
        if factor > 1 and a.tile:
            data = tiled(analysis_dataset(a.data_root, 1.0), round(factor))
            print(f"factor {factor:g}: {round(factor)} relabelled copies of the factor-1 dataset", flush=True)
        else:
            data = analysis_dataset(a.data_root, factor)
        n_hh = data["household_id"].nunique()
        for engine in a.engines:
            sec, res = time_flow(data, engine, a.imputations)
            backends = sorted({str(r.engine) for r in res.outcomes.values() if r.family == "gaussian"})
            print(f"factor {factor:g}: {len(data):,} rows, {n_hh:,} households; engine {engine}: run_analysis "
                  f"(all outcomes, IPW, MI x{a.imputations}) {sec:.1f} s; fitted by {backends}; "
                  f"failures {sorted(res.failures)}", flush=True)
        if a.bootstrap and factor == 1.0:
            sec = time_bootstrap(data, a.bootstrap, a.workers)
            print(f"factor 1: {a.bootstrap} household-bootstrap refits ({a.workers} worker(s)) {sec:.1f} s", flush=True)


if __name__ == "__main__":
    main()
