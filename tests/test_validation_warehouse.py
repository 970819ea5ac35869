"""Validation inside ingestion: cross-wave history from the warehouse, results stored per batch and listed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cohortflow.config.sources import load_source_definitions
from cohortflow.config.study import load_study
from cohortflow.flows.commands_validation import flow_validator, validation_status_lines
from cohortflow.instruments.registry import load_instruments
from cohortflow.synth import generate_study
from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.load import ingest_file

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
KEY = b"warehouse-validation-test-key-32"


@pytest.mark.slow
def test_sex_conflict_against_the_warehouse_is_quarantined_and_reported(sqlite_engine, tmp_path):
    study, instruments, sources = load_study(), load_instruments(), load_source_definitions()
    manifest = generate_study(tmp_path, factor=0.02, seed=5, faults=["sex_conflict"], study=study,
                              instruments=instruments)
    fault = manifest.faults_of("sex_conflict")[0]
    engine = init_warehouse(sqlite_engine)
    lines: list[str] = []
    validate = flow_validator(engine, study, instruments, KEY, docs_dir=tmp_path / "data" / "validation",
                              artifacts=False, echo=lines.append)
    base = ingest_file(tmp_path / fault.details["baseline_file"], engine, sources, study, instruments, KEY,
                       validate=validate)
    assert base.status == "loaded" and base.rows_quarantined == 0
    follow = ingest_file(tmp_path / fault.file, engine, sources, study, instruments, KEY, validate=validate)
    assert follow.status == "loaded"
    assert follow.rows_quarantined == 1
    assert follow.rows_loaded == follow.rows_in - 1
    assert any("sex_birth_year_consistency" in ln and "earlier wave" in ln for ln in lines)
    status = validation_status_lines(engine)
    assert len(status) == 1 and Path(fault.file).name in status[0]
    assert "sex_birth_year_consistency 1 (quarantine" in status[0]
    assert list((tmp_path / "data" / "validation").rglob("*.html"))
