"""Write the R-parity dataset (lmm_dataset.csv) and run lmm_parity.R to refresh the R fixtures.

Run from the repository root: `.venv/bin/python tests/data/r/make_fixtures.py` (needs Rscript with lme4,
lmerTest, emmeans and geepack: `apt-get install r-cran-lme4 r-cran-lmertest r-cran-emmeans r-cran-geepack`). CI has no R: the tests read the CSV files this writes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cohortflow.analysis.simulate import default_spec, simulate_study

HERE = Path(__file__).resolve().parent
ARMS = ["proeftuin", "vt", "gi"]
WAVES = ["T0", "T1", "T2"]
SEED = 20240820


def make_dataset():
    spec = default_spec(ARMS, WAVES, effect=-3.0)
    df = simulate_study(spec, seed=SEED)
    return df


if __name__ == "__main__":
    df = make_dataset()
    cols = ["household_id", "person_id", "arm", "wave", "months_since_t0", "age_years", "sex", "score"]
    df[cols].to_csv(HERE / "lmm_dataset.csv", index=False, float_format="%.10g")
    print(f"wrote {len(df)} rows, {df.person_id.nunique()} persons, {df.household_id.nunique()} households")
    if "--no-r" not in sys.argv:
        # lme4/lmerTest/emmeans parity, residual diagnostics (lme4), GEE parity (geepack + emmeans)
        for script in ("lmm_parity.R", "lmm_diagnostics.R", "gee_parity.R"):
            subprocess.run(["Rscript", str(HERE / script), str(HERE)], check=True)
