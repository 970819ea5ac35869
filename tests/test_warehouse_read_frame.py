"""`read_frame` gives the frame `pd.read_sql` + `pd.to_datetime` gives (values and dtypes), on both backends,
with missing dates, integers and texts, and with none missing."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from sqlalchemy import Boolean, Column, Date, Integer, MetaData, String, Table, insert, select

from cohortflow.warehouse.read import read_frame

ROWS = [
    {"id": 1, "name": "aé", "day": dt.date(2024, 1, 31), "n": 3, "flag": False},
    {"id": 2, "name": None, "day": None, "n": None, "flag": False},
    {"id": 3, "name": "b", "day": dt.date(1999, 12, 1), "n": -7, "flag": True},
    {"id": 4, "name": "b", "day": dt.date(2024, 1, 31), "n": 0, "flag": False},
]


@pytest.mark.parametrize("rows", [ROWS, [r for r in ROWS if r["id"] != 2], ROWS[1:2], []],
                         ids=["with-missing", "none-missing", "all-missing", "empty"])
def test_read_frame_equals_read_sql(any_engine, rows):
    meta = MetaData()
    t = Table("cf_read_frame_test", meta, Column("id", Integer, primary_key=True), Column("name", String(10)),
              Column("day", Date), Column("n", Integer), Column("flag", Boolean))
    meta.drop_all(any_engine)
    meta.create_all(any_engine)
    try:
        with any_engine.begin() as conn:
            if rows:
                conn.execute(insert(t), rows)
        q = select(t.c.id.label("row_id"), t.c.name, t.c.day, t.c.n).where(t.c.flag.is_(False)).order_by(t.c.id)
        with any_engine.connect() as conn:
            want = pd.read_sql(q, conn)
        want["day"] = pd.to_datetime(want["day"])
        got = read_frame(any_engine, q, ("day",))
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        assert list(got.dtypes) == list(want.dtypes)
        assert len(got) == sum(not r["flag"] for r in rows)
    finally:
        meta.drop_all(any_engine)
