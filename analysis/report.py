"""The report for programme leads and statisticians: effect tables, plots, HTML report and technical appendix.

`write_report(result, plan, study, instruments, out_dir, run_info) -> ReportPaths` writes into `out_dir`:

* `effect_table.xlsx`: per language one sheet per outcome family (the plan's multiplicity families,
  "other" for outcomes in none), named `<family> (<lang>)`, and a notes sheet per language;
* `effect_table.csv`: raw numbers after the small-cell rule, one row per outcome x follow-up wave, columns
  named by arm codes (see `tables.effect_rows`); suppressed cells hold `<threshold`;
* `effect_table.md`: the formatted table per language with its footer;
* `report.html`: self-contained (inline CSS, plots as base64 PNG), both languages with a toggle that works
  without a server or script; `appendix.html`: the technical appendix (English);
* `plots/*.png`: marginal means per outcome and the forest plot, per language.

`run_info` carries `run_id`, `snapshot_hash`, `started` (or `timestamp`) and optionally `software`
(a dict; default `software_versions()`).
"""

from __future__ import annotations

import base64
import html
import math
import platform
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pandas as pd

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from . import tables as T
from .labels import LANGUAGES, TEXT, join_words, text
from .plan import AnalysisPlan
from .plots import plot_emms, plot_forest, save_png

TEMPLATES = Path(__file__).resolve().parent / "templates"
SOFTWARE = ["cohortflow", "numpy", "pandas", "scipy", "statsmodels", "matplotlib", "openpyxl", "jinja2", "pyarrow",
            "sqlalchemy", "prefect"]


@dataclass
class ReportPaths:
    """Where the report's files are."""

    out_dir: Path
    xlsx: Path
    csv: Path
    md: Path
    html: Path
    appendix: Path
    plots: list[Path] = field(default_factory=list)
    sheets: list[str] = field(default_factory=list)


def software_versions() -> dict[str, str]:
    """Python and the installed versions of the packages behind the numbers ('not installed' if absent)."""
    out = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", s).strip("-")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _summary_counts(shown: pd.DataFrame, result, plan: AnalysisPlan, study: Study) -> dict[str, int]:
    """Counts for the summary: contrasts at each outcome's last follow-up that favour either side or are unclear."""
    I = plan.intervention_arm  # noqa: E741
    fav = dis = unclear = 0
    for _key, grp in shown.groupby("outcome", sort=False):
        last = grp.iloc[-1]
        for comp in plan.comparison_arms:
            lo, hi, est = (last.get(T.col(k, I, comp)) for k in ("diff_lower", "diff_upper", "diff"))
            try:
                lo, hi, est = float(lo), float(hi), float(est)
            except (TypeError, ValueError):
                continue
            if not all(map(math.isfinite, (lo, hi, est))):
                continue
            direction = last["direction"]
            if (lo > 0 or hi < 0) and direction in ("higher_worse", "higher_better"):
                if (est < 0) == (direction == "higher_worse"):
                    fav += 1
                else:
                    dis += 1
            else:
                unclear += 1
    hh = persons = 0
    base = study.baseline_wave
    for res in result.outcomes.values():
        c = res.counts[res.counts["wave"] == base] if not res.counts.empty else res.counts
        hh = max(hh, int(c["n_households"].sum()) if not c.empty else 0)
        persons = max(persons, int(c["n_persons"].sum()) if not c.empty else 0)
    return {"n_favour": fav, "n_disfavour": dis, "n_unclear": unclear, "n_contrasts": fav + dis + unclear,
            "n_households": hh, "n_persons": persons}


METHOD_NAMES = {"holm": "Holm", "fdr_bh": "Benjamini-Hochberg (FDR)", "bonferroni": "Bonferroni"}


def _multiplicity_text(plan: AnalysisPlan, instruments: dict[str, Instrument], lang: str) -> str:
    """The multiplicity rule in `lang`, the families named with their outcomes' labels."""
    m = plan.multiplicity
    if m.method == "none":
        return text(lang, "multiplicity_none")
    name = METHOD_NAMES.get(m.method, m.method)
    if not m.families:
        return text(lang, "multiplicity_per_outcome", method=name)
    fams = "; ".join(f"{f.name} ({', '.join(T.outcome_label(k, plan, instruments, lang) for k in f.outcomes)})"
                     for f in m.families)
    return text(lang, "multiplicity_families", method=name, families=fams)


