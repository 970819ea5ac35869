"""Hand-made broken files: each is refused whole with a message naming the file, the problem and what to do,
and the warehouse keeps every loaded row as it was."""

from __future__ import annotations

import pandas as pd
import pytest
from ingest_exports import build_rows, write_export

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.dump import canonical_dump
from cohortflow.warehouse.load import ingest_file

KEY = b"test-key-0123456789abcdef"
INST = load_instruments()
STUDY = load_study()
SOURCES = load_sources()


def _good(tmp_path, name="vt_VT01_T0_adult.csv", n=4):
    return write_export(build_rows(INST, *name.split(".")[0].split("_"), n), tmp_path / name)


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_empty(tmp):
    p = tmp / "vt_VT02_T0_adult.csv"
    p.write_bytes(b"")
    return p


def make_header_only(tmp):
    p = tmp / "vt_VT02_T0_adult.csv"
    df = build_rows(INST, "vt", "VT02", "T0", "adult", 1).iloc[:0]
    df.to_csv(p, sep=";", index=False, encoding="cp1252")
    return p


def make_truncated_sav(tmp):
    return _truncate(_good(tmp, "proeftuin_PT01_T0_adult.sav", 30), 0.6)


def make_truncated_xlsx(tmp):
    return _truncate(_good(tmp, "gi_GI01_T0_adult.xlsx", 30), 0.7)


def make_truncated_csv_quote(tmp):
    p = _good(tmp, "vt_VT02_T0_adult.csv")
    p.write_bytes(p.read_bytes() + b'G-VT02-9999;"G-VT02-9999-V1;Jan de V\n')
    return p


def make_truncated_csv(tmp):
    return _truncate(_good(tmp, "vt_VT02_T0_adult.csv", 20), 0.63)


def make_csv_as_sav(tmp):
    src = _good(tmp, "vt_VT03_T0_adult.csv")
    p = tmp / "proeftuin_PT02_T0_adult.sav"
    p.write_bytes(src.read_bytes())
    return p


def make_sav_as_csv(tmp):
    src = _good(tmp, "proeftuin_PT02_T0_adult.sav")
    p = tmp / "vt_VT03_T0_adult.csv"
    p.write_bytes(src.read_bytes())
    return p


def make_xlsx_as_sav(tmp):
    src = _good(tmp, "gi_GI02_T0_adult.xlsx")
    p = tmp / "proeftuin_PT03_T0_adult.sav"
    p.write_bytes(src.read_bytes())
    return p


def make_unreadable_encoding(tmp):
    p = tmp / "vt_VT04_T0_adult.csv"
    df = build_rows(INST, "vt", "VT04", "T0", "adult", 3)
    text = df.to_csv(sep=";", index=False)
    # bytes 0x81 and 0x8d are undefined in cp1252 and invalid in UTF-8
    p.write_bytes(text.encode("utf-8").replace(b"Jan", b"J\x81\x8dn"))
    return p


def make_no_id_column(tmp):
    df = build_rows(INST, "vt", "VT05", "T0", "adult", 3).rename(columns={"resp_id": "respondent"})
    return write_export(df, tmp / "vt_VT05_T0_adult.csv")


def make_all_rows_invalid(tmp):
    df = build_rows(INST, "vt", "VT06", "T0", "adult", 3)
    df["gezin_id"] = None
    return write_export(df, tmp / "vt_VT06_T0_adult.csv")


def make_unknown_name(tmp):
    p = tmp / "export_final_v2.csv"
    p.write_text("a;b\n1;2\n")
    return p


def make_wrong_sheet(tmp):
    df = build_rows(INST, "gi", "GI03", "T0", "adult", 3)
    p = tmp / "gi_GI03_T0_adult.xlsx"
    df.to_excel(p, sheet_name="Blad1", index=False)
    return p


def make_binary_garbage(tmp):
    p = tmp / "vt_VT07_T0_adult.csv"
    p.write_bytes(bytes(range(256)) * 20)
    return p


