"""`report build` command: from an analysis dataset file to the report files."""

from __future__ import annotations

import pytest
import yaml
from report_builders import simple_plan, simulate
from typer.testing import CliRunner

from cohortflow.config.study import load_study
from cohortflow.flows.commands_report import app

STUDY = load_study()


@pytest.mark.slow
def test_report_build_command(tmp_path):
    plan = simple_plan(STUDY).model_dump(mode="json", exclude_none=True)
    plan["outcomes"] = plan["outcomes"][:1]
    plan["multiplicity"]["families"] = plan["multiplicity"]["families"][:1]
    plan["defaults"]["engine"] = "profiled"
    plan["defaults"]["random_effects"]["slope"] = None
    plan_path = tmp_path / "analysis.yaml"
    plan_path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    data = tmp_path / "analysis_long.csv"
    simulate(STUDY, simple_plan(STUDY), scale=0.3).to_csv(data, index=False)
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["build", str(data), "--out", str(out), "--plan", str(plan_path), "--run-id", "cli-1",
                                 "--no-sensitivity"])
    assert r.exit_code == 0, r.output
    for name in ("report.html", "appendix.html", "effect_table.xlsx", "effect_table.csv", "effect_table.md"):
        assert (out / name).stat().st_size > 500
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "cli-1" in html
    # the footer names the dataset's content hash, the same one the pipeline records (not the file's bytes)
    import pandas as pd

    from cohortflow.warehouse.snapshot import snapshot_hash

    assert snapshot_hash(pd.read_csv(data)) in html


def test_report_build_names_a_missing_file(tmp_path):
    r = CliRunner(env={"COLUMNS": "400"}).invoke(app, ["build", str(tmp_path / "nope.parquet")])
    assert r.exit_code != 0 and "nope.parquet: file not found" in r.output
