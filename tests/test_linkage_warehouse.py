"""build_analysis_dataset against a real warehouse (SQLite; PostgreSQL when configured): parent reports
linked to the child they are about, households and persons as the raw ids say, one row per score."""

from __future__ import annotations

import pandas as pd
from ingest_exports import build_rows, write_export

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.ingest.pseudonymise import pseudonym
from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring import score_all
from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.linkage import LONG_COLUMNS, build_analysis_dataset, link_warehouse, snapshot_hash
from cohortflow.warehouse.load import ingest_file
from cohortflow.warehouse.read import item_values_frame, responses_frame
from cohortflow.warehouse.scores import store_scores

KEY = b"linkage-warehouse-test-key-012345"
INST = load_instruments()
STUDY = load_study()
ARM = "vt" if "vt" in STUDY.arm_codes else STUDY.cohort_arms[0].code
SITE = STUDY.arm(ARM).sites[0].code


def test_build_analysis_dataset_links_parent_reports(any_engine, tmp_path):
    engine = init_warehouse(any_engine)
    follow = STUDY.wave_codes[1]
    files = [(STUDY.baseline_wave, "adult"), (STUDY.baseline_wave, "parent"), (STUDY.baseline_wave, "child"),
             (follow, "child")]
    raw = []
    for i, (wave, role) in enumerate(files):
        rows = build_rows(INST, ARM, SITE, wave, role, 4, seed=i + 1)
        if role == "parent":  # the helper gives the child the opposite sex in parent rows: align with K1's own
            rows["kind_geslacht"] = 1 + rows.index % 2
        raw.append(rows.assign(_role=role, _wave=wave))
        rep = ingest_file(write_export(rows, tmp_path / f"{ARM}_{SITE}_{wave}_{role}.csv"), engine, load_sources(),
                          STUDY, INST, KEY)
        assert rep.status == "loaded" and rep.rows_loaded == 4, rep.message
    resp = responses_frame(engine)
    ctx = resp.set_index("response_id")[["role", "subject_age_years", "subject_sex"]]
    scores = score_all(item_values_frame(engine), ctx, INST, on_unknown="skip")
    store_scores(engine, scores, "score-run")
    long = build_analysis_dataset(engine, STUDY, INST)
    assert list(long.columns[: len(LONG_COLUMNS)]) == LONG_COLUMNS
    assert len(long) == len(scores)
    par = long[long["role"] == "parent"]
    truth = pd.concat(raw)
    p = truth[truth["_role"] == "parent"]
    expect = {(pseudonym(KEY, "person", k), pseudonym(KEY, "person", v), pseudonym(KEY, "household", g))
              for k, v, g in zip(p["kind_id"], p["resp_id"], p["gezin_id"], strict=True)}
    got = set(zip(par["person_id"], par["informant_id"], par["household_id"], strict=True))
    assert got == expect and len(par) > 0
    # the child's self-report and the parent's report are about the same person
    kids = set(long.loc[long["role"] == "child", "person_id"])
    assert set(par["person_id"]) <= kids
    # follow-up months from days; baseline score of the child self-report copied to the follow-up rows
    fu = long[(long["wave"] == follow) & (long["role"] == "child")]
    assert (fu["months_since_t0"] - fu["days_since_t0"] / (365.25 / 12)).abs().max() < 1e-9
    b = long[(long["wave"] == STUDY.baseline_wave) & (long["role"] == "child")].set_index(["person_id", "outcome"])
    merged = fu.join(b["score"].rename("b"), on=["person_id", "outcome"])
    pd.testing.assert_series_equal(merged["baseline_score"], merged["b"], check_names=False)
    ld = link_warehouse(engine, STUDY, INST)
    assert ld.conflicts.empty and snapshot_hash(ld.long) == snapshot_hash(long)


def test_scores_read_by_forked_process_equal_in_place_read(any_engine, tmp_path):
    """The link stage reads the scores in a forked process: same frame as read here, and the parent's
    connections still work afterwards (the child used its own)."""
    from sqlalchemy import text

    from cohortflow.warehouse.read import scores_compact, scores_compact_forked

    engine = init_warehouse(any_engine)
    for i, role in enumerate(["adult", "child"]):
        rows = build_rows(INST, ARM, SITE, STUDY.baseline_wave, role, 5, seed=i + 7)
        rep = ingest_file(write_export(rows, tmp_path / f"{ARM}_{SITE}_{STUDY.baseline_wave}_{role}.csv"), engine,
                          load_sources(), STUDY, INST, KEY)
        assert rep.status == "loaded", rep.message
    resp = responses_frame(engine)
    ctx = resp.set_index("response_id")[["role", "subject_age_years", "subject_sex"]]
    store_scores(engine, score_all(item_values_frame(engine), ctx, INST, on_unknown="skip"), "score-run")
    with engine.connect() as conn:  # a pooled connection exists before the fork
        n = conn.execute(text("SELECT count(*) FROM score")).scalar_one()
    got = scores_compact_forked(engine).result()
    want = scores_compact(engine)
    assert len(want) == n > 0
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert list(got.dtypes) == list(want.dtypes)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM score")).scalar_one() == n
