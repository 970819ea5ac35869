"""Effect tables for programme leads: one row per outcome x follow-up wave (study.md section 4).

* `effect_rows(result, plan, study) -> DataFrame`: the one adapter between the statistics
  (`models.AnalysisResult`) and every output. Raw numbers, columns named by arm codes
  (`n__<arm>`, `diff__<arm>__<arm2>`, ...), no formatting, no suppression.
* `suppress_small_cells(rows, threshold) -> DataFrame`: the small-cell rule; every cell resting on fewer than
  `threshold` respondents becomes the marker `"<threshold>"` (counts, means, percentages, and the contrasts
  of an arm pair when either arm has too few respondents at baseline or at the wave).
* `display_table(rows, ..., lang) -> DataFrame`: formatted strings with headers in `lang`, plus the reading.
* `write_xlsx`, `write_csv`, `write_markdown`: the files. Excel has one sheet per outcome family (the plan's
  multiplicity families; outcomes in none go to "other") per language, and a notes sheet per language.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from .labels import fmt_number, fmt_p, text
from .plan import AnalysisPlan

SEP = "__"


def col(kind: str, *codes: str) -> str:
    """Column name of a raw effect row: kind plus arm codes, e.g. col('diff', 'a', 'b') = 'diff__a__b'."""
    return SEP.join([kind, *codes])


def _wave_order(study: Study) -> list[str]:
    return [w.code for w in sorted(study.waves, key=lambda w: w.offset_days)]


def _lookup(frame: pd.DataFrame, **keys: object) -> pd.Series | None:
    """The first row of `frame` matching all keys, or None."""
    if frame is None or frame.empty or any(k not in frame.columns for k in keys):
        return None
    mask = np.ones(len(frame), bool)
    for k, v in keys.items():
        mask &= (frame[k] == v).to_numpy()
    hit = frame[mask]
    return None if hit.empty else hit.iloc[0]


def _get(row: pd.Series | None, name: str) -> float:
    if row is None or name not in row.index:
        return float("nan")
    v = row[name]
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def outcome_family(plan: AnalysisPlan, key: str) -> str:
    """The plan's multiplicity family of an outcome, or 'other'."""
    for fam in plan.multiplicity.families:
        if key in fam.outcomes:
            return fam.name
    return "other"


