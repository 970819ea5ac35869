"""Attrition counts: identities hold at every step, statuses counted by hand, flow diagram written."""

from __future__ import annotations

import json

import pandas as pd
from test_linkage_core import BASE, PARENT, SELF_ADULT, STUDY, W, clean_study, planned

from cohortflow.warehouse.attrition import (
    attrition_by_arm,
    attrition_table,
    baseline_comparison,
    check_identities,
    flow_diagram,
    person_wave_status,
    quarantine_people,
)
from cohortflow.warehouse.linkage import link_waves


def scenario():
    """Three complete households plus: H3 adult drops out after baseline, H4 adult's follow-up is late,
    H5 adult's follow-up is quarantined, H0's adult answers a follow-up twice."""
    b = clean_study()
    fw = W[1]
    b.add("H3", "H3-A", "H3-A", SELF_ADULT, BASE)
    for w in (BASE, fw):
        b.add("H4", "H4-A", "H4-A", SELF_ADULT, w, day=None if w == BASE else STUDY.wave(fw).window_days[1] + 9)
    b.add("H5", "H5-A", "H5-A", SELF_ADULT, BASE)
    b.add("H0", "H0-A", "H0-A", SELF_ADULT, fw, day=planned(fw) + 40, sex="male")
    r, s = b.frames()
    q = pd.DataFrame({"reasons": [json.dumps([{"rule": "out_of_range", "column": "x", "value": 9}])],
                      "payload": [json.dumps({"arm": r.arm[0], "site": r.site[0], "wave": fw, "role": SELF_ADULT,
                                              "household_id": "H5", "person_id": "H5-A", "subject_id": "H5-A"})]})
    return r, s, q


def test_statuses_and_identities():
    r, s, q = scenario()
    ld = link_waves(r, s, None, STUDY)
    st = person_wave_status(ld.responses, quarantine_people(q), STUDY)
    table = attrition_table(st, STUDY)
    assert check_identities(table) == []
    got = st.set_index(["person_id", "wave"])["status"]
    fw = W[1]
    assert got[("H3-A", fw)] == "not_responded"
    assert got[("H4-A", fw)] == "outside_window"
    assert got[("H5-A", fw)] == "quarantined"
    assert got[("H0-A", fw)] == "analysed"  # the duplicate is excluded but the kept response counts
    row = table[table.wave == fw].iloc[0]
    # informants: H0..H2 adults and children (6), H3, H4, H5 adults (3) = 9 known
    assert row.eligible == 9
    assert (row.analysed, row.excluded_outside_window, row.quarantined, row.not_responded) == (6, 1, 1, 1)
    assert row.responded == 8 and row.linked == 7
    assert (row.quarantined_outside_window, row.quarantined_conflict, row.quarantined_other) == (0, 0, 1)
    for w in W[2:]:
        r2 = table[table.wave == w].iloc[0]
        assert (r2.analysed, r2.not_responded) == (6, 3)
    base_row = table[table.wave == BASE].iloc[0]
    assert (base_row.eligible, base_row.analysed) == (9, 9)


def test_identity_check_catches_a_broken_row():
    r, s, q = scenario()
    ld = link_waves(r, s, None, STUDY)
    table = attrition_table(person_wave_status(ld.responses, quarantine_people(q), STUDY), STUDY)
    table.loc[1, "quarantined"] += 1
    assert len(check_identities(table)) == 2  # responded = linked + quarantined, and the quarantine split
    table.loc[1, "quarantined"] -= 1
    table.loc[2, "analysed"] += 1
    assert len(check_identities(table)) == 1


def test_conflict_exclusion_is_counted():
    r, s, q = scenario()
    r.loc[(r.person_id == "H1-A") & (r.subject_id == "H1-C") & (r.wave == BASE), "subject_id"] = "H0-C"
    ld = link_waves(r, s, None, STUDY)
    st = person_wave_status(ld.responses, quarantine_people(q), STUDY)
    # H1-A still analysed at baseline through the self-report: status per person is the best one
    assert st.set_index(["person_id", "wave"]).loc[("H1-A", BASE), "status"] == "analysed"
    table = attrition_table(st, STUDY)
    assert check_identities(table) == []


def test_by_arm_flow_and_baseline_comparison(tmp_path):
    r, s, q = scenario()
    ld = link_waves(r, s, None, STUDY)
    table = attrition_table(person_wave_status(ld.responses, quarantine_people(q), STUDY), STUDY)
    by_arm = attrition_by_arm(table, STUDY)
    assert by_arm.loc[by_arm.wave == BASE, "pct_of_baseline_analysed"].iloc[0] == 100.0
    assert by_arm.loc[by_arm.wave == W[1], "pct_of_baseline_analysed"].iloc[0] == round(100 * 6 / 9, 1)
    assert by_arm["target_households"].iloc[0] == STUDY.cohort_arms[0].target_households
    paths = flow_diagram(by_arm, STUDY, tmp_path / "flow", lang="nl")
    assert [p.suffix for p in paths] == [".png", ".svg"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG"
    svg = paths[1].read_text()
    assert STUDY.cohort_arms[0].label.nl in svg and STUDY.wave(BASE).label.nl in svg
    cmp = baseline_comparison(ld.long, STUDY)
    row = cmp[(cmp.role == SELF_ADULT) & (cmp.outcome == "inst.total")].iloc[0]
    # stayed: H0..H2 adults with scores 10, 11, 12; left: H3, H4 (late follow-up excluded), H5: all 10
    assert (row.n_stayed, row.n_left) == (3, 3)
    assert row.mean_stayed == 11.0 and row.mean_left == 10.0
    assert row.smd == (11.0 - 10.0) / ((2 * 1.0 + 0) / 4) ** 0.5
    assert set(cmp.loc[cmp.role == PARENT, "outcome"]) >= {"age_years", "sex_female", "inst.total"}
