"""Loading exports: row accounting, skip by SHA-256, supersede, quarantine, duplicates, refusals, privacy.

Runs on SQLite and (when COHORTFLOW_TEST_DATABASE_URL is set) PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

import numpy as np
import pandas as pd
import pytest
from ingest_exports import build_rows, identifier_values, write_export
from sqlalchemy import select, text

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.ingest.outcome import ValidationOutcome
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.db import init_warehouse
from cohortflow.warehouse.dump import canonical_dump
from cohortflow.warehouse.load import ingest_file
from cohortflow.warehouse.models import Base, Batch, QuarantineRow
from cohortflow.warehouse.quarantine import ReleaseError, release_quarantined
from cohortflow.warehouse.read import item_values_frame, responses_frame

KEY = b"test-key-0123456789abcdef"
INST = load_instruments()
STUDY = load_study()
SOURCES = load_sources()


@pytest.fixture
def wh(any_engine):
    return init_warehouse(any_engine)


def ingest(path, engine, validate=None):
    return ingest_file(path, engine, SOURCES, STUDY, INST, KEY, validate=validate)


def n_items(role: str) -> int:
    from ingest_exports import ROLE_ITEMS

    return sum(len(INST[c].items) for c in ROLE_ITEMS[role])


@pytest.mark.parametrize("fmt", ["sav", "csv", "xlsx"])
def test_load_accounts_for_every_row(wh, tmp_path, fmt):
    df = build_rows(INST, "proeftuin", "PT03", "T0", "child", 12)
    df.loc[2, "CRIES13_04"] = -9  # declared missing code
    df.loc[3, "CRIES13_05"] = np.nan  # blank cell
    df.loc[5, "CRIES13_01"] = 7  # not a CRIES code -> quarantine
    path = write_export(df, tmp_path / f"proeftuin_PT03_T0_child.{fmt}")
    rep = ingest(path, wh)
    assert rep.status == "loaded", rep.message
    assert (rep.rows_in, rep.rows_loaded, rep.rows_quarantined, rep.rows_duplicate) == (12, 11, 1, 0)
    assert rep.item_values == 11 * n_items("child")
    with wh.connect() as conn:
        b = conn.execute(select(Batch)).one()
        assert b.rows_in == b.rows_loaded + b.rows_quarantined + b.rows_duplicate
        assert b.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        q = conn.execute(select(QuarantineRow)).one()
    assert q.row_number == 6
    assert q.reasons[0]["rule"] == "code_not_allowed" and q.reasons[0]["column"] == "cries13_01"
    assert q.reasons[0]["value"] == 7
    iv = item_values_frame(wh, "cries13")
    resp = responses_frame(wh)
    assert len(resp) == 11
    r3 = resp.loc[resp["row_number"] == 3, "response_id"].item()
    row = iv[(iv.response_id == r3) & (iv.item == "04")].iloc[0]
    assert pd.isna(row.value) and row.missing_reason == "not_answered"
    r4 = resp.loc[resp["row_number"] == 4, "response_id"].item()
    row = iv[(iv.response_id == r4) & (iv.item == "05")].iloc[0]
    assert pd.isna(row.value) and row.missing_reason == "system_missing"
    r1 = resp.loc[resp["row_number"] == 1, "response_id"].item()
    row = iv[(iv.response_id == r1) & (iv.item == "02")].iloc[0]
    assert row.value == df.loc[0, "CRIES13_02"] and pd.isna(row.missing_reason)


def test_age_sex_and_t0_days_derived_then_dates_dropped(wh, tmp_path):
    df = build_rows(INST, "gi", "GI02", "T1", "parent", 3, wave_days=400)
    df.loc[0, "kind_geboortedatum"] = date(2015, 6, 20)
    df.loc[0, "datum_melding"] = date(2025, 1, 6)
    df.loc[0, "datum_invullen"] = date(2026, 2, 19)
    write_export(df, tmp_path / "gi_GI02_T1_parent.xlsx")
    rep = ingest(tmp_path / "gi_GI02_T1_parent.xlsx", wh)
    assert rep.status == "loaded", rep.message
    r = responses_frame(wh).sort_values("row_number").iloc[0]
    # 2015-06-20 -> 2026-02-19: 10 years 7 months and 30 days -> 127 completed months
    assert r.subject_age_months == 127
    assert r.days_since_t0 == (date(2026, 2, 19) - date(2025, 1, 6)).days
    assert r.subject_sex == ("female" if df.loc[0, "kind_geslacht"] == 2 else "male")
    assert r.subject_birth_year == 2015
    assert r.person_id != r.subject_id  # parent reports on the child


def test_pseudonyms_are_hmac_and_stable_across_waves_and_files(wh, tmp_path):
    t0 = build_rows(INST, "vt", "VT01", "T0", "adult", 4)
    t1 = build_rows(INST, "vt", "VT01", "T1", "adult", 4, seed=2, wave_days=400)
    write_export(t0, tmp_path / "vt_VT01_T0_adult.csv")
    write_export(t1, tmp_path / "vt_VT01_T1_adult.sav")
    for f in ("vt_VT01_T0_adult.csv", "vt_VT01_T1_adult.sav"):
        assert ingest(tmp_path / f, wh).status == "loaded"
    resp = responses_frame(wh)
    expected = hmac.new(KEY, b"person:" + t0.loc[0, "resp_id"].upper().encode(), hashlib.sha256).hexdigest()
    mine = resp[resp.person_id == expected]
    assert sorted(mine.wave) == ["T0", "T1"]
    hh = hmac.new(KEY, b"household:" + t0.loc[0, "gezin_id"].encode(), hashlib.sha256).hexdigest()
    assert set(mine.household_id) == {hh}


def test_same_file_twice_is_skipped_and_changes_nothing(wh, tmp_path):
    p = write_export(build_rows(INST, "proeftuin", "PT01", "T0", "adult", 5), tmp_path / "proeftuin_PT01_T0_adult.sav")
    assert ingest(p, wh).status == "loaded"
    before = canonical_dump(wh)
    again = ingest(p, wh)
    assert again.status == "skipped" and "already loaded" in again.message
    assert canonical_dump(wh) == before


def test_corrected_export_supersedes_earlier_batch(wh, tmp_path):
    df = build_rows(INST, "proeftuin", "PT02", "T0", "adult", 6)
    first = tmp_path / "v1" / "proeftuin_PT02_T0_adult.sav"
    first.parent.mkdir()
    write_export(df, first)
    r1 = ingest(first, wh)
    fixed = df.copy()
    fixed.loc[0, "PSS_01"] = 5 if df.loc[0, "PSS_01"] != 5 else 4
    second = tmp_path / "v2" / "proeftuin_PT02_T0_adult.sav"
    second.parent.mkdir()
    write_export(fixed, second)
    r2 = ingest(second, wh)
    assert r2.status == "loaded" and r2.supersedes == [r1.batch_id]
    assert (r2.rows_loaded, r2.rows_duplicate) == (6, 0)
    current = responses_frame(wh)
    everything = responses_frame(wh, include_superseded=True)
    assert set(current.batch_id) == {r2.batch_id}
    assert len(everything) == 12 and everything[everything.batch_id == r1.batch_id].superseded.all()
    with wh.connect() as conn:
        b1 = conn.execute(select(Batch).where(Batch.id == r1.batch_id)).one()
    assert b1.status == "superseded" and b1.superseded_by == r2.batch_id
    iv = item_values_frame(wh, "pss")
    rid = current.loc[current.row_number == 1, "response_id"].item()
    assert iv[(iv.response_id == rid) & (iv.item == "01")].value.item() == fixed.loc[0, "PSS_01"]
    old = item_values_frame(wh, "pss", include_superseded=True)
    assert len(old) == 2 * len(iv)  # the earlier rows stay


def test_duplicates_within_file_and_against_warehouse(wh, tmp_path):
    df = build_rows(INST, "vt", "VT02", "T0", "adult", 5)
    dup = pd.concat([df, df.iloc[[1]]], ignore_index=True)  # exact duplicate row
    conflict = df.iloc[[2]].copy()
    conflict["PSS_03"] = 1 if df.loc[2, "PSS_03"] != 1 else 2
    dup = pd.concat([dup, conflict], ignore_index=True)  # same person/wave, other answers
    p = write_export(dup, tmp_path / "vt_VT02_T0_adult.csv")
    rep = ingest(p, wh)
    assert (rep.rows_in, rep.rows_loaded, rep.rows_duplicate, rep.rows_quarantined) == (7, 4, 1, 2)
    with wh.connect() as conn:
        rules = {r.row_number: r.reasons[0]["rule"] for r in conn.execute(select(QuarantineRow))}
    assert rules == {3: "conflicting_duplicate", 7: "conflicting_duplicate"}
    # the same answers delivered again in another file (other site file name, same arm/wave) are duplicates
    again = write_export(df.iloc[[0, 1]], tmp_path / "vt_VT02_T0_adult.sav")
    rep2 = ingest(again, wh)
    assert rep2.status == "loaded" and rep2.supersedes  # same scope: supersedes the csv batch
    other = build_rows(INST, "vt", "VT02", "T0", "adult", 5)
    other["datum_invullen"] = other["datum_invullen"]  # same persons, same answers
    p3 = write_export(other.iloc[[0]], tmp_path / "vt_VT02_T0_adult.xlsx")
    rep3 = ingest(p3, wh)
    assert rep3.status == "loaded"


def test_duplicate_of_loaded_row_from_other_scope(wh, tmp_path):
    df = build_rows(INST, "gi", "GI01", "T0", "child", 3)
    assert ingest(write_export(df, tmp_path / "gi_GI01_T0_child.xlsx"), wh).status == "loaded"
    # a re-export under another (mistaken) role-free layout: same persons and answers -> duplicates
    src = tmp_path / "gi_GI01_T0_child.csv"
    write_export(df.iloc[[0, 1]], src)
    # same scope -> supersede, so use a different site spelling via the file name of a second site file
    alt = df.iloc[[0]].copy()
    alt.loc[:, "CRIES13_01"] = (alt["CRIES13_01"] + 1) % 4
    rep = ingest(write_export(pd.concat([df.iloc[[1]], alt]), tmp_path / "gi_GI01_T0_child.sav"), wh)
    assert rep.status == "loaded" and rep.rows_in == 2


def test_refused_files_leave_warehouse_unchanged(wh, tmp_path):
    good = write_export(build_rows(INST, "vt", "VT03", "T0", "adult", 3), tmp_path / "vt_VT03_T0_adult.csv")
    assert ingest(good, wh).status == "loaded"
    before = canonical_dump(wh)
    empty = tmp_path / "vt_VT04_T0_adult.csv"
    empty.write_bytes(b"")
    rep = ingest(empty, wh)
    assert rep.status == "refused" and "vt_VT04_T0_adult.csv" in rep.message and "empty" in rep.message
    after = canonical_dump(wh)
    assert after["response"] == before["response"] and after["item_block"] == before["item_block"]
    assert len(after["batch"]) == len(before["batch"]) + 1  # the refusal is recorded with its message
    # refusing the same file again records nothing new
    assert ingest(empty, wh).status == "refused"
    assert canonical_dump(wh) == after


def test_all_rows_invalid_refuses_file(wh, tmp_path):
    df = build_rows(INST, "proeftuin", "PT04", "T0", "adult", 4)
    df["PSS_01"] = 9
    rep = ingest(write_export(df, tmp_path / "proeftuin_PT04_T0_adult.sav"), wh)
    assert rep.status == "refused"
    assert "all 4 rows are invalid" in rep.message and "code_not_allowed (pss_01): 4 rows" in rep.message
    with wh.connect() as conn:
        assert conn.execute(text("select count(*) from response")).scalar() == 0
        assert conn.execute(text("select count(*) from quarantine_row")).scalar() == 0


def test_unknown_wave_or_site_refused(wh, tmp_path):
    df = build_rows(INST, "proeftuin", "PT99", "T0", "adult", 2)
    rep = ingest(write_export(df, tmp_path / "proeftuin_PT99_T0_adult.sav"), wh)
    assert rep.status == "refused" and "site 'PT99' is not a site of arm 'proeftuin'" in rep.message
    rep = ingest(write_export(df, tmp_path / "jongerenpanel_PANEL_T1_child.csv"), wh)
    assert rep.status == "refused" and "wave 'T1'" in rep.message


def test_validator_outcome_is_applied(wh, tmp_path):
    df = build_rows(INST, "vt", "VT05", "T0", "adult", 4)
    p = write_export(df, tmp_path / "vt_VT05_T0_adult.csv")
    seen = {}

    def validator(mapped):
        seen["cols"] = list(mapped.frame.columns)
        failures = pd.DataFrame([
            {"row_number": 2, "rule": "age_in_range", "column": "subject_birth_date", "value": "1985-03-01",
             "severity": "quarantine"},
            {"row_number": 3, "rule": "date_in_window", "column": "response_date", "value": "x", "severity": "warn"},
        ])
        rules = pd.DataFrame([{"rule": "age_in_range", "severity": "quarantine", "n_checked": 4, "n_failed": 1,
                               "examples": [2]}])
        return ValidationOutcome(file_errors=[], row_failures=failures, rule_results=rules)

    rep = ingest(p, wh, validate=validator)
    assert (rep.rows_loaded, rep.rows_quarantined) == (3, 1)
    assert "naam" not in seen["cols"] and "email" not in seen["cols"] and "subject_birth_date" in seen["cols"]
    with wh.connect() as conn:
        q = conn.execute(select(QuarantineRow)).one()
        rules = {r[0] for r in conn.execute(text("select rule from validation_result"))}
    assert q.reasons == [{"rule": "age_in_range", "column": "subject_birth_date", "value": "<redacted>"}]
    assert {"age_in_range", "date_in_window"} <= rules

    def refuse(mapped):
        return ValidationOutcome(file_errors=[f"{mapped.meta['file_name']}: column X: expected Y. Do Z."])

    p2 = write_export(build_rows(INST, "vt", "VT06", "T0", "adult", 2), tmp_path / "vt_VT06_T0_adult.csv")
    rep2 = ingest(p2, wh, validate=refuse)
    assert rep2.status == "refused" and rep2.message == "vt_VT06_T0_adult.csv: column X: expected Y. Do Z."


def test_release_from_quarantine(wh, tmp_path):
    df = build_rows(INST, "proeftuin", "PT05", "T0", "adult", 3)
    df.loc[1, "PSS_02"] = 8
    rep = ingest(write_export(df, tmp_path / "proeftuin_PT05_T0_adult.sav"), wh)
    assert rep.rows_quarantined == 1
    with wh.connect() as conn:
        qid = conn.execute(select(QuarantineRow.id)).scalar_one()
    with pytest.raises(ReleaseError, match="pss_02 = 8.0 is not one of"):
        release_quarantined(wh, qid, INST)
    rid = release_quarantined(wh, qid, INST, {"pss_02": 3}, note="checked paper form")
    iv = item_values_frame(wh, "pss")
    assert iv[(iv.response_id == rid) & (iv.item == "02")].value.item() == 3
    assert len(iv[iv.response_id == rid]) == 18
    with wh.connect() as conn:
        b = conn.execute(select(Batch)).one()
    assert (b.rows_loaded, b.rows_quarantined) == (3, 0) and b.rows_in == 3
    with pytest.raises(ReleaseError, match="already released"):
        release_quarantined(wh, qid, INST)


def test_no_direct_identifier_value_anywhere_in_warehouse(wh, tmp_path):
    leaks_from = []
    for arm, site, fmt, role in [("proeftuin", "PT06", "sav", "parent"), ("gi", "GI03", "xlsx", "child"),
                                 ("vt", "VT07", "csv", "adult")]:
        df = build_rows(INST, arm, site, "T0", role, 8)
        df.loc[0, "CRIES13_01" if role != "adult" else "PSS_01"] = 9  # one quarantined row too
        leaks_from.append(df)
        assert ingest(write_export(df, tmp_path / f"{arm}_{site}_T0_{role}.{fmt}"), wh).status == "loaded"
    secrets = set().union(*(identifier_values(d) for d in leaks_from))
    found, scanned = [], set()
    with wh.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                values = list(row)
                if table.name == "item_block":
                    # the packed codes are float64 numbers only (no text can be stored in them): scan them
                    # decoded, as the numbers they hold; the reasons JSON and the rest are scanned as text
                    values[3] = np.frombuffer(bytes(values[3]), dtype="<f8").tolist()
                blob = " ".join(str(v) for v in values)
                found += [(table.name, s) for s in secrets if s in blob]
                scanned.add(table.name)
    assert {"item_block", "item_layout", "response", "quarantine_row"} <= scanned
    assert found == []