def effect_rows(result, plan: AnalysisPlan, study: Study) -> pd.DataFrame:
    """One raw row per outcome x follow-up wave from an `AnalysisResult` (the only coupling to analysis.models).

    Columns: outcome, name, family (model family), outcome_family (multiplicity family), direction, wave,
    baseline_wave, contrast_kind, then per cohort arm `n`, `retained`, `base_n`, `base_mean`, `base_sd`, `emm`,
    `emm_lower`, `emm_upper`, `above_n`, `above_pct`, `paired_n`, `improved_pct`, `deteriorated_pct`, and per
    comparison arm (intervention vs it) `diff`, `diff_lower`, `diff_upper`, `p`, `p_adj`, `d`, `d_lower`,
    `d_upper`, `d_denominator`, `ratio`, `ratio_lower`, `ratio_upper`, `ratio_kind`, `diff_boot_lower`,
    `diff_boot_upper`, `d_boot_lower`, `d_boot_upper` (household bootstrap, NaN unless the plan's bootstrap ran
    for the outcome), `mi`, `mi_lower`, `mi_upper`, `mi_p`, `ipw`, `ipw_lower`, `ipw_upper`, `sens_changed`.
    Percentages are 0-100; binary outcomes' means and differences are turned into % and percentage points.
    """
    order = _wave_order(study)
    base_wave = study.baseline_wave
    arms = plan.cohort_arms
    I = plan.intervention_arm  # noqa: E741 - the intervention arm code
    sens = result.sensitivity if isinstance(result.sensitivity, pd.DataFrame) else pd.DataFrame()
    rows: list[dict] = []
    for key, res in result.outcomes.items():
        binary = res.family == "binomial"
        scale = 100.0 if binary else 1.0
        present = [w for w in order if w in set(res.emms["wave"])] if not res.emms.empty else []
        kinds = set(res.contrasts["kind"]) if not res.contrasts.empty else set()
        kind = "diff_in_change" if "diff_in_change" in kinds else "between_arm"
        follow = [w for w in present if w != base_wave] if kind == "diff_in_change" else present
        for w in follow:
            r: dict = {"outcome": key, "name": res.name, "family": res.family,
                       "outcome_family": outcome_family(plan, key), "direction": res.direction, "wave": w,
                       "baseline_wave": base_wave, "contrast_kind": kind}
            for a in arms:
                c = _lookup(res.counts, arm=a, wave=w)
                r[col("n", a)] = _get(c, "n_persons")
                r[col("retained", a)] = _get(c, "pct_retained")
                b = _lookup(res.baseline, arm=a)
                r[col("base_n", a)] = _get(b, "n")
                if binary:
                    # % at baseline: of the cut-off flag, else of the binary response itself (baseline mean)
                    ab = _get(_lookup(res.above_cutoff, arm=a, wave=base_wave), "pct")
                    r[col("base_mean", a)] = ab if math.isfinite(ab) else 100.0 * _get(b, "mean")
                    r[col("base_sd", a)] = float("nan")
                else:
                    r[col("base_mean", a)] = _get(b, "mean")
                    r[col("base_sd", a)] = _get(b, "sd")
                e = _lookup(res.emms, arm=a, wave=w)
                for src, dst in [("emmean", "emm"), ("lower", "emm_lower"), ("upper", "emm_upper")]:
                    r[col(dst, a)] = _get(e, src) * scale
                ac = _lookup(res.above_cutoff, arm=a, wave=w)
                r[col("above_n", a)] = _get(ac, "n")
                r[col("above_pct", a)] = _get(ac, "pct")
                rc = _lookup(res.clinical, arm=a, wave=w)
                r[col("paired_n", a)] = _get(rc, "n_paired")
                r[col("improved_pct", a)] = _get(rc, "pct_improved")
                r[col("deteriorated_pct", a)] = _get(rc, "pct_deteriorated")
            for comp in plan.comparison_arms:
                ct = _lookup(res.contrasts, kind=kind, arm=I, arm2=comp, wave=w)
                pair = (I, comp)
                for src, dst, mult in [("estimate", "diff", scale), ("lower", "diff_lower", scale),
                                       ("upper", "diff_upper", scale), ("p", "p", 1.0), ("p_adj", "p_adj", 1.0),
                                       ("d", "d", 1.0), ("d_lower", "d_lower", 1.0), ("d_upper", "d_upper", 1.0),
                                       ("ratio", "ratio", 1.0), ("ratio_lower", "ratio_lower", 1.0),
                                       ("ratio_upper", "ratio_upper", 1.0),
                                       ("boot_lower", "diff_boot_lower", scale), ("boot_upper", "diff_boot_upper", scale),
                                       ("boot_d_lower", "d_boot_lower", 1.0), ("boot_d_upper", "d_boot_upper", 1.0)]:
                    r[col(dst, *pair)] = _get(ct, src) * mult
                r[col("d_denominator", *pair)] = None if ct is None else ct.get("d_denominator")
                r[col("ratio_kind", *pair)] = None if ct is None else ct.get("ratio_kind")
                r[col("contrast", *pair)] = None if ct is None else ct.get("contrast")
                s = _lookup(sens, outcome=key, arm=I, arm2=comp, wave=w) if not sens.empty else None
                for src, dst in [("mi_estimate", "mi"), ("mi_lower", "mi_lower"), ("mi_upper", "mi_upper"),
                                 ("mi_p", "mi_p"), ("ipw_estimate", "ipw"), ("ipw_lower", "ipw_lower"),
                                 ("ipw_upper", "ipw_upper"), ("ipw_p", "ipw_p")]:
                    r[col(dst, *pair)] = _get(s, src) * (scale if dst in ("mi", "mi_lower", "mi_upper", "ipw",
                                                                          "ipw_lower", "ipw_upper") else 1.0)
                # the table's sensitivity column is the imputation result: its own flag (not IPW's)
                flag_col = "mi_changes" if s is not None and "mi_changes" in s.index else "conclusion_changes"
                flag = None if s is None or flag_col not in s.index else s[flag_col]
                r[col("sens_changed", *pair)] = None if flag is None or pd.isna(flag) else bool(flag)
            rows.append(r)
    base_cols = ["outcome", "name", "family", "outcome_family", "direction", "wave", "baseline_wave", "contrast_kind"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=base_cols)


