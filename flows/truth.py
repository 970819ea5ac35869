"""Compare a run's effect table with the generator's truth (demo and tests): does each 95% CI hold the truth?"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def true_differences(truth_path: Path) -> pd.DataFrame:
    """The generator's true differences in change: outcome, arm, arm2, wave, true."""
    truth = json.loads(Path(truth_path).read_text())
    rows = []
    for outcome, spec in truth["outcomes"].items():
        for comp in spec.get("difference_in_change", {}).values():
            for wave, v in comp["waves"].items():
                rows.append({"outcome": outcome, "arm": comp["intervention"], "arm2": comp["comparison"],
                             "wave": wave, "true": float(v["difference"])})
    return pd.DataFrame(rows, columns=["outcome", "arm", "arm2", "wave", "true"])


def compare_with_truth(truth_path: Path, effect_table_csv: Path, plan=None) -> pd.DataFrame:
    """Estimated differences in change of continuous outcomes joined to the truth, with `covered` per row."""
    from cohortflow.analysis.plan import load_analysis_plan
    from cohortflow.analysis.tables import effect_contrasts

    shown = pd.read_csv(effect_table_csv)
    shown = shown[shown["family"].isin(["gaussian", "lmm"])]
    est = effect_contrasts(shown, plan or load_analysis_plan())
    merged = est.merge(true_differences(truth_path), on=["outcome", "arm", "arm2", "wave"], how="inner")
    merged = merged[~merged["suppressed"]].copy()
    merged["covered"] = (merged["lower"] <= merged["true"]) & (merged["true"] <= merged["upper"])
    return merged[["outcome", "contrast", "arm", "arm2", "wave", "true", "estimate", "lower", "upper", "covered"]]
