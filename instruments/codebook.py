"""A codebook of every instrument, item and scale, as tables, markdown and an Excel workbook."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .model import Condition, Instrument, Provenance, Scale


def _cond(when: Condition) -> str:
    parts = []
    if when.roles:
        parts.append("role " + "/".join(when.roles))
    if when.min_age_years is not None or when.max_age_years is not None:
        lo = "" if when.min_age_years is None else f"{when.min_age_years:g}"
        hi = "" if when.max_age_years is None else f"{when.max_age_years:g}"
        parts.append(f"age [{lo}, {hi})")
    if when.sex:
        parts.append(when.sex)
    return ", ".join(parts)


def _prov(p: Provenance) -> str:
    return ("verified" if p.verified else "NOT verified") + (f": {p.source}" if p.source else "")


def _missing_rule(sc: Scale) -> str:
    k = len(sc.items or sc.components or [])
    need = k if sc.min_answered is None else sc.min_answered
    rule = f"needs {need} of {k}"
    if sc.aggregation == "mean_times_n":
        rule += "; mean x n"
    elif sc.prorate:
        rule += "; prorated to all items"
    if sc.rounding == "half_up":
        rule += "; rounded half up"
    return rule


def codebook_tables(instruments: dict[str, Instrument], lang: str = "en") -> dict[str, pd.DataFrame]:
    """Tables `instruments`, `items`, `scales`, `cutoffs_bands` describing every definition."""
    inst_rows, item_rows, scale_rows, cb_rows = [], [], [], []
    for inst in sorted(instruments.values(), key=lambda i: i.code):
        inst_rows.append({
            "instrument": inst.code, "name": inst.name, "version": inst.version, "construct": inst.construct_code,
            "label_nl": inst.label.nl, "label_en": inst.label.en, "roles": ", ".join(inst.roles),
            "age_range_years": "" if inst.age_range_years is None else f"{inst.age_range_years[0]:g}-{inst.age_range_years[1]:g}",
            "licence": inst.licence, "source": inst.source, "user_supplied": inst.user_supplied,
            "provenance": _prov(inst.provenance), "notes": inst.notes or "",
        })
        for it in inst.items:
            rs = inst.response_scale_of(it)
            if rs.options:
                resp = "; ".join(
                    f"{o.code}={o.label.get(lang)}" + ("" if o.score is None else f" (scores {o.score:g})") for o in rs.options
                )
            else:
                lo, hi = rs.numeric  # type: ignore[misc]
                resp = f"number {lo:g}-{hi:g}" + (f" ({rs.unit})" if rs.unit else "")
            item_rows.append({
                "instrument": inst.code, "item_key": inst.item_key(it.code), "item": it.code,
                "label_nl": it.label.nl, "label_en": it.label.en, "response_scale": rs.code, "responses": resp,
                "reversed": it.reversed,
            })
        for sc in inst.scales:
            scale_rows.append({
                "instrument": inst.code, "outcome": f"{inst.code}.{sc.code}", "scale": sc.code,
                "label_nl": sc.label.nl, "label_en": sc.label.en,
                "items": ", ".join(sc.items) if sc.items else "",
                "components": ", ".join(sc.components) if sc.components else "",
                "aggregation": sc.aggregation + (f" (>= {sc.endorsed_at:g})" if sc.endorsed_at is not None else ""),
                "missing_rule": _missing_rule(sc), "direction": sc.direction,
                "cutoffs": "; ".join(f"{c.operator} {c.threshold:g}" + (f" [{_cond(c.when)}]" if _cond(c.when) else "") for c in sc.cutoffs),
                "bands": "; ".join(
                    f"{bs.code}" + (f" [{_cond(bs.when)}]" if _cond(bs.when) else "") + ": "
                    + ", ".join(f"{b.code} {b.min:g}-{b.max:g}" for b in bs.bands)
                    for bs in sc.bands
                ),
                "reliability": "" if sc.reliability is None else f"{sc.reliability.kind} {sc.reliability.value:g}",
                "verified": sc.provenance.verified, "source": sc.provenance.source or "",
            })
            for c in sc.cutoffs:
                cb_rows.append({"instrument": inst.code, "scale": sc.code, "kind": "cutoff", "code": "",
                                "rule": f"score {c.operator} {c.threshold:g}", "label": c.label.get(lang),
                                "when": _cond(c.when), "provenance": _prov(c.provenance)})
            for bs in sc.bands:
                for b in bs.bands:
                    cb_rows.append({"instrument": inst.code, "scale": sc.code, "kind": f"band ({bs.code})", "code": b.code,
                                    "rule": f"{b.min:g}-{b.max:g}", "label": b.label.get(lang), "when": _cond(bs.when),
                                    "provenance": _prov(bs.provenance)})
        for cl in inst.classifications:
            scale_rows.append({
                "instrument": inst.code, "outcome": f"{inst.code}.{cl.code}", "scale": cl.code,
                "label_nl": cl.label.nl, "label_en": cl.label.en, "items": "", "components": ", ".join(cl.scales_used),
                "aggregation": "classification", "missing_rule": "all scales used must be scored", "direction": "",
                "cutoffs": "", "bands": ", ".join(c.code for c in cl.categories), "reliability": "",
                "verified": cl.provenance.verified, "source": cl.provenance.source or "",
            })
            for cat in cl.categories:
                rule = " and ".join(f"{t.scale} {t.operator} {t.value:g}" for t in cat.all_of) or "otherwise"
                cb_rows.append({"instrument": inst.code, "scale": cl.code, "kind": "category", "code": cat.code, "rule": rule,
                                "label": cat.label.get(lang), "when": _cond(cl.when), "provenance": _prov(cl.provenance)})
    return {
        "instruments": pd.DataFrame(inst_rows),
        "items": pd.DataFrame(item_rows),
        "scales": pd.DataFrame(scale_rows),
        "cutoffs_bands": pd.DataFrame(cb_rows),
    }


def _md_table(df: pd.DataFrame, columns: list[str]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for _, r in df.iterrows()]
    return "\n".join(lines)


def instrument_markdown(inst: Instrument, tables: dict[str, pd.DataFrame] | None = None, lang: str = "en") -> str:
    """The codebook section of one instrument."""
    t = tables or codebook_tables({inst.code: inst}, lang)
    items = t["items"][t["items"]["instrument"] == inst.code]
    scales = t["scales"][t["scales"]["instrument"] == inst.code]
    cb = t["cutoffs_bands"][t["cutoffs_bands"]["instrument"] == inst.code]
    age = "" if inst.age_range_years is None else f"; age {inst.age_range_years[0]:g}-{inst.age_range_years[1]:g}"
    out = [
        f"## {inst.code}: {inst.name} (version {inst.version})",
        "",
        f"{inst.label.nl} / {inst.label.en}. Construct `{inst.construct_code}`; roles {', '.join(inst.roles)}{age}.",
        "",
        f"* Licence: {inst.licence}",
        f"* Source: {inst.source}",
        f"* Provenance: {_prov(inst.provenance)}" + ("; user-supplied definition" if inst.user_supplied else ""),
    ]
    if inst.notes:
        out.append(f"* Notes: {inst.notes}")
    label_col = "label_nl" if lang == "nl" else "label_en"
    out += ["", "### Items", "", _md_table(items, ["item_key", "label_nl", "label_en", "responses", "reversed"])]
    out += ["", "### Scales", "", _md_table(scales, ["outcome", label_col, "items", "components", "aggregation", "missing_rule",
                                                       "direction", "reliability", "verified", "source"])]
    if len(cb):
        out += ["", "### Cut-offs, bands and categories", "", _md_table(cb, ["scale", "kind", "code", "rule", "label", "when", "provenance"])]
    return "\n".join(out) + "\n"


def codebook_markdown(instruments: dict[str, Instrument], lang: str = "en") -> str:
    """The whole codebook as markdown: an overview table, then one section per instrument."""
    t = codebook_tables(instruments, lang)
    parts = [
        "# Codebook: instruments, items and scales",
        "",
        "Generated from the instrument definitions. Item labels are short descriptions, never the item wording.",
        "Facts marked NOT verified are from memory or secondary sources and must be checked against the manual.",
        "",
        _md_table(t["instruments"], ["instrument", "name", "version", "construct", "roles", "age_range_years", "licence"]),
        "",
    ]
    for code in sorted(instruments):
        parts.append(instrument_markdown(instruments[code], t, lang))
    return "\n".join(parts)


def write_codebook(instruments: dict[str, Instrument], out_dir: Path, lang: str = "en") -> list[Path]:
    """Write `codebook.md` and `codebook.xlsx` (sheets instruments, items, scales, cutoffs_bands) to out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "codebook.md"
    md.write_text(codebook_markdown(instruments, lang), encoding="utf-8")
    xlsx = out_dir / "codebook.xlsx"
    tables = codebook_tables(instruments, lang)
    with pd.ExcelWriter(xlsx, engine="openpyxl") as writer:
        for name, df in tables.items():
            df.to_excel(writer, sheet_name=name, index=False)
            ws = writer.sheets[name]
            ws.freeze_panes = "A2"
            for col in ws.columns:
                width = max(len(str(c.value or "")) for c in list(col)[:200])
                ws.column_dimensions[col[0].column_letter].width = min(60, max(8, width + 2))
    return [md, xlsx]
