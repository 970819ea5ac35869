"""Packed item storage (item_layout + item_block): every reader gives what the long item_value table gave.

The reference is built independently of the blocks: every call of the loader's item writer is recorded
(response ids, instrument/item per column, codes, missing reasons: exactly what the old loader turned into
item_value rows), turned into long rows the old way (value NULL when the code is NaN or has a missing
reason), put into an old-schema `item_value` table and read with the old queries (`pd.read_sql` ordered by
response and item; `read_compact`). The scenario has missing codes, NaN codes without a reason, non-integer
codes, an item code shared by two instruments, superseded responses and a released quarantine row.
Runs on SQLite and (when COHORTFLOW_TEST_DATABASE_URL is set) PostgreSQL.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from ingest_exports import build_rows, write_export
from sqlalchemy import create_engine, func, insert, select, text

import cohortflow.warehouse.load as load_mod
import cohortflow.warehouse.quarantine as quarantine_mod
from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.engine import item_values_fingerprint, score_all
from cohortflow.warehouse.db import alembic_config, init_warehouse
from cohortflow.warehouse.load import ingest_file
from cohortflow.warehouse.models import QuarantineRow, Response
from cohortflow.warehouse.quarantine import release_quarantined
from cohortflow.warehouse.read import (
    InstrumentItems,
    item_matrices,
    item_values_compact,
    item_values_frame,
    read_compact,
    responses_frame,
    scoring_context,
)

KEY = b"test-key-0123456789abcdef"
INST = load_instruments()
STUDY = load_study()
SOURCES = load_sources()


def _scenario(engine, tmp_path, monkeypatch) -> list[tuple]:
    """Load files, supersede one, release a quarantined row and write one hand-made response; returns the
    long reference rows (response_id, instrument, item, value or None, missing_reason or None)."""
    calls: list[tuple] = []
    original = load_mod._insert_item_values

    def recording(conn, resp_ids, inst, item, codes, reasons):
        calls.append((np.array(resp_ids), list(inst), list(item), np.array(codes, dtype=float),
                      np.array(reasons, dtype=object)))
        return original(conn, resp_ids, inst, item, codes, reasons)

    monkeypatch.setattr(load_mod, "_insert_item_values", recording)
    monkeypatch.setattr(quarantine_mod, "_insert_item_values", recording)

    def ingest(path):
        return ingest_file(path, engine, SOURCES, STUDY, INST, KEY)

    adult = build_rows(INST, "proeftuin", "PT05", "T0", "adult", 4)
    adult.loc[1, "PSS_02"] = 8  # not a code of the item: quarantined
    adult.loc[2, "PSS_03"] = -9  # declared missing code: NaN with reason
    adult.loc[3, "PSS_04"] = np.nan  # empty: NaN without a reason
    assert ingest(write_export(adult, tmp_path / "proeftuin_PT05_T0_adult.sav")).rows_quarantined == 1
    child = build_rows(INST, "gi", "GI03", "T0", "child", 3, seed=2)
    child.loc[0, "CRIES13_01"] = -7
    assert ingest(write_export(child, tmp_path / "gi_GI03_T0_child.csv")).status == "loaded"
    first = build_rows(INST, "vt", "VT02", "T0", "adult", 3, seed=3)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    r1 = ingest(write_export(first, tmp_path / "v1" / "vt_VT02_T0_adult.csv"))
    fixed = first.copy()
    fixed.loc[0, "PSS_01"] = 4 if first.loc[0, "PSS_01"] != 4 else 3
    r2 = ingest(write_export(fixed, tmp_path / "v2" / "vt_VT02_T0_adult.csv"))
    assert r2.supersedes == [r1.batch_id]
    with engine.connect() as conn:
        qid = conn.execute(select(QuarantineRow.id)).scalar_one()
    release_quarantined(engine, qid, INST, {"pss_02": 3})
    # a hand-made response: non-integer and tiny codes, a reason on a coded answer, two instruments sharing
    # the item code "01"
    with engine.begin() as conn:
        src = conn.execute(select(Response).limit(1)).one()
        rid = conn.execute(select(func.max(Response.id))).scalar() + 1
        row = {c.name: getattr(src, c.name) for c in Response.__table__.columns}
        row.update(id=rid, row_number=10_000, superseded=False, released_from=None)
        conn.execute(insert(Response).values(**row))
        load_mod._insert_item_values(
            conn, np.array([rid]), ["pss", "pss", "pss", "pss", "xtra", "xtra"], ["01", "02", "03", "05", "01", "b"],
            np.array([[2.5, np.nan, 9.0, 1e-300, -3.25, 0.0]]),
            np.array([[None, None, "refused", None, None, "dont_know"]], dtype=object))
    rows = []
    for resp_ids, inst, item, codes, reasons in calls:
        for i, r in enumerate(resp_ids.tolist()):
            for j in range(len(inst)):
                why = reasons[i, j]
                why = None if why is None or (isinstance(why, float) and np.isnan(why)) else why
                v = None if why is not None or np.isnan(codes[i, j]) else float(codes[i, j])
                rows.append((int(r), inst[j], item[j], v, why))
    return rows


def _reference_engine(rows: list[tuple], engine):
    """An old-schema SQLite database: response (id, superseded) and item_value holding `rows`."""
    ref = create_engine("sqlite://")
    flags = responses_frame(engine, include_superseded=True)[["response_id", "superseded"]]
    with ref.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE response (id INTEGER PRIMARY KEY, superseded BOOLEAN)")
        conn.exec_driver_sql("CREATE TABLE item_value (response_id INTEGER, instrument VARCHAR(50), item VARCHAR(50),"
                             " value FLOAT, missing_reason VARCHAR(50), PRIMARY KEY (response_id, instrument, item))"
                             " WITHOUT ROWID")
        conn.exec_driver_sql("INSERT INTO response VALUES (?, ?)",
                             [(int(a), bool(b)) for a, b in zip(flags.response_id, flags.superseded, strict=True)])
        conn.exec_driver_sql("INSERT INTO item_value VALUES (?, ?, ?, ?, ?)", rows)
    return ref


def _old_frame(ref, instrument=None, include_superseded=False) -> pd.DataFrame:
    """The old `item_values_frame` query on the reference (ties of the item order broken by instrument)."""
    sql = ("SELECT item_value.response_id, item_value.instrument, item_value.item, item_value.value, "
           "item_value.missing_reason FROM item_value JOIN response ON response.id = item_value.response_id")
    where = []
    if instrument is not None:
        where.append(f"item_value.instrument = '{instrument}'")
    if not include_superseded:
        where.append("response.superseded = 0")
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY item_value.response_id, item_value.item"
    with ref.connect() as conn:
        df = pd.read_sql(text(sql), conn)
    df = df.sort_values(["response_id", "item", "instrument"], kind="stable").reset_index(drop=True)
    df["item_key"] = df["instrument"] + "_" + df["item"]
    return df


@pytest.fixture
def loaded(any_engine, tmp_path, monkeypatch):
    engine = init_warehouse(any_engine)
    rows = _scenario(engine, tmp_path, monkeypatch)
    return engine, rows, _reference_engine(rows, engine)


def test_long_readers_match_the_item_value_table(loaded):
    engine, rows, ref = loaded
    assert len(rows) > 250 and any(r[3] is None and r[4] is None for r in rows)
    assert any(r[4] is not None for r in rows) and any(r[3] == 2.5 for r in rows)
    for inst in (None, "pss", "xtra"):
        for sup in (False, True):
            new = item_values_frame(engine, inst, include_superseded=sup)
            old = _old_frame(ref, inst, include_superseded=sup)
            assert len(new) > 0
            pd.testing.assert_frame_equal(new, old, check_dtype=True)
    assert len(item_values_frame(engine, include_superseded=True)) > len(item_values_frame(engine))
    kinds = {"response_id": "int", "instrument": "cat", "item": "cat", "value": "float"}
    for sup, chunk in ((False, 65_536), (True, 65_536), (False, 7)):  # 7: many sealed chunks per layout
        new = item_values_compact(engine, include_superseded=sup, chunk_rows=chunk)
        old = read_compact(ref, "item_value", kinds)
        if not sup:
            gone = set(responses_frame(engine, include_superseded=True).query("superseded").response_id)
            assert gone
            old = old[~old.response_id.isin(gone)]
        key = ["response_id", "instrument", "item"]
        pd.testing.assert_frame_equal(new.sort_values(key).reset_index(drop=True),
                                      old.sort_values(key).reset_index(drop=True))


def test_wide_reader_is_the_pivot_of_the_long_values(loaded):
    engine, _, ref = loaded
    long = _old_frame(ref)
    blocks = list(item_matrices(engine))
    assert [b.instrument for b in blocks] == sorted(long.instrument.unique())
    for b in blocks:
        part = long[long.instrument == b.instrument]
        assert list(b.response_ids) == sorted(part.response_id.unique())
        assert sorted(b.item_codes) == sorted(part.item.unique())
        wide = part.pivot(index="response_id", columns="item", values="value").reindex(
            index=b.response_ids, columns=b.item_codes)
        np.testing.assert_array_equal(b.values, wide.to_numpy(dtype=float))  # NaN where NaN
        assert b.values.dtype == np.float64
    chunked = list(item_matrices(engine, chunk_rows=5))
    for a, b in zip(blocks, chunked, strict=True):
        assert (a.instrument, a.item_codes) == (b.instrument, b.item_codes)
        np.testing.assert_array_equal(a.response_ids, b.response_ids)
        np.testing.assert_array_equal(a.values, b.values)
    only = list(item_matrices(engine, instrument="pss"))
    assert len(only) == 1 and only[0].instrument == "pss"


def test_scoring_from_wide_blocks_equals_scoring_from_the_long_frame(loaded):
    engine, _, ref = loaded
    ctx = scoring_context(engine)
    wide = score_all(list(item_matrices(engine)), ctx, INST, on_unknown="skip", on_invalid="missing")
    long = score_all(_old_frame(ref), ctx, INST, on_unknown="skip", on_invalid="missing")
    key = ["response_id", "instrument", "scale"]
    assert len(wide) > 20 and wide.score.notna().sum() > 10
    pd.testing.assert_frame_equal(wide.sort_values(key).reset_index(drop=True),
                                  long.sort_values(key).reset_index(drop=True))
    with pytest.raises(Exception, match="xtra"):
        score_all(list(item_matrices(engine)), ctx, INST, on_unknown="raise", on_invalid="missing")


def test_migration_down_and_up_keeps_every_answer(loaded):
    from alembic import command

    engine, rows, ref = loaded
    before = item_values_frame(engine, include_superseded=True)
    cfg = alembic_config(engine)

    def run(step, target):
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)

    run(command.downgrade, "0001")
    with engine.connect() as conn:
        back = sorted(tuple(r) for r in conn.execute(text(
            "SELECT response_id, instrument, item, value, missing_reason FROM item_value")))
        assert "item_block" not in {r for r in conn.dialect.get_table_names(conn)}
    assert back == sorted(rows, key=lambda r: tuple(r[:3]))
    run(command.upgrade, "head")
    pd.testing.assert_frame_equal(item_values_frame(engine, include_superseded=True), before)
    pd.testing.assert_frame_equal(item_values_frame(engine), _old_frame(ref))
    run(command.downgrade, "0001")
    run(command.upgrade, "head")
    pd.testing.assert_frame_equal(item_values_frame(engine, include_superseded=True), before)


def _block(inst, rids, items, values):
    return InstrumentItems(inst, np.array(rids, dtype=np.int64), list(items), np.array(values, dtype=float))


def test_wide_fingerprint_follows_values_not_storage_order():
    a = [_block("p", [1, 2], ["01", "02"], [[1.0, np.nan], [0.0, 3.0]]), _block("q", [1], ["x"], [[2.0]])]
    fp = item_values_fingerprint(a)
    same = [_block("q", [1], ["x"], [[2.0]]),  # other instrument order, item order, row order, -0.0, NaN bits
            _block("p", [2, 1], ["02", "01"], [[3.0, -0.0], [-np.float64(np.nan), 1.0]])]
    assert item_values_fingerprint(same) == fp
    changed = [
        [_block("p", [1, 2], ["01", "02"], [[1.0, np.nan], [0.0, 4.0]]), a[1]],  # a value
        [_block("p", [1, 2], ["01", "02"], [[1.0, 2.0], [0.0, 3.0]]), a[1]],  # NaN -> answer
        [_block("p", [1, 3], ["01", "02"], [[1.0, np.nan], [0.0, 3.0]]), a[1]],  # a response id
        [_block("p", [1, 2], ["01", "03"], [[1.0, np.nan], [0.0, 3.0]]), a[1]],  # an item code
        [a[0], _block("r", [1], ["x"], [[2.0]])],  # an instrument
        [a[0]],  # an instrument's answers gone
    ]
    prints = {item_values_fingerprint(c) for c in changed}
    assert fp not in prints and len(prints) == len(changed)


def test_warehouse_fingerprint_changes_with_the_data_only(any_engine, tmp_path):
    engine = init_warehouse(any_engine)

    def fp():
        return item_values_fingerprint(list(item_matrices(engine)))

    df = build_rows(INST, "vt", "VT05", "T0", "adult", 3)
    df.loc[1, "PSS_02"] = 8
    path = write_export(df, tmp_path / "vt_VT05_T0_adult.csv")
    ingest_file(path, engine, SOURCES, STUDY, INST, KEY)
    first = fp()
    assert ingest_file(path, engine, SOURCES, STUDY, INST, KEY).status == "skipped"
    assert fp() == first
    with engine.connect() as conn:
        qid = conn.execute(select(QuarantineRow.id)).scalar_one()
    release_quarantined(engine, qid, INST, {"pss_02": 3})  # one response more
    assert fp() != first
