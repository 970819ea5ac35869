"""The generated study with every injected fault: validation quarantines exactly the injected rows and
refuses exactly the broken files (the manifest written by synth is the truth)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pyreadstat
import pytest

from cohortflow.config.sources import load_source_definitions
from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import match_source, read_export
from cohortflow.ingest.readers import BadFileError
from cohortflow.instruments.registry import load_instruments
from cohortflow.synth import FAULTS, generate_study
from cohortflow.validation import validate_mapped_file
from cohortflow.validation.contract import with_pseudonyms

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

KEY = b"validation-test-key-0123456789ab"
# Faults that leave the file unusable as a whole (unreadable, or an item column gone)
FILE_FAULTS = {"truncated_file", "empty_file", "wrong_format", "renamed_column"}


def _history_rows(frame: pd.DataFrame) -> list[tuple]:
    """(pseudonym, sex, birth_year) of the subject and informant of each row, as the warehouse keeps them."""
    f = with_pseudonyms(frame, KEY)
    rows = list(zip(f["subject_id"], f["subject_sex"], pd.to_datetime(f["subject_birth_date"]).dt.year, strict=True))
    if "informant_sex" in f.columns:
        rows += list(zip(f["person_id"], f["informant_sex"], pd.to_datetime(f["informant_birth_date"]).dt.year,
                         strict=True))
    return rows


def validate_study(inbox: Path, study, instruments, only: set[str] | None = None,
                   reasons: dict[tuple[str, int], set[tuple[str, str]]] | None = None):
    """Validate every export in wave order, feeding each loaded file's persons into the history."""
    sources = load_source_definitions()
    order = {w: i for i, w in enumerate(study.wave_codes)}
    paths = sorted(inbox.iterdir(), key=lambda p: (order.get(p.stem.split("_")[2], len(order)), p.name))
    history: list[tuple] = []
    quarantined: dict[str, set[int]] = {}
    refused: set[str] = set()
    for path in paths:
        if only is not None and path.name not in only:
            continue
        try:
            source = match_source(path, sources)
            mapped = read_export(path, source, instruments)
        except BadFileError:
            refused.add(path.name)
            continue
        hist = pd.DataFrame(history, columns=["pseudonym", "sex", "birth_year"])
        out = validate_mapped_file(mapped, study, instruments, source=source, history=hist, key=KEY)
        if out.file_errors:
            refused.add(path.name)
            continue
        rf = out.row_failures
        bad = set(rf.loc[rf["severity"] == "quarantine", "row_number"].astype(int))
        if reasons is not None:  # (file, row) -> {(rule, column)} of the quarantining failures
            for r in rf[rf["severity"] == "quarantine"].itertuples():
                reasons.setdefault((path.name, int(r.row_number)), set()).add((r.rule, str(r.column)))
        if bad:
            quarantined[path.name] = bad
        history += _history_rows(mapped.frame[~mapped.frame["row_number"].isin(bad)])
    return quarantined, refused


@pytest.mark.slow
def test_exactly_the_injected_rows_and_files(tmp_path):
    study, instruments = load_study(), load_instruments()
    manifest = generate_study(tmp_path, factor=0.05, seed=20241120, faults=list(FAULTS), study=study,
                              instruments=instruments)
    assert {f.kind for f in manifest.faults} == set(FAULTS)
    reasons: dict = {}
    quarantined, refused = validate_study(tmp_path / "inbox", study, instruments, reasons=reasons)

    expected_refused = {Path(f.file).name for f in manifest.faults if f.kind in FILE_FAULTS}
    expected_rows: dict[str, set[int]] = {}
    for f in manifest.faults:
        if f.kind not in FILE_FAULTS:
            expected_rows.setdefault(Path(f.file).name, set()).update(f.row_numbers)
    # Besides the injected faults, the generator's own item nonresponse can leave a short instrument (e.g. 2
    # items) all but empty for a respondent: such a row must be quarantined for that instrument's missing share
    # only, and the raw export must show it (checked on the file itself, read with pyreadstat/pandas).
    for (name, row), why in reasons.items():
        if row in expected_rows.get(name, set()):
            continue
        assert {rule for rule, _ in why} == {"missing_share_high"}, (name, row, why)
        path = tmp_path / "inbox" / name
        raw = (pyreadstat.read_sav(str(path), user_missing=False)[0] if path.suffix == ".sav"
               else pd.read_excel(path, engine="calamine") if path.suffix == ".xlsx"
               else pd.read_csv(path, sep=None, engine="python", encoding="cp1252"))
        for _, code in why:
            cols = [c for c in raw.columns if c.lower().startswith(code.lower() + "_")]  # exports vary the case
            vals = pd.to_numeric(raw.iloc[row - 1][cols], errors="coerce")
            answered = vals.notna() & (vals >= 0)  # negative codes are declared missing codes
            assert cols and answered.mean() <= 0.25, (name, row, code, vals.to_dict())
        expected_rows.setdefault(name, set()).add(row)
    assert refused == expected_refused
    assert quarantined == expected_rows


