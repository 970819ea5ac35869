"""The data manager's commands: `cohortflow ingest` exit codes and messages, `status` row accounting."""

from __future__ import annotations

import json
import secrets
import shutil

import pytest
from typer.testing import CliRunner

from cohortflow.flows.cli import app

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'wh.sqlite'}")
    monkeypatch.setenv("COHORTFLOW_PSEUDONYM_KEY", secrets.token_hex(32))
    return tmp_path


def test_refuses_to_run_without_a_key(tmp_path, monkeypatch):
    monkeypatch.delenv("COHORTFLOW_PSEUDONYM_KEY", raising=False)
    res = runner.invoke(app, ["ingest", str(tmp_path)])
    assert res.exit_code == 2
    assert "COHORTFLOW_PSEUDONYM_KEY is not set" in res.output


def test_short_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("COHORTFLOW_PSEUDONYM_KEY", "abcd")
    res = runner.invoke(app, ["ingest", str(tmp_path)])
    assert res.exit_code == 2 and "too short" in res.output


def test_ingest_loads_good_files_refuses_broken_ones_and_skips_on_rerun(env):
    from cohortflow.synth import generate_study

    manifest = generate_study(env / "study", factor=0.05, seed=5)
    inbox = env / "inbox"
    inbox.mkdir()
    good = next(f for f in manifest.files if str(f.path).endswith(".csv"))
    src = env / "study" / good.path
    shutil.copy(src, inbox / src.name)
    broken = inbox / src.name.replace("_T0_", "_T1_").replace("_T2_", "_T1_")
    broken = broken if broken != inbox / src.name else inbox / ("x" + src.name)
    broken.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2 + 7])  # cut mid-row

    res = runner.invoke(app, ["ingest", str(inbox), "--json", "--docs-dir", str(env / "docs")])
    assert res.exit_code == 1, res.output
    reports = {r["file_name"]: r for r in json.loads(res.output)}
    assert reports[src.name]["status"] == "loaded"
    assert reports[src.name]["rows_loaded"] + reports[src.name]["rows_quarantined"] == good.n_rows
    assert reports[broken.name]["status"] == "refused"
    assert broken.name in reports[broken.name]["message"]

    status = runner.invoke(app, ["status", "--json"])
    assert status.exit_code == 0, status.output

    again = runner.invoke(app, ["ingest", str(inbox / src.name), "--json"])
    assert again.exit_code == 0
    assert json.loads(again.output)[0]["status"] == "skipped"
