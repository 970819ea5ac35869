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


def _stored(engine):
    s = scores_frame(engine).drop(columns=["scoring_run"])
    return s.sort_values(["response_id", "instrument", "instrument_version", "scale"], ignore_index=True)


def test_bulk_store_matches_row_store_and_replaces_keys(tmp_path, any_engine):
    """store_scores_bulk (COPY on PostgreSQL, executemany elsewhere) stores exactly what the row-by-row
    store_scores stores; a second store replaces values of the same keys (upsert) and adds new keys."""
    import numpy as np
    import pandas as pd
    from sqlalchemy import text

    from cohortflow.scoring.engine import score_all
    from cohortflow.scoring.store import store_scores_bulk
    from cohortflow.synth import generate_study
    from cohortflow.warehouse.read import item_values_compact, item_values_frame, scoring_context
    from cohortflow.warehouse.scores import store_scores

    manifest = generate_study(tmp_path / "study", factor=0.05, seed=5)
    files = [tmp_path / "study" / f.path for f in manifest.files if f.role in ("child", "parent")][:4]
    engine = init_warehouse(any_engine)
    study, instruments, sources, key = load_study(), load_instruments(), load_sources(), secrets.token_bytes(32)
    ingest_files(files, engine, sources, study, instruments, key)

    compact, plain = item_values_compact(engine), item_values_frame(engine)
    assert len(compact) == len(plain) > 0
    assert list(compact["instrument"].cat.categories) == sorted(plain["instrument"].unique())
    from cohortflow.scoring.engine import item_values_fingerprint
    assert item_values_fingerprint(compact) == item_values_fingerprint(plain)

    scores = score_all(compact, scoring_context(engine), instruments, on_unknown="skip")
    assert scores["score"].isna().any() and scores["score"].notna().any()
    store_scores(engine, scores, "row-store")
    expected = _stored(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM score"))
    assert store_scores_bulk(engine, scores, "bulk-store") == len(scores)  # empty table: plain bulk insert
    pd.testing.assert_frame_equal(_stored(engine), expected)

    # second store: half the rows with changed scores, plus rows of the first half unchanged -> upsert
    changed = scores.copy()
    changed["score"] = changed["score"] + 1.0
    store_scores_bulk(engine, changed.iloc[: len(changed) // 2], "bulk-again")
    after = _stored(engine)
    assert len(after) == len(expected)
    first = after.merge(changed.iloc[: len(changed) // 2][["response_id", "instrument", "scale", "score"]]
                        .astype({"instrument": str, "scale": str}), on=["response_id", "instrument", "scale"],
                        suffixes=("", "_new"))
    assert len(first) == len(changed) // 2
    assert np.allclose(first["score"], first["score_new"], equal_nan=True)
    # the compact read linkage uses gives the same rows as the plain read
    from cohortflow.warehouse.read import scores_compact

    key = ["response_id", "instrument", "scale"]
    compact_scores = scores_compact(engine).astype({"instrument": str, "scale": str}).sort_values(key, ignore_index=True)
    plain_scores = scores_frame(engine)[[*key, "score", "above_cutoff"]].astype({"instrument": str, "scale": str})
    plain_scores = plain_scores.sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(compact_scores, plain_scores.astype({"above_cutoff": "boolean"}), check_dtype=False)
    assert compact_scores["above_cutoff"].isna().any() and compact_scores["above_cutoff"].fillna(False).any()
    runs = scores_frame(engine)["scoring_run"].value_counts()
    assert runs["bulk-again"] == len(changed) // 2 and runs["bulk-store"] == len(changed) - len(changed) // 2

    # the bulk path into an empty table rebuilds what it set aside (on PostgreSQL the key and foreign-key
    # constraints), and foreign keys are enforced again afterwards
    from sqlalchemy import inspect

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM score"))
    store_scores_bulk(engine, scores, "bulk-empty")
    insp = inspect(engine)
    # the (instrument, scale) index is gone since migration 0004 and the bulk store does not bring it back
    assert "ix_score_instrument_scale" not in {i["name"] for i in insp.get_indexes("score")}
    uniques = {u["name"] for u in insp.get_unique_constraints("score")} | {
        i["name"] for i in insp.get_indexes("score") if i.get("unique")}
    assert uniques, "the score key must stay unique"
    assert {tuple(fk["constrained_columns"]) for fk in insp.get_foreign_keys("score")} >= {("response_id",),
                                                                                          ("scoring_run",)}
    import pytest

    stray = scores.iloc[:3].assign(response_id=10**9)
    with pytest.raises(Exception, match="response"):
        store_scores_bulk(engine, stray, "bulk-stray")
    assert len(_stored(engine)) == len(expected)  # nothing of the failed store remains
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_bulk_store_into_empty_table_keeps_awkward_values(tmp_path, any_engine):
    """Into an empty table the bulk store sends only (response, combination code, score) per row: every
    awkward value (missing counts, flags and bands, missing scores with a cut-off flag, -0.0, scores that
    differ in the last bit, text and categorical columns) comes back exactly as the row-by-row store
    stores it, and ids follow the score key order."""
    import numpy as np
    import pandas as pd
    from sqlalchemy import text

    from cohortflow.scoring.engine import score_all
    from cohortflow.scoring.store import store_scores_bulk
    from cohortflow.synth import generate_study
    from cohortflow.warehouse.read import item_values_compact, scoring_context
    from cohortflow.warehouse.scores import store_scores

    manifest = generate_study(tmp_path / "study", factor=0.05, seed=7)
    files = [tmp_path / "study" / f.path for f in manifest.files if f.role == "child"][:2]
    engine = init_warehouse(any_engine)
    study, instruments, sources, key = load_study(), load_instruments(), load_sources(), secrets.token_bytes(32)
    ingest_files(files, engine, sources, study, instruments, key)
    scores = score_all(item_values_compact(engine), scoring_context(engine), instruments, on_unknown="skip")
    rng = np.random.default_rng(1)
    n = len(scores)
    odd = scores.copy()
    odd["n_items"] = pd.array(np.where(rng.random(n) < 0.1, None, odd["n_items"].astype(object)), dtype="Int64")
    odd["n_answered"] = pd.array(np.where(rng.random(n) < 0.1, None, odd["n_answered"].astype(object)), dtype="Int64")
    odd["prorated"] = pd.array(np.where(rng.random(n) < 0.1, None, odd["prorated"].astype(object)), dtype="boolean")
    flags = odd["above_cutoff"].astype("boolean")
    flags[rng.random(n) < 0.2] = True
    odd["above_cutoff"] = flags
    score = odd["score"].to_numpy(dtype=np.float64, na_value=np.nan).copy()
    score[rng.random(n) < 0.1] = np.nan
    score[:5] = [-0.0, 0.1 + 0.2, 1 / 3, np.nextafter(1.0, 2.0), 1e-300]
    odd["score"] = score
    band = odd["band"].astype(object)
    band[rng.random(n) < 0.3] = "ernstig"
    odd["band"] = band.astype("str")
    odd = odd.sample(frac=1.0, random_state=3).reset_index(drop=True)  # rows not in key order
    assert odd["score"].isna().any() and odd["n_items"].isna().any() and odd["prorated"].isna().any()

    store_scores(engine, odd, "row-store")
    expected = _stored(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM score"))
    store_scores_bulk(engine, odd, "bulk-store")
    got = _stored(engine)
    pd.testing.assert_frame_equal(got, expected)
    zero = got[(got["score"] == 0) & np.signbit(got["score"].to_numpy(dtype=np.float64, na_value=np.nan))]
    assert len(zero) == len(expected[(expected["score"] == 0) & np.signbit(
        expected["score"].to_numpy(dtype=np.float64, na_value=np.nan))])
    with engine.connect() as conn:
        by_id = pd.DataFrame(conn.exec_driver_sql(
            "SELECT response_id, instrument, instrument_version, scale FROM score ORDER BY id").all(),
            columns=["response_id", "instrument", "instrument_version", "scale"])
    in_key_order = by_id.sort_values(list(by_id.columns), ignore_index=True)
    pd.testing.assert_frame_equal(by_id, in_key_order)


def test_combination_codes_survive_a_wide_key():
    """`_combinations` numbers rows by their combination of values, renumbering before the packed key
    would overflow 62 bits: rows share a code exactly when all their values agree."""
    import numpy as np
    import pandas as pd

    from cohortflow.scoring.store import _COMBO_COLUMNS, _combinations

    rng = np.random.default_rng(0)
    n = 5000
    typed = {"response_id": pd.Series(np.arange(n))}
    for c in _COMBO_COLUMNS:
        typed[c] = pd.Series(rng.integers(0, 3, n)).astype("Int64").where(rng.random(n) > 0.2)
    extra = [rng.integers(0, 2**20, n) for _ in range(4)]  # 4 x 20 bits: overflows without renumbering
    code, first = _combinations(typed, extra)
    table = pd.DataFrame({c: typed[c] for c in _COMBO_COLUMNS} | {f"x{i}": e for i, e in enumerate(extra)})
    expected = table.astype(object).where(table.notna(), "NA").astype(str).agg("|".join, axis=1)
    assert len(np.unique(code)) == expected.nunique() == len(first)
    # same code <=> same values
    pairs = pd.DataFrame({"code": code, "text": expected})
    assert (pairs.groupby("code")["text"].nunique() == 1).all()
    assert (pairs.groupby("text")["code"].nunique() == 1).all()
    assert (code[first] == np.arange(len(first))).all()