CASES = [
    (make_empty, "vt_VT02_T0_adult.csv", "empty"),
    (make_header_only, "vt_VT02_T0_adult.csv", "no data rows"),
    (make_truncated_sav, "proeftuin_PT01_T0_adult.sav", "truncated"),
    (make_truncated_xlsx, "gi_GI01_T0_adult.xlsx", "truncated"),
    (make_truncated_csv_quote, "vt_VT02_T0_adult.csv", "not a well-formed CSV"),
    (make_truncated_csv, "vt_VT02_T0_adult.csv", "is truncated: line"),
    (make_csv_as_sav, "proeftuin_PT02_T0_adult.sav", "content is a text (CSV) file"),
    (make_sav_as_csv, "vt_VT03_T0_adult.csv", "content is an SPSS .sav file"),
    (make_xlsx_as_sav, "proeftuin_PT03_T0_adult.sav", "content is an Excel"),
    (make_unreadable_encoding, "vt_VT04_T0_adult.csv", "cannot be decoded"),
    (make_no_id_column, "vt_VT05_T0_adult.csv", "no identifier column 'resp_id' (closest column in the file: 'respondent')"),
    (make_all_rows_invalid, "vt_VT06_T0_adult.csv", "all 3 rows are invalid (missing_household_id"),
    (make_unknown_name, "export_final_v2.csv", "no source definition matches"),
    (make_wrong_sheet, "gi_GI03_T0_adult.xlsx", "has no sheet 'data'"),
    (make_binary_garbage, "vt_VT07_T0_adult.csv", "content is binary data"),
]
TODO_WORDS = ("Export", "export", "Save", "Rename", "rename", "Check", "fix", "add", "deliver")


@pytest.mark.parametrize(("make", "name", "what"), CASES, ids=[c[0].__name__[5:] for c in CASES])
def test_bad_file_refused_whole(sqlite_engine, tmp_path, make, name, what):
    engine = init_warehouse(sqlite_engine)
    loaded = ingest_file(_good(tmp_path, "vt_VT09_T0_adult.csv"), engine, SOURCES, STUDY, INST, KEY)
    assert loaded.status == "loaded"
    before = canonical_dump(engine)
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    path = make(bad_dir)
    rep = ingest_file(path, engine, SOURCES, STUDY, INST, KEY)
    assert rep.status == "refused"
    assert rep.message.startswith(name), rep.message
    assert what in rep.message, rep.message
    assert any(w in rep.message for w in TODO_WORDS), f"no advice in: {rep.message}"
    after = canonical_dump(engine)
    for table in ("household", "person", "response", "item_layout", "item_block", "quarantine_row",
                  "validation_result"):
        assert after[table] == before[table], table
    refused = [b for b in after["batch"] if b not in before["batch"]]
    assert len(refused) == 1 and "refused" in refused[0]
    assert rep.rows_loaded == rep.rows_quarantined == rep.rows_duplicate == 0
    if name != "export_final_v2.csv":  # the file name still tells arm/site/wave/role for the status list
        assert [rep.arm, rep.site, rep.wave, rep.role] == name.split(".")[0].split("_")


def test_unmapped_and_missing_columns_reported_with_closest_match(sqlite_engine, tmp_path):
    engine = init_warehouse(sqlite_engine)
    df = build_rows(INST, "vt", "VT08", "T0", "adult", 3)
    df = df.rename(columns={"PSS_07": "PSS_7"})  # a survey tool renamed an item column
    df["opmerking"] = "vrije tekst"
    rep = ingest_file(write_export(df, tmp_path / "vt_VT08_T0_adult.csv"), engine, SOURCES, STUDY, INST, KEY)
    assert rep.status == "loaded"
    probs = {(p["kind"], p["column"]): p["closest"] for p in rep.problems}
    assert probs[("unmapped_column", "PSS_7")] == "PSS_07"
    assert probs[("missing_column", "PSS_07")] == "PSS_7"
    assert ("unmapped_column", "opmerking") in probs
    assert rep.item_values == 3 * 17  # the item that did not map is absent, the others loaded


def test_structural_row_faults_quarantined_with_reasons(sqlite_engine, tmp_path):
    engine = init_warehouse(sqlite_engine)
    df = build_rows(INST, "vt", "VT10", "T0", "adult", 5)
    df["PSS_01"] = df["PSS_01"].astype(object)
    df.loc[0, "PSS_01"] = "drie"  # text in a numeric item
    df.loc[1, "resp_id"] = None  # no person id
    path = write_export(df, tmp_path / "vt_VT10_T0_adult.csv")
    good_date = pd.Timestamp(df.loc[2, "datum_invullen"]).strftime("%d-%m-%Y")
    text = path.read_text(encoding="cp1252").splitlines()
    text[3] = text[3].replace(good_date, "31-02-2025")  # an impossible date in data row 3
    path.write_text("\n".join(text) + "\n", encoding="cp1252")
    rep = ingest_file(path, engine, SOURCES, STUDY, INST, KEY)
    assert (rep.rows_loaded, rep.rows_quarantined) == (2, 3)
    qs = pd.read_sql("select row_number, reasons from quarantine_row order by row_number", engine)
    rules = {int(r.row_number): [x["rule"] for x in (r.reasons if isinstance(r.reasons, list) else __import__("json").loads(r.reasons))] for r in qs.itertuples()}
    assert rules == {1: ["not_a_number"], 2: ["missing_person_id"], 3: ["date_unparseable"]}
    assert "drie" not in str(qs.reasons.tolist())  # free text is not copied into the warehouse
