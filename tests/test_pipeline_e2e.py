"""The whole journey as one Prefect flow on a generated study (issue #2).

One flow run at a small factor, then a second run on the same inbox: checks that the effect table's
pilot-vs-comparison differences in change hold the generator's true values in their 95% CIs, that every input
row is accounted for, that the outputs exist, and that running again loads nothing twice.
"""

from __future__ import annotations

import secrets

import pandas as pd
import pytest
from sqlalchemy import func, select

FACTOR = 0.3
SEED = 20241120


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    from cohortflow.flows.pipeline import pipeline_flow
    from cohortflow.synth import generate_study
    from cohortflow.warehouse.db import get_engine, init_warehouse

    root = tmp_path_factory.mktemp("e2e")
    manifest = generate_study(root / "study", factor=FACTOR, seed=SEED)
    url = f"sqlite:///{root / 'warehouse.sqlite'}"
    engine = init_warehouse(get_engine(url))
    key = secrets.token_hex(32)
    kwargs = dict(inbox=str(root / "study" / "inbox"), database_url=url, outputs_dir=str(root / "outputs"), key_hex=key)
    first = pipeline_flow(**kwargs)
    counts_after_first = _table_counts(engine)
    second = pipeline_flow(**kwargs)
    return root, manifest, engine, first, second, counts_after_first


def _table_counts(engine) -> dict[str, int]:
    from cohortflow.warehouse.models import Base

    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in Base.metadata.sorted_tables if t.name not in ("run",)}


def test_every_exported_row_is_accounted_for(pipeline_runs):
    _, manifest, _, first, _, _ = pipeline_runs
    assert len(first.batches) == len(manifest.files)
    written = {f.path.name if hasattr(f.path, "name") else str(f.path).rsplit("/", 1)[-1]: f.n_rows
               for f in manifest.files}
    for b in first.batches:
        assert b.status == "loaded", (b.file_name, b.message)
        assert b.rows_in == written[b.file_name]
        assert b.rows_in == b.rows_loaded + b.rows_quarantined + b.rows_duplicate


def test_differences_in_change_hold_the_true_effects(pipeline_runs):
    from cohortflow.flows.truth import compare_with_truth

    root = pipeline_runs[0]
    rows = compare_with_truth(root / "study" / "truth" / "truth.json", root / "outputs" / "effect_table.csv")
    # three continuous outcomes x two comparisons x two follow-up waves
    assert set(rows["outcome"]) >= {"cries13.total", "pss.total", "cyrm_r.total"}
    assert len(rows) >= 12
    # the criterion: for each outcome, pilot vs VT at the last wave holds the truth
    vt_last = rows[(rows["arm2"] == "vt") & (rows["wave"] == rows["wave"].max())]
    assert len(vt_last) == 3
    assert vt_last["covered"].all(), vt_last.to_string()
    # and overall coverage is what 95% intervals give: with 12 intervals, fewer than 9 covered has p < 0.002
    assert rows["covered"].sum() >= 9, rows.to_string()


def test_outputs_exist_and_name_the_run(pipeline_runs):
    root, _, _, first, second, _ = pipeline_runs
    out = root / "outputs"
    for name in ("effect_table.xlsx", "effect_table.csv", "effect_table.md", "report.html", "analysis_long.parquet"):
        assert (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text(encoding="utf-8")
    # the second run wrote the report last; it used the same data snapshot
    assert second.run_id in html and first.snapshot_hash[:12] in html
    long = pd.read_parquet(out / "analysis_long.parquet")
    assert {"household_id", "person_id", "arm", "wave", "outcome", "score"} <= set(long.columns)


def test_second_run_loads_nothing_twice(pipeline_runs):
    _, _, engine, first, second, counts_after_first = pipeline_runs
    assert {b.status for b in second.batches} == {"skipped"}
    assert _table_counts(engine) == counts_after_first
    assert second.n_scores == 0  # nothing changed, so nothing was re-scored
    assert second.snapshot_hash == first.snapshot_hash


def test_model_runs_are_recorded_with_their_data_snapshot(pipeline_runs):
    from cohortflow.warehouse.models import Run

    _, _, engine, first, second, _ = pipeline_runs
    with engine.connect() as conn:
        rows = {r.run_id: r for r in conn.execute(select(Run).where(Run.kind == "model"))}
    assert rows[first.run_id].data_snapshot == first.snapshot_hash
    assert rows[second.run_id].data_snapshot == second.snapshot_hash
    assert rows[first.run_id].config_hash == rows[second.run_id].config_hash


def test_validation_findings_are_published_as_artifacts(pipeline_runs):
    """Files with quarantined rows get their own validation artifact; warnings of files loaded whole are rows of
    one `validation-warnings` table artifact of the run (stored validation results are the reference)."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from cohortflow.warehouse.models import Batch, ValidationResult

    _, _, engine, first, _, _ = pipeline_runs
    with engine.connect() as conn:
        failed = conn.execute(select(Batch.file_name, Batch.rows_quarantined, ValidationResult.rule,
                                     ValidationResult.severity)
                              .join(ValidationResult, ValidationResult.batch_id == Batch.id)
                              .where(ValidationResult.n_failed > 0)).all()
    quarantined = {f for f, q, _r, _s in failed if q}
    warned = {(f, r) for f, q, r, s in failed if not q and s == "warn"}
    assert quarantined or warned, "the generated study should have something for validation to report"
    with get_client(sync_client=True) as client:
        def latest(key):
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
            return max(arts, key=lambda a: a.created) if arts else None

        for name in quarantined:
            key = "validation-" + "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")[:48]
            art = latest(key)
            assert art is not None and name in art.data, name
        if warned:
            table = latest("validation-warnings")
            assert table is not None
            rows = json.loads(table.data) if isinstance(table.data, str) else table.data
            assert {(r["file"], r["rule"]) for r in rows} == warned
