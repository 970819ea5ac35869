"""Every validation rule made to fail on purpose with generated data: which rows, which severity, which message."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from cohortflow.config.loading import ConfigError
from cohortflow.config.study import load_study
from cohortflow.instruments.model import Instrument
from cohortflow.instruments.registry import load_instruments
from cohortflow.validation import build_suite, resolve_policy, summarise, validate_mapped_file
from cohortflow.validation.sample import categorical_item_columns, inject, item_columns, valid_frame

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="module")
def study():
    return load_study()


@pytest.fixture(scope="module")
def instruments():
    return load_instruments()


def _first_arm_wave(study, later: bool = True):
    arm = study.cohort_arms[0].code
    waves = study.waves_of(arm)
    return arm, waves[1] if later and len(waves) > 1 else waves[0]


def _role(study, informant: str, subject: str) -> str:
    return next(r.code for r in study.roles if r.informant == informant and r.subject == subject)


def _run(frame, study, instruments, source=None, **kw):
    return validate_mapped_file((frame, {"file_name": "test_file.sav"}), study, instruments, source=source, **kw)


def _failing(outcome, rule):
    rf = outcome.row_failures
    return set(rf.loc[rf["rule"] == rule, "row_number"].astype(int))


def _quarantined(outcome):
    rf = outcome.row_failures
    return set(rf.loc[rf["severity"] == "quarantine", "row_number"].astype(int))


# (rule, informant, subject, positions broken, positions expected to fail, text expected in the value)
CASES = [
    ("id_format", "self", "child", [3, 7], [3, 7], "'AAA AA AAAA AAAAAA'"),
    ("study_codes", "self", "child", [5], [5], "is not a site of arm"),
    ("duplicate_key", "self", "child", [9], [9], "as row 9, with different answers"),
    ("wave_window", "self", "adult", [2, 11], [2, 11], "days after T0"),
    ("age_rule", "self", "child", [4], [4], "needs"),
    ("role_consistency", "self", "adult", [6], [6], "self-report row about another person"),
    ("allowed_codes", "self", "child", [0, 12], [0, 12], "99"),
    ("missing_share", "self", "child", [10], [10], "items missing"),
    ("missing_share_high", "self", "adult", [1], [1], "items missing"),
]


@pytest.mark.parametrize(("rule", "informant", "subject", "broken", "expected", "text"), CASES,
                         ids=[c[0] for c in CASES])
def test_rule_fails_on_exactly_the_broken_rows(study, instruments, rule, informant, subject, broken, expected, text):
    arm, wave = _first_arm_wave(study)
    role = _role(study, informant, subject)
    clean = valid_frame(study, instruments, arm, wave, role, n=20, seed=7)
    assert validate_mapped_file((clean, {}), study, instruments).row_failures.empty, "the generated frame must be valid"

    frame = inject(clean, rule, broken, study, instruments)
    out = _run(frame, study, instruments)
    policy = resolve_policy(None)
    expected_rows = {int(clean.loc[p, "row_number"]) for p in expected}
    assert _failing(out, rule) == expected_rows
    rf = out.row_failures[out.row_failures["rule"] == rule]
    sev = policy.of(rule)
    assert set(rf["severity"]) == {"warn" if sev == "warn" else "quarantine"}
    assert all(text in v for v in rf["value"]), rf["value"].tolist()
    # no other rule fires, except the instrument age warning when a subject is made too young
    others = out.row_failures[(out.row_failures["rule"] != rule)
                              & ~((rule == "age_rule") & (out.row_failures["rule"] == "instrument_age_range"))]
    assert others.empty, others.to_dict("records")
    res = out.rule_results.set_index("rule")
    assert res.loc[rule, "n_failed"] == len(expected_rows)
    assert res.loc[rule, "n_checked"] == len(frame)
    assert res.loc[rule, "examples"] and text in res.loc[rule, "examples"][0]
    assert out.file_errors == []


def test_exact_copy_is_a_duplicate_and_the_first_row_stays(study, instruments):
    arm, wave = _first_arm_wave(study)
    clean = valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=6, seed=3)
    frame = pd.concat([clean.iloc[:3], clean.iloc[[2]], clean.iloc[3:]], ignore_index=True)
    frame["row_number"] = range(1, len(frame) + 1)
    out = _run(frame, study, instruments)
    assert _failing(out, "duplicate_key") == {4}
    assert out.row_failures["value"].tolist() == ["exact copy of row 3"]


def test_incomplete_instrument_refuses_the_file_with_the_closest_column(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=4)
    col = item_columns(frame, instruments)[2]
    meta = {"file_name": "t.sav", "problems": [{"kind": "missing_column", "column": col.upper(), "closest": "X_3"}]}
    out = validate_mapped_file((frame.drop(columns=[col]), meta), study, instruments)
    assert len(out.file_errors) == 1
    assert f"missing {col} (closest column in the file: 'X_3')" in out.file_errors[0]
    warn = validate_mapped_file((frame.drop(columns=[col]), meta), study, instruments,
                                source={"name": "q", "version": "1", "validation": {"item_columns_incomplete": "warn"}})
    assert warn.file_errors == [] and warn.rule_results.set_index("rule").loc["item_columns_incomplete", "n_failed"] == 1


def test_id_pattern_may_require_the_household_prefix(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=5)
    frame.loc[1, "person_raw"] = frame.loc[1, "subject_raw"] = "H-OTHER-0001-P1"
    src = {"name": "p", "version": "1", "validation": {"id_patterns": {"person_raw": "^{household_raw}-P[0-9]+$"}}}
    out = _run(frame, study, instruments, source=src)
    assert _failing(out, "id_format") == {2}
    assert set(out.row_failures["column"]) == {"person_raw"}
    assert out.row_failures["value"].iloc[0] == "'A-AAAAA-9999-A9'"


def test_generated_household_ids_may_number_past_9999():
    """The generated sources' household pattern (G-<site>-<number>, at least four digits): a site with more
    than 9,999 households (factor 100) is valid, a short or missing number is not."""
    import re

    pattern = resolve_policy({"name": "generated_csv", "version": "1"}).id_patterns["household_raw"]
    assert re.fullmatch(pattern, "G-PT03-0012") and re.fullmatch(pattern, "G-PT03-12345")
    assert not re.fullmatch(pattern, "G-PT03-012") and not re.fullmatch(pattern, "G-PT03")


def test_role_consistency_instrument_not_for_role(study, instruments):
    arm, wave = _first_arm_wave(study)
    child, adult = _role(study, "self", "child"), _role(study, "self", "adult")
    frame = valid_frame(study, instruments, arm, wave, child, n=10, seed=3)
    adult_inst = next(i for i in instruments.values() if adult in i.roles and child not in i.roles)
    for item in adult_inst.items:
        frame[adult_inst.item_key(item.code)] = np.nan
    frame.loc[4, adult_inst.item_key(adult_inst.items[0].code)] = float(adult_inst.response_scales[0].codes[0])
    out = _run(frame, study, instruments)
    assert _failing(out, "role_consistency") == {5}
    value = out.row_failures.loc[out.row_failures["rule"] == "role_consistency", "value"].iloc[0]
    assert f"answered {adult_inst.code}" in value and adult in value


def test_parent_report_about_the_informant_fails(study, instruments):
    arm, wave = _first_arm_wave(study)
    parent = _role(study, "parent", "child")
    frame = inject(valid_frame(study, instruments, arm, wave, parent, n=8, seed=2), "role_consistency", [2],
                   study, instruments)
    out = _run(frame, study, instruments)
    assert _failing(out, "role_consistency") == {3}
    assert "parent-report row about the informant" in out.row_failures["value"].iloc[0]


def test_parent_report_age_rule_uses_the_child_at_the_wave_date(study, instruments):
    """Parent report from 3: a child 2 years and 364 days old at the response date fails, 3 years passes."""
    arm, wave = _first_arm_wave(study)
    parent = _role(study, "parent", "child")
    frame = valid_frame(study, instruments, arm, wave, parent, n=4, seed=5)
    min_age = int(study.role(parent).min_age_years)
    resp = frame["response_date"]
    frame.loc[0, "subject_birth_date"] = resp[0] - pd.DateOffset(years=min_age) + pd.Timedelta(days=1)
    frame.loc[1, "subject_birth_date"] = resp[1] - pd.DateOffset(years=min_age)
    out = _run(frame, study, instruments)
    assert _failing(out, "age_rule") == {1}
    assert f"subject aged {min_age - 1}" in out.row_failures["value"].iloc[0]


def test_sex_conflict_with_an_earlier_wave_fails_only_the_new_row(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, instruments, arm, wave, _role(study, "self", "adult"), n=6, seed=4)
    frame["subject_id"] = [f"pseudo{i}" for i in range(6)]
    by = pd.to_datetime(frame["subject_birth_date"]).dt.year
    history = pd.DataFrame({"pseudonym": frame["subject_id"], "sex": frame["subject_sex"], "birth_year": by})
    history.loc[2, "sex"] = "female" if frame.loc[2, "subject_sex"] == "male" else "male"
    history.loc[4, "birth_year"] = by[4] - 3
    out = _run(frame, study, instruments, history=history)
    assert _failing(out, "sex_birth_year_consistency") == {3, 5}
    values = out.row_failures.set_index("row_number")["value"]
    assert "earlier wave" in values[3] and "sex" in values[3]
    assert f"birth_year {by[4]} differs from {by[4] - 3}" in values[5]
    assert set(out.row_failures["severity"]) == {"quarantine"}


def test_sex_conflict_within_a_file_majority_and_tie(study, instruments):
    arm, wave = _first_arm_wave(study)
    parent = _role(study, "parent", "child")
    frame = valid_frame(study, instruments, arm, wave, parent, n=6, seed=8)
    # rows 0,1,2: three informants about the same child, row 2 gives the other sex (majority rule)
    # rows 3,4: two informants about one child, disagreeing (no majority: both fail)
    for r, src in ((1, 0), (2, 0), (4, 3)):
        frame.loc[r, ["household_raw", "subject_raw", "subject_birth_date", "subject_sex"]] = \
            frame.loc[src, ["household_raw", "subject_raw", "subject_birth_date", "subject_sex"]].to_numpy()
        frame.loc[r, "person_raw"] = f"{frame.loc[src, 'household_raw']}-P{r + 2}"
    flip = {"male": "female", "female": "male"}
    frame.loc[2, "subject_sex"] = flip[frame.loc[0, "subject_sex"]]
    frame.loc[4, "subject_sex"] = flip[frame.loc[3, "subject_sex"]]
    out = _run(frame, study, instruments)
    assert _failing(out, "sex_birth_year_consistency") == {3, 4, 5}


def test_numeric_range_and_instrument_age_range(study, instruments):
    child = _role(study, "self", "child")
    lo = study.role(child).min_age_years
    custom = Instrument.model_validate({
        "code": "ladder", "name": "test ladder", "version": "t1", "construct": "wellbeing",
        "label": {"nl": "ladder", "en": "ladder"}, "roles": [child], "age_range_years": [lo + 4, 18],
        "licence": "test", "source": "test",
        "response_scales": [{"code": "n", "numeric": [0, 10]}],
        "items": [{"code": "now", "label": {"nl": "nu", "en": "now"}}],
    })
    insts = {"ladder": custom}
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, insts, arm, wave, child, n=10, seed=9)
    frame.loc[1, "ladder_now"] = 11.0  # above the range
    frame.loc[2, "ladder_now"] = 4.5  # not an integer
    frame.loc[3, "ladder_now"] = -9.0  # a missing code: fine
    frame.loc[5, "subject_birth_date"] = frame.loc[5, "response_date"] - pd.DateOffset(years=int(lo + 1))
    out = _run(frame, study, insts)
    assert _failing(out, "numeric_range") == {2, 3}
    assert _failing(out, "instrument_age_range") == {6}
    assert set(out.row_failures.loc[out.row_failures["rule"] == "instrument_age_range", "severity"]) == {"warn"}
    assert "answered ladder" in out.row_failures.set_index("row_number").loc[6, "value"]


def test_missing_codes_declared_by_the_file_count_as_missing_not_invalid(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=5, seed=1)
    col = categorical_item_columns(frame, instruments)[0]  # -3 on a numeric item would be a numeric_range failure
    frame.loc[0, col] = -3.0
    meta = {"file_name": "x.sav", "missing_codes": {col: {-3.0: "refused"}}}
    assert validate_mapped_file((frame, meta), study, instruments).row_failures.empty
    assert _failing(_run(frame, study, instruments), "allowed_codes") == {1}


# --- severities and overrides -----------------------------------------------------------------------

def test_source_override_turns_quarantine_into_warning_or_refusal(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = inject(valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=10, seed=2),
                   "allowed_codes", [3], study, instruments)
    warn = _run(frame, study, instruments, source={"name": "s", "version": "w",
                                                   "validation": {"severity": {"allowed_codes": "warn"}}})
    assert set(warn.row_failures["severity"]) == {"warn"} and warn.file_errors == []
    refuse = _run(frame, study, instruments, source={"name": "s", "version": "r",
                                                     "validation": {"allowed_codes": "refuse"}})
    assert len(refuse.file_errors) == 1
    assert "test_file.sav" in refuse.file_errors[0] and "allowed_codes" in refuse.file_errors[0]
    assert "row 4" in refuse.file_errors[0]


def test_threshold_override(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = inject(valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=10, seed=2),
                   "missing_share", [3], study, instruments)
    src = {"name": "s", "version": "t", "validation": {"thresholds": {"missing_share_high": 0.5}}}
    out = _run(frame, study, instruments, source=src)
    assert _failing(out, "missing_share_high") == {4} and _failing(out, "missing_share") == set()


@pytest.mark.parametrize(("override", "fragment"), [
    ({"severity": {"no_such_rule": "warn"}}, "unknown rule 'no_such_rule'"),
    ({"severity": {"allowed_codes": "ignore"}}, "use one of"),
    ({"thresholds": {"missing_share_warn": 2}}, "must lie in [0, 1]"),
])
def test_bad_overrides_name_the_source_and_the_problem(override, fragment):
    with pytest.raises(ConfigError) as exc:
        resolve_policy({"name": "mysource", "version": "3", "validation": override})
    assert "mysource v3" in str(exc.value) and fragment in str(exc.value)


# --- file-level refusals ----------------------------------------------------------------------------

def test_missing_required_column_refuses_the_file(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=5).drop(
        columns=["registration_date"])
    out = _run(frame, study, instruments)
    assert len(out.file_errors) == 1
    msg = out.file_errors[0]
    assert "test_file.sav" in msg and "registration_date" in msg and "source definition" in msg
    assert out.rule_results.set_index("rule").loc["required_columns", "severity"] == "refuse"


def test_empty_id_column_and_no_rows_refuse(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=5)
    frame["person_raw"] = None
    out = _run(frame, study, instruments)
    assert any("person_raw" in e and "hold no value" in e for e in out.file_errors)
    out = _run(frame.iloc[0:0], study, instruments)
    assert out.file_errors and "no data rows" in out.file_errors[0]


def test_a_file_where_every_row_fails_is_refused(study, instruments):
    arm, wave = _first_arm_wave(study)
    clean = valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=6)
    frame = inject(clean, "wave_window", list(range(6)), study, instruments)
    out = _run(frame, study, instruments)
    assert len(out.file_errors) == 1
    assert "all 6 rows fail" in out.file_errors[0] and "wave_window" in out.file_errors[0]
    # one good row left: the file is loaded, five rows quarantined
    partial = inject(clean, "wave_window", list(range(5)), study, instruments)
    out = _run(partial, study, instruments)
    assert out.file_errors == [] and _quarantined(out) == {1, 2, 3, 4, 5}
    # a two-row file whose rows both fail is no sign of a wrong file: its rows are quarantined
    small = inject(clean.iloc[:2].copy(), "wave_window", [0, 1], study, instruments)
    out = _run(small, study, instruments)
    assert out.file_errors == [] and _quarantined(out) == {1, 2}


# --- suites and summaries ---------------------------------------------------------------------------

def test_suite_is_built_once_per_source_version(study, instruments):
    a = build_suite({"name": "s", "version": "1"}, study, instruments)
    assert build_suite({"name": "s", "version": "1"}, study, instruments) is a
    b = build_suite({"name": "s", "version": "2"}, study, instruments)
    assert b is not a and b.name != a.name
    assert "required_columns" in a.rules and "allowed_codes" in a.rules
    notes = {e.rule: e.notes for e in a.expectations}
    some = next(iter(instruments.values()))
    assert f"{some.code}:" in notes["allowed_codes"]
    for w in study.waves:
        assert f"{w.code}: {w.window_days[0]}..{w.window_days[1]}" in notes["wave_window"]


def test_summary_reads_well_and_hides_identifiers(study, instruments):
    arm, wave = _first_arm_wave(study)
    clean = valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=12, seed=3)
    frame = inject(inject(clean, "id_format", [2], study, instruments), "allowed_codes", [5, 6], study, instruments)
    out = _run(frame, study, instruments)
    text = summarise(out, "export_T1.sav")
    assert text.splitlines()[0] == "Validation of export_T1.sav: loaded with 3 row(s) in quarantine"
    assert "allowed_codes" in text and "row 6" in text and "e.g." in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("allowed_codes"))
    assert line.split()[-2:] == ["12", "2"]
    assert "other rule(s) passed" in text and "wave_window" in text.splitlines()[-1]
    for raw in frame["household_raw"].tolist() + frame["person_raw"].tolist():
        assert raw not in text
    refused = _run(frame.drop(columns=["wave"]), study, instruments)
    assert "REFUSED" in summarise(refused, "x.sav")


def test_history_without_pseudonyms_is_a_clear_error(study, instruments):
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, instruments, arm, wave, _role(study, "self", "adult"), n=3)
    history = pd.DataFrame({"pseudonym": ["x"], "sex": ["male"], "birth_year": [1980]})
    with pytest.raises(ValueError, match="pass key="):
        _run(frame, study, instruments, history=history)


def test_validation_from_several_threads_gives_the_sequential_outcomes(study, instruments):
    from concurrent.futures import ThreadPoolExecutor

    arm, wave = _first_arm_wave(study)
    frames = [inject(valid_frame(study, instruments, arm, wave, _role(study, "self", "child"), n=10, seed=s),
                     "allowed_codes", [s], study, instruments) for s in range(4)]
    sequential = [_failing(_run(f, study, instruments), "allowed_codes") for f in frames]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda f: _failing(_run(f, study, instruments), "allowed_codes"), frames))
    assert parallel == sequential == [{1}, {2}, {3}, {4}]


# --- the generator across every role of the study -------------------------------------------------------

def _ladder(code: str, roles: list[str], ages: list[float], n_items: int = 1) -> Instrument:
    return Instrument.model_validate({
        "code": code, "name": code, "version": "t1", "construct": "wellbeing",
        "label": {"nl": code, "en": code}, "roles": roles, "age_range_years": ages,
        "licence": "test", "source": "test",
        "response_scales": [{"code": "c", "options": [{"code": 0, "label": {"nl": "nee", "en": "no"}},
                                                       {"code": 1, "label": {"nl": "ja", "en": "yes"}}]}],
        "items": [{"code": f"i{k}", "label": {"nl": "x", "en": "x"}} for k in range(1, n_items + 1)],
    })


def test_generator_handles_instruments_whose_age_ranges_do_not_overlap(study, instruments):
    """Versions for younger (3..7) and older (7..18) children plus two from 8: no age suits all four, so the
    frame carries the three that share ages 8..18 and every subject is 8..18 years old."""
    parent = _role(study, "parent", "child")
    lo = int(study.role(parent).min_age_years)
    insts = {"young": _ladder("young", [parent], [lo, 7]), "old": _ladder("old", [parent], [7, 18]),
             "a": _ladder("a", [parent], [8, 18]), "b": _ladder("b", [parent], [8, 19])}
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, insts, arm, wave, parent, n=40, seed=11)
    assert "young_i1" not in frame.columns and {"old_i1", "a_i1", "b_i1"} <= set(frame.columns)
    from cohortflow.validation.checks import completed_years
    ages = completed_years(frame["subject_birth_date"], frame["response_date"])
    assert ages.between(8, 18).all() and ages.nunique() > 3
    assert _run(frame, study, insts).row_failures.empty


@pytest.mark.parametrize("rule", ["allowed_codes", "missing_share", "missing_share_high"])
def test_every_role_gives_a_valid_frame_and_its_faults_fail_exactly(study, instruments, rule):
    arm, wave = _first_arm_wave(study)
    policy = resolve_policy(None)
    for role in (r.code for r in study.roles):
        clean = valid_frame(study, instruments, arm, wave, role, n=12, seed=13)
        carried = {i.code for i in instruments.values() if item_columns(clean, instruments, i.code)}
        assert carried and carried <= {i.code for i in instruments.values() if role in i.roles}, role
        assert _run(clean, study, instruments).row_failures.empty, role
        out = _run(inject(clean, rule, [1, 8], study, instruments), study, instruments)
        assert _failing(out, rule) == {2, 9}, role
        assert set(out.row_failures["rule"]) == {rule}, (role, out.row_failures.to_dict("records"))
        assert set(out.row_failures["severity"]) == {"warn" if policy.of(rule) == "warn" else "quarantine"}


def test_instrument_age_range_upper_bound_is_exclusive(study, instruments):
    """An instrument for ages [a, b) (e.g. CATS 3-6 declared as [3, 7]) is for subjects under b: a subject who
    has turned b must not answer it (flagged) and is not expected to (no missing-share failure), as the
    generator and the scoring conditions read the range."""
    child = _role(study, "self", "child")
    lo = study.role(child).min_age_years
    hi = lo + 4
    custom = Instrument.model_validate({
        "code": "rung", "name": "test ladder", "version": "t1", "construct": "wellbeing",
        "label": {"nl": "sport", "en": "rung"}, "roles": [child], "age_range_years": [lo, hi],
        "licence": "test", "source": "test",
        "response_scales": [{"code": "n", "numeric": [0, 10]}],
        "items": [{"code": "now", "label": {"nl": "nu", "en": "now"}},
                  {"code": "then", "label": {"nl": "toen", "en": "then"}}],
    })
    insts = {"rung": custom}  # own code: validation suites are cached per instrument set
    arm, wave = _first_arm_wave(study)
    frame = valid_frame(study, insts, arm, wave, child, n=10, seed=9)
    frame["subject_birth_date"] = frame["response_date"] - pd.DateOffset(years=int(lo), days=10)
    for r, years in [(1, hi), (2, hi), (3, hi - 1)]:  # turned hi (answered / left empty), one year younger
        frame.loc[r, "subject_birth_date"] = frame.loc[r, "response_date"] - pd.DateOffset(years=int(years),
                                                                                           days=10)
    frame.loc[2, ["rung_now", "rung_then"]] = np.nan
    out = _run(frame, study, insts)
    # row_number = frame index + 1: only the subject who turned hi and answered is outside the range
    assert _failing(out, "instrument_age_range") == {2}
    assert "to under" in out.row_failures.set_index("row_number").loc[2, "value"]
    assert 3 not in _failing(out, "missing_share_high")  # turned hi, empty: not expected to answer
