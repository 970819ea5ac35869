"""write_report: the files, the Excel workbook, the self-contained HTML, and the page in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import metadata

import numpy as np
import pandas as pd
import pytest
from report_builders import build_result, simple_plan, simulate

from cohortflow.analysis import tables as T
from cohortflow.analysis.labels import text
from cohortflow.analysis.report import software_versions, write_report
from cohortflow.config.study import load_study
from cohortflow.instruments.registry import load_instruments

STUDY = load_study()
INSTRUMENTS = load_instruments()
PLAN = simple_plan(STUDY)
RUN_INFO = {"run_id": "run-test-7f3a", "snapshot_hash": "9c1e5b2d4a", "timestamp": "2026-11-23 20:00 UTC"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    data = simulate(STUDY, PLAN)
    result = build_result(data, PLAN, STUDY)
    out = tmp_path_factory.mktemp("report")
    return write_report(result, PLAN, STUDY, INSTRUMENTS, out, RUN_INFO), result


def test_files_are_written(report):
    paths, result = report
    for p in (paths.xlsx, paths.csv, paths.md, paths.html, paths.appendix):
        assert p.exists() and p.stat().st_size > 500, p
    n_plots = len(PLAN.report_languages) * (len(result.outcomes) + 1)
    assert len(paths.plots) == n_plots and all(p.stat().st_size > 5000 for p in paths.plots)
    assert all(p.parent == paths.out_dir / "plots" for p in paths.plots)


def test_excel_opens_with_the_expected_sheets(report):
    from openpyxl import load_workbook

    paths, result = report
    wb = load_workbook(paths.xlsx)
    expected = []
    for lang in PLAN.report_languages:
        expected += [f"{fam.name} ({lang})" for fam in PLAN.multiplicity.families]
        expected.append(f"{text(lang, 'notes_sheet')} ({lang})")
    assert wb.sheetnames == expected
    ws = wb["primary (en)"]
    header = [c.value for c in ws[1]]
    assert header[0] == text("en", "col_outcome") and header[-1] == text("en", "col_reading")
    assert ws.max_row == 1 + len(STUDY.waves) - 1  # one row per follow-up wave of the one primary outcome
    assert ws["A1"].font.bold
    # the numbers in the sheet are the effect rows', formatted
    rows = T.effect_rows(result, PLAN, STUDY)
    last = rows[rows.outcome == "sim.total"].iloc[-1]
    i, c = PLAN.intervention_arm, PLAN.comparison_arms[0]
    diff_col = header.index(text("en", "col_diff", arm=STUDY.arm(i).label.en, arm2=STUDY.arm(c).label.en))
    assert ws.cell(ws.max_row, diff_col + 1).value.startswith(f"{last[T.col('diff', i, c)]:.1f}".replace("-", "\u2212"))
    notes = {r[0].value: r[1].value for r in wb[f"{text('nl', 'notes_sheet')} (nl)"].iter_rows(min_row=2)}
    assert notes[text("nl", "footer_run")] == RUN_INFO["run_id"]
    assert notes[text("nl", "footer_snapshot")] == RUN_INFO["snapshot_hash"]
    assert "pandas " + pd.__version__ in notes[text("nl", "footer_software")]


def test_csv_and_markdown(report):
    paths, result = report
    csv = pd.read_csv(paths.csv)
    assert len(csv) == len(T.effect_rows(result, PLAN, STUDY))
    md = paths.md.read_text(encoding="utf-8")
    for lang in PLAN.report_languages:
        assert text(lang, "title", study=STUDY.name) in md
        assert text(lang, "footer_small_cells", threshold=PLAN.small_cell_threshold) in md
    assert RUN_INFO["run_id"] in md


def test_html_is_self_contained_and_bilingual(report):
    paths, result = report
    page = paths.html.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:)?//', page), "the report must open offline"
    assert "<link" not in page and "<script" not in page
    style = page.split("<style>")[1].split("</style>")[0]
    assert "&#34;" not in style and "&quot;" not in style and "font-family" in style, "CSS must not be escaped"
    imgs = re.findall(r'<img[^>]+src="data:image/png;base64,', page)
    assert len(imgs) == len(PLAN.report_languages) * (len(result.outcomes) + 1)
    for lang in PLAN.report_languages:
        assert f'class="lang lang-{lang}"' in page
        assert text(lang, "summary_heading") in page
    assert page.count("<table") == len(PLAN.report_languages) * len(result.outcomes)
    for needle in (RUN_INFO["run_id"], RUN_INFO["snapshot_hash"], "statsmodels"):
        assert needle in page
    appendix = paths.appendix.read_text(encoding="utf-8")
    assert "Fixed effects" in appendix and "Sensitivity analyses side by side" in appendix


def test_software_versions():
    v = software_versions()
    assert v["pandas"] == pd.__version__ and v["numpy"] == np.__version__
    assert v["statsmodels"] == metadata.version("statsmodels") and re.match(r"3\.\d+\.\d+", v["python"])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it with apt-get)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    """Screenshot and DOM of the page in a real browser: tables and inline plots are there."""
    paths, result = report
    shot = tmp_path / "report.png"
    url = paths.html.resolve().as_uri()
    base = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", url], check=True, timeout=120,
                   capture_output=True)
    assert shot.exists() and shot.stat().st_size > 50_000
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05, "the screenshot is (nearly) blank"
    dom = subprocess.run([*base, "--dump-dom", url], check=True, timeout=120, capture_output=True, text=True).stdout
    first = PLAN.report_languages[0]
    assert text(first, "title", study=STUDY.name) in dom
    assert dom.count('<table class="effect"') == len(PLAN.report_languages) * len(result.outcomes)
    assert len(re.findall(r'<img class="plot"[^>]*src="data:image/png;base64,', dom)) >= len(result.outcomes) + 1


def test_emm_plot_leaves_out_small_cells(report):
    """The marginal-means plot draws one point per arm x wave with at least `threshold` persons."""
    from cohortflow.analysis.plots import plot_emms

    _, result = report
    res = result.outcomes["sim.total"]
    counts = res.counts.set_index(["arm", "wave"])["n_persons"]
    threshold = int(counts.median())
    fig = plot_emms(res, PLAN, STUDY, "t", "en", threshold)
    ax = fig.axes[0]
    drawn = sum(len(c.lines[0].get_xdata()) for c in ax.containers)
    assert drawn == int((counts >= threshold).sum()) < len(counts)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        STUDY.arm(a).label.en for a in PLAN.cohort_arms if any(
            counts[(a, w)] >= threshold for w in counts.loc[a].index)]
    assert ax.get_xlabel() == text("en", "plot_wave")


def test_small_cells_are_suppressed_in_every_file(tmp_path):
    """6 respondents of one comparison arm at the last wave: '<10' in CSV, Excel, HTML and the appendix."""
    from openpyxl import load_workbook

    data = simulate(STUDY, PLAN)
    c, last = PLAN.comparison_arms[0], max(STUDY.waves, key=lambda w: w.offset_days).code
    keep = data[(data.arm == c) & (data.wave == last)].person_id.unique()[:6]
    data = data[~((data.arm == c) & (data.wave == last) & ~data.person_id.isin(keep))]
    result = build_result(data, PLAN, STUDY)
    raw_emm = result.outcomes["sim.total"].emms.set_index(["arm", "wave"]).loc[(c, last), "emmean"]
    paths = write_report(result, PLAN, STUDY, INSTRUMENTS, tmp_path, RUN_INFO)
    csv = pd.read_csv(paths.csv, dtype=str).set_index(["outcome", "wave"])
    assert csv.loc[("sim.total", last), T.col("n", c)] == "<10"
    assert csv.loc[("sim.total", last), T.col("emm", c)] == "<10"
    assert csv.loc[("sim.total", last), T.col("diff", PLAN.intervention_arm, c)] == "<10"
    ws = load_workbook(paths.xlsx)["primary (en)"]
    header = [x.value for x in ws[1]]
    n_col = header.index(text("en", "col_n", arm=STUDY.arm(c).label.en,
                              baseline=STUDY.wave(STUDY.baseline_wave).label.en)) + 1
    assert ws.cell(ws.max_row, n_col).value == "<10"
    page = paths.html.read_text(encoding="utf-8")
    assert "&lt;10" in page and f"{raw_emm:.1f}" not in page
    appendix = paths.appendix.read_text(encoding="utf-8")
    assert f"{raw_emm:.4g}" not in appendix and "&lt;10" in appendix


def test_forest_plot_points_right_when_the_intervention_did_better(report):
    """higher_worse outcome: a negative d (larger decrease in the pilots) is drawn right of zero."""
    from cohortflow.analysis.plots import plot_forest

    _, result = report
    shown = T.suppress_small_cells(T.effect_rows(result, PLAN, STUDY), PLAN)
    shown = shown[shown.outcome == "sim.total"]
    fig = plot_forest(shown, PLAN, STUDY, {"sim.total": "x"}, "en")
    ax = fig.axes[0]
    points = [line.get_xdata()[0] for line in ax.lines if line.get_marker() not in (None, "None", "")
              and len(line.get_xdata()) == 1]
    ds = [float(r[T.col("d", PLAN.intervention_arm, c)]) for _, r in shown.iterrows() for c in PLAN.comparison_arms]
    assert sorted(points) == pytest.approx(sorted(-d for d in ds))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"{STUDY.arm(PLAN.intervention_arm).label.en} vs {STUDY.arm(c).label.en}" for c in PLAN.comparison_arms]


def test_report_when_every_outcome_failed(tmp_path):
    """No fitted outcome: the report still opens and names the failures."""
    from cohortflow.analysis.models import AnalysisResult

    empty = AnalysisResult(outcomes={}, contrasts=pd.DataFrame(), sensitivity=pd.DataFrame(), balance=pd.DataFrame(),
                           resilience=None, methods={}, failures={"sim.total": "AnalysisDataError: no rows"})
    paths = write_report(empty, PLAN, STUDY, INSTRUMENTS, tmp_path, RUN_INFO)
    assert "sim.total" in paths.html.read_text(encoding="utf-8")
    assert "AnalysisDataError: no rows" in paths.appendix.read_text(encoding="utf-8")
    from openpyxl import load_workbook

    assert len(load_workbook(paths.xlsx).sheetnames) == 2 * len(PLAN.report_languages)


def test_footer_names_covariates_and_definitions_in_the_reports_language(report):
    """The footer says 'adjusted for leeftijd en geslacht', not the column names; 'stopped' is defined."""
    from cohortflow.analysis.plan import load_analysis_plan
    from cohortflow.analysis.report import _footer

    _, result = report
    plan = load_analysis_plan()
    assert plan.defaults.fixed_effects.covariates == ["age_years", "sex"]
    stopped = next(o for o in plan.outcomes if o.response == "stopped")
    res = dict(result.outcomes)
    res[stopped.id] = result.outcomes["sim.above"]
    fake = type(result)(**{**result.__dict__, "outcomes": res})
    for lang, covs in [("nl", "leeftijd en geslacht"), ("en", "age and sex")]:
        lines = dict(_footer(fake, plan, STUDY, INSTRUMENTS, RUN_INFO, {"python": "3"}, lang))
        model = lines[text(lang, "footer_model")]
        assert covs in model and "age_years" not in model
        definition = lines[text(lang, "footer_definition", outcome=stopped.label.get(lang))]
        assert STUDY.wave(STUDY.baseline_wave).label.get(lang) in definition
        mult = lines[text(lang, "footer_multiplicity")]
        assert mult.startswith("Holm") and stopped.label.get(lang) in mult and "violence.any" not in mult
