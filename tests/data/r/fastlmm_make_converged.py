"""Make tests/data/r/fastlmm_converged.csv: lme4 driven to convergence (fastlmm_converged.R) on the factor-1
fixtures, started also at the fast engine's theta. Also used by benchmarks/bench_lmm.py at factor 10.

Run from the repository root: .venv/bin/python tests/data/r/fastlmm_make_converged.py
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pandas as pd

from cohortflow.analysis.fastlmm_api import fit_mixed

R_DIR = Path(__file__).resolve().parent
SCRIPT = R_DIR / "fastlmm_converged.R"
NESTED = ("y1 ~ arm * time", "household_id", "1", {"person_id": "1 + time"}, "full",
          "y1 ~ arm * time + (1 | household_id) + (1 + time | household_id:person_id)")
GROWTH_FULL = ("y ~ time * group", "subject", "1 + time", None, "full", "y ~ time * group + (1 + time | subject)")
GROWTH_DIAG = ("y ~ time * group", "subject", "1 + time", None, "diag",
               "y ~ time * group + (1 | subject) + (0 + time | subject)")

#: fixture models: name -> (data file in tests/data/r, model)
MODELS = {
    "study_f1": ("fastlmm_study_f1.csv", NESTED),
    "growth_boundary_full": ("fastlmm_growth_boundary.csv", GROWTH_FULL),  # slope variance zero (boundary)
    "growth_boundary_diag": ("fastlmm_growth_boundary.csv", GROWTH_DIAG),
}


def fast_fit(data: pd.DataFrame, model: tuple, reml: bool = True):
    """The fast engine's fit of one model tuple."""
    formula, groups, re_f, vc, cov, _ = model
    return fit_mixed(formula, data, groups, re_f, vc, reml=reml, engine="fast", re_cov=cov)


def run_converged(jobs: list[dict], out_csv: Path) -> str:
    """Run fastlmm_converged.R on jobs (name, file, formula, reml, theta); returns lme4's version line."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs_csv = Path(tmp) / "jobs.csv"
        pd.DataFrame(jobs).to_csv(jobs_csv, index=False)
        proc = subprocess.run(["Rscript", str(SCRIPT), str(jobs_csv), str(out_csv)], capture_output=True, text=True,
                              check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"Rscript failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def job(name: str, file: Path, model: tuple, fit, reml: bool = True) -> dict:
    return {"name": name, "file": str(file), "formula": model[5], "reml": "TRUE" if reml else "FALSE",
            "theta": " ".join(f"{v:.17g}" for v in fit.theta_lme4())}


def main() -> None:
    jobs = []
    for name, (file, model) in MODELS.items():
        data = pd.read_csv(R_DIR / file)
        for reml in (True, False):
            fit = fast_fit(data, model, reml)
            jobs.append(job(f"{name}:{'reml' if reml else 'ml'}", R_DIR / file, model, fit, reml))
    out = R_DIR / "fastlmm_converged.csv"
    print(run_converged(jobs, out))
    # relative paths in the fixture: nothing machine-specific
    print(out, len(pd.read_csv(out)))


if __name__ == "__main__":
    main()