# --- the small-cell rule -----------------------------------------------------------------------------------------

def marker(threshold: int) -> str:
    return f"<{threshold}"


def suppress_small_cells(rows: pd.DataFrame, plan: AnalysisPlan, threshold: int | None = None) -> pd.DataFrame:
    """Replace every cell resting on fewer than `threshold` respondents by '<threshold' (object columns).

    Per arm: n < threshold hides n, % retained, the adjusted mean; baseline n hides baseline mean and SD;
    the n behind % above cut-off and behind reliable change hide those %. Per comparison: too few respondents
    in either arm at baseline or at the wave hides the difference, p, d, ratio and the sensitivity results.
    Adds `suppressed__<I>__<C>` (bool) per comparison for the reading.
    """
    thr = plan.small_cell_threshold if threshold is None else threshold
    m = marker(thr)
    out = rows.astype(object).copy()
    for comp in plan.comparison_arms:
        out[col("suppressed", plan.intervention_arm, comp)] = False

    def small(v: object, zero: bool = True) -> bool:
        """v < threshold; with zero=False a count of 0 is 'not measured' (e.g. no cut-off), not a small cell."""
        try:
            v = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return math.isfinite(v) and v < thr and (zero or v > 0)

    def hide(i: int, cols: list[str]) -> None:
        for c in cols:
            if c in out.columns:
                out.at[i, c] = m

    for i in out.index:
        for a in plan.cohort_arms:
            if small(rows.at[i, col("n", a)]):
                hide(i, [col(k, a) for k in ("n", "retained", "emm", "emm_lower", "emm_upper")])
            if small(rows.at[i, col("base_n", a)]):
                hide(i, [col(k, a) for k in ("base_n", "base_mean", "base_sd")])
            if small(rows.at[i, col("above_n", a)], zero=False):
                hide(i, [col(k, a) for k in ("above_n", "above_pct")])
            if small(rows.at[i, col("paired_n", a)], zero=False):
                hide(i, [col(k, a) for k in ("paired_n", "improved_pct", "deteriorated_pct")])
        for comp in plan.comparison_arms:
            pair = (plan.intervention_arm, comp)
            few = any(small(rows.at[i, col(k, a)]) for a in pair for k in ("n", "base_n"))
            out.at[i, col("suppressed", *pair)] = few
            if few:
                hide(i, [col(k, *pair) for k in ("diff", "diff_lower", "diff_upper", "p", "p_adj", "d", "d_lower",
                                                  "d_upper", "ratio", "ratio_lower", "ratio_upper", "mi", "mi_lower",
                                                  "mi_upper", "mi_p", "ipw", "ipw_lower", "ipw_upper", "ipw_p",
                                                  "diff_boot_lower", "diff_boot_upper", "d_boot_lower",
                                                  "d_boot_upper", "sens_changed")])
    return out


# --- labels ------------------------------------------------------------------------------------------------------

def outcome_label(key: str, plan: AnalysisPlan, instruments: dict[str, Instrument], lang: str) -> str:
    """The outcome's label: the plan's, else the instrument scale's, else the key itself."""
    try:
        spec = plan.outcome(key)
    except KeyError:
        spec = None
    if spec is not None and spec.label is not None:
        return spec.label.get(lang)
    name = spec.name if spec is not None else key
    inst_code, _, scale_code = name.partition(".")
    inst = instruments.get(inst_code)
    if inst is not None:
        try:
            return f"{inst.label.get(lang)}: {inst.scale(scale_code).label.get(lang)}"
        except KeyError:
            return inst.label.get(lang)
    return key


