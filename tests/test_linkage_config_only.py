"""A fourth wave (T3 long-term follow-up) and an earlier cohort imported as an extra arm are configuration
only: linkage, attrition and the .sav export take them from the study without code changes."""

from __future__ import annotations

import pandas as pd
import pyreadstat

from cohortflow.config.study import Study, load_study
from cohortflow.warehouse.attrition import (
    attrition_table,
    check_identities,
    person_wave_status,
    quarantine_people,
)
from cohortflow.warehouse.export import read_sav_frame, write_sav
from cohortflow.warehouse.linkage import link_waves


def extended_study() -> Study:
    data = load_study().model_dump()
    last = data["waves"][-1]
    data["waves"].append({"code": "T3", "label": {"nl": "Na vijf jaar (T3)", "en": "Five years (T3)"},
                          "offset_days": 1826, "window_days": [1700, 2000]})
    data["arms"].append({"code": "cohort2016", "label": {"nl": "Eerder cohort 2016", "en": "Earlier cohort 2016"},
                         "role": "comparison", "target_households": 50, "sites": [{"code": "OLD01"}]})
    assert last["offset_days"] < 1826
    return Study.model_validate(data)


def test_new_wave_and_arm_need_no_code():
    study = extended_study()
    role = next(r.code for r in study.roles if r.informant == "self" and r.subject == "adult")
    rows, scores = [], []
    for h in range(4):
        for w in study.waves:
            if h == 3 and w.code == "T3":
                continue  # one household lost before the long-term follow-up
            rid = len(rows) + 1
            reg = pd.Timestamp("2016-03-01")
            rows.append({"response_id": rid, "household_id": f"H{h}", "person_id": f"P{h}", "subject_id": f"P{h}",
                         "role": role, "arm": "cohort2016", "site": "OLD01", "wave": w.code,
                         "response_date": reg + pd.Timedelta(days=w.offset_days), "registration_date": reg,
                         "subject_age_months": 400 + w.offset_days // 31, "subject_sex": "female"})
            scores.append({"response_id": rid, "instrument": "x", "scale": "total", "score": float(h + rid)})
    ld = link_waves(pd.DataFrame(rows), pd.DataFrame(scores), None, study)
    assert ld.conflicts.empty
    t3 = ld.long[ld.long["wave"] == "T3"]
    assert len(t3) == 3 and (t3["days_since_t0"] == 1826).all()
    table = attrition_table(person_wave_status(ld.responses, quarantine_people(pd.DataFrame()), study), study)
    assert check_identities(table) == []
    row = table[(table.arm == "cohort2016") & (table.wave == "T3")].iloc[0]
    assert (row.eligible, row.analysed, row.not_responded) == (4, 3, 1)
    assert list(table.loc[table.arm == "cohort2016", "wave"]) == study.wave_codes


def test_sav_labels_for_new_wave_and_arm(tmp_path):
    study = extended_study()
    long = pd.DataFrame({"arm": ["cohort2016"], "wave": ["T3"], "score": [1.5]})
    path = write_sav(long, tmp_path / "x.sav", study, {})
    _, meta = pyreadstat.read_sav(str(path))
    assert meta.variable_value_labels["wave"][len(study.waves)] == "Five years (T3)"
    assert meta.variable_value_labels["arm"][len(study.arms)] == "Earlier cohort 2016"
    back, _ = read_sav_frame(path, study)
    assert back.loc[0, "arm"] == "cohort2016" and back.loc[0, "wave"] == "T3"
