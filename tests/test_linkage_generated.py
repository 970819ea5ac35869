"""On a generated study with injected faults: linkage reproduces the generator's true person/household
structure, the attrition counts match the generator's responses and dropout, conflicts re-injected into the
warehouse responses are each flagged with their rule, and `cohortflow export` writes the datasets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources
from cohortflow.ingest.pseudonymise import pseudonym
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.attrition import (
    attrition_table,
    check_identities,
    person_wave_status,
    read_quarantine,
)
from cohortflow.warehouse.db import get_engine, init_warehouse
from cohortflow.warehouse.linkage import link_warehouse, link_waves
from cohortflow.warehouse.read import batches_frame, responses_frame
from cohortflow.warehouse.scores import scores_frame, store_scores

pytestmark = pytest.mark.slow

KEY = b"linkage-test-key-0123456789abcdef"
STUDY = load_study()
ALL = load_instruments()
# the generator's own scorer handles sum/mean scales only
INST = {k: v for k, v in ALL.items() if all(s.aggregation in ("sum", "mean", "mean_times_n") for s in v.scales)}
FAULTS = ["sex_conflict", "duplicate_row", "date_outside_window"]


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    from cohortflow.scoring import score_all
    from cohortflow.synth import generate_study
    from cohortflow.warehouse.load import ingest_inbox
    from cohortflow.warehouse.read import item_values_frame

    out = tmp_path_factory.mktemp("gen")
    manifest = generate_study(out, factor=0.05, seed=12, faults=FAULTS, instruments=INST, truth_persons_per_arm=200)
    engine = init_warehouse(get_engine(f"sqlite:///{out / 'wh.sqlite'}"))
    reports = ingest_inbox(out / "inbox", engine, load_sources(), STUDY, INST, KEY)
    # a 1-row file whose only row carries a fault is refused whole (counted as refused_file_rows)
    assert {r.status for r in reports} <= {"loaded", "refused"}
    resp = responses_frame(engine)
    ctx = resp.set_index("response_id")[["role", "subject_age_years", "subject_sex"]]
    store_scores(engine, score_all(item_values_frame(engine), ctx, ALL, on_unknown="skip"), "score-test")
    truth = pd.read_parquet(out / "truth" / "persons.parquet")
    yield out, engine, truth, manifest
    engine.dispose()


def test_structure_equals_truth(study_db):
    _, engine, truth, _ = study_db
    ld = link_warehouse(engine, STUDY, ALL)
    answered = truth[truth["waves_responded"] != ""]
    true_home = {pseudonym(KEY, "person", p): pseudonym(KEY, "household", h)
                 for p, h in zip(answered["resp_id"], answered["gezin_id"], strict=True)}
    every_home = {pseudonym(KEY, "person", p): pseudonym(KEY, "household", h)
                  for p, h in zip(truth["resp_id"], truth["gezin_id"], strict=True)}
    q = read_quarantine(engine)
    linked_home = dict(zip(ld.persons["person_id"], ld.persons["household_id"], strict=True))
    informants = set(ld.responses["person_id"])
    # every linked person (informant, or child reported on by a parent) sits in their true household
    assert {p: every_home.get(p) for p in linked_home} == linked_home
    # every responding person is a linked informant or only quarantined; the other linked persons are
    # children reported on by a parent who did not answer themselves
    assert set(true_home) == informants | set(q["person_id"])
    member = dict(zip((pseudonym(KEY, "person", p) for p in truth["resp_id"]), truth["member"], strict=True))
    reported_only = set(linked_home) - informants
    assert reported_only and {member[p] for p in reported_only} == {"child"}
    # arm and site of each household as generated
    true_arm = {pseudonym(KEY, "household", h): a for h, a in zip(truth["gezin_id"], truth["arm"], strict=True)}
    assert all(true_arm[h] == a for h, a in zip(ld.households["household_id"], ld.households["arm"], strict=True))
    # sex as generated (the injected sex conflict is quarantined at ingest; linkage resolves nothing wrongly)
    true_sex = {pseudonym(KEY, "person", p): s for p, s in zip(truth["resp_id"], truth["sex"], strict=True)}
    subj = ld.persons[ld.persons["sex"].notna()]
    assert all(true_sex[p] == s for p, s in zip(subj["person_id"], subj["sex"], strict=True))


def test_attrition_matches_generator_dropout(study_db):
    _, engine, truth, manifest = study_db
    ld = link_warehouse(engine, STUDY, ALL)
    status = person_wave_status(ld.responses, read_quarantine(engine), STUDY)
    table = attrition_table(status, STUDY, batches_frame(engine))
    assert check_identities(table) == []
    # the refused files are exactly the 1-row files whose row carries an injected fault
    refused = batches_frame(engine).query("status == 'refused'")
    n_rows = {f.path.split("/")[-1]: f.n_rows for f in manifest.files}
    assert set(refused["file_name"]) == {f.file.split("/")[-1] for f in manifest.faults
                                         if n_rows[f.file.split("/")[-1]] == 1}
    got = table.groupby(["arm", "wave"])[["responded", "refused_file_rows"]].sum().sum(axis=1)
    # a refused row of an informant who also answered another role's questionnaire in that wave (a parent's
    # report about a child) is counted twice: once as responded, once as a refused row
    from cohortflow.synth.inspect import read_export

    out = study_db[0]
    loaded = set(zip(ld.responses["person_id"], ld.responses["arm"], ld.responses["wave"], strict=True))
    twice: dict[tuple[str, str], int] = {}
    for f in manifest.files:
        if f.path.split("/")[-1] in set(refused["file_name"]):
            for resp_id in read_export(out / f.path, f.format)["resp_id"]:
                if (pseudonym(KEY, "person", resp_id), f.arm, f.wave) in loaded:
                    twice[(f.arm, f.wave)] = twice.get((f.arm, f.wave), 0) + 1
    for arm in truth["arm"].unique():
        for w in STUDY.waves_of(arm):
            expected = int(truth.loc[truth["arm"] == arm, f"responded_{w}"].sum())
            assert got.get((arm, w), 0) - twice.get((arm, w), 0) == expected, (arm, w)
    # nobody of a household that dropped out at wave w responds at w or later
    order = {w: i for i, w in enumerate(STUDY.wave_codes)}
    pid = {pseudonym(KEY, "person", p): d for p, d in zip(truth["resp_id"], truth["dropout_wave"], strict=True)}
    st = status.assign(drop=status["person_id"].map(pid))
    after = st[st["drop"].notna() & (st["wave"].map(order) >= st["drop"].map(order))]
    assert len(after) > 0 and set(after["status"]) == {"not_responded"}
    # each injected window/sex fault is counted under its reason (or with its refused 1-row file)
    refused = set(batches_frame(engine).query("status == 'refused'")["file_name"])
    for kind, col in (("date_outside_window", "quarantined_outside_window"), ("sex_conflict", "quarantined_conflict")):
        faults = [f for f in manifest.faults if f.kind == kind]
        in_quarantine = [f for f in faults if f.file.split("/")[-1] not in refused]
        assert table[col].sum() == len(in_quarantine), kind


def test_reinjected_conflicts_each_flagged(study_db):
    _, engine, _, _ = study_db
    resp = responses_frame(engine).drop(columns=["subject_birth_year"])
    scores = scores_frame(engine)
    clean = link_waves(resp, scores, None, STUDY, ALL)
    assert clean.conflicts.empty
    rng = np.random.default_rng(5)
    base = STUDY.baseline_wave
    follow = resp[resp["wave"] != base]
    later = follow[follow["subject_id"].isin(resp.loc[resp["wave"] == base, "subject_id"])]
    i_sex, i_dup, i_win = rng.choice(later.index, 3, replace=False)
    bad = resp.copy()
    bad.loc[i_sex, "subject_sex"] = {"male": "female", "female": "male"}[bad.loc[i_sex, "subject_sex"]]
    copy = bad.loc[[i_dup]].assign(response_id=bad["response_id"].max() + 1,
                                   response_date=bad.loc[i_dup, "response_date"] + pd.Timedelta(days=9))
    bad = pd.concat([bad, copy], ignore_index=True)
    w = STUDY.wave(bad.loc[i_win, "wave"])
    bad.loc[i_win, "response_date"] = bad.loc[i_win, "registration_date"] + pd.Timedelta(days=w.window_days[1] + 20)
    ld = link_waves(bad, scores, None, STUDY, ALL)
    c = ld.conflicts
    assert set(c["rule"]) <= {"sex_disagrees", "duplicate_response", "outside_window"}
    sex_subj = resp.loc[i_sex, "subject_id"]
    assert sex_subj in set(c.loc[c.rule == "sex_disagrees", "person_id"])
    # closest to the planned day is kept (ties: lower id): the copy is 9 days later than the original
    planned = STUDY.wave(resp.loc[i_dup, "wave"]).offset_days
    d0 = int(resp.loc[i_dup, "days_since_t0"])
    dropped = copy if abs(d0 + 9 - planned) >= abs(d0 - planned) else resp.loc[[i_dup]]
    assert set(c.loc[c.rule == "duplicate_response", "response_id"]) == {int(dropped["response_id"].iloc[0])}
    assert set(c.loc[c.rule == "outside_window", "response_id"]) == {int(resp.loc[i_win, "response_id"])}
    # the structure is unchanged by the conflicts
    assert dict(zip(ld.persons.person_id, ld.persons.household_id, strict=True)) == \
        dict(zip(clean.persons.person_id, clean.persons.household_id, strict=True))


def test_export_command_on_generated_study(study_db, tmp_path):
    import pyreadstat

    from cohortflow.flows.commands_export import app

    out, engine, _, manifest = study_db
    db = engine.url.render_as_string(hide_password=False)
    res = CliRunner().invoke(app, ["--out", str(tmp_path / "ds"), "--database-url", db, "--lang", "nl"])
    assert res.exit_code == 0, res.output
    snap = json.loads((tmp_path / "ds" / "snapshot.json").read_text())
    long = pd.read_parquet(tmp_path / "ds" / "analysis_long.parquet")
    sav, meta = pyreadstat.read_sav(str(tmp_path / "ds" / "analysis_long.sav"))
    assert len(sav) == len(long) and meta.variable_value_labels["wave"][1] == STUDY.waves[0].label.nl
    np.testing.assert_array_equal(sav["score"].to_numpy(), long["score"].to_numpy())
    with engine.connect() as conn:
        from sqlalchemy import text

        runs = conn.execute(text("select data_snapshot from run where kind = 'export'")).scalars().all()
    assert snap["analysis_long"] in runs
    attr = pd.read_csv(tmp_path / "ds" / "attrition.csv")
    assert (attr["eligible"] == attr["responded"] + attr["not_responded"]).all()
    assert len(manifest.faults) == len(FAULTS)
