"""Scores keyed to response ids: storing is idempotent per (response, instrument, version, scale)."""

from __future__ import annotations

import pandas as pd
import pytest
from ingest_exports import build_rows, write_export
from sqlalchemy import text

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.load import ingest_file
from cohortflow.warehouse.read import item_values_frame, responses_frame
from cohortflow.warehouse.scores import scores_frame, store_scores

INST = load_instruments()


def test_store_scores_is_idempotent_and_follows_supersede(any_engine, tmp_path):
    engine = init_warehouse(any_engine)
    df = build_rows(INST, "vt", "VT01", "T0", "adult", 3)
    ingest_file(write_export(df, tmp_path / "vt_VT01_T0_adult.csv"), engine, load_sources(), load_study(), INST,
                b"score-test-key-0123456")
    iv = item_values_frame(engine, "pss")
    # an independent sum straight from the export: PSS items, reversed items 1,2,5,6,7,8,17,18 -> 6 - x
    rev = {"01", "02", "05", "06", "07", "08", "17", "18"}
    totals = iv.assign(s=[6 - v if it in rev else v for it, v in zip(iv["item"], iv["value"], strict=True)]) \
        .groupby("response_id")["s"].sum()
    first = pd.DataFrame({"response_id": totals.index, "instrument": "pss", "instrument_version": "1.0",
                          "scale": "total", "score": totals.values, "n_items": 18, "n_answered": 18,
                          "prorated": False, "above_cutoff": None, "band": None})
    assert store_scores(engine, first, "run-1") == 3
    again = first.assign(score=first["score"] + 1)
    store_scores(engine, again, "run-2")
    got = scores_frame(engine)
    assert len(got) == 3 and got["score"].tolist() == again["score"].tolist()
    assert set(got["scoring_run"]) == {"run-2"}
    resp = responses_frame(engine).sort_values("row_number")
    first_row = df.iloc[0]
    expected = sum(6 - first_row[f"PSS_{i:02d}"] if f"{i:02d}" in rev else first_row[f"PSS_{i:02d}"]
                   for i in range(1, 19)) + 1
    assert got.set_index("response_id").loc[resp["response_id"].iloc[0], "score"] == expected
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from run")).scalar() == 2
    with pytest.raises(ValueError, match="lacks columns"):
        store_scores(engine, first.drop(columns=["band"]), "run-3")
