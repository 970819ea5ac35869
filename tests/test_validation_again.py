"""`validate_again`: a file validated in a batch is checked again with another persons history; Great
Expectations runs again only when the derived checks differ, and the outcome always equals a fresh
`validate_mapped_file` run with that history."""

from __future__ import annotations

import pandas as pd
from ingest_exports import build_rows, write_export

from cohortflow.config.study import load_study
from cohortflow.ingest.mapping import load_sources, match_source, read_export
from cohortflow.instruments.registry import load_instruments
from cohortflow.validation import validate_again, validate_mapped_file, validate_mapped_files
from cohortflow.warehouse.batch_ingest import HISTORY_COLUMNS
from cohortflow.warehouse.load import person_attributes, person_frame

KEY = b"again-test-key-0123456789"
INST = load_instruments()
STUDY = load_study()


def _mapped(tmp_path):
    rows = build_rows(INST, "vt", "VT01", "T1", "child", 6, seed=5)
    path = write_export(rows, tmp_path / "vt_VT01_T1_child.csv")
    return read_export(path, match_source(path, load_sources()), INST)


def _history(mapped) -> pd.DataFrame:
    """(pseudonym, sex, birth_year) of every person of the file, as the warehouse would hold them."""
    people = person_attributes(person_frame(mapped, KEY))
    return pd.DataFrame([(p, v[1], v[2]) for p, v in people.items()], columns=HISTORY_COLUMNS)


def _same(a, b) -> None:
    assert a.file_errors == b.file_errors
    pd.testing.assert_frame_equal(a.row_failures.reset_index(drop=True), b.row_failures.reset_index(drop=True))
    pd.testing.assert_frame_equal(a.rule_results.reset_index(drop=True), b.rule_results.reset_index(drop=True))


def test_same_checks_reuse_the_batch_outcome_other_checks_run_gx_again(tmp_path):
    mapped = _mapped(tmp_path)
    agreeing = _history(mapped)
    [batch] = validate_mapped_files([mapped], STUDY, INST, histories=[agreeing], key=KEY)
    assert not len(batch.row_failures)

    # a person unknown to the file changes nothing this file is compared with: the batch outcome is reused
    extra = pd.concat([agreeing, pd.DataFrame([("f" * 64, "F", 1990)], columns=HISTORY_COLUMNS)],
                      ignore_index=True)
    again = validate_again(mapped, STUDY, INST, batch, history=extra, key=KEY)
    assert again is batch and again.timings["reused"] == 1.0
    _same(again, validate_mapped_file(mapped, STUDY, INST, history=extra, key=KEY))

    # the stored sex of the file's first subject differs: the checks differ, GX runs, the row fails
    subject = person_frame(mapped, KEY)["subject_id"].iloc[0]
    other = agreeing.copy()
    sex = other.loc[other["pseudonym"] == subject, "sex"].iloc[0]
    other.loc[other["pseudonym"] == subject, "sex"] = "female" if sex == "male" else "male"
    changed = validate_again(mapped, STUDY, INST, batch, history=other, key=KEY)
    assert changed is not batch and "reused" not in changed.timings
    fresh = validate_mapped_file(mapped, STUDY, INST, history=other, key=KEY)
    _same(changed, fresh)
    assert set(changed.row_failures["row_number"]) == {1}  # the child answers for itself: subject and informant
    assert set(changed.row_failures["column"]) == {"subject_sex", "informant_sex"}
    assert set(changed.row_failures["rule"]) == {"sex_birth_year_consistency"}