def arm_label(study: Study, code: str, lang: str) -> str:
    return study.arm(code).label.get(lang)


def wave_label(study: Study, code: str, lang: str) -> str:
    return study.wave(code).label.get(lang)


# --- formatting ----------------------------------------------------------------------------------------------------

def _is_marker(v: object) -> bool:
    return isinstance(v, str) and v.startswith("<")


def _num(v: object, lang: str, digits: int = 1) -> str:
    if _is_marker(v):
        return str(v)
    try:
        return fmt_number(float(v), lang, digits)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""


def _ci(est: object, lo: object, hi: object, lang: str, digits: int = 1) -> str:
    if _is_marker(est):
        return str(est)
    e = _num(est, lang, digits)
    if not e:
        return ""
    lo_s, hi_s = _num(lo, lang, digits), _num(hi, lang, digits)
    return f"{e} ({lo_s} {text(lang, 'to')} {hi_s})" if lo_s and hi_s else e


def _interval(lo: object, hi: object, lang: str, digits: int = 1) -> str:
    """'lo to hi' (e.g. a bootstrap interval without its own estimate); '' when either end is missing or hidden."""
    if _is_marker(lo) or _is_marker(hi):
        return ""
    lo_s, hi_s = _num(lo, lang, digits), _num(hi, lang, digits)
    return f"{lo_s} {text(lang, 'to')} {hi_s}" if lo_s and hi_s else ""


def _int(v: object) -> str:
    if _is_marker(v):
        return str(v)
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return ""
    return "" if not math.isfinite(f) else str(int(round(f)))


def reading(row: pd.Series, comp: str, plan: AnalysisPlan, study: Study, instruments: dict[str, Instrument],
            lang: str) -> str:
    """One plain-language sentence for the intervention-vs-`comp` contrast of a (suppressed) effect row.

    Phrased by the outcome's direction and by whether the CI excludes 0; never causal. Uses the
    multiplicity-adjusted p when there is one.
    """
    pair = (plan.intervention_arm, comp)
    words = {"outcome": outcome_label(row["outcome"], plan, instruments, lang),
             "baseline": wave_label(study, row["baseline_wave"], lang), "wave": wave_label(study, row["wave"], lang),
             "arm": arm_label(study, pair[0], lang), "arm2": arm_label(study, comp, lang)}
    if bool(row.get(col("suppressed", *pair), False)):
        return text(lang, "reading_suppressed", threshold=plan.small_cell_threshold, **words)
    est, lo, hi = (row.get(col(k, *pair)) for k in ("diff", "diff_lower", "diff_upper"))
    try:
        est, lo, hi = float(est), float(lo), float(hi)
    except (TypeError, ValueError):
        return ""
    if not all(map(math.isfinite, (est, lo, hi))):
        return ""
    clear = lo > 0 or hi < 0
    between = row["contrast_kind"] != "diff_in_change"
    direction = row.get("direction")
    if not clear:
        key = "unclear"
    elif direction in ("higher_worse", "higher_better"):
        better = (est < 0) == (direction == "higher_worse")
        key = "better" if better else "worse"
    else:
        key = "higher" if est > 0 else "lower"
    if between:
        key = f"between_{key}"
    unit = text(lang, {"binomial": "unit_pp", "negative_binomial": "unit_count", "poisson": "unit_count"}.get(
        str(row["family"]), "unit_points"))
    sentence = text(lang, f"reading_{key}", est=fmt_number(est, lang), lo=fmt_number(lo, lang),
                    hi=fmt_number(hi, lang), unit=unit, ci=text(lang, "ci"), to=text(lang, "to"), **words)
    p_adj, p = row.get(col("p_adj", *pair)), row.get(col("p", *pair))
    use_adj = p_adj is not None and isinstance(p_adj, float) and math.isfinite(p_adj)
    pv = float(p_adj) if use_adj else float(p)
    pname = text(lang, "p_adjusted" if use_adj else "p_plain")
    # the CI is not adjusted for multiplicity: a CI that excludes 0 with an adjusted p above alpha is said so,
    # rather than 'improved more ... may well be chance'
    tail = ("reading_chance_unlikely" if pv < plan.alpha else
            "reading_chance_after_correction" if clear and use_adj else "reading_chance_possible")
    ptxt = fmt_p(pv, lang)  # '<0,001' reads as 'p <0,001', a value as 'p = 0,003'
    return sentence + text(lang, tail, pname=pname, p=ptxt if ptxt.startswith(("<", ">")) else f"= {ptxt}")


