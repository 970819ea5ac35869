"""Scores in the warehouse are recomputed only when an instrument definition or the item values change."""

from __future__ import annotations

import secrets

from cohortflow.config.study import load_study
from cohortflow.ingest import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.store import score_warehouse
from cohortflow.warehouse.batch_ingest import ingest_files
from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.scores import scores_frame


def test_rescoring_follows_definitions_and_data(tmp_path, sqlite_engine):
    from cohortflow.synth import generate_study

    manifest = generate_study(tmp_path / "study", factor=0.05, seed=3)
    files = [tmp_path / "study" / f.path for f in manifest.files if f.role == "child"][:2]
    engine = init_warehouse(sqlite_engine)
    study, instruments, sources, key = load_study(), load_instruments(), load_sources(), secrets.token_bytes(32)
    ingest_files(files[:1], engine, sources, study, instruments, key)

    n_first = score_warehouse(engine, instruments, "r1")
    assert n_first > 0
    assert score_warehouse(engine, instruments, "r2") == 0  # nothing changed

    # a definition change (a cut-off moved, version bumped) makes the stored scores stale
    cries = instruments["cries13"]
    total = cries.scale("total")
    moved = total.model_copy(update={"cutoffs": [c.model_copy(update={"threshold": 20}) for c in total.cutoffs]})
    changed = {**instruments, "cries13": cries.model_copy(update={
        "version": cries.version + "-test", "scales": [moved if s.code == "total" else s for s in cries.scales]})}
    assert score_warehouse(engine, changed, "r3") == n_first
    stored = scores_frame(engine)
    new = stored[(stored["instrument"] == "cries13") & (stored["instrument_version"] == cries.version + "-test")
                 & (stored["scale"] == "total")].dropna(subset=["score"])
    assert len(new) > 0
    assert (new["above_cutoff"].astype(bool) == (new["score"] >= 20)).all()

    # new data makes them stale too, and the new responses get scores
    ingest_files(files[1:2], engine, sources, study, instruments, key)
    assert score_warehouse(engine, instruments, "r4") > n_first
