"""The .xlsx reader: calamine (the fast default) gives exactly what openpyxl gives, and openpyxl stays the fallback."""

from __future__ import annotations

import datetime as dt

import numpy as np
import openpyxl
import pandas as pd
import pytest
from ingest_exports import build_rows, write_export

import cohortflow.ingest.readers as readers
from cohortflow.ingest.mapping import load_sources, match_source, read_export
from cohortflow.ingest.readers import BadFileError, read_xlsx
from cohortflow.instruments.registry import load_instruments

INST = load_instruments()
SOURCES = load_sources()


def _edge_workbook(path):
    """Two sheets; the data sheet mixes numbers, leading-zero text, dates, datetimes, booleans and empty cells."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "other"
    ws.append(["x"])
    ws.append([1])
    ws = wb.create_sheet("data")
    ws.append(["hh", "pid", "d", "when", "score", "txt", "flag", "mixed"])
    ws.append([123, "007", dt.date(2024, 1, 5), dt.datetime(2024, 1, 5, 13, 4), 3, "a", True, 1])
    ws.append([124.5, 8, None, None, None, None, False, "b"])
    ws.append([None, "", dt.date(1999, 12, 31), dt.datetime(2024, 2, 29), 2.5, "é", None, dt.date(2020, 1, 1)])
    ws.append([1e6, 12345678901, "2024-01-01", "x", -9, "  s ", None, 2.0])
    wb.save(path)
    return path


@pytest.mark.parametrize("sheet", ["data", None, 1])
@pytest.mark.parametrize("text", [{"hh", "pid", "mixed"}, set()])
def test_calamine_equals_openpyxl_on_edge_cells(tmp_path, sheet, text):
    path = _edge_workbook(tmp_path / "edge.xlsx")
    a = read_xlsx(path, sheet, text, engine="openpyxl").frame
    b = read_xlsx(path, sheet, text, engine="calamine").frame
    pd.testing.assert_frame_equal(a, b)
    if sheet is None:  # the first sheet
        assert b.columns.tolist() == ["x"] and b["x"].tolist() == [1]
        return
    if text:  # identifiers as text: whole numbers without '.0', leading zeros kept, empty cells missing
        assert b["pid"].tolist()[:2] == ["007", "8"] and b["hh"].tolist()[0] == "123"
        assert b["hh"].tolist()[1] == "124.5" and pd.isna(b["hh"].iloc[2])
    assert b["score"].iloc[0] == 3 and b["score"].iloc[2] == 2.5
    assert np.isnan(b["score"].iloc[1])
    assert b["d"].iloc[0] == pd.Timestamp(2024, 1, 5) and pd.isna(b["d"].iloc[1])


def test_generated_exports_read_the_same_with_both_engines(tmp_path, monkeypatch):
    """read_export (mapping included) of .xlsx exports: frame, missing reasons, issues and metadata equal."""
    df = build_rows(INST, "gi", "GI01", "T0", "parent", 25, seed=3)
    df.loc[3, "PSS_01" if "PSS_01" in df else df.columns[-1]] = np.nan
    path = write_export(df, tmp_path / "gi_GI01_T0_parent.xlsx")
    src = match_source(path, SOURCES)
    out = {}
    for eng in ("openpyxl", "calamine"):
        monkeypatch.setattr(readers, "XLSX_ENGINES", (eng,))
        out[eng] = read_export(path, src, INST)
    a, b = out["openpyxl"], out["calamine"]
    pd.testing.assert_frame_equal(a.frame, b.frame)
    pd.testing.assert_frame_equal(a.missing_reasons, b.missing_reasons)
    pd.testing.assert_frame_equal(a.row_issues, b.row_issues)
    assert {k: v for k, v in a.meta.items() if "second" not in k} == {k: v for k, v in b.meta.items()
                                                                     if "second" not in k}
    assert b.frame["household_raw"].tolist() == df["gezin_id"].tolist()
    assert len(b.frame) == 25


def test_calamine_is_the_default_and_openpyxl_the_fallback(tmp_path, monkeypatch):
    path = _edge_workbook(tmp_path / "edge.xlsx")
    used = []
    real = pd.ExcelFile

    def spy(p, engine=None, **kw):
        used.append(engine)
        if engine == "calamine":
            raise ValueError("calamine cannot read this workbook")
        return real(p, engine=engine, **kw)

    monkeypatch.setattr(pd, "ExcelFile", spy)
    df = read_xlsx(path, "data", {"pid"}).frame
    assert used == ["calamine", "openpyxl"]
    assert df["pid"].tolist()[0] == "007"


def test_damaged_workbook_still_refused_with_a_clear_message(tmp_path):
    path = _edge_workbook(tmp_path / "edge.xlsx")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadFileError, match="not a readable Excel workbook"):
        read_xlsx(path, "data", set())