def display_table(shown: pd.DataFrame, plan: AnalysisPlan, study: Study, instruments: dict[str, Instrument],
                  lang: str) -> pd.DataFrame:
    """Formatted effect table in `lang` from suppressed rows: the column layout of study.md section 4.

    Keeps the columns `outcome_key` and `outcome_family` (codes) first for grouping; drop them to print.
    """
    I = plan.intervention_arm  # noqa: E741
    base = wave_label(study, study.baseline_wave, lang)
    out: list[dict] = []
    for _, r in shown.iterrows():
        d: dict[str, str] = {"outcome_key": r["outcome"], "outcome_family": r["outcome_family"]}
        d[text(lang, "col_outcome")] = (f"{outcome_label(r['outcome'], plan, instruments, lang)} "
                                        f"({text(lang, 'direction_' + str(r['direction']))})")
        d[text(lang, "col_wave")] = wave_label(study, r["wave"], lang)
        binary = r["family"] == "binomial"
        for a in plan.cohort_arms:
            al = arm_label(study, a, lang)
            n, ret = r[col("n", a)], r[col("retained", a)]
            d[text(lang, "col_n", arm=al, baseline=base)] = (
                _int(n) if _is_marker(n) or not _num(ret, lang, 0) else f"{_int(n)} ({_num(ret, lang, 0)}%)")
        # continuous outcomes: means (SD); yes/no outcomes: % (their own columns, so a header never says
        # 'mean (SD)' over a percentage)
        for pct in (False, True):
            for a in plan.cohort_arms:
                al = arm_label(study, a, lang)
                m, s = r[col("base_mean", a)], r[col("base_sd", a)]
                v = _num(m, lang) if _is_marker(m) or not _num(s, lang) else f"{_num(m, lang)} ({_num(s, lang)})"
                d[text(lang, "col_baseline_pct" if pct else "col_baseline", arm=al)] = v if pct == binary else ""
        for pct in (False, True):
            for a in plan.cohort_arms:
                al = arm_label(study, a, lang)
                v = _ci(r[col("emm", a)], r[col("emm_lower", a)], r[col("emm_upper", a)], lang)
                d[text(lang, "col_emm_pct" if pct else "col_emm", arm=al)] = v if pct == binary else ""
        for comp in plan.comparison_arms:
            pair = (I, comp)
            names = {"arm": arm_label(study, I, lang), "arm2": arm_label(study, comp, lang)}
            # a difference in change, or (outcomes without a baseline value) a difference at the follow-up
            diff = _ci(r[col("diff", *pair)], r[col("diff_lower", *pair)], r[col("diff_upper", *pair)], lang)
            between = r["contrast_kind"] == "between_arm"
            boot = _interval(r.get(col("diff_boot_lower", *pair)), r.get(col("diff_boot_upper", *pair)), lang)
            if diff and boot and not _is_marker(r[col("diff", *pair)]):
                diff += " " + text(lang, "boot_ci", ci=boot.strip())
            d[text(lang, "col_diff", **names)] = "" if between else diff
            d[text(lang, "col_diff_between", **names)] = diff if between else ""
            p, pa = r[col("p", *pair)], r[col("p_adj", *pair)]
            if _is_marker(p):
                ptxt = str(p)
            else:
                ptxt = fmt_p(float(p), lang) if p is not None and not pd.isna(p) else ""
                if ptxt and pa is not None and not pd.isna(pa):
                    ptxt += f" ({fmt_p(float(pa), lang)})"
            d[text(lang, "col_p", **names)] = ptxt
            if binary or (not _is_marker(r[col("d", *pair)]) and pd.isna(r[col("d", *pair)])):
                kind = r[col("ratio_kind", *pair)]
                abbrev = {"odds ratio": "OR", "rate ratio": "RR"}.get(str(kind), "")
                rt = _ci(r[col("ratio", *pair)], r[col("ratio_lower", *pair)], r[col("ratio_upper", *pair)], lang, 2)
                d[text(lang, "col_d", **names)] = f"{abbrev} {rt}".strip() if rt and not _is_marker(
                    r[col("ratio", *pair)]) else rt
            else:
                dtxt = _ci(r[col("d", *pair)], r[col("d_lower", *pair)], r[col("d_upper", *pair)], lang, 2)
                dboot = _interval(r.get(col("d_boot_lower", *pair)), r.get(col("d_boot_upper", *pair)), lang, 2)
                if dtxt and dboot and not _is_marker(r[col("d", *pair)]):
                    dtxt += " " + text(lang, "boot_ci", ci=dboot.strip())
                d[text(lang, "col_d", **names)] = dtxt
        for a in plan.cohort_arms:
            d[text(lang, "col_above", arm=arm_label(study, a, lang))] = _num(r[col("above_pct", a)], lang, 0)
        for a in plan.cohort_arms:
            imp, det = r[col("improved_pct", a)], r[col("deteriorated_pct", a)]
            d[text(lang, "col_rci", arm=arm_label(study, a, lang))] = (
                str(imp) if _is_marker(imp) else
                (f"{_num(imp, lang, 0)} / {_num(det, lang, 0)}" if _num(imp, lang, 0) else ""))
        for comp in plan.comparison_arms:
            pair = (I, comp)
            names = {"arm": arm_label(study, I, lang), "arm2": arm_label(study, comp, lang)}
            mi = _ci(r[col("mi", *pair)], r[col("mi_lower", *pair)], r[col("mi_upper", *pair)], lang)
            flag = r[col("sens_changed", *pair)]
            if mi and not _is_marker(r[col("mi", *pair)]) and flag is not None and not pd.isna(flag):
                mi += "; " + text(lang, "sens_changed" if bool(flag) else "sens_same")
            d[text(lang, "col_sens", **names)] = mi
        d[text(lang, "col_reading")] = " ".join(
            s for s in (reading(r, comp, plan, study, instruments, lang) for comp in plan.comparison_arms) if s)
        out.append(d)
    return pd.DataFrame(out)