def _footer(result, plan: AnalysisPlan, study: Study, instruments: dict[str, Instrument], run_info: dict,
            software: dict[str, str], lang: str) -> list[tuple[str, str]]:
    """The footer lines (label, text) in `lang`: model, definitions, multiplicity, small cells, software, run."""
    covs = join_words([plan.covariate_label(c, lang) for c in plan.defaults.fixed_effects.covariates], lang) or "-"
    model = text(lang, "model_lmm", covariates=covs)
    if any(r.family != "gaussian" for r in result.outcomes.values()):
        model += " " + text(lang, "model_gee")
    extra = []
    for key in result.outcomes:
        try:
            spec = plan.outcome(key)
        except KeyError:
            continue
        if spec.response == "stopped":
            extra.append((text(lang, "footer_definition", outcome=T.outcome_label(key, plan, instruments, lang)),
                          text(lang, "stopped_definition", baseline=T.wave_label(study, study.baseline_wave, lang))))
    mi = plan.sensitivity.multiple_imputation
    if mi.enabled and any(r.family == "gaussian" for r in result.outcomes.values()):
        extra.append((text(lang, "footer_mi"), text(lang, "footer_mi_text", m=mi.imputations)))
    booted = [k for k, r in result.outcomes.items() if getattr(r, "bootstrap", None) is not None
              and not r.bootstrap.empty]
    if booted:
        boot = plan.sensitivity.bootstrap
        extra.append((text(lang, "footer_bootstrap"), text(
            lang, "footer_bootstrap_text", resamples=boot.resamples,
            outcomes=join_words([T.outcome_label(k, plan, instruments, lang) for k in booted], lang))))
    return [
        (text(lang, "footer_model"), model),
        (text(lang, "footer_d"), text(lang, "footer_d_text")),
        *extra,
        (text(lang, "footer_multiplicity"), _multiplicity_text(plan, instruments, lang)),
        (text(lang, "footer_small_label"), text(lang, "footer_small_cells", threshold=plan.small_cell_threshold)),
        (text(lang, "footer_software"), ", ".join(f"{k} {v}" for k, v in software.items())),
        (text(lang, "footer_snapshot"), str(run_info.get("snapshot_hash", "-"))),
        (text(lang, "footer_run"), str(run_info.get("run_id", "-"))),
        (text(lang, "footer_generated"), str(run_info.get("timestamp") or run_info.get("started") or "-")),
    ]


def _frame_html(df: pd.DataFrame | None, digits: int = 4) -> str:
    if df is None or (isinstance(df, pd.DataFrame) and df.empty):
        return "<p>(none)</p>"

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}g}"
        return html.escape(str(v)) if v is not None else ""

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _suppress_counts(counts: pd.DataFrame, threshold: int) -> pd.DataFrame:
    out = counts.astype(object).copy()
    for c in ("n_persons", "n_households", "n_obs"):
        if c in out.columns:
            out[c] = [f"<{threshold}" if float(v) < threshold else v for v in counts[c]]
    if "pct_retained" in out.columns and "n_persons" in counts.columns:
        out.loc[counts["n_persons"] < threshold, "pct_retained"] = f"<{threshold}"
    return out


def _suppress_emms(emms: pd.DataFrame, counts: pd.DataFrame, threshold: int) -> pd.DataFrame:
    """Marginal means of arm x wave cells with fewer than `threshold` persons become '<threshold'."""
    if emms.empty or counts.empty:
        return emms
    n = counts.set_index(["arm", "wave"])["n_persons"]
    out = emms.astype(object).copy()
    for i, r in emms.iterrows():
        if float(n.get((r["arm"], r["wave"]), float("inf"))) < threshold:
            for c in ("emmean", "se", "df", "lower", "upper"):
                if c in out.columns:
                    out.at[i, c] = f"<{threshold}"
    return out


def _residual_html(r, key: str, plots_dir: Path, pngs: dict[Path, bytes] | None = None) -> str:
    """The appendix block of residual diagnostics: the summary table and the three-panel plot (inline PNG)."""
    diag = getattr(r, "residual_diagnostics", None)
    if diag is None or (isinstance(diag, pd.DataFrame) and diag.empty):
        if r.family != "gaussian":
            return ("<p>Not applicable: GEE is a marginal model without random effects (no BLUPs); robust standard "
                    "errors do not rest on a residual distribution.</p>")
        return "<p>Not computed for this outcome (see the warnings above).</p>"
    note = ("<p>Conditional residuals = observed minus fitted (fixed part plus BLUPs), as lme4's <code>resid()</code>; "
            "standardised by the residual SD (sigma). BLUPs standardised by their own SD. Skewness m3/m2^1.5 and "
            "excess kurtosis m4/m2^2 - 3 are 0 for a normal distribution; under normality about 0.27% of "
            "standardised values exceed 3 in absolute value. BLUPs shrink towards 0, so their SD is below the "
            "estimated random-effect SD.</p>")
    html_out = note + _frame_html(diag)
    res = getattr(r, "residuals", None)
    if res is not None:
        from .plots import plot_residual_diagnostics

        plots_dir.mkdir(parents=True, exist_ok=True)
        path = plots_dir / f"residuals_{_slug(key)}.png"
        png = (pngs or {}).get(path) or save_png(plot_residual_diagnostics(res, key), path)
        html_out += (f'<img class="plot" alt="Residual diagnostics of {html.escape(key)}" '
                     f'src="data:image/png;base64,{_b64(png)}">')
    return html_out


