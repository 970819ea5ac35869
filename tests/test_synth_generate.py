"""cohortflow.synth: determinism, sizes, export layout (Contract 7), identifiers and age rules."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cohortflow.config.study import load_study
from cohortflow.instruments.model import Instrument
from cohortflow.instruments.registry import load_instruments
from cohortflow.synth import generate_study
from cohortflow.synth.config import load_questionnaires
from cohortflow.synth.inspect import read_export, read_study

STUDY = load_study()
INSTRUMENTS = load_instruments()
SMALL_TRUTH = 5000


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    m = generate_study(out, factor=0.1, seed=7, truth_persons_per_arm=SMALL_TRUTH)
    return out, m


@pytest.fixture(scope="module")
def small_data(small):
    out, m = small
    return read_study(out, m)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    return out, generate_study(out, factor=0.03, seed=7, truth_persons_per_arm=SMALL_TRUTH)


def test_same_seed_gives_same_bytes(tmp_path, tiny):
    out, _ = tiny
    again = tmp_path / "again"
    generate_study(again, factor=0.03, seed=7, truth_persons_per_arm=SMALL_TRUTH)
    a, b = _digest(out), _digest(again)
    assert len(a) > 20 and a.keys() == b.keys()
    assert a == b  # .sav, .xlsx and .csv bytes, truth.json and persons.parquet


def test_other_seed_gives_other_data(tmp_path, tiny):
    out, _ = tiny
    other = tmp_path / "other"
    generate_study(other, factor=0.03, seed=8, truth_persons_per_arm=SMALL_TRUTH)
    p1 = pd.read_parquet(out / "truth" / "persons.parquet")
    p2 = pd.read_parquet(other / "truth" / "persons.parquet")
    assert not (len(p1) == len(p2) and p1["birth_date"].equals(p2["birth_date"]))


def test_sizes_scale_with_factor(small, tiny):
    out, m = small
    _, t = tiny
    for arm in STUDY.arms:
        target = arm.target_households or arm.target_respondents
        assert m.households[arm.code] == round(target * 0.1)
        assert t.households[arm.code] == round(target * 0.03)
    persons = pd.read_parquet(out / "truth" / "persons.parquet")
    assert persons.groupby("arm")["gezin_id"].nunique().to_dict() == m.households
    rows_small = sum(f.n_rows for f in m.files)
    rows_tiny = sum(f.n_rows for f in t.files)
    assert 2.4 < rows_small / rows_tiny < 4.2  # 0.1 / 0.03 = 3.3


def test_manifest_json_matches_files(small):
    out, m = small
    data = json.loads((out / "truth" / "manifest.json").read_text())
    assert data["seed"] == 7 and data["factor"] == 0.1
    assert {f["path"] for f in data["files"]} == {p.relative_to(out).as_posix() for p in (out / "inbox").iterdir()}
    for f in m.files:
        assert re.fullmatch(rf"inbox/{f.arm}_{f.site}_{f.wave}_{f.role}\.{f.format}", f.path)
        assert len(read_export(out / f.path, f.format)) == f.n_rows


def _expected_columns(role: str, arm: str) -> list[str]:
    quest = load_questionnaires()
    arm_obj = STUDY.arm(arm)
    ids = ["gezin_id", "resp_id"] + (["kind_id"] if role == "parent" else []) + [
        "naam", "email", "telefoon", "adres", "bsn", "geboortedatum", "geslacht"]
    ids += (["kind_geboortedatum", "kind_geslacht"] if role == "parent" else [])
    ids += ["datum_melding", "datum_invullen", "duur_min"]
    items = []
    for code in quest.instruments_for(arm_obj, role):
        if code in INSTRUMENTS and role in INSTRUMENTS[code].roles:
            items += [f"{code.upper()}_{i.upper()}" for i in INSTRUMENTS[code].item_codes]
    return ids + items


def test_columns_follow_contract_7(small):
    out, m = small
    formats = {f.arm: f.format for f in m.files}
    assert formats == {"proeftuin": "sav", "gi": "xlsx", "vt": "csv", "jongerenpanel": "csv"}
    for f in m.files:
        frame = read_export(out / f.path, f.format)
        assert list(frame.columns) == _expected_columns(f.role, f.arm), f.path
    assert "PSS_18" in _expected_columns("adult", "vt") and "CRIES13_01" in _expected_columns("child", "vt")
    # the youth panel answers CYRM-R only, once
    panel = [f for f in m.files if f.arm == "jongerenpanel"]
    assert {f.wave for f in panel} == {"T0"} and {f.role for f in panel} == {"child"}


def test_sav_labels_and_user_missing(small):
    import pyreadstat

    out, m = small
    f = next(f for f in m.files if f.format == "sav" and f.role == "adult" and f.n_rows > 3)
    frame, meta = pyreadstat.read_sav(str(out / f.path), user_missing=True)
    labels = dict(zip(meta.column_names, meta.column_labels, strict=True))
    assert labels["datum_invullen"] == "Datum invullen"
    assert labels["PSS_03"].startswith("PSS 03")
    pss = INSTRUMENTS["pss"]
    vl = meta.variable_value_labels["PSS_03"]
    assert vl[1.0] == pss.response_scales[0].options[0].label.nl and vl[-9.0] == "niet beantwoord"
    assert meta.variable_value_labels["geslacht"] == {1.0: "man", 2.0: "vrouw"}
    assert sorted(r["lo"] for r in meta.missing_ranges["PSS_03"]) == [-9.0, -7.0]
    assert meta.original_variable_types["datum_invullen"].startswith("DATE")
    # read without user_missing the declared codes become NaN: they really are declared
    plain, _ = pyreadstat.read_sav(str(out / f.path))
    items = [c for c in frame.columns if c.startswith("PSS_")]
    assert (frame[items] < 0).to_numpy().sum() == plain[items].isna().to_numpy().sum() - frame[items].isna().to_numpy().sum()


def test_csv_is_semicolon_decimal_comma_cp1252(small):
    out, m = small
    blobs = [(out / f.path).read_bytes() for f in m.files if f.format == "csv"]
    text = [b.decode("cp1252") for b in blobs]
    assert all(t.splitlines()[0].startswith("gezin_id;resp_id;") for t in text)
    body = "\n".join(t for t in text)
    assert re.search(r";\d+,\d;", body), "duur_min with a decimal comma"
    assert not re.search(r";\d+\.\d+;", body), "no decimal points"
    assert re.search(r";\d{2}-\d{2}-\d{4};", body), "dates dd-mm-yyyy"
    assert not re.search(r"\d{4}-\d{2}-\d{2}", body)
    # some names carry accented letters, encoded as single cp1252 bytes (not UTF-8)
    raw = b"".join(blobs)
    assert any(ch in raw for ch in (b"\xeb", b"\xe9", b"\xd6", b"\xe7", b"\xc7"))
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


def test_xlsx_sheet_data_with_dates(small):
    from openpyxl import load_workbook

    out, m = small
    f = next(f for f in m.files if f.format == "xlsx" and f.n_rows > 0)
    wb = load_workbook(out / f.path, read_only=True)
    assert wb.sheetnames == ["data"]
    ws = wb["data"]
    header = [c.value for c in next(ws.iter_rows(min_row=1, max_row=1))]
    row = [c.value for c in next(ws.iter_rows(min_row=2, max_row=2))]
    rec = dict(zip(header, row, strict=True))
    assert hasattr(rec["datum_invullen"], "year") and isinstance(rec["gezin_id"], str)


def _bsn_ok(bsn: str) -> bool:
    d = [int(c) for c in bsn]
    return len(d) == 9 and (sum((9 - i) * d[i] for i in range(8)) - d[8]) % 11 == 0


def test_identifiers_look_real_but_are_fake(small, small_data):
    out, m = small
    data = small_data
    assert data["bsn"].map(_bsn_ok).all()
    assert data["bsn"].str.startswith("9").all()
    assert data["resp_id"].str.fullmatch(r"G-[A-Z0-9]+-\d{4}-[VK]\d").all()
    assert (data["resp_id"].str.rsplit("-", n=1).str[0] == data["gezin_id"]).all()
    mails = data["email"].dropna()
    mails = mails[mails != ""]
    assert mails.str.endswith("@example.org").all()
    persons = pd.read_parquet(out / "truth" / "persons.parquet")
    hh_size = persons[persons.arm != "jongerenpanel"].groupby("gezin_id")["member"].value_counts().unstack(fill_value=0)
    assert hh_size["adult"].between(1, 2).all() and hh_size["child"].between(1, 4).all()


def _age(birth: pd.Series, at: pd.Series) -> pd.Series:
    before = (at.dt.month < birth.dt.month) | ((at.dt.month == birth.dt.month) & (at.dt.day < birth.dt.day))
    return at.dt.year - birth.dt.year - before.astype(int)


def test_ages_and_windows(small_data):
    data = small_data
    age = _age(data["geboortedatum"], data["datum_invullen"])
    child = data["role"] == "child"
    cohort_child = child & (data["arm"] != "jongerenpanel")
    assert age[cohort_child].between(8, 17).all()
    assert age[data["arm"] == "jongerenpanel"].between(12, 17).all()
    assert (age[data["role"] == "adult"] >= 18).all()
    # CYRM-R starts at age 10: younger children's CYRM-R cells are empty, CRIES-13 cells are not
    young = cohort_child & (age < 10)
    assert young.any()
    assert data.loc[young, "CYRM_R_01"].isna().all() and data.loc[young, "CRIES13_01"].notna().all()
    days = (data["datum_invullen"] - data["datum_melding"]).dt.days
    for w in STUDY.waves:
        lo, hi = w.window_days
        assert days[data["wave"] == w.code].between(lo, hi).all(), w.code
    # waves spread: follow-ups at realistic distance, not one fixed day
    assert days[data["wave"] == "T1"].std() > 10


def test_missing_codes_present(small_data):
    data = small_data
    items = [c for c in data.columns if c.startswith(("PSS_", "CRIES13_", "CYRM_R_"))]
    vals = data[items].to_numpy()
    assert (vals == -9).sum() > 0 and (vals == -7).sum() > 0
    share9 = (vals == -9).sum() / np.isfinite(vals).sum()
    assert 0.003 < share9 < 0.03
    # -7 only on a few items per instrument
    dk_items = [c for c in items if (data[c] == -7).any()]
    assert 0 < len(dk_items) <= 2 * 3


def test_new_instrument_needs_no_code(tmp_path):
    """A parent-report instrument added as data (definition + questionnaire entry) shows up in parent files,
    one row per (parent, child), and in the truth."""
    demo = Instrument.model_validate({
        "code": "demo_parent", "name": "demo parent report", "version": "0", "construct": "child_ptss",
        "label": {"nl": "demo", "en": "demo"}, "roles": ["parent"], "age_range_years": [3, 18],
        "licence": "test", "source": "test",
        "response_scales": [{"code": "f4", "options": [
            {"code": c, "label": {"nl": str(c), "en": str(c)}} for c in range(4)]}],
        "items": [{"code": f"{i:02d}", "label": {"nl": "x", "en": "x"}} for i in range(1, 6)],
        "scales": [{"code": "total", "label": {"nl": "t", "en": "t"}, "items": [f"{i:02d}" for i in range(1, 6)]}],
    })
    insts = dict(INSTRUMENTS, demo_parent=demo)
    shipped = load_questionnaires()
    quest = shipped.model_copy(update={"roles": {**shipped.roles, "parent": ["demo_parent"]}})
    m = generate_study(tmp_path, factor=0.03, seed=3, instruments=insts, questionnaires=quest,
                       truth_persons_per_arm=SMALL_TRUTH)
    parent = [f for f in m.files if f.role == "parent"]
    assert parent and all(f.arm != "jongerenpanel" for f in parent)
    first = read_export(tmp_path / parent[0].path, parent[0].format)
    assert list(first.columns) == (_expected_columns("parent", parent[0].arm)[:15]
                                   + [f"DEMO_PARENT_0{i}" for i in range(1, 6)])
    data = read_study(tmp_path, m)
    p = data[data["role"] == "parent"]
    assert p["DEMO_PARENT_01"].notna().any() and not p.duplicated(["wave", "resp_id", "kind_id"]).any()
    kid_age = _age(p["kind_geboortedatum"], p["datum_invullen"])
    assert kid_age.between(3, 17).all()
    assert (p["kind_id"].str.rsplit("-", n=1).str[0] == p["gezin_id"]).all()
    # typically one parent reports per child
    per_child = p.groupby(["wave", "kind_id"]).size()
    assert (per_child == 1).mean() > 0.8
    truth = json.loads((tmp_path / "truth" / "truth.json").read_text())
    assert "demo_parent.total" in truth["outcomes"]


def test_shipped_parent_questionnaire_names_defined_instruments():
    """Every instrument code of synth/questionnaires.yaml has a shipped definition for that role, so no
    role silently gets no files (the parent role answers the SDQ and the age-specific CATS reports)."""
    quest = load_questionnaires()
    for table in (quest.roles, quest.reference.roles):
        for role, codes in table.items():
            for code in codes:
                assert code in INSTRUMENTS, f"questionnaires.yaml: {role} lists {code!r}, which has no definition"
                assert role in INSTRUMENTS[code].roles, f"{code} is not defined for role {role}"


def test_parent_files_carry_parent_instruments(small):
    """Parent files exist for every cohort arm and carry the SDQ parent items and both CATS caregiver
    versions; each child gets the CATS version of its age (the other one is empty)."""
    out, m = small
    parent = [f for f in m.files if f.role == "parent"]
    arms = {a.code for a in STUDY.arms if a.role != "reference"}
    assert {f.arm for f in parent} == arms
    data = read_study(out, m)
    p = data[data["role"] == "parent"]
    assert len(p) > 0
    cats = {code: [c for c in p.columns if c.startswith(code.upper() + "_")]
            for code in ("cats_caregiver_3_6", "cats_caregiver_7_17", "sdq_parent")}
    assert all(cats.values())
    kid_age = _age(p["kind_geboortedatum"], p["datum_invullen"])
    young = p[cats["cats_caregiver_3_6"]].notna().any(axis=1)
    old = p[cats["cats_caregiver_7_17"]].notna().any(axis=1)
    assert not (young & old).any()
    assert (kid_age[young] < 7).all() and (kid_age[old] >= 7).all()
    assert p[cats["sdq_parent"]].notna().any(axis=1).mean() > 0.9


def test_other_study_design_needs_no_code(tmp_path):
    """A fourth wave and an extra comparison arm come from configuration alone."""
    from cohortflow.config.study import Study

    raw = STUDY.model_dump(by_alias=True)
    raw["waves"].append({"code": "T3", "label": {"nl": "T3", "en": "T3"}, "offset_days": 1100,
                         "window_days": [900, 1300]})
    raw["arms"].append({"code": "extra", "label": {"nl": "x", "en": "x"}, "role": "comparison",
                        "target_households": 100, "sites": [{"code": "EX01"}]})
    study = Study.model_validate(raw)
    m = generate_study(tmp_path, factor=0.04, seed=2, study=study, truth_persons_per_arm=SMALL_TRUTH)
    assert {f.wave for f in m.files if f.arm == "extra"} == {"T0", "T1", "T2", "T3"}
    assert m.households["extra"] == 4
    truth = json.loads((tmp_path / "truth" / "truth.json").read_text())
    dic = truth["outcomes"]["pss.total"]["difference_in_change"]
    assert set(dic) == {"proeftuin_vs_gi", "proeftuin_vs_vt", "proeftuin_vs_extra"}
    assert set(dic["proeftuin_vs_extra"]["waves"]) == {"T1", "T2", "T3"}
    persons = pd.read_parquet(tmp_path / "truth" / "persons.parquet")
    assert "responded_T3" in persons and persons["dropout_wave"].isin(["T1", "T2", "T3"]).any()


def test_persons_truth_matches_the_exports(small, small_data):
    out, _ = small
    persons = pd.read_parquet(out / "truth" / "persons.parquet")
    in_files = set(zip(small_data["resp_id"], small_data["wave"], strict=True))
    in_truth = {(r, w) for w in STUDY.wave_codes for r in persons.loc[persons[f"responded_{w}"], "resp_id"]}
    assert in_files == in_truth
    # sex and birth date in the files are the true ones
    truth = persons.set_index("resp_id")
    sex = small_data["resp_id"].map(truth["sex"].map({"male": 1.0, "female": 2.0}))
    assert (sex == small_data["geslacht"]).all()
    assert (small_data["resp_id"].map(truth["birth_date"]) == small_data["geboortedatum"]).all()
    # nobody answers after the household's dropout wave; baseline respondents all have a T0 theta
    for i, w in enumerate(STUDY.wave_codes[1:], start=1):
        gone = persons["dropout_wave"].isin(STUDY.wave_codes[1: i + 1])
        assert not persons.loc[gone, f"responded_{w}"].any()
    assert persons.filter(like="theta_T0_").notna().all().all()