def printable(display: pd.DataFrame) -> pd.DataFrame:
    """The display table without its grouping codes."""
    return display.drop(columns=["outcome_key", "outcome_family"], errors="ignore")


# --- files ---------------------------------------------------------------------------------------------------------

def write_csv(shown: pd.DataFrame, path: Path) -> Path:
    """The machine-readable table: raw numbers (after suppression), column names from `effect_rows`."""
    shown.to_csv(path, index=False, encoding="utf-8")
    return path


def write_markdown(displays: dict[str, pd.DataFrame], footers: dict[str, list[str]], path: Path,
                   titles: dict[str, str]) -> Path:
    """One Markdown table per language, each followed by its footer lines."""
    parts: list[str] = []
    for lang, disp in displays.items():
        parts.append(f"# {titles[lang]}\n")
        tab = printable(disp)
        esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
        parts.append("| " + " | ".join(esc(c) for c in tab.columns) + " |")
        parts.append("|" + "---|" * len(tab.columns))
        for _, r in tab.iterrows():
            parts.append("| " + " | ".join(esc(v) for v in r.to_numpy()) + " |")
        parts.append("")
        parts += [f"* {line}" for line in footers[lang]]
        parts.append("")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def sheet_name(family: str, lang: str, used: set[str]) -> str:
    """An Excel-safe, unique sheet name (31 characters at most, no []:*?/\\)."""
    base = "".join(ch for ch in f"{family} ({lang})" if ch not in "[]:*?/\\")[:31]
    name, k = base, 2
    while name in used:
        name = f"{base[:28]}~{k}"
        k += 1
    used.add(name)
    return name


