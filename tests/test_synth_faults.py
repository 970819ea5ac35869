"""Injected faults are exactly where the manifest says, and nowhere else; faults never change the truth.

The checks below are an independent mini-validator written for this test (not the validation package):
each rule flags rows of the generated exports, and the flagged rows must equal the manifest's records.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from cohortflow.config.study import load_study
from cohortflow.instruments.registry import load_instruments
from cohortflow.synth import FAULTS, generate_study
from cohortflow.synth.faults import FaultError
from cohortflow.synth.inspect import read_export, read_study

STUDY = load_study()
INSTRUMENTS = load_instruments()
ID_PATTERN = r"G-[A-Z0-9]+-\d{4}-[VK]\d+"
FILE_FAULTS = {"truncated_file", "empty_file", "wrong_format"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    clean_dir = tmp_path_factory.mktemp("clean")
    faulty_dir = tmp_path_factory.mktemp("faulty")
    clean = generate_study(clean_dir, factor=0.06, seed=11, truth_persons_per_arm=5000)
    faulty = generate_study(faulty_dir, factor=0.06, seed=11, faults=sorted(FAULTS), truth_persons_per_arm=5000)
    return clean_dir, clean, faulty_dir, faulty


@pytest.fixture(scope="module")
def faulty_data(pair):
    _, _, out, m = pair
    damaged = {f.file for f in m.faults if f.kind in FILE_FAULTS}
    return read_study(out, m, skip=damaged)


def _allowed_codes() -> dict[str, set[float] | tuple[float, float]]:
    """Per item column: the set of allowed codes, or (min, max) for a numeric answer."""
    out: dict[str, set[float] | tuple[float, float]] = {}
    for inst in INSTRUMENTS.values():
        for it in inst.items:
            rs = inst.response_scale_of(it)
            col = f"{inst.code.upper()}_{it.code.upper()}"
            out[col] = tuple(map(float, rs.numeric)) if rs.numeric else {float(c) for c in rs.codes}
    return out


def _flagged(data: pd.DataFrame) -> dict[str, set[tuple[str, int]]]:
    """Rows each rule flags, as (file, row_number)."""
    key = lambda d: set(zip(d["file"], d["row_number"], strict=True))  # noqa: E731
    flags: dict[str, set[tuple[str, int]]] = {}
    content = [c for c in data.columns if c not in ("row_number",)]
    flags["duplicate_row"] = key(data[data.duplicated(content, keep="first")])
    allowed = _allowed_codes()
    bad = pd.Series(False, index=data.index)
    for col, codes in allowed.items():
        if col in data:
            v = data[col]
            ok = v.isin({-9.0, -7.0}) | (v.between(*codes) if isinstance(codes, tuple) else v.isin(codes))
            bad |= v.notna() & ~ok
    flags["out_of_range"] = key(data[bad])
    flags["unknown_id"] = key(data[~data["resp_id"].str.fullmatch(ID_PATTERN)])
    days = (data["datum_invullen"] - data["datum_melding"]).dt.days
    out_win = pd.Series(False, index=data.index)
    for w in STUDY.waves:
        lo, hi = w.window_days
        out_win |= (data["wave"] == w.code) & ~days.between(lo, hi)
    flags["date_outside_window"] = key(data[out_win])
    b, a = data["geboortedatum"], data["datum_invullen"]
    age = a.dt.year - b.dt.year - ((a.dt.month < b.dt.month) | ((a.dt.month == b.dt.month) & (a.dt.day < b.dt.day)))
    too_young = pd.Series(False, index=data.index)
    for r in STUDY.roles:
        if r.informant == "self" and r.min_age_years:
            too_young |= (data["role"] == r.code) & (age < r.min_age_years)
    flags["age_rule"] = key(data[too_young])
    base = data[data["wave"] == STUDY.baseline_wave].drop_duplicates("resp_id").set_index("resp_id")["geslacht"]
    later = data[data["wave"] != STUDY.baseline_wave]
    flags["sex_conflict"] = key(later[later["resp_id"].map(base).notna() & (later["resp_id"].map(base) != later["geslacht"])])
    return flags


def test_every_requested_fault_is_recorded(pair):
    _, _, _, m = pair
    assert sorted(f.kind for f in m.faults) == sorted(FAULTS)
    assert len({f.file for f in m.faults}) == len(m.faults), "each fault has its own file"


def test_row_faults_are_exactly_where_the_manifest_says(pair, faulty_data):
    _, _, _, m = pair
    flags = _flagged(faulty_data)
    for kind, rows in flags.items():
        expected = {(f.file, r) for f in m.faults_of(kind) for r in f.row_numbers}
        assert rows == expected, kind


def test_clean_study_has_no_flags(pair):
    clean_dir, clean, _, _ = pair
    flags = _flagged(read_study(clean_dir, clean))
    assert all(not rows for rows in flags.values()), {k: v for k, v in flags.items() if v}


def test_row_fault_details(pair, faulty_data):
    _, _, out, m = pair
    d = faulty_data.set_index(["file", "row_number"])
    (dup,) = m.faults_of("duplicate_row")
    r = dup.row_numbers[0]
    assert d.loc[(dup.file, r)].equals(d.loc[(dup.file, dup.details["duplicate_of"])])
    (oor,) = m.faults_of("out_of_range")
    assert d.loc[(oor.file, oor.row_numbers[0]), oor.column] == oor.details["value"]
    (uid,) = m.faults_of("unknown_id")
    assert uid.file.split("_")[2] != STUDY.baseline_wave
    assert d.loc[(uid.file, uid.row_numbers[0]), "resp_id"] == uid.details["value"]
    (age,) = m.faults_of("age_rule")
    assert age.details["age_years"] == 6
    (sex,) = m.faults_of("sex_conflict")
    assert d.loc[(sex.file, sex.row_numbers[0]), "geslacht"] != d.loc[
        (sex.details["baseline_file"], sex.details["baseline_row"]), "geslacht"]
    (ren,) = m.faults_of("renamed_column")
    frame = read_export(out / ren.file, ren.file.rsplit(".", 1)[1])
    assert ren.column not in frame.columns and ren.details["renamed_to"] in frame.columns
    assert re.fullmatch(r"[A-Z0-9_]+_\d+", ren.details["renamed_to"])


def test_file_faults(pair):
    import pyreadstat

    _, _, out, m = pair
    (empty,) = m.faults_of("empty_file")
    assert (out / empty.file).stat().st_size == 0
    assert re.fullmatch(r"inbox/[a-z]+_[A-Z0-9]+_T\d_[a-z]+\.(sav|csv|xlsx)", empty.file)
    (wrong,) = m.faults_of("wrong_format")
    assert wrong.file.endswith(".sav")
    with pytest.raises(Exception):  # noqa: B017 - pyreadstat raises its own ReadstatError
        pyreadstat.read_sav(str(out / wrong.file))
    assert (out / wrong.file).read_bytes().decode("cp1252").startswith("gezin_id;resp_id;")
    (trunc,) = m.faults_of("truncated_file")
    raw = (out / trunc.file).read_bytes()
    assert len(raw) == trunc.details["bytes_kept"] < trunc.details["original_size"]
    if trunc.file.endswith(".csv"):
        lines = raw.decode("cp1252").split("\r\n")
        header = lines[0].count(";")
        assert not raw.endswith(b"\r\n") and lines[-1].count(";") < header
        assert len(lines) - 1 == trunc.row_numbers[0] == m.file(trunc.file).n_rows


def test_faults_never_change_the_truth(pair):
    clean_dir, clean, faulty_dir, faulty = pair
    assert (clean_dir / "truth" / "truth.json").read_bytes() == (faulty_dir / "truth" / "truth.json").read_bytes()
    assert pd.read_parquet(clean_dir / "truth" / "persons.parquet").equals(
        pd.read_parquet(faulty_dir / "truth" / "persons.parquet"))
    touched = {f.file for f in faulty.faults} | {f.details.get("baseline_file") for f in faulty.faults}
    for f in clean.files:
        if f.path not in touched:
            assert (clean_dir / f.path).read_bytes() == (faulty_dir / f.path).read_bytes(), f.path


def test_unknown_fault_is_refused(tmp_path):
    with pytest.raises(FaultError, match="known faults"):
        generate_study(tmp_path, factor=0.01, faults=["no_such_fault"], truth_persons_per_arm=5000)
    assert not (tmp_path / "inbox").exists()
