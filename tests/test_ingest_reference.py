"""Warehouse content after batch ingestion equals the reference made with main's code before the ingest
speed-up round (tests/data/ingest_reference.json, written by tests/data/make_ingest_reference.py at 86a2689):
same rows, pseudonyms, batches, row accounting, quarantine reasons and rule results, table by table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def _maker():
    spec = importlib.util.spec_from_file_location("make_ingest_reference", DATA / "make_ingest_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.parametrize("chunk_rows", [250_000, 150])  # one chunk; chunks of a few files
def test_warehouse_equals_reference_of_main(tmp_path, chunk_rows):
    pytest.importorskip("cohortflow.synth.generate")
    want = json.loads((DATA / "ingest_reference.json").read_text())
    got = _maker().ingest_reference_study(tmp_path, chunk_rows=chunk_rows)
    assert got["batch"][0] > 100 and got["quarantine_row"][0] > 0  # a study with every fault, not an empty run
    for table in want:
        assert got[table] == want[table], table