def write_appendix(result, plan: AnalysisPlan, study: Study, instruments: dict[str, Instrument], path: Path,
                   css: str, footer: list[tuple[str, str]], pngs: dict[Path, bytes] | None = None) -> Path:
    """The technical appendix (English): per outcome the full model, then the sensitivity analyses.
    `pngs`: residual plots already rendered (path -> PNG bytes); the others are drawn here."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    thr = plan.small_cell_threshold
    outcomes = []
    for key, r in result.outcomes.items():
        facts = [("Model family", r.family), ("Random structure", r.random_structure),
                 ("Converged", "yes" if r.converged else "NO"), ("Log-likelihood (REML)", f"{r.loglik:.3f}"
                                                                  if math.isfinite(r.loglik) else "n/a"),
                 ("Fallback applied", r.fallback or "none"),
                 ("Components at the boundary", ", ".join(r.boundary) or "none"),
                 ("Warnings", "; ".join(r.warnings) or "none"),
                 ("Rows dropped", "; ".join(f"{k}: {v}" for k, v in r.rows_dropped.items()) or "none"),
                 ("Direction", str(r.direction)), ("Fit time (s)", f"{r.seconds:.2f}")]
        tabs = [(f"Persons, households, observations per arm and wave (cells < {thr} suppressed)",
                 _frame_html(_suppress_counts(r.counts, thr))),
                ("Fixed effects", _frame_html(r.fixed_effects)),
                ("Random effects: variance components", _frame_html(r.variance_components)),
                (f"Marginal means (cells < {thr} suppressed)", _frame_html(_suppress_emms(r.emms, r.counts, thr))),
                ("Contrasts (within-arm change and difference in change)",
                 _frame_html(r.contrasts.drop(columns=["outcome"], errors="ignore"))),
                ("Growth model (Feingold d)", _frame_html(r.growth)),
                ("Residual diagnostics", _residual_html(r, key, path.parent / "plots", pngs))]
        outcomes.append({"key": key, "anchor": _slug(key), "label": T.outcome_label(key, plan, instruments, "en"),
                         "method": r.method, "facts": facts, "tables": tabs})
    sens_methods = [(k, v) for k, v in result.methods.items() if ":" in k]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2", "html"]))
    page = env.get_template("appendix.html.j2").render(
        title=f"Technical appendix: {study.name}", subtitle="Full model output for statisticians", css=css,
        outcomes=outcomes, multiplicity=result.multiplicity, failures=sorted(result.failures.items()),
        sensitivity=_frame_html(result.sensitivity), sensitivity_methods=sens_methods,
        balance=_frame_html(result.balance), resilience=_frame_html(result.resilience)
        if result.resilience is not None else "", footer=footer)
    path.write_text(page, encoding="utf-8")
    return path


def write_report(result, plan: AnalysisPlan, study: Study, instruments: dict[str, Instrument], out_dir: Path,
                 run_info: dict, plot_workers: int | None = None) -> ReportPaths:
    """Write the effect tables (xlsx, csv, md), the HTML report, the appendix and the plots; return the paths.
    The plots are drawn over `plot_workers` forked processes (default: the plan's `defaults.workers`)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    langs = [lang for lang in plan.report_languages if lang in LANGUAGES] or ["en"]
    software = dict(run_info.get("software") or software_versions())
    if not (run_info.get("timestamp") or run_info.get("started")):
        run_info = {**run_info, "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    thr = plan.small_cell_threshold
    plot_workers = plan.defaults.workers if plot_workers is None else plot_workers

    rows = T.effect_rows(result, plan, study)
    shown = T.suppress_small_cells(rows, plan)
    displays = {lang: T.display_table(shown, plan, study, instruments, lang) for lang in langs}
    footers = {lang: _footer(result, plan, study, instruments, run_info, software, lang) for lang in langs}
    titles = {lang: text(lang, "title", study=study.name) for lang in langs}

    csv = T.write_csv(shown, out_dir / "effect_table.csv")
    md = T.write_markdown(displays, {lang: [f"{k}: {v}" for k, v in footers[lang]] for lang in langs},
                          out_dir / "effect_table.md", titles)
    notes = {}
    for lang in langs:
        n = [(text(lang, "footer_design"), text(lang, "not_randomised")), *footers[lang]]
        if result.failures:
            n.append((text(lang, "failures"), "; ".join(f"{k}: {v}" for k, v in result.failures.items())))
        notes[lang] = n
    xlsx = out_dir / "effect_table.xlsx"
    sheets = T.write_xlsx(displays, notes, xlsx)

    # plots: every figure drawn first, over `plot_workers` forked processes (same PNG bytes as one by one)
    from .plots import plot_residual_diagnostics, render_pngs

    labels_of = {lang: {k: T.outcome_label(k, plan, instruments, lang) for k in result.outcomes} for lang in langs}
    jobs: list[tuple[Path, object, tuple]] = []
    for lang in langs:
        jobs.append((plots_dir / f"forest_{lang}.png", plot_forest, (shown, plan, study, labels_of[lang], lang)))
        jobs += [(plots_dir / f"emm_{_slug(key)}_{lang}.png", plot_emms,
                  (res, plan, study, labels_of[lang][key], lang, thr)) for key, res in result.outcomes.items()]
    for key, r in result.outcomes.items():
        diag = getattr(r, "residual_diagnostics", None)
        if getattr(r, "residuals", None) is not None and diag is not None and not (
                isinstance(diag, pd.DataFrame) and diag.empty):
            jobs.append((plots_dir / f"residuals_{_slug(key)}.png", plot_residual_diagnostics, (r.residuals, key)))
    pngs = render_pngs(jobs, workers=plot_workers)
    plot_paths: list[Path] = []
    sections = []
    comparisons = plan.comparison_arms
    for lang in langs:
        labels = labels_of[lang]
        forest_png = pngs[plots_dir / f"forest_{lang}.png"]
        plot_paths.append(plots_dir / f"forest_{lang}.png")
        disp = displays[lang]
        outcome_blocks = []
        for key in result.outcomes:
            p = plots_dir / f"emm_{_slug(key)}_{lang}.png"
            png = pngs[p]
            plot_paths.append(p)
            sub = T.printable(disp[disp["outcome_key"] == key])
            reading_col = text(lang, "col_reading")
            readings = [line for line in
                        (T.reading(r, c, plan, study, instruments, lang)
                         for _, r in shown[shown["outcome"] == key].iterrows() for c in comparisons) if line]
            wave_col = text(lang, "col_wave")
            fields_cols = [c for c in sub.columns if c not in (text(lang, "col_outcome"), wave_col, reading_col)]
            fields = [(c, [str(v) for v in sub[c]]) for c in fields_cols if any(str(v) for v in sub[c])]
            outcome_blocks.append({"label": labels[key], "anchor": _slug(key), "readings": readings,
                                   "waves": list(sub[wave_col]) if not sub.empty else [], "fields": fields,
                                   "png": _b64(png)})
        names = join_words([T.arm_label(study, c, lang) for c in comparisons], lang)
        intervention = T.arm_label(study, plan.intervention_arm, lang)
        counts = _summary_counts(shown, result, plan, study)
        summary = text(lang, "summary", n_outcomes=len(result.outcomes), intervention=intervention,
                       comparisons=names, baseline=T.wave_label(study, study.baseline_wave, lang), **counts)
        sections.append({
            "lang": lang, "language_name": TEXT[lang]["language_name"], "title": titles[lang],
            "subtitle": text(lang, "subtitle", intervention=intervention, comparisons=names),
            "summary_heading": text(lang, "summary_heading"), "summary": summary,
            "failures_heading": text(lang, "failures"),
            "failures": "; ".join(sorted(result.failures)) if result.failures else "",
            "forest_heading": text(lang, "forest_heading"), "forest_png": _b64(forest_png),
            "table_heading": text(lang, "table_heading"), "emm_heading": text(lang, "emm_heading"),
            "outcomes": outcome_blocks, "footer_heading": text(lang, "footer_heading"), "footer": footers[lang],
            "appendix_link": text(lang, "appendix_link")})

    toggle = "\n".join(f"#lang-{lang}:checked ~ .lang-{lang} {{ display:block; }}" for lang in langs)
    css = (TEMPLATES / "report.css").read_text(encoding="utf-8").replace("{{ toggle_css }}", toggle)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["j2", "html"]))
    appendix = write_appendix(result, plan, study, instruments, out_dir / "appendix.html", css,
                              footers.get("en", next(iter(footers.values()))), pngs)
    page = env.get_template("report.html.j2").render(sections=sections, languages=langs, css=css,
                                                     appendix_name=appendix.name)
    report = out_dir / "report.html"
    report.write_text(page, encoding="utf-8")
    return ReportPaths(out_dir=out_dir, xlsx=xlsx, csv=csv, md=md, html=report, appendix=appendix,
                       plots=plot_paths, sheets=sheets)


def default_run_info(run_id: str, snapshot_hash: str) -> dict:
    """A run_info dict with the current UTC time and the installed software versions."""
    return {"run_id": run_id, "snapshot_hash": snapshot_hash,
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "software": software_versions()}
