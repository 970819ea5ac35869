"""Data Docs per batch: written under the data folder, and readable in a real (headless) browser."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from cohortflow.config.study import load_study
from cohortflow.instruments.registry import load_instruments
from cohortflow.validation import summarise, validate_mapped_file, write_data_docs
from cohortflow.validation.sample import inject, valid_frame

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def batch_docs(tmp_path_factory):
    """One batch with a wave-window failure validated with docs_dir: (outcome, docs_dir)."""
    study, instruments = load_study(), load_instruments()
    arm = study.cohort_arms[0].code
    role = next(r.code for r in study.roles if r.informant == "self" and r.subject == "child")
    wave = study.waves_of(arm)[-1]
    frame = inject(valid_frame(study, instruments, arm, wave, role, n=15, seed=4), "wave_window", [6],
                   study, instruments)
    docs_dir = tmp_path_factory.mktemp("data") / "validation"
    meta = {"file_name": f"{arm}_X_{wave}_{role}.sav", "sha256": "ab" * 32}
    out = validate_mapped_file((frame, meta), study, instruments, docs_dir=docs_dir)
    return out, docs_dir


def test_docs_page_is_written_per_batch(batch_docs):
    out, docs_dir = batch_docs
    page = out.docs_path
    assert page is not None and page.is_file()
    assert docs_dir in page.parents
    html = page.read_text(encoding="utf-8")
    assert "wave_window" in html and "days after T0" in html
    # the same outcome as without docs: one row quarantined for the window
    assert out.row_failures[["row_number", "rule"]].values.tolist() == [[7, "wave_window"]]
    assert f"Data Docs: {page}" in summarise(out, "x.sav")


def test_one_site_build_for_several_files_gives_each_its_page_and_the_same_outcome(tmp_path):
    """write_data_docs (pages built once after the loads) = validate_mapped_file(docs_dir=...) file by file."""
    study, instruments = load_study(), load_instruments()
    arm = study.cohort_arms[0].code
    role = next(r.code for r in study.roles if r.informant == "self" and r.subject == "child")
    wave = study.waves_of(arm)[-1]
    files = []
    for k, (fault, rows) in enumerate([("wave_window", [2]), ("allowed_codes", [0, 3]), ("wave_window", [5])]):
        frame = inject(valid_frame(study, instruments, arm, wave, role, n=8, seed=10 + k), fault, rows, study,
                       instruments)
        files.append((frame, {"file_name": f"{arm}_S{k}_{wave}_{role}.sav", "sha256": f"{k:02d}" * 32}))
    together = write_data_docs(files, study, instruments, tmp_path / "together", histories=[None] * len(files))
    one_by_one = [validate_mapped_file(f, study, instruments, docs_dir=tmp_path / "single") for f in files]
    pages = {o.docs_path for o in together}
    assert len(pages) == 1 and next(iter(pages)).is_file()  # one source version: one page for the three files
    html = next(iter(pages)).read_text(encoding="utf-8")
    for _frame, meta in files:  # failing rows are named by file and row number
        assert meta["file_name"] in html
    for a, b in zip(together, one_by_one, strict=True):
        assert a.row_failures.equals(b.row_failures)
        assert a.rule_results.equals(b.rule_results)
        assert a.file_errors == b.file_errors
    assert len(together[1].row_failures) >= 2  # the injected faults are there to see
    index = tmp_path / "together" / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    assert index.is_file() and "3_files" in index.read_text(encoding="utf-8")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium; CI installs it)")
def test_docs_page_renders_in_headless_chromium(batch_docs, tmp_path):
    out, _ = batch_docs
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
           out.docs_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # the failed rule, its severity and the failing value appear on the rendered page
    assert "wave_window [quarantine]" in dom
    assert "days after T0" in dom
    assert "<table" in dom.lower()


def test_importing_validation_does_not_import_great_expectations():
    code = "import sys, cohortflow.validation; print('great_expectations' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip() == "False", res.stderr
