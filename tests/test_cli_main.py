"""The `cohortflow` command line as a whole: lazy command groups, exit codes, --json shapes, friendly errors,
shell completion. Commands run through typer's CliRunner (in process) unless start-up itself is the point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cohortflow.flows.cli import EXIT_CODES, LAZY, app, load_lazy_command

runner = CliRunner()


def test_help_lists_every_command_without_importing_the_stage_modules():
    """`cohortflow --help` names every command and the exit codes, yet imports no stage module or pandas."""
    code = ("import sys\nfrom cohortflow.flows.cli import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "mods = [m for m in sys.modules if m.startswith(('cohortflow.flows.commands_', 'cohortflow.synth', "
            "'pandas', 'prefect', 'sqlalchemy'))]\nprint('LOADED', mods)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout
    for name in [*LAZY, "version", "demo", "run", "ingest"]:
        assert f" {name} " in out.stdout, name
    assert "Exit codes: 0 ok; 1 " in out.stdout and "; 2 bad usage" in out.stdout


@pytest.mark.parametrize("name", sorted(LAZY))
def test_lazy_help_text_matches_the_real_command(name):
    """The static help shown by `--help` is the first line of the loaded command's own help (kept in step)."""
    cmd = load_lazy_command(name)
    real = " ".join((cmd.help or "").strip().split("\n\n")[0].split())
    assert real == LAZY[name][1], f"update LAZY[{name!r}] in flows/cli.py to: {real!r}"
    res = runner.invoke(app, [name, "--help"])
    assert res.exit_code == 0, res.output


def test_unknown_command_and_bad_option_are_usage_errors():
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2
    assert runner.invoke(app, ["status", "--no-such-option"]).exit_code == 2
    assert runner.invoke(app, ["analysis", "run"]).exit_code == 2  # missing argument


