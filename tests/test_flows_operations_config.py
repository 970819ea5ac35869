"""The operations configuration: schedules per source, time zone, Dask address; errors name the field."""

from __future__ import annotations

import pytest

from cohortflow.config.loading import ConfigError
from cohortflow.config.operations import load_operations
from cohortflow.ingest import load_sources


def test_shipped_operations_file_schedules_known_sources_in_amsterdam_time():
    ops = load_operations()
    assert ops.timezone == "Europe/Amsterdam"
    known = {s.name for s in load_sources()}
    assert ops.ingestion, "at least one scheduled source"
    assert set(ops.ingestion) <= known, f"unknown sources: {set(ops.ingestion) - known}"
    assert all(len(s.cron.split()) == 5 for s in ops.ingestion.values())


@pytest.mark.parametrize(("text", "field"), [
    ("timezone: Mars/Olympus\n", "timezone"),
    ("ingestion: {generated_csv: {cron: '0 6 * *'}}\n", "ingestion.generated_csv.cron"),
    ("dask_address: 10.0.0.5:8786\n", "dask_address"),
    ("inbx: data/inbox\n", "inbx"),
])
def test_bad_operations_file_names_file_and_field(tmp_path, text, field):
    p = tmp_path / "operations.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_operations(p)
    assert str(p) in str(err.value) and field in str(err.value)


def test_cron_becomes_a_prefect_cron_schedule_in_the_configured_zone(tmp_path):
    """Each configured source gets its own deployment with its cron and zone; model runs stay unscheduled."""
    from cohortflow.flows.serve import INGEST_ALL, MODEL, build_deployments, ingestion_deployment_name

    p = tmp_path / "operations.yaml"
    p.write_text("inbox: %s\ningestion:\n  generated_csv: {cron: '0 6 * * 1-5'}\n"
                 "  generated_sav: {cron: '15 7 * * *', active: false}\n" % (tmp_path / "inbox"))
    ops = load_operations(p)
    deps = {d.name: d for d in build_deployments(ops, database_url=f"sqlite:///{tmp_path / 'w.sqlite'}")}
    assert set(deps) == {ingestion_deployment_name("generated_csv"), ingestion_deployment_name("generated_sav"),
                         INGEST_ALL, MODEL}
    csv = deps["ingest-generated-csv"]
    (sched,) = csv.schedules
    assert sched.schedule.cron == "0 6 * * 1-5" and sched.schedule.timezone == "Europe/Amsterdam"
    assert csv.parameters["sources"] == ["generated_csv"]
    assert "key" not in str(csv.parameters).lower()  # the pseudonym key never goes to the Prefect database
    assert deps["ingest-generated-sav"].schedules[0].active is False
    assert not deps[MODEL].schedules and "plan_path" in deps[MODEL].parameters


def test_serve_refuses_to_start_without_server_or_key(monkeypatch, tmp_path):
    """`ops serve` exits 2 with advice when PREFECT_API_URL or the pseudonym key is missing."""
    from typer.testing import CliRunner

    from cohortflow.flows.commands_ops import app

    cfg = tmp_path / "operations.yaml"
    cfg.write_text(f"inbox: {tmp_path / 'inbox'}\n")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    res = CliRunner().invoke(app, ["serve", "--config", str(cfg)])
    assert res.exit_code == 2 and "PREFECT_API_URL" in res.output
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("COHORTFLOW_PSEUDONYM_KEY", "abcd")  # 2 bytes: too short
    res = CliRunner().invoke(app, ["serve", "--config", str(cfg), "--database-url",
                                   f"sqlite:///{tmp_path / 'w.sqlite'}"])
    assert res.exit_code == 2 and "COHORTFLOW_PSEUDONYM_KEY" in res.output
    assert not (tmp_path / "w.sqlite").exists()  # refused before touching anything
