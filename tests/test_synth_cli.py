"""The `synth` command-line app (to be wired into flows/cli.py as `cohortflow synth`)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cohortflow.synth import FAULTS
from cohortflow.synth.cli import app


def test_faults_lists_every_fault():
    r = CliRunner().invoke(app, ["faults"])
    assert r.exit_code == 0
    assert [line.split()[0] for line in r.output.splitlines()] == list(FAULTS)


def test_generate_writes_inbox_truth_and_manifest(tmp_path):
    r = CliRunner().invoke(app, ["generate", str(tmp_path), "--factor", "0.02", "--seed", "3",
                                 "--fault", "empty_file", "--truth-persons", "5000"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "truth" / "manifest.json").read_text())
    assert manifest["seed"] == 3 and [f["kind"] for f in manifest["faults"]] == ["empty_file"]
    assert len(list((tmp_path / "inbox").iterdir())) == len(manifest["files"])
    assert f"{len(manifest['files'])} files" in r.output
