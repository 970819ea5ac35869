"""The loader's SQL helpers on both backends: key look-ups (`select_in`), first-delivery-wins upserts
(`_upsert`), the start of a file's transaction (`_begin_load`) and the transaction-local PostgreSQL settings.

Expected rows are computed in Python from the rows the test itself wrote (not from the helpers), so a wrong
IN list, a lost chunk, a wrong order or an upsert that overwrites would fail.
"""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import insert, text

from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.load import _begin_load, _upsert, flush_commits, select_in
from cohortflow.warehouse.models import Batch, Household, Person


def _batch(conn, i: int, scope: str, status: str = "loaded") -> int:
    return conn.execute(insert(Batch).values(
        file_name=f"f{i}.csv", file_path=f"/x/f{i}.csv", sha256=f"{i:064x}", size_bytes=1, file_format="csv",
        status=status, scope=scope, rows_in=0, rows_loaded=0, rows_quarantined=0, rows_duplicate=0,
        item_values=0)).inserted_primary_key[0]


@pytest.fixture
def warehouse(any_engine):
    """A migrated warehouse with 3 batches, 1,500 households and 1,500 persons (every third without sex)."""
    init_warehouse(any_engine)
    with any_engine.begin() as conn:
        b1 = _batch(conn, 1, "a|s|T0|parent")
        _batch(conn, 2, "a|s|T1|parent")
        _batch(conn, 3, "a|s|T0|parent", status="superseded")
        conn.execute(insert(Household), [dict(household_id=f"h{i:05d}", arm="a", site="s", first_batch_id=b1)
                                         for i in range(1500)])
        conn.execute(insert(Person), [dict(person_id=f"p{i:05d}", household_id=f"h{i:05d}",
                                           sex=None if i % 3 == 0 else "f", birth_year=1980 + i % 20,
                                           first_batch_id=b1) for i in range(1500)])
    return any_engine


def test_select_in_finds_exactly_the_asked_keys_across_chunks(warehouse):
    asked = [f"p{i:05d}" for i in range(0, 1500, 2)] + ["nobody", "p99999"]  # 752 values: 2 chunks of 500
    with warehouse.connect() as conn:
        rows = select_in(conn, "SELECT person_id, sex, birth_year FROM person WHERE person_id IN ({ins})", asked,
                         order="person_id", chunk=500)
        narrowed = select_in(conn, "SELECT person_id FROM person WHERE person_id IN ({ins})", asked,
                             order="person_id", also_in={"sex": ["f"], "birth_year": [1980, 1981]})
    expected = [(f"p{i:05d}", None if i % 3 == 0 else "f", 1980 + i % 20) for i in range(0, 1500, 2)]
    assert sorted(rows) == expected
    assert [r[0] for r in narrowed] == [f"p{i:05d}" for i in range(0, 1500, 2)
                                        if i % 3 != 0 and 1980 + i % 20 in (1980, 1981)]
    with warehouse.connect() as conn:
        assert select_in(conn, "SELECT person_id FROM person WHERE person_id IN ({ins})", []) == []


def test_upsert_inserts_new_keys_and_leaves_known_ones_as_they_were(warehouse):
    with warehouse.begin() as conn:
        b = conn.exec_driver_sql("SELECT max(id) FROM batch").scalar()
        rows = [("h00001", "other-arm", "other-site", date(2024, 1, 2), b),  # known: must stay as it was
                ("h90000", "a", "s", date(2024, 3, 4), b), ("h90001", "a", "s", None, b)]
        _upsert(conn, Household.__table__, ["household_id", "arm", "site", "registration_date", "first_batch_id"],
                rows, "household_id")
        got = conn.exec_driver_sql("SELECT household_id, arm, site, registration_date, first_batch_id FROM household "
                                   "WHERE household_id IN ('h00001', 'h90000', 'h90001') ORDER BY household_id").all()
        n = conn.exec_driver_sql("SELECT count(*) FROM household").scalar()
    as_date = [None if r[3] is None else date.fromisoformat(str(r[3])) for r in got]
    assert [(r[0], r[1], r[2], d, r[4]) for r, d in zip(got, as_date, strict=True)] == [
        ("h00001", "a", "s", None, 1), ("h90000", "a", "s", date(2024, 3, 4), b), ("h90001", "a", "s", None, b)]
    assert n == 1502


def test_begin_load_finds_the_file_and_the_loaded_batches_of_its_scope(warehouse):
    with warehouse.connect() as conn, conn.begin():
        assert _begin_load(conn, f"{2:064x}", "a|s|T0|parent", durable=True) == ((2, "loaded"), [1])
        assert _begin_load(conn, "f" * 64, "a|s|T9|parent", durable=False) == (None, [])


def test_postgresql_settings_stay_inside_the_file_transaction(pg_engine):
    init_warehouse(pg_engine)
    with pg_engine.connect() as conn:
        default_commit = conn.exec_driver_sql("SHOW synchronous_commit").scalar()
        conn.rollback()
        with conn.begin():
            _begin_load(conn, "0" * 64, "x", durable=False)
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
            assert conn.exec_driver_sql("SHOW enable_seqscan").scalar() == "off"
        assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == default_commit
        assert conn.exec_driver_sql("SHOW enable_seqscan").scalar() == "on"
        conn.rollback()
    flush_commits(pg_engine)  # an empty warehouse: nothing to update, must not fail
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM batch")).scalar() == 0


def test_pg_array_literal_round_trips_awkward_values(pg_engine):
    """`pg_array` (the loader's array parameters on PostgreSQL) gives back exactly the values written, for text
    that needs quoting (quotes, backslashes, commas, braces, blanks, the word NULL, non-ASCII, empty), NULLs,
    and the other element types the loader sends (bigint, date, boolean, double with NaN as NULL)."""
    from cohortflow.warehouse.load import pg_array

    texts = ['plain', 'a "quoted" word', 'back\\slash', 'com,ma', '{braces}', ' lead and trail ', 'NULL', 'null',
             '', 'één €', "it's", None, 'tab\there', 'new\nline', '\\"', '"', '\\']
    cases = [("text", texts, texts), ("bigint", [1, -2, None, 2**40], [1, -2, None, 2**40]),
             ("date", [date(2021, 3, 4), None], [date(2021, 3, 4), None]),
             ("boolean", [True, False, None], [True, False, None]),
             ("double precision", [1.5, float("nan"), None, -0.25], [1.5, None, None, -0.25])]
    with pg_engine.connect() as conn:
        for sql_type, values, expected in cases:
            got = conn.exec_driver_sql(f"SELECT %s::{sql_type}[]", (pg_array(values),)).scalar_one()
            assert got == expected, sql_type