def test_version_json():
    from cohortflow import __version__

    res = runner.invoke(app, ["version", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == {"version": __version__}
    assert runner.invoke(app, ["version"]).stdout.strip() == __version__


def test_status_of_a_missing_warehouse_says_so_and_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.sqlite'}"
    res = runner.invoke(app, ["status", "--database-url", url])
    assert res.exit_code == 0 and "nothing has been ingested" in res.output
    res = runner.invoke(app, ["status", "--database-url", url, "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout) == []
    assert not (tmp_path / "none.sqlite").exists()  # status is read-only


def test_unreachable_database_exits_3_with_advice_and_no_traceback():
    url = "postgresql+psycopg://someone:secret@127.0.0.1:9/cohort"  # nothing listens on port 9
    res = runner.invoke(app, ["status", "--database-url", url])
    assert res.exit_code == 3, res.output
    text = " ".join(res.output.split())
    assert "Cannot use the warehouse database" in text and "127.0.0.1:9" in text
    assert "COHORTFLOW_DATABASE_URL" in text and "secret" not in text and "Traceback" not in text


def test_bad_database_url_is_a_usage_error():
    res = runner.invoke(app, ["status", "--database-url", "nosuchdialect://x"])
    assert res.exit_code == 2 and "Bad database URL" in res.output and "Traceback" not in res.output


def test_bad_configuration_exits_2_naming_file_and_field(tmp_path, monkeypatch):
    import shutil

    from cohortflow.config.study import config_dir

    cfg = tmp_path / "config"
    shutil.copytree(config_dir(), cfg)
    (cfg / "study.yaml").write_text("arms: 3\n")
    monkeypatch.setenv("COHORTFLOW_CONFIG_DIR", str(cfg))
    res = runner.invoke(app, ["validation", "suite"])
    text = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "Configuration problem" in text and "study.yaml" in text and "arms" in text
    assert "Traceback" not in res.output


def test_missing_key_exits_2_with_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("COHORTFLOW_PSEUDONYM_KEY", raising=False)
    res = runner.invoke(app, ["ingest", str(tmp_path), "--json"])
    assert res.exit_code == 2 and res.stdout == ""  # nothing on stdout for a script to misread
    assert "COHORTFLOW_PSEUDONYM_KEY is not set" in res.stderr and "secrets.token_hex" in res.stderr


def test_exit_codes_are_documented_in_help_and_docs():
    from pathlib import Path

    res = runner.invoke(app, ["--help"], env={"COLUMNS": "300"})
    docs = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    for code in EXIT_CODES:
        assert f"{code} " in res.output
        assert f"| {code} |" in docs, f"exit code {code} missing from docs/operations.md"


def test_show_completion_prints_a_bash_script():
    # typer detects the calling shell (shellingham) and then takes no value; a test run need not have a shell
    # among its ancestors (cron, CI runners), so name the shell explicitly as typer's own tests do
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    out = subprocess.run([sys.executable, "-c", "from cohortflow.cli import main; main()", "--show-completion",
                          "bash"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "complete -o default -F _cohortflow_completion cohortflow" in out.stdout
    assert "_COHORTFLOW_COMPLETE=complete_bash" in out.stdout


def test_completion_offers_sub_commands_of_a_lazy_group():
    """What the shell asks for when completing `cohortflow analysis <TAB>`: the group's real sub-commands."""
    env = {**os.environ, "_COHORTFLOW_COMPLETE": "complete_bash", "COMP_WORDS": "cohortflow analysis ",
           "COMP_CWORD": "2"}
    out = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'cohortflow'\n"
                          "from cohortflow.cli import main; main()"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert {"run", "calibrate"} <= set(out.stdout.split()), out.stdout + out.stderr


def _ingest_one_file_with_a_bad_row(tmp_path, monkeypatch):
    """A warehouse with one loaded batch in which one row went to quarantine (a value out of range)."""
    import secrets

    from ingest_exports import build_rows, write_export

    from cohortflow.instruments.registry import load_instruments

    monkeypatch.setenv("COHORTFLOW_PSEUDONYM_KEY", secrets.token_hex(32))
    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    df = build_rows(load_instruments(), "vt", "VT01", "T0", "adult", 4)
    df.loc[2, "PSS_05"] = 6
    write_export(df, inbox / "vt_VT01_T0_adult.csv")
    return url, inbox


def test_json_shapes_of_ingest_status_and_quarantine(tmp_path, monkeypatch):
    url, inbox = _ingest_one_file_with_a_bad_row(tmp_path, monkeypatch)
    res = runner.invoke(app, ["ingest", str(inbox), "--database-url", url, "--json", "--docs-dir",
                              str(tmp_path / "docs")])
    assert res.exit_code == 0, res.output
    (rep,) = json.loads(res.stdout)  # nothing but JSON on stdout: no progress bar, no colour
    assert rep["status"] == "loaded" and (rep["rows_in"], rep["rows_loaded"], rep["rows_quarantined"]) == (4, 3, 1)

    res = runner.invoke(app, ["status", "--database-url", url, "--json"])
    (batch,) = json.loads(res.stdout)
    assert res.exit_code == 0 and batch["accounted"] is True and batch["file_name"] == "vt_VT01_T0_adult.csv"
    assert {"id", "arm", "site", "wave", "role", "status", "rows_in", "rows_loaded", "rows_quarantined",
            "rows_duplicate", "source_name", "source_version"} <= set(batch)

    res = runner.invoke(app, ["quarantine", "--database-url", url, "--json"])
    (row,) = json.loads(res.stdout)
    assert res.exit_code == 0 and row["batch_id"] == batch["id"] and row["released_at"] is None
    assert any(r["rule"] == "allowed_codes" and r["column"] == "pss_05" and r["value"] == "6" for r in row["reasons"]), row

    res = runner.invoke(app, ["quarantine", "--database-url", url, "--release", str(row["id"]), "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["released"] is None  # still invalid: a data problem
    res = runner.invoke(app, ["quarantine", "--database-url", url, "--release", str(row["id"]), "--set",
                              "pss_05=2", "--json"])
    got = json.loads(res.stdout)
    assert res.exit_code == 0 and got["released"] is True and got["quarantine_id"] == row["id"]
    assert isinstance(got["response_id"], int)


def test_ingest_shows_no_progress_bar_when_output_is_not_a_terminal(tmp_path, monkeypatch):
    url, inbox = _ingest_one_file_with_a_bad_row(tmp_path, monkeypatch)
    res = runner.invoke(app, ["ingest", str(inbox), "--database-url", url, "--docs-dir", str(tmp_path / "d")])
    assert res.exit_code == 0 and "loaded" in res.output
    assert "━" not in res.output and "reading and validating" not in res.output


def test_ops_runs_lists_a_recorded_run_by_id(tmp_path):
    """`ops runs --run-id R --json` gives the run's snapshot and plan hash; an unknown id is exit 1."""
    from cohortflow.warehouse.db import get_engine, init_warehouse
    from cohortflow.warehouse.snapshot import record_run

    url = f"sqlite:///{tmp_path / 'wh.sqlite'}"
    engine = init_warehouse(get_engine(url))
    record_run(engine, "20261123T220000Z-model-abc123", "model", "f" * 64, config_hash="c" * 64,
               details={"plan": "config/analysis.yaml"})
    record_run(engine, "20261123T210000Z-scoring-def456", "scoring", "e" * 64)
    res = runner.invoke(app, ["ops", "runs", "--database-url", url, "--json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 2
    res = runner.invoke(app, ["ops", "runs", "--database-url", url, "--run-id", "20261123T220000Z-model-abc123",
                              "--json"])
    (run,) = json.loads(res.stdout)
    assert res.exit_code == 0 and run["kind"] == "model" and run["data_snapshot"] == "f" * 64
    assert run["config_hash"] == "c" * 64 and run["details"] == {"plan": "config/analysis.yaml"}
    res = runner.invoke(app, ["ops", "runs", "--database-url", url, "--run-id", "nope"])
    assert res.exit_code == 1 and "No recorded run with id nope" in res.output
