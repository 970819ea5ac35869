"""Every fault the generator can inject: by hand in small fixture exports, and (once cohortflow.synth
lands) from `generate_study(..., faults=all)`: message, status, row accounting, quarantine reasons, and no
direct identifier anywhere in the warehouse."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from ingest_exports import DIRECT_IDENTIFIER_COLUMNS, build_rows, write_export
from sqlalchemy import text

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.load import ingest_file, ingest_inbox
from cohortflow.warehouse.models import Base

KEY = b"fault-test-key-0123456789"
INST = load_instruments()
STUDY = load_study()
SOURCES = load_sources()


def quarantine_rules(engine, file_name: str) -> dict[int, set[str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("select q.row_number, q.reasons from quarantine_row q join batch b on "
                                 "b.id = q.batch_id where b.file_name = :f"), {"f": file_name}).all()
    out = {}
    for rn, reasons in rows:
        reasons = reasons if isinstance(reasons, list) else __import__("json").loads(reasons)
        out[int(rn)] = {r["rule"] for r in reasons}
    return out


def test_design_faults_quarantined_without_validator(any_engine, tmp_path):
    engine = init_warehouse(any_engine)
    t0 = build_rows(INST, "vt", "VT01", "T0", "child", 6)
    assert ingest_file(write_export(t0, tmp_path / "vt_VT01_T0_child.csv"), engine, SOURCES, STUDY, INST,
                       KEY).status == "loaded"
    t1 = build_rows(INST, "vt", "VT01", "T1", "child", 6, seed=5)
    t1.loc[0, "resp_id"] = "G-VT01-K1"  # unknown_id: household number missing
    t1.loc[1, "datum_invullen"] = pd.Timestamp(t1.loc[1, "datum_melding"]) + timedelta(days=545)  # window
    t1.loc[2, "geslacht"] = 3 - t1.loc[2, "geslacht"]  # sex_conflict with T0
    young = t1.iloc[[3]].copy()
    young["resp_id"] = young["gezin_id"] + "-K9"
    young["geboortedatum"] = pd.Timestamp(young["datum_invullen"].iloc[0]) - pd.DateOffset(years=6)
    t1 = pd.concat([t1, young], ignore_index=True)  # age_rule: a 6-year-old self-report (row 7)
    rep = ingest_file(write_export(t1, tmp_path / "vt_VT01_T1_child.csv"), engine, SOURCES, STUDY, INST, KEY)
    assert (rep.rows_in, rep.rows_loaded, rep.rows_quarantined, rep.rows_duplicate) == (7, 3, 4, 0)
    assert quarantine_rules(engine, "vt_VT01_T1_child.csv") == {
        1: {"id_not_of_household"}, 2: {"date_outside_window"}, 3: {"sex_conflict"}, 7: {"age_outside_role"}}


def _export_identifier_values(inbox) -> set[str]:
    """Direct identifier values (and raw ids) read straight from the export files."""
    vals: set[str] = set()
    for p in sorted(inbox.iterdir()):
        try:
            if p.suffix == ".sav":
                import pyreadstat

                df, _ = pyreadstat.read_sav(str(p))
            elif p.suffix == ".xlsx":
                df = pd.read_excel(p, sheet_name="data", dtype=str, engine="calamine")
            else:
                df = pd.read_csv(p, sep=";", dtype=str, encoding="cp1252")
        except Exception:
            continue  # damaged files are refused whole, nothing of them is stored
        for c in [*DIRECT_IDENTIFIER_COLUMNS, "gezin_id", "resp_id", "kind_id"]:
            if c not in df:
                continue
            for v in df[c].dropna():
                if c.endswith("geboortedatum"):
                    txt = str(v)[:10]
                    fmt = "%Y-%m-%d" if txt[4:5] == "-" else "%d-%m-%Y"
                    d = pd.Timestamp(v) if hasattr(v, "year") else pd.to_datetime(txt, format=fmt, errors="coerce")
                    if not pd.isna(d):
                        vals.update({d.strftime("%Y-%m-%d"), d.strftime("%d-%m-%Y")})
                else:
                    vals.add(str(v).strip())
    return vals


@pytest.mark.slow
def test_generated_study_with_every_fault(sqlite_engine, tmp_path):
    synth = pytest.importorskip("cohortflow.synth.generate", reason="cohortflow.synth not merged yet")
    from cohortflow.synth.faults import FAULTS

    manifest = synth.generate_study(tmp_path / "study", factor=0.05, seed=7, faults=sorted(FAULTS))
    engine = init_warehouse(sqlite_engine)
    inbox = tmp_path / "study" / "inbox"
    reps = {r.file_name: r for r in ingest_inbox(inbox, engine, SOURCES, STUDY, INST, KEY)}
    for r in reps.values():
        assert r.status in ("loaded", "refused"), r
        if r.status == "loaded":
            assert r.accounted, r
    expected_rule = {"out_of_range": "code_not_allowed", "unknown_id": "id_not_of_household",
                     "date_outside_window": "date_outside_window", "age_rule": "age_outside_role",
                     "sex_conflict": "sex_conflict"}
    for fault in manifest.faults:
        name = fault.file.rsplit("/", 1)[-1]
        rep = reps[name]
        if fault.kind in ("truncated_file", "empty_file", "wrong_format"):
            assert rep.status == "refused" and rep.message.startswith(name), (fault, rep.message)
            word = {"truncated_file": "truncated", "empty_file": "empty", "wrong_format": "content is"}[fault.kind]
            assert word in rep.message, (fault.kind, rep.message)
        elif fault.kind == "duplicate_row":
            assert rep.rows_duplicate >= 1
            with engine.connect() as conn:
                loaded = {x for (x,) in conn.execute(text("select row_number from response where batch_id = :b"),
                                                     {"b": rep.batch_id})}
            assert not set(fault.row_numbers) & loaded
        elif fault.kind == "renamed_column":
            probs = {(p["kind"], p["column"]): p["closest"] for p in rep.problems}
            new = fault.details["renamed_to"]
            assert probs[("unmapped_column", new)] == fault.column
            assert probs[("missing_column", fault.column)] == new
        elif rep.status == "refused":  # the fault row was the file's only row: all rows invalid
            assert rep.rows_in == len(fault.row_numbers) and "all" in rep.message and "invalid" in rep.message
            assert expected_rule[fault.kind] in rep.message, rep.message
        else:
            rules = quarantine_rules(engine, name)
            for rn in fault.row_numbers:
                assert expected_rule[fault.kind] in rules.get(rn, set()), (fault, rules)
            assert rep.rows_quarantined >= len(fault.row_numbers)
    secrets = {s for s in _export_identifier_values(inbox) if len(s) >= 6}
    assert len(secrets) > 100
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                blob = " ".join(str(v) for v in row)
                leaks = [s for s in secrets if s in blob]
                assert not leaks, (table.name, leaks[:3])