def write_xlsx(displays: dict[str, pd.DataFrame], notes: dict[str, list[tuple[str, str]]], path: Path) -> list[str]:
    """Formatted workbook: per language one sheet per outcome family, then a notes sheet; returns sheet names."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)
    used: set[str] = set()
    head_fill = PatternFill("solid", fgColor="1F4E79")
    band_fill = PatternFill("solid", fgColor="EAF1F8")
    thin = Side(style="thin", color="BFBFBF")
    for lang, disp in displays.items():
        families = list(dict.fromkeys(disp["outcome_family"])) if not disp.empty else ["other"]
        for fam in families:
            ws = wb.create_sheet(sheet_name(fam, lang, used))
            tab = printable(disp[disp["outcome_family"] == fam]) if not disp.empty else printable(disp)
            ws.append(list(tab.columns))
            for cell in ws[1]:
                cell.font = Font(bold=True, color="FFFFFF")
                cell.fill = head_fill
                cell.alignment = Alignment(wrap_text=True, vertical="top")
            for i, (_, r) in enumerate(tab.iterrows()):
                ws.append([str(v) for v in r.to_numpy()])
                for cell in ws[ws.max_row]:
                    cell.alignment = Alignment(wrap_text=True, vertical="top")
                    cell.border = Border(bottom=thin)
                    if i % 2:
                        cell.fill = band_fill
            for j, name in enumerate(tab.columns, start=1):
                width = 60 if j == len(tab.columns) else (34 if j == 1 else 18)
                ws.column_dimensions[get_column_letter(j)].width = width
                _ = name
            ws.row_dimensions[1].height = 60
            ws.freeze_panes = "C2"
        ws = wb.create_sheet(sheet_name(text(lang, "notes_sheet"), lang, used))
        ws.append([text(lang, "notes_title")])
        ws["A1"].font = Font(bold=True, size=13)
        for k, v in notes[lang]:
            ws.append([k, v])
            ws.cell(ws.max_row, 1).font = Font(bold=True)
            ws.cell(ws.max_row, 2).alignment = Alignment(wrap_text=True, vertical="top")
        ws.column_dimensions["A"].width = 28
        ws.column_dimensions["B"].width = 110
    wb.save(path)
    return wb.sheetnames


def effect_contrasts(shown: pd.DataFrame, plan: AnalysisPlan) -> pd.DataFrame:
    """Long form of effect rows (raw or read back from effect_table.csv): one row per outcome x comparison x wave.

    Columns: outcome, wave, arm, arm2, contrast, estimate, lower, upper, p, p_adj, d, d_lower, d_upper,
    suppressed. Suppressed cells ('<threshold') become NaN with `suppressed` True. For comparisons with a
    generator's truth (flows) and other machine readers of `effect_table.csv`.
    """
    out = []
    for _, r in shown.iterrows():
        for comp in plan.comparison_arms:
            pair = (plan.intervention_arm, comp)
            rec = {"outcome": r["outcome"], "wave": r["wave"], "arm": pair[0], "arm2": comp,
                   "contrast": r.get(col("contrast", *pair))}
            hidden = False
            for k, name in [("diff", "estimate"), ("diff_lower", "lower"), ("diff_upper", "upper"), ("p", "p"),
                            ("p_adj", "p_adj"), ("d", "d"), ("d_lower", "d_lower"), ("d_upper", "d_upper")]:
                v = r.get(col(k, *pair))
                if _is_marker(v):
                    hidden, v = True, float("nan")
                try:
                    rec[name] = float(v)
                except (TypeError, ValueError):
                    rec[name] = float("nan")
            rec["suppressed"] = hidden
            out.append(rec)
    return pd.DataFrame(out)
