"""Readers and mapping: CSV dialect detection, SPSS labels and user-missing codes, Stata, REDCap layout,
source matching between versions, and the pseudonymisation key rules."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

import numpy as np
import pandas as pd
import pyreadstat
import pytest
from ingest_exports import build_rows, write_export

from cohortflow.config.loading import ConfigError
from cohortflow.config.sources import load_source_definitions
from cohortflow.ingest.mapping import load_sources, match_source, read_export
from cohortflow.ingest.pseudonymise import (
    PseudonymKeyError,
    get_pseudonym_key,
    pseudonym,
    pseudonymise_series,
)
from cohortflow.ingest.readers import BadFileError
from cohortflow.instruments.registry import load_instruments

INST = load_instruments()
SOURCES = load_sources()


def test_shipped_sources_load_and_match_contract7_names():
    names = {s.name for s in SOURCES}
    assert {"generated_sav", "generated_csv", "generated_xlsx", "redcap_longitudinal"} <= names
    assert match_source("proeftuin_PT03_T1_child.sav", SOURCES).name == "generated_sav"
    assert match_source("gi_GI01_T0_parent.xlsx", SOURCES).name == "generated_xlsx"
    assert match_source("jongerenpanel_PANEL_T0_child.csv", SOURCES).name == "generated_csv"
    assert match_source("redcap_proeftuin_PT03_2025-06-01.csv", SOURCES).name == "redcap_longitudinal"


@pytest.mark.parametrize(("encoding", "bom", "sep", "decimal"), [
    ("cp1252", b"", ";", ","), ("utf-8", b"\xef\xbb\xbf", ";", ","), ("utf-8", b"", ",", "."),
    ("utf-8", b"", "\t", ","),
])
def test_csv_dialect_detected(tmp_path, encoding, bom, sep, decimal):
    df = build_rows(INST, "vt", "VT01", "T0", "adult", 4)
    df["geboortedatum"] = pd.to_datetime(df["geboortedatum"]).dt.strftime("%d-%m-%Y")
    df["datum_melding"] = pd.to_datetime(df["datum_melding"]).dt.strftime("%d-%m-%Y")
    df["datum_invullen"] = pd.to_datetime(df["datum_invullen"]).dt.strftime("%d-%m-%Y")
    path = tmp_path / "vt_VT01_T0_adult.csv"
    path.write_bytes(bom + df.to_csv(sep=sep, decimal=decimal, index=False).encode(encoding))
    src = match_source(path, SOURCES).model_copy(update={"csv": SOURCES[0].csv.model_copy(
        update={"delimiter": "auto", "decimal": "auto", "encoding": "auto"})})
    m = read_export(path, src, INST)
    assert m.meta["dialect"]["delimiter"] == sep
    assert m.meta["dialect"]["decimal"] == decimal
    assert m.meta["dialect"]["encoding"] == ("utf-8-sig" if bom else encoding)
    assert list(m.frame["household_raw"]) == list(df["gezin_id"])  # BOM not glued to the first column
    assert m.frame["pss_01"].tolist() == df["PSS_01"].astype(float).tolist()
    assert m.meta["problems"] == []  # duur_min (decimal) is ignored on purpose, names with accents fine


def test_sav_labels_and_user_missing_reasons(tmp_path):
    df = build_rows(INST, "proeftuin", "PT01", "T0", "adult", 3)
    df.loc[0, "PSS_01"] = -9
    df.loc[1, "PSS_01"] = -7
    df.loc[2, "PSS_01"] = -8  # user-missing in the file but not declared in the source: label gives reason
    path = tmp_path / "proeftuin_PT01_T0_adult.sav"
    out = df.copy()
    for c in ("geboortedatum", "datum_melding", "datum_invullen"):
        out[c] = pd.to_datetime(out[c]).astype("datetime64[ns]")
    pyreadstat.write_sav(out, str(path), column_labels={"PSS_01": "blij in ouderrol", "naam": "Naam"},
                         variable_value_labels={"PSS_01": {-9: "niet beantwoord", -7: "weet niet",
                                                           -8: "Niet van toepassing"}},
                         missing_ranges={"PSS_01": [-9, -8, -7]})
    m = read_export(path, match_source(path, SOURCES), INST)
    assert m.frame["pss_01"].tolist() == [-9.0, -7.0, -8.0]  # codes kept for validation (Contract 1)
    assert m.missing_reasons["pss_01"].tolist() == ["not_answered", "dont_know", "niet_van_toepassing"]
    assert m.meta["variable_labels"]["PSS_01"] == "blij in ouderrol"
    assert "naam" not in m.meta["variable_labels"]  # labels of direct identifiers are not carried
    assert m.meta["value_labels"]["pss_01"][-9.0] == "niet beantwoord"
    assert "naam" not in m.frame.columns and "email" not in m.frame.columns


def test_stata_dta_reader(tmp_path):
    df = build_rows(INST, "vt", "VT01", "T0", "adult", 3)
    path = write_export(df, tmp_path / "stata_vt_VT01_T0.dta")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "stata.yaml").write_text(
        "name: stata_test\nversion: '1'\nfile_pattern: 'stata_*.dta'\nformat: dta\n"
        "arm: {value: vt}\nsite: {value: VT01}\nwave: {value: T0}\nrole: {value: adult}\n"
        "identifiers: {household: gezin_id, person: resp_id}\n"
        "demographics: {response_date: [datum_invullen], subject_birth_date: [geboortedatum], subject_sex: [geslacht]}\n"
        "direct_identifiers: [naam, email, telefoon, adres, bsn, geboortedatum]\n"
        "ignore_columns: [duur_min, datum_melding, kind_*]\nitem_columns: instrument_item_upper\n")
    src = load_source_definitions(tmp_path / "src")[0]
    m = read_export(path, src, INST)
    assert m.frame["pss_18"].tolist() == df["PSS_18"].astype(float).tolist()
    assert m.frame["subject_birth_date"].iloc[0] == pd.Timestamp(df["geboortedatum"].iloc[0])
    assert m.meta["problems"] == []


def _redcap_export(path, n=4):
    rng = np.random.default_rng(3)
    rows = []
    for i in range(n):
        for ev in ("t0_arm_1", "t1_arm_1"):
            r = {"record_id": f"R{i + 1:03d}", "redcap_event_name": ev, "redcap_repeat_instrument": "",
                 "redcap_repeat_instance": "", "family_id": f"F{i + 1:03d}", "first_name": f"Kim{i}",
                 "dob": "2012-05-0" + str(i + 1), "sex": 1 + i % 2, "report_date": "2025-01-10",
                 "survey_date": "2025-02-01" if ev == "t0_arm_1" else "2026-02-01"}
            for k in range(1, 14):
                r[f"cries_{k:02d}"] = int(rng.choice([0, 1, 3, 5]))
            for k in range(1, 18):
                pick = int(rng.integers(1, 6))
                for c in range(1, 6):
                    r[f"cyrm_{k:02d}___{c}"] = int(c == pick)
            r["child_questionnaire_complete"] = 2
            rows.append(r)
    df = pd.DataFrame(rows)
    df["cries_03"] = df["cries_03"].astype(object)
    df.loc[0, "cries_03"] = "UNK"
    df.loc[1, "cyrm_02___2"] = 1  # two boxes ticked for a single choice
    df.loc[2, [f"cyrm_05___{c}" for c in range(1, 6)]] = 0  # none ticked
    df.to_csv(path, index=False, encoding="utf-8-sig")
    return df


def test_redcap_longitudinal_export(tmp_path):
    path = tmp_path / "redcap_proeftuin_PT03_2025-06-01.csv"
    df = _redcap_export(path)
    src = match_source(path, SOURCES)
    m = read_export(path, src, INST)
    f = m.frame
    assert f["wave"].tolist() == ["T0", "T1"] * 4 and set(f["arm"]) == {"proeftuin"} and set(f["site"]) == {"PT03"}
    assert m.meta["file_level"]["wave"] is None  # wave varies per row
    inverse = {0: 0, 1: 1, 3: 2, 5: 3}
    expected = [inverse[v] for v in pd.to_numeric(df["cries_01"])]
    assert f["cries13_01"].tolist() == expected  # REDCap's 0/1/3/5 mapped back to codes 0..3
    assert np.isnan(f.loc[0, "cries13_03"]) and m.missing_reasons.loc[0, "cries13_03"] == "dont_know"
    picked = df[[f"cyrm_01___{c}" for c in range(1, 6)]].to_numpy().argmax(axis=1) + 1
    assert f["cyrm_r_01"].tolist() == picked.astype(float).tolist()
    assert m.missing_reasons.loc[2, "cyrm_r_05"] == "not_answered"
    assert m.row_issues[["row_number", "rule"]].values.tolist() == [[2, "checkbox_several_ticked"]]
    assert "first_name" not in f.columns and m.meta["problems"] == []


def test_new_source_version_chosen_by_columns(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    base = ("file_pattern: 'tool_*.csv'\nformat: csv\narm: {value: vt}\nsite: {value: VT01}\nwave: {value: T0}\n"
            "role: {value: adult}\nitem_columns: explicit\n")
    (d / "tool_v1.yaml").write_text("name: tool\nversion: '1'\n" + base
                                    + "identifiers: {household: gezin, person: resp}\ncolumns: {q1: pss_01}\n")
    (d / "tool_v2.yaml").write_text("name: tool\nversion: '2'\n" + base
                                    + "identifiers: {household: household, person: respondent}\n"
                                      "columns: {item_1: pss_01}\n")
    sources = load_source_definitions(d)
    p1 = tmp_path / "tool_a.csv"
    p1.write_text("gezin;resp;q1\nG1;P1;3\n")
    p2 = tmp_path / "tool_b.csv"
    p2.write_text("household;respondent;item_1\nG1;P1;4\n")
    assert match_source(p1, sources).version == "1"
    assert match_source(p2, sources).version == "2"
    assert read_export(p2, match_source(p2, sources), INST).frame["pss_01"].tolist() == [4.0]
    (d / "tool_dup.yaml").write_text("name: tool\nversion: '2'\n" + base
                                     + "identifiers: {household: h, person: p}\n")
    with pytest.raises(ConfigError, match="already defined"):
        load_source_definitions(d)


def test_bad_source_definition_names_file_and_field(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nversion: '1'\nfile_pattern: x\nformat: sav\n"
                                       "arm: {value: a, column: b}\nsite: {value: s}\nwave: {value: w}\n"
                                       "role: {value: r}\nidentifiers: {household: h, person: p}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: arm: Value error, give exactly one"):
        load_source_definitions(tmp_path)


def test_pseudonym_key_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("COHORTFLOW_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PseudonymKeyError, match="set COHORTFLOW_PSEUDONYM_KEY"):
        get_pseudonym_key()
    key = get_pseudonym_key(tmp_path, allow_generated_key=True)
    kf = tmp_path / ".pseudonym_key"
    assert stat.S_IMODE(os.stat(kf).st_mode) == 0o600 and len(key) == 64
    assert get_pseudonym_key(tmp_path, allow_generated_key=True) == key  # kept, not regenerated
    monkeypatch.setenv("COHORTFLOW_PSEUDONYM_KEY", "short")
    with pytest.raises(PseudonymKeyError, match="at least 16"):
        get_pseudonym_key()
    monkeypatch.setenv("COHORTFLOW_PSEUDONYM_KEY", "a-long-enough-secret-key")
    assert get_pseudonym_key(tmp_path, allow_generated_key=True) == b"a-long-enough-secret-key"


def test_pseudonyms_match_independent_hmac():
    key = b"k" * 32
    ref = hmac.new(key, b"person:G-PT03-0012-K1", hashlib.sha256).hexdigest()
    assert pseudonym(key, "person", " g-pt03-0012-k1 ") == ref
    s = pseudonymise_series(key, "person", pd.Series(["G-PT03-0012-K1", None, "G-PT03-0012-K1"], dtype=object))
    assert s.tolist() == [ref, None, ref]
    assert pseudonym(key, "household", "G-PT03-0012-K1") != ref  # kinds are separated


def test_bad_file_error_is_value_error():
    assert issubclass(BadFileError, ValueError)
