"""The scoring engine's contract: input forms, errors that name what is wrong, score_all, fingerprints."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cohortflow.instruments.model import Instrument
from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.engine import (
    SCORE_COLUMNS,
    ScoringError,
    definition_fingerprint,
    score_all,
    score_instrument,
)

INST = load_instruments()


def _long(code: str, responses: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [(rid, item, v) for rid, vals in responses.items() for item, v in vals.items()],
        columns=["response_id", "item", "value"],
    )


def test_contract_columns_and_item_keys_accepted():
    pss = INST["pss"]
    by_code = _long("pss", {7: dict.fromkeys(pss.item_codes, 3)})
    by_key = by_code.assign(item=[pss.item_key(c) for c in by_code["item"]])
    a, b = score_instrument(pss, by_code), score_instrument(pss, by_key)
    assert list(a.columns) == SCORE_COLUMNS
    assert a["score"].tolist() == b["score"].tolist() == [54.0]
    assert (a["instrument"].astype(str) == "pss").all() and (a["instrument_version"].astype(str) == pss.version).all()


def test_items_absent_from_the_long_frame_are_missing():
    pss = INST["pss"]
    vals = dict.fromkeys(pss.item_codes[:16], 3)  # two items never delivered
    out = score_instrument(pss, _long("pss", {1: vals}))
    assert out["n_answered"].iloc[0] == 16 and bool(out["prorated"].iloc[0])
    assert out["score"].iloc[0] == pytest.approx(16 * 3 * 18 / 16)


def test_errors_name_instrument_item_and_value():
    pss = INST["pss"]
    with pytest.raises(ScoringError, match=r"pss.*unknown item.*'99'"):
        score_instrument(pss, _long("pss", {1: {"99": 1}}))
    with pytest.raises(ScoringError, match=r"item .03. has value 7 in 1 response\(s\) \(e.g. response_id 1\); expected \[1, 2, 3, 4, 5\]"):
        score_instrument(pss, _long("pss", {1: {"03": 7}}))
    dup = pd.concat([_long("pss", {1: {"03": 1}})] * 2)
    with pytest.raises(ScoringError, match="given twice"):
        score_instrument(pss, dup)
    ok = score_instrument(pss, _long("pss", {1: {"03": 7}}), on_invalid="missing")
    assert ok["n_answered"].iloc[0] == 0 and np.isnan(ok["score"].iloc[0])


def test_context_aligns_by_response_id_not_by_position():
    cries = INST["cries13"]
    iv = _long("cries13", {10: dict.fromkeys(cries.item_codes, 3), 20: dict.fromkeys(cries.item_codes, 3)})
    ctx = pd.DataFrame({"response_id": [20, 10], "role": ["adult", "child"]})  # no cut-off for role adult
    out = score_instrument(cries, iv, ctx).set_index(["response_id", "scale"])
    assert bool(out.loc[(10, "total"), "above_cutoff"]) is True
    assert pd.isna(out.loc[(20, "total"), "above_cutoff"])


def test_score_all_over_instruments_and_unknown_instruments():
    pss, tsq = INST["pss"], INST["tsq"]
    iv = pd.concat([
        _long("pss", {1: dict.fromkeys(pss.item_codes, 1)}).assign(instrument="pss"),
        _long("tsq", {2: dict.fromkeys(tsq.item_codes, 1)}).assign(instrument="tsq"),
    ])
    out = score_all(iv, None, INST)
    assert set(zip(out["instrument"].astype(str), out["scale"].astype(str), strict=True)) == {
        ("pss", "total"), ("tsq", "reexperiencing"), ("tsq", "arousal"), ("tsq", "total")
    }
    assert out.set_index(["instrument", "scale"]).loc[("pss", "total"), "score"] == 10 * 1 + 8 * 5
    bad = pd.concat([iv, pd.DataFrame({"response_id": [3], "item": ["01"], "value": [1], "instrument": ["obvl"]})])
    with pytest.raises(ScoringError, match=r"no definition for instrument\(s\) \['obvl'\]"):
        score_all(bad, None, INST)
    assert len(score_all(bad, None, INST, on_unknown="skip")) == len(out)


def test_fingerprint_changes_with_any_scored_fact():
    pss = INST["pss"]
    same = Instrument.model_validate(pss.model_dump(by_alias=True))
    assert definition_fingerprint(same) == definition_fingerprint(pss)
    data = pss.model_dump(by_alias=True)
    data["scales"][0]["min_answered"] = 17
    changed = Instrument.model_validate(data)
    assert definition_fingerprint(changed) != definition_fingerprint(pss)
    fps = {definition_fingerprint(i) for i in INST.values()}
    assert len(fps) == len(INST)


def test_item_values_fingerprint_ignores_row_order_but_not_values():
    from cohortflow.scoring.engine import item_values_fingerprint

    iv = _long("pss", {1: {"01": 1, "02": 2}, 2: {"01": 3}})
    assert item_values_fingerprint(iv) == item_values_fingerprint(iv.iloc[::-1])
    changed = iv.copy()
    changed.loc[0, "value"] = 5
    assert item_values_fingerprint(changed) != item_values_fingerprint(iv)


def test_empty_input_gives_empty_contract_frame():
    empty = pd.DataFrame({"response_id": pd.Series(dtype="int64"), "item": pd.Series(dtype="str"), "value": pd.Series(dtype="float")})
    out = score_instrument(INST["pss"], empty)
    assert list(out.columns) == SCORE_COLUMNS and len(out) == 0
    assert len(score_all(empty.assign(instrument=pd.Series(dtype="str")), None, INST)) == 0


def test_mean_of_fewer_items_is_flagged_prorated():
    out = score_instrument(INST["safety"], _long("safety", {1: {"home": 6}, 2: {"home": 6, "family": 8}}))
    mean = out[out["scale"] == "mean"].set_index("response_id")
    assert mean.loc[1, "score"] == 6 and bool(mean.loc[1, "prorated"])
    assert mean.loc[2, "score"] == 7 and not bool(mean.loc[2, "prorated"])


def test_age_dependent_cutoffs_and_bands_use_half_open_age_ranges():
    data = INST["pss"].model_dump(by_alias=True)
    total = data["scales"][0]
    lab = {"nl": "x", "en": "x"}
    total["cutoffs"] = [
        {"threshold": 50, "label": lab, "when": {"min_age_years": 4, "max_age_years": 12}},
        {"threshold": 60, "label": lab, "when": {"min_age_years": 12, "max_age_years": 18}},
    ]
    total["bands"] = [
        {"code": "young", "when": {"max_age_years": 12}, "bands": [
            {"code": "low", "label": lab, "min": 18, "max": 49}, {"code": "high", "label": lab, "min": 50, "max": 90}]},
        {"code": "old", "when": {"min_age_years": 12}, "bands": [
            {"code": "low", "label": lab, "min": 18, "max": 59}, {"code": "high", "label": lab, "min": 60, "max": 90}]},
    ]
    inst = Instrument.model_validate(data)
    plain = [c for c in inst.item_codes if not inst.item(c).reversed]  # 10 plain items, 8 reversed
    # all reversed items coded 5 (score 1 each = 8); plain items coded 5 except some, to make totals 55
    vals = {c: 5 for c in inst.item_codes}
    vals.update({plain[0]: 2})  # 8 + 9 x 5 + 2 = 55
    iv = _long("pss", {1: vals, 2: vals, 3: vals, 4: vals})
    ctx = pd.DataFrame({"subject_age_years": [11.99, 12.0, 17.5, np.nan]}, index=[1, 2, 3, 4])
    out = score_instrument(inst, iv, ctx).set_index("response_id")
    assert out["score"].tolist() == [55.0] * 4
    assert out["above_cutoff"].tolist()[:3] == [True, False, False] and pd.isna(out.loc[4, "above_cutoff"])
    assert out["band"].tolist()[:3] == ["high", "low", "low"] and pd.isna(out.loc[4, "band"])


def test_item_value_without_response_is_refused():
    iv = _long("pss", {1: {"01": 1}}).astype({"response_id": "float"})
    iv.loc[0, "response_id"] = np.nan
    with pytest.raises(ScoringError, match="response_id is empty in 1"):
        score_instrument(INST["pss"], iv)
