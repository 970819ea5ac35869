"""The fast export writers and the lazily built export files: values read back equal the frame written,
per-cell reference formatting, rebuilt frames equal the first build, fault-changed frames survive release."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohortflow.instruments.registry import load_instruments
from cohortflow.synth.exports import (
    _float_text,
    _float_texts,
    _write_sav_pyreadstat,
    csv_text,
    export_spec,
    item_column,
    write_sav,
    write_xlsx,
)
from cohortflow.synth.faults import ExportFile
from cohortflow.synth.identity import bsn_is_valid, fake_bsns
from cohortflow.synth.inspect import read_export
from cohortflow.synth.items import ItemScorer, score_sum

INSTRUMENTS = load_instruments()


def _frame(n: int = 7) -> tuple[pd.DataFrame, object]:
    """A small export frame with NaN item cells, NaT dates, empty strings and characters needing care."""
    cries = INSTRUMENTS["cries13"]
    items = [item_column(cries, c) for c in cries.item_codes[:3]]
    rng = np.random.default_rng(3)
    codes = rng.choice([0.0, 1.0, 3.0, 5.0, -9.0, -7.0], size=(n, 3))
    codes[1, 0] = np.nan
    codes[4, :] = np.nan
    frame = pd.DataFrame({
        "gezin_id": [f"G-PT01-{i:04d}" for i in range(n)],
        "resp_id": [f"G-PT01-{i:04d}-V1" for i in range(n)],
        "naam": ["Zoë de Vries", "Ömer Koç", 'Jan "Kees" Bos', "A;B", "Tess & Co", "<Liv>", ""][:n],
        "email": ["", "a@example.org", "", "b@example.org", "", "c@example.org", ""][:n],
        "geboortedatum": pd.to_datetime(["2010-01-31", "2011-12-01", None, "1999-02-28", "2008-07-07",
                                          "2012-03-04", "2001-10-10"][:n]).astype("datetime64[s]"),
        "geslacht": [1, 2, 1, 2, 2, 1, 1][:n],
        "duur_min": [12.0, 7.3, np.nan, 101.5, 2.0, 0.1, 33.3][:n],
        **{c: codes[:, j] for j, c in enumerate(items)},
    })
    return frame, export_spec(list(frame.columns), [cries])


def _reference_csv(frame: pd.DataFrame, spec) -> str:  # noqa: ANN001
    """The CSV text cell by cell, by the contract's rules (the writer formats each distinct value once)."""
    def field(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(ch in v for ch in ';"\r\n') else v

    lines = [";".join(frame.columns)]
    for _, row in frame.iterrows():
        cells = []
        for c, v in row.items():
            if pd.isna(v):
                cells.append("")
            elif c == "geboortedatum":
                cells.append(pd.Timestamp(v).strftime("%d-%m-%Y"))
            elif c in spec.item_columns or c == "geslacht":
                cells.append(str(int(v)))
            elif c == "duur_min":
                t = repr(float(v)).replace(".", ",")
                cells.append(t[:-2] if t.endswith(",0") else t)
            else:
                cells.append(field(str(v)))
        lines.append(";".join(cells))
    return "\r\n".join(lines) + "\r\n"


def test_csv_text_matches_cell_by_cell_reference():
    frame, spec = _frame()
    assert csv_text(frame, spec) == _reference_csv(frame, spec)
    assert '"Jan ""Kees"" Bos"' in csv_text(frame, spec) and '"A;B"' in csv_text(frame, spec)


def test_float_texts_equal_repr_rule():
    rng = np.random.default_rng(0)
    tenths = np.round(rng.uniform(-50, 500, 2000), 1)
    tenths[::97] = np.nan
    other = rng.normal(size=50)  # not one-decimal: the general repr path
    for arr in (tenths, other):
        expected = ["" if np.isnan(v) else _float_text(v) for v in arr]
        assert _float_texts(arr).tolist() == expected


def test_xlsx_and_sav_read_back_equal_the_frame(tmp_path):
    frame, spec = _frame()
    write_xlsx(frame, tmp_path / "x.xlsx", spec)
    write_sav(frame, tmp_path / "x.sav", spec)
    for fmt in ("xlsx", "sav"):
        back = read_export(tmp_path / f"x.{fmt}", fmt)
        assert list(back.columns) == list(frame.columns)
        # empty cells stay in their own column (xlsx cells carry no reference, so gaps are written as <c/>)
        cols = [c for c in frame.columns if c.startswith("CRIES13_")]
        np.testing.assert_array_equal(back[cols].to_numpy(float), frame[cols].to_numpy(float))
        np.testing.assert_array_equal(back["duur_min"].to_numpy(float), frame["duur_min"].to_numpy(float))
        assert back["geboortedatum"].isna().tolist() == frame["geboortedatum"].isna().tolist()
        ok = frame["geboortedatum"].notna()
        assert (pd.to_datetime(back["geboortedatum"][ok]).dt.date == frame["geboortedatum"][ok].dt.date).all()
        assert back["naam"].fillna("").tolist() == frame["naam"].tolist()


def test_sav_dates_are_spss_dates(tmp_path):
    import pyreadstat

    frame, spec = _frame()
    write_sav(frame, tmp_path / "x.sav", spec)
    _, meta = pyreadstat.read_sav(str(tmp_path / "x.sav"), metadataonly=True, user_missing=True)
    assert meta.original_variable_types["geboortedatum"] == "DATE11"
    assert sorted(r["lo"] for r in meta.missing_ranges["CRIES13_01"]) == [-9.0, -7.0]


def test_numpy_sav_equals_pyreadstat_sav(tmp_path):
    """The numpy .sav writer against pyreadstat's writer (the reference): same values and metadata read back."""
    import pyreadstat

    frame, spec = _frame()
    write_sav(frame, tmp_path / "fast.sav", spec)
    _write_sav_pyreadstat(frame, tmp_path / "ref.sav", spec)
    for missing in (True, False):
        a, ma = pyreadstat.read_sav(str(tmp_path / "fast.sav"), user_missing=missing)
        b, mb = pyreadstat.read_sav(str(tmp_path / "ref.sav"), user_missing=missing)
        pd.testing.assert_frame_equal(a, b)
        for k in ("column_names", "column_labels", "variable_value_labels", "missing_ranges", "number_rows",
                  "original_variable_types", "readstat_variable_types", "variable_measure",
                  "variable_display_width", "variable_alignment", "file_encoding"):
            assert getattr(ma, k) == getattr(mb, k), k
    assert (tmp_path / "fast.sav").read_bytes()[92:109] == b"20 Nov 2412:00:00"


def test_sav_long_text_goes_through_pyreadstat(tmp_path):
    import pyreadstat

    frame, spec = _frame()
    frame.loc[0, "naam"] = "x" * 300  # beyond 255 bytes: a very long string, written by pyreadstat
    write_sav(frame, tmp_path / "long.sav", spec)
    back, _ = pyreadstat.read_sav(str(tmp_path / "long.sav"))
    assert back.loc[0, "naam"] == "x" * 300


def test_export_file_rebuilds_and_keeps_fault_changes():
    frame, spec = _frame()
    builds = []

    def builder(columns):  # noqa: ANN001
        builds.append(columns)
        return frame.copy() if columns is None else frame[columns].copy()

    f = ExportFile("inbox/x.csv", "a", "s", "T0", "adult", "csv", spec, [], list(frame.columns), len(frame), builder)
    assert f.column("resp_id").tolist() == frame["resp_id"].tolist() and builds == [["resp_id"]]
    first = f.frame
    f.release()
    pd.testing.assert_frame_equal(f.frame, first)  # rebuilt, the same
    f.frame.at[0, "geslacht"] = 9
    f.frame = f.frame  # what the faults do after changing a frame in place
    f.release()
    assert f.frame.at[0, "geslacht"] == 9 and f.n_rows == len(frame)
    f.frame = pd.concat([f.frame, f.frame.iloc[[0]]], ignore_index=True)
    assert f.n_rows == len(frame) + 1


def test_item_scorer_equals_score_sum_on_every_scale():
    rng = np.random.default_rng(1)
    for code in ("pss", "cries13", "cyrm_r"):
        inst = INSTRUMENTS[code]
        keys = [inst.item_key(i) for i in inst.item_codes]
        opts = sorted({o.code for rs in inst.response_scales for o in rs.options})
        codes = pd.DataFrame(rng.choice(opts + [-9, np.nan], size=(300, len(keys))), columns=keys)
        scorer = ItemScorer(inst, lambda k, codes=codes: codes[k].to_numpy(float))
        for sc in inst.scales:
            if sc.aggregation not in ("sum", "mean", "mean_times_n") and sc.components is None:
                continue
            expected = score_sum(inst, sc, codes).to_numpy()
            np.testing.assert_allclose(scorer.score(sc), expected, equal_nan=True)
    # hand-worked: PSS all answered 1 -> 8 reversed items score 5, 10 others 1
    pss = INSTRUMENTS["pss"]
    ones = {pss.item_key(i): np.ones(2) for i in pss.item_codes}
    assert ItemScorer(pss, ones.__getitem__).score(pss.scale("total")).tolist() == [50.0, 50.0]


@pytest.mark.parametrize("n", [1, 5000])
def test_fake_bsns_distinct_and_valid(n):
    b = fake_bsns(np.random.default_rng(n), n)
    assert len(b) == n == len(set(b.tolist()))
    assert all(len(x) == 9 and x.startswith("9") and bsn_is_valid(x) for x in b.tolist())
