"""The instrument model: shipped definitions load; bad definitions are refused naming the file and field."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from cohortflow.config.loading import ConfigError, load_model
from cohortflow.instruments.model import Instrument
from cohortflow.instruments.registry import DEFINITIONS_DIR, load_instruments

TEMPLATE = DEFINITIONS_DIR.parent / "templates" / "licensed_instrument.yaml"

SHIPPED = {
    "cries13", "cries8", "cats_caregiver_3_6", "cats_caregiver_7_17", "pcl5", "tsq", "sdq_parent", "sdq_self", "pss",
    "cyrm_r", "kidscreen10", "cantril", "audit", "audit_c", "violence", "safety", "help", "satisfaction", "trust",
    "measures",
}


def test_every_required_definition_ships_with_provenance_on_every_scale():
    insts = load_instruments([DEFINITIONS_DIR])
    assert set(insts) == SHIPPED
    for inst in insts.values():
        assert inst.licence and inst.source and not inst.user_supplied
        for sc in inst.scales:
            assert sc.provenance.source, (inst.code, sc.code)
            for co in sc.cutoffs:
                assert co.provenance.source, (inst.code, sc.code)
        # facts marked [M] (from memory) must not be flagged verified
        for sc in inst.scales:
            if "[M]" in (sc.provenance.source or "") and "[V]" not in (sc.provenance.source or ""):
                assert not sc.provenance.verified, (inst.code, sc.code)


def test_published_facts_are_encoded():
    insts = load_instruments([DEFINITIONS_DIR])
    sdq = insts["sdq_parent"]
    assert [i.code for i in sdq.items if i.reversed] == ["07", "11", "14", "21", "25"]
    assert sdq.scale("peer").items == ["06", "11", "14", "19", "23"]
    assert insts["cries13"].response_scales[0].score_map == {0: 0, 1: 1, 2: 3, 3: 5}
    assert [i.code for i in insts["pss"].items if i.reversed] == ["01", "02", "05", "06", "07", "08", "17", "18"]
    assert [i.code for i in insts["kidscreen10"].items if i.reversed] == ["03", "04"]
    assert insts["audit"].response_scale_of("09").score_map == {0: 0, 1: 2, 2: 4}
    assert [(c.threshold, c.when.sex) for c in insts["audit_c"].scale("total").cutoffs] == [(4, "male"), (3, "female")]
    assert insts["pcl5"].scale("total").reliability.value == 0.82


def _write(tmp_path: Path, data: dict, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return p


def _pss() -> dict:
    return yaml.safe_load((DEFINITIONS_DIR / "pss.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["scales"][0]["items"].append("99"), "scale 'total': unknown item '99'"),
        (lambda d: d["items"][0].update(response="nope"), "item '01': unknown response scale 'nope'"),
        (lambda d: d["scales"][0].update(aggregation="median"), "scales[0].aggregation"),
        (lambda d: d["scales"][0].update(min_answered=19), "min_answered 19 > 18 items"),
        (lambda d: d["items"][1].update(code="01"), "item codes must be unique"),
        (lambda d: d.pop("licence"), "licence: Field required"),
        (lambda d: d["scales"][0].update(bands=[{"code": "b", "bands": [
            {"code": "lo", "label": {"nl": "l", "en": "l"}, "min": 0, "max": 50},
            {"code": "hi", "label": {"nl": "h", "en": "h"}, "min": 50, "max": 90}]}]), "overlap"),
        (lambda d: d.update(classifications=[{"code": "c", "label": {"nl": "c", "en": "c"}, "categories": [
            {"code": "a", "label": {"nl": "a", "en": "a"}, "all_of": [{"scale": "nosuch", "operator": ">=", "value": 1}]},
            {"code": "b", "label": {"nl": "b", "en": "b"}}]}]), "classification 'c': unknown scale 'nosuch'"),
    ],
)
def test_bad_definition_names_file_and_problem(tmp_path: Path, mutate, message: str):
    data = _pss()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_model(Instrument, path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_user_folder_cannot_silently_redefine_a_shipped_instrument(tmp_path: Path, monkeypatch):
    shutil.copy(DEFINITIONS_DIR / "pss.yaml", tmp_path / "pss_copy.yaml")
    monkeypatch.setenv("COHORTFLOW_INSTRUMENT_DIRS", str(tmp_path))
    with pytest.raises(ConfigError, match="already defined"):
        load_instruments()


def test_licensed_template_loads_from_a_user_folder_and_ships_no_keys(tmp_path: Path, monkeypatch):
    shutil.copy(TEMPLATE, tmp_path / "mine.yaml")
    monkeypatch.setenv("COHORTFLOW_INSTRUMENT_DIRS", str(tmp_path))
    insts = load_instruments()
    mine = insts["my_licensed_instrument"]
    assert mine.user_supplied and not mine.provenance.verified
    assert all(i.label.en == "own short description" for i in mine.items)  # placeholders, no wording
    assert set(insts) > SHIPPED
