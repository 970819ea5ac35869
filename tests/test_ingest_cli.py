"""The data-manager commands `status` and `quarantine`, and a REDCap export end to end."""

from __future__ import annotations

from ingest_exports import build_rows, write_export
from test_ingest_readers import _redcap_export
from typer.testing import CliRunner

from cohortflow.config.study import load_study
from cohortflow.flows.commands_ingest import app
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.load import ingest_inbox
from cohortflow.warehouse.read import responses_frame

KEY = b"cli-test-key-0123456789"
INST = load_instruments()


def test_status_and_quarantine_commands(sqlite_engine, tmp_path):
    engine = init_warehouse(sqlite_engine)
    url = str(engine.url)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    df = build_rows(INST, "vt", "VT01", "T0", "adult", 4)
    df.loc[2, "PSS_05"] = 6
    write_export(df, inbox / "vt_VT01_T0_adult.csv")
    (inbox / "gi_GI01_T0_adult.xlsx").write_bytes(b"not a workbook")
    _redcap_export(inbox / "redcap_proeftuin_PT03_2025-06-01.csv")
    reps = ingest_inbox(inbox, engine, load_sources(), load_study(), INST, KEY)
    by = {r.file_name: r for r in reps}
    assert by["gi_GI01_T0_adult.xlsx"].status == "refused"
    red = by["redcap_proeftuin_PT03_2025-06-01.csv"]
    assert (red.rows_in, red.rows_loaded, red.rows_quarantined) == (8, 7, 1)
    assert sorted(responses_frame(engine).query("arm == 'proeftuin'").wave.unique()) == ["T0", "T1"]

    runner = CliRunner()
    res = runner.invoke(app, ["status", "--database-url", url])
    assert res.exit_code == 0, res.output
    assert "vt_VT01_T0_adult.csv" in res.output and "refused" in res.output and "MISMATCH" not in res.output
    assert "gi_GI01_T0_adult.xlsx" in res.output and "content is" in res.output
    assert "refused whole" in res.output
    res = runner.invoke(app, ["quarantine", "--database-url", url])
    assert res.exit_code == 0 and "code_not_allowed" in res.output and "checkbox_several_ticked" in res.output
    from sqlalchemy import text

    with engine.connect() as conn:
        qid = conn.execute(text("select q.id from quarantine_row q join batch b on b.id = q.batch_id "
                                "where b.file_name like 'vt_%'")).scalar()
    res = runner.invoke(app, ["quarantine", "--database-url", url, "--release", str(qid)])
    assert res.exit_code == 1 and "still fails" in res.output
    res = runner.invoke(app, ["quarantine", "--database-url", url, "--release", str(qid), "--set", "pss_05=2"])
    assert res.exit_code == 0 and "released" in res.output
    res = runner.invoke(app, ["status", "--database-url", url, "--json"])
    assert '"rows_loaded":4' in res.output.replace(" ", "")
