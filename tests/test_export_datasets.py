"""Exports: .sav opens with pyreadstat with labels intact and round-trips values exactly; Parquet/CSV too."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyreadstat
import pytest
from test_linkage_core import BASE, PARENT, STUDY, W, clean_study

from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.export import code_maps, export_datasets, read_sav_frame, write_sav
from cohortflow.warehouse.linkage import link_waves, snapshot_hash, wide_frame

INST = load_instruments()


def linked_with_real_outcome():
    """The clean study with its scores renamed to a real instrument's scales (for labels)."""
    inst = next(iter(INST.values()))
    r, s = clean_study().frames()
    s["instrument"] = inst.code
    s["scale"] = s["scale"].map({"total": inst.scales[0].code, "sub": inst.scales[-1].code})
    s.loc[s.index[::7], "score"] = np.nan  # some missing scores
    s["above_cutoff"] = s["above_cutoff"].astype("boolean")
    s.loc[s.index[::5], "above_cutoff"] = pd.NA
    return link_waves(r, s, None, STUDY), inst


def test_sav_round_trip_exact_with_labels(tmp_path):
    ld, inst = linked_with_real_outcome()
    long = ld.long
    path = write_sav(long, tmp_path / "long.sav", STUDY, INST)
    raw, meta = pyreadstat.read_sav(str(path))
    # variable labels from the study/instrument; value labels for the code columns
    labels = dict(zip(meta.column_names, meta.column_labels, strict=True))
    assert labels["arm"] == "Study arm" and labels["baseline_score"].startswith("Score at the baseline")
    arm_labels = meta.variable_value_labels["arm"]
    assert arm_labels[code_maps(STUDY)["arm"][STUDY.cohort_arms[0].code]] == STUDY.cohort_arms[0].label.en
    assert meta.variable_value_labels["wave"][1] == STUDY.waves[0].label.en
    assert meta.variable_value_labels["role"][code_maps(STUDY)["role"][PARENT]] == STUDY.role(PARENT).label.en
    assert meta.variable_value_labels["sex"] == {1: "male", 2: "female"}
    assert set(raw["arm"].dropna()) == {float(code_maps(STUDY)["arm"][STUDY.cohort_arms[0].code])}
    back, _ = read_sav_frame(path, STUDY)
    assert list(back.columns) == list(long.columns)
    for c in long.columns:
        a, b = long[c], back[c]
        if pd.api.types.is_numeric_dtype(a) and not pd.api.types.is_bool_dtype(a) and str(a.dtype) != "boolean":
            np.testing.assert_array_equal(a.astype("Float64").astype(float).to_numpy(), b.astype(float).to_numpy(),
                                          err_msg=c)
        elif pd.api.types.is_datetime64_any_dtype(a):
            assert (pd.to_datetime(a).dt.normalize().to_numpy() == pd.to_datetime(b).to_numpy()).all(), c
        else:
            assert a.astype(object).where(a.notna(), None).tolist() == b.astype(object).where(b.notna(), None).tolist(), c


def test_wide_sav_labels_name_scale_and_wave(tmp_path):
    ld, inst = linked_with_real_outcome()
    wide = wide_frame(ld.long, STUDY)
    path = write_sav(wide, tmp_path / "wide.sav", STUDY, INST, lang="nl")
    _, meta = pyreadstat.read_sav(str(path), metadataonly=True)
    labels = dict(zip(meta.column_names, meta.column_labels, strict=True))
    col = f"{inst.code}_{inst.scales[0].code}_{W[-1]}"
    assert labels[col] == f"{inst.label.nl}: {inst.scales[0].label.nl}, {STUDY.wave(W[-1]).label.nl}"
    back, _ = read_sav_frame(path, STUDY)
    np.testing.assert_array_equal(back[col].to_numpy(), wide[col].astype(float).to_numpy())


def test_export_writes_every_format_codebook_and_snapshot(tmp_path):
    ld, inst = linked_with_real_outcome()
    res = export_datasets(ld, STUDY, INST, tmp_path / "out")
    names = {p.name for p in res.files}
    for n in ("analysis_long", "analysis_wide"):
        assert {f"{n}.parquet", f"{n}.csv", f"{n}.sav"} <= names
    snap = json.loads((tmp_path / "out" / "snapshot.json").read_text())
    back = pd.read_parquet(tmp_path / "out" / "analysis_long.parquet")
    assert snapshot_hash(back) == snap["analysis_long"] == snapshot_hash(ld.long)
    cb = pd.read_csv(tmp_path / "out" / "codebook.csv")
    assert set(cb.loc[cb.dataset == "analysis_long", "variable"]) == set(ld.long.columns)
    assert cb.loc[(cb.dataset == "analysis_long") & (cb.variable == "wave"), "value_labels"].iloc[0].startswith(
        f"1 = {STUDY.waves[0].label.en}")
    csv = pd.read_csv(tmp_path / "out" / "analysis_long.csv")
    assert len(csv) == len(ld.long) and csv["score"].sum() == pytest.approx(ld.long["score"].sum())
    assert (csv.loc[csv.wave == BASE, "days_since_t0"] == STUDY.wave(BASE).offset_days).all()


def test_unknown_code_refused_with_clear_message(tmp_path):
    ld, _ = linked_with_real_outcome()
    bad = ld.long.copy()
    bad["arm"] = bad["arm"].astype(str)  # the long frame's arm is categorical (Contract 5): allow a new value
    bad.loc[0, "arm"] = "nowhere"
    with pytest.raises(ValueError, match="arm.*nowhere.*config/study.yaml"):
        write_sav(bad, tmp_path / "bad.sav", STUDY, INST)
    with pytest.raises(ValueError, match="unknown export format"):
        export_datasets(ld, STUDY, INST, tmp_path / "o", formats=("dta",))