def test_injected_faults_fast(tmp_path):
    """The fault files only (plus the baseline file a sex conflict is checked against): exact rows and files."""
    study, instruments = load_study(), load_instruments()
    manifest = generate_study(tmp_path, factor=0.02, seed=7, faults=list(FAULTS), study=study,
                              instruments=instruments)
    only = {Path(f.file).name for f in manifest.faults}
    only |= {Path(f.details["baseline_file"]).name for f in manifest.faults if "baseline_file" in f.details}
    quarantined, refused = validate_study(tmp_path / "inbox", study, instruments, only=only)
    assert refused == {Path(f.file).name for f in manifest.faults if f.kind in FILE_FAULTS}
    expected = {Path(f.file).name: set(f.row_numbers) for f in manifest.faults if f.kind not in FILE_FAULTS}
    assert quarantined == expected


def test_batch_validation_gives_the_same_outcomes_as_file_by_file(tmp_path):
    """validate_mapped_files (one GX run per source version) agrees with validate_mapped_file per file."""
    from cohortflow.validation import validate_mapped_files
    from cohortflow.validation.sample import inject, valid_frame

    study, instruments = load_study(), load_instruments()
    arm = study.cohort_arms[0].code
    roles = [r.code for r in study.roles]
    frames = []
    for k, role in enumerate(roles):
        f = valid_frame(study, instruments, arm, study.waves_of(arm)[0], role, n=8 + k, seed=k)
        frames.append(inject(f, "wave_window", [k, k + 2], study, instruments))
    frames.append(frames[0].drop(columns=["wave"]))  # refused before GX
    files = [(f, {"file_name": f"f{i}.sav"}) for i, f in enumerate(frames)]
    together = validate_mapped_files(files, study, instruments)
    for single_in, batch_out in zip(files, together, strict=True):
        single = validate_mapped_file(single_in, study, instruments)
        assert batch_out.file_errors == single.file_errors
        pd.testing.assert_frame_equal(batch_out.row_failures, single.row_failures)
        pd.testing.assert_frame_equal(batch_out.rule_results, single.rule_results)
    assert [sorted(o.row_failures["row_number"]) for o in together[:3]] == [[1, 3], [2, 4], [3, 5]]


def test_stacked_checks_compare_rows_only_within_their_file():
    """Checks run once on the stacked files of a source version: a person repeated in another file is no
    duplicate, a sex differing between files is no conflict, and each file meets only its own history."""
    from cohortflow.validation import validate_mapped_files
    from cohortflow.validation.sample import valid_frame

    study, instruments = load_study(), load_instruments()
    arm = study.cohort_arms[0].code
    role = next(r.code for r in study.roles if r.informant == "self")
    a = valid_frame(study, instruments, arm, study.waves_of(arm)[0], role, n=6, seed=3)
    a = pd.concat([a, a.iloc[[0]]], ignore_index=True)  # an exact copy inside file a (row 7 of row 1)
    a["row_number"] = range(1, len(a) + 1)
    b = valid_frame(study, instruments, arm, study.waves_of(arm)[0], role, n=6, seed=3)  # the same persons
    other = {"male": "female", "female": "male"}
    b.loc[1, "subject_sex"] = other[b.loc[1, "subject_sex"]]  # differs from file a, not within file b
    pseudo = with_pseudonyms(a, KEY)
    hist_a = pd.DataFrame({"pseudonym": [pseudo.loc[2, "subject_id"]], "sex": [other[a.loc[2, "subject_sex"]]],
                           "birth_year": [pd.Timestamp(a.loc[2, "subject_birth_date"]).year]})
    hist_b = hist_a.iloc[0:0]
    files = [(a, {"file_name": "a.sav"}), (b, {"file_name": "b.sav"})]
    together = validate_mapped_files(files, study, instruments, histories=[hist_a, hist_b], key=KEY)
    for single_in, hist, batch_out in zip(files, [hist_a, hist_b], together, strict=True):
        single = validate_mapped_file(single_in, study, instruments, history=hist, key=KEY)
        assert batch_out.file_errors == single.file_errors
        pd.testing.assert_frame_equal(batch_out.row_failures, single.row_failures)
        pd.testing.assert_frame_equal(batch_out.rule_results, single.rule_results)
    fa, fb = together[0].row_failures, together[1].row_failures
    assert set(zip(fa["row_number"], fa["rule"], strict=True)) == {(7, "duplicate_key"), (3, "sex_birth_year_consistency")}
    assert fa.loc[fa["rule"] == "duplicate_key", "value"].tolist() == ["exact copy of row 1"]
    assert len(fb) == 0
    shared = validate_mapped_files(files, study, instruments, history=hist_a, key=KEY)  # one history for all
    for single_in, batch_out in zip(files, shared, strict=True):
        single = validate_mapped_file(single_in, study, instruments, history=hist_a, key=KEY)
        pd.testing.assert_frame_equal(batch_out.row_failures, single.row_failures)
    assert (3, "sex_birth_year_consistency") in set(zip(shared[1].row_failures["row_number"],
                                                        shared[1].row_failures["rule"], strict=True))
