"""canonical_dump compares warehouses by content: surrogate ids (and what refers to them, the `supersedes` lists
included) are renumbered in id order, so a gap left by a rolled-back transaction (PostgreSQL sequences) does not
make two equal warehouses differ, while a real difference still does."""

from __future__ import annotations

from ingest_exports import build_rows, write_export
from sqlalchemy import insert, text

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.batch_ingest import ingest_files
from cohortflow.warehouse.db import get_engine, init_warehouse
from cohortflow.warehouse.dump import canonical_dump
from cohortflow.warehouse.models import Batch

KEY = b"dump-test-key-0123456789"
INST = load_instruments()


def _inbox(tmp_path):
    files = [write_export(build_rows(INST, "vt", "VT01", "T0", "adult", 8, seed=1), tmp_path / "vt_VT01_T0_adult.csv"),
             write_export(build_rows(INST, "vt", "VT01", "T1", "adult", 8, seed=2), tmp_path / "vt_VT01_T1_adult.csv")]
    # a corrected export of T0 (sorts after the .csv): supersedes the first batch
    files.append(write_export(build_rows(INST, "vt", "VT01", "T0", "adult", 8, seed=3),
                              tmp_path / "vt_VT01_T0_adult.sav"))
    return files


def _load(engine, files):
    return ingest_files(files, engine, load_sources(), load_study(), INST, KEY, data_docs="none")


def test_id_gaps_do_not_count_but_content_does(tmp_path):
    files = _inbox(tmp_path)
    plain = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'plain.sqlite'}"))
    _load(plain, files)
    gapped = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'gapped.sqlite'}"))
    with gapped.begin() as conn:  # ids 1-5 taken by a batch that is then removed: every later id is shifted
        conn.execute(insert(Batch).values(id=5, file_name="x", sha256="x", size_bytes=0, status="refused"))
    _load(gapped, files[:1])
    with gapped.begin() as conn:
        conn.execute(text("DELETE FROM batch WHERE id = 5"))
    _load(gapped, files[1:])
    with gapped.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM batch ORDER BY id"))]
        supersedes = [r[0] for r in conn.execute(text("SELECT supersedes FROM batch")) if r[0] and r[0] != "[]"]
    assert ids[0] > 1 and f"[{ids[0]}]" in supersedes  # the raw ids really differ from the plain warehouse's
    dump = canonical_dump(gapped)
    assert dump == canonical_dump(plain)
    assert any(r[-2] == "[1]" for r in dump["batch"])  # the correction's `supersedes` renumbered with the batch

    with gapped.begin() as conn:  # a real difference (one answer) is still seen
        conn.execute(text("UPDATE response SET subject_sex = 'other' WHERE id = (SELECT min(id) FROM response)"))
    assert canonical_dump(gapped)["response"] != canonical_dump(plain)["response"]
