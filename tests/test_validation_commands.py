"""The data manager's validation commands: suite listing and validating export files without loading."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from cohortflow.config.sources import load_source_definitions
from cohortflow.config.study import load_study
from cohortflow.flows.commands_validation import app
from cohortflow.instruments.registry import load_instruments
from cohortflow.synth import generate_study

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def test_suite_lists_rules_with_what_the_definitions_allow():
    src = load_source_definitions()[0]
    res = CliRunner().invoke(app, ["suite", src.name])
    assert res.exit_code == 0, res.output
    study = load_study()
    assert f"({src.name} v{src.version})" in res.output
    assert "allowed_codes [quarantine]" in res.output and "missing_share [warn]" in res.output
    for w in study.waves:
        assert f"{w.code}: {w.window_days[0]}..{w.window_days[1]}" in res.output
    assert CliRunner().invoke(app, ["suite", "no_such_source"]).exit_code == 2


@pytest.mark.slow
def test_validate_prints_summaries_and_fails_on_a_refused_file(tmp_path):
    manifest = generate_study(tmp_path, factor=0.02, seed=3, faults=["out_of_range", "empty_file"],
                              study=load_study(), instruments=load_instruments())
    bad = {f.kind: tmp_path / f.file for f in manifest.faults}
    res = CliRunner().invoke(app, ["validate", str(bad["out_of_range"])])
    assert res.exit_code == 0, res.output
    row = manifest.faults_of("out_of_range")[0].row_numbers[0]
    assert "loaded with 1 row(s) in quarantine" in res.output and f"e.g. row {row} " in res.output
    res = CliRunner().invoke(app, ["validate", str(bad["empty_file"]), str(bad["out_of_range"])])
    assert res.exit_code == 1
    assert "REFUSED: the file cannot be read" in res.output and "empty" in res.output
