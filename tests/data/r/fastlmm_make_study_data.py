"""Write the simulated data sets that fastlmm_studies.R fits (run once; the CSVs are committed).

Run from the repository root: .venv/bin/python tests/data/r/fastlmm_make_study_data.py
"""

from pathlib import Path

from cohortflow.analysis.fastlmm_sim import simulate_growth, simulate_study

OUT = Path("tests/data/r")
DATA = {
    # (1 + time | subject), slope variance zero in truth and estimated on the boundary (theta_22 = 0)
    "fastlmm_growth_boundary.csv": simulate_growth(400, slope_sd=0.0, seed=1),
    # 2,000 subjects x 3 waves, 15% of observations missing
    "fastlmm_growth_2000.csv": simulate_growth(2000, slope_sd=0.5, seed=11, missing=0.15),
    # factor-1 study: persons nested in households, planned wave times
    "fastlmm_study_f1.csv": simulate_study(1.0, seed=3),
    # factor-1 study with each person's own time since T0 (patterns do not repeat)
    "fastlmm_study_f1_ctime.csv": simulate_study(1.0, seed=4, continuous_time=True),
}

if __name__ == "__main__":
    for name, df in DATA.items():
        df.to_csv(OUT / name, index=False, float_format="%.10g")
        print(name, len(df))
