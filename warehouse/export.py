"""Analysis-ready datasets on disk: long and wide frames as Parquet, CSV and SPSS .sav (variable and value
labels), with a codebook, the conflict list, the attrition table and flow diagram, and snapshot hashes.

In SPSS files the code columns `arm`, `wave`, `role` and `sex` are numeric with value labels (codes in the
order of study.yaml; sex 1 = male, 2 = female as in the surveys); `above_cutoff` is 0/1; item and outcome
variable labels come from the instrument definitions; dates are SPSS dates. `read_sav_frame` reverses this.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from .linkage import LinkedData, wide_frame
from .snapshot import snapshot_hash

FORMATS = ("parquet", "csv", "sav")
SEX_CODES = {"male": 1, "female": 2}
BASE_LABELS = {
    "household_id": "Household (pseudonym)", "person_id": "Subject person (pseudonym)",
    "informant_id": "Informant person (pseudonym)", "role": "Informant role", "arm": "Study arm", "site": "Site",
    "wave": "Wave", "days_since_t0": "Days since T0 (registration)", "months_since_t0": "Months since T0",
    "age_years": "Subject age in years at the response", "sex": "Subject sex", "outcome": "Outcome (instrument.scale)",
    "score": "Scale score", "above_cutoff": "Score at or above the clinical cut-off",
    "baseline_score": "Score at the baseline wave (same subject, informant role, outcome)",
    "response_id": "Response id in the warehouse", "instrument": "Instrument code", "scale": "Scale code",
    "response_date": "Date the questionnaire was completed",
}


@dataclass
class ExportResult:
    """Paths written and the snapshot hash of each dataset."""

    out_dir: Path
    files: list[Path] = field(default_factory=list)
    snapshots: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None


def code_maps(study: Study) -> dict[str, dict[str, int]]:
    """Numeric SPSS codes of the study's code columns: position in study.yaml (1-based); sex as surveyed."""
    return {"arm": {c: i + 1 for i, c in enumerate(study.arm_codes)},
            "wave": {c: i + 1 for i, c in enumerate(study.wave_codes)},
            "role": {r.code: i + 1 for i, r in enumerate(study.roles)},
            "sex": dict(SEX_CODES)}


def value_labels(study: Study, lang: str = "en") -> dict[str, dict[int, str]]:
    """SPSS value labels of the code columns, in `lang`."""
    maps = code_maps(study)
    return {"arm": {maps["arm"][a.code]: a.label.get(lang) for a in study.arms},
            "wave": {maps["wave"][w.code]: w.label.get(lang) for w in study.waves},
            "role": {maps["role"][r.code]: r.label.get(lang) for r in study.roles},
            "sex": {1: "male" if lang == "en" else "man", 2: "female" if lang == "en" else "vrouw"},
            "above_cutoff": {0: "below cut-off" if lang == "en" else "onder afkappunt",
                             1: "at or above cut-off" if lang == "en" else "op of boven afkappunt"}}


def outcome_labels(instruments: dict[str, Instrument], lang: str = "en") -> dict[str, str]:
    """`<instrument>.<scale>` -> "<instrument label>: <scale label>"."""
    return {f"{i.code}.{s.code}": f"{i.label.get(lang)}: {s.label.get(lang)}"
            for i in instruments.values() for s in i.scales}


def variable_labels(frame: pd.DataFrame, study: Study, instruments: dict[str, Instrument],
                    lang: str = "en") -> dict[str, str]:
    """Variable labels for a long or wide frame; wide outcome columns `<inst>_<scale>_<wave>` get the scale's
    label and the wave's label."""
    labels = dict(BASE_LABELS)
    outs = outcome_labels(instruments, lang)
    waves = {w.code: w.label.get(lang) for w in study.waves}
    hh_word = "Household (highest of its informants)" if lang == "en" else "Huishouden (hoogste van de informanten)"
    for o, ol in outs.items():
        labels["hh_" + o.replace(".", "_")] = f"{hh_word}: {ol}"
    for col in frame.columns:
        if col in labels:
            continue
        for w, wl in waves.items():
            if not col.endswith(f"_{w}"):
                continue
            stem = col[: -len(w) - 1]
            if stem in labels:
                labels[col] = f"{labels[stem]}, {wl}"
            else:
                for o, ol in outs.items():
                    if o.replace(".", "_") == stem:
                        labels[col] = f"{ol}, {wl}"
    return {c: labels[c][:255] for c in frame.columns if c in labels}


def to_spss_frame(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Code columns to numeric codes, booleans to 0/1, nullable numbers to float (for pyreadstat)."""
    out = pd.DataFrame(index=frame.index)
    maps = code_maps(study)
    for c in frame.columns:
        s = frame[c]
        if c in maps:
            codes, uniques = pd.factorize(s, use_na_sentinel=True)
            uniques = [str(u) for u in uniques]
            unknown = sorted(set(uniques) - set(maps[c]))
            if unknown:
                raise ValueError(f"SPSS export: column {c!r} holds {unknown}, not among the codes {sorted(maps[c])} "
                                 "of config/study.yaml; fix the data or the study configuration")
            lookup = np.array([float(maps[c][u]) for u in uniques] + [np.nan], dtype="float64")
            out[c] = lookup[codes]  # code -1 (missing) takes the last entry, NaN
        elif pd.api.types.is_bool_dtype(s) or str(s.dtype) == "boolean":
            out[c] = s.astype("Float64").astype("float64")
        elif pd.api.types.is_datetime64_any_dtype(s):
            out[c] = pd.to_datetime(s).astype("datetime64[ns]")
        elif pd.api.types.is_numeric_dtype(s):
            out[c] = s.astype("Float64").astype("float64") if str(s.dtype) in ("Int64", "Float64") else s
        else:
            # numpy object array: pyreadstat iterates Arrow-backed strings ~10x slower
            if pd.api.types.is_string_dtype(s) and not isinstance(s.dtype, pd.CategoricalDtype):
                vals = np.asarray(s.to_numpy(dtype=object, na_value=""), dtype=object)
            else:
                vals = np.array(["" if pd.isna(v) else str(v) for v in s.astype(object)], dtype=object)
            out[c] = pd.Series(vals, index=s.index, dtype=object)
    return out


def write_sav(frame: pd.DataFrame, path: Path, study: Study, instruments: dict[str, Instrument],
              lang: str = "en") -> Path:
    """Write `frame` as SPSS .sav with variable and value labels (pyreadstat)."""
    import pyreadstat

    data = to_spss_frame(frame, study)
    vl = {c: v for c, v in value_labels(study, lang).items() if c in data.columns}
    pyreadstat.write_sav(data, str(path), column_labels=variable_labels(frame, study, instruments, lang),
                         variable_value_labels=vl)
    return Path(path)


def read_sav_frame(path: Path, study: Study) -> tuple[pd.DataFrame, object]:
    """Read an exported .sav back: numeric codes to study codes, 0/1 to booleans, '' to missing text."""
    import pyreadstat

    df, meta = pyreadstat.read_sav(str(path))
    for c, m in code_maps(study).items():
        if c in df:
            back = {float(v): k for k, v in m.items()}
            df[c] = df[c].map(back).astype(object)
    if "above_cutoff" in df:
        df["above_cutoff"] = df["above_cutoff"].map({1.0: True, 0.0: False}).astype("boolean")
    for c in df.columns:
        if df[c].dtype == object or str(df[c].dtype).startswith("str"):
            df[c] = df[c].replace("", np.nan)
    return df, meta


def codebook(frames: dict[str, pd.DataFrame], study: Study, instruments: dict[str, Instrument],
             lang: str = "en") -> pd.DataFrame:
    """One row per (dataset, variable): label, storage type, SPSS value labels, n non-missing."""
    vls = value_labels(study, lang)
    rows = []
    for name, f in frames.items():
        labels = variable_labels(f, study, instruments, lang)
        for c in f.columns:
            rows.append({"dataset": name, "variable": c, "label": labels.get(c, ""), "type": str(f[c].dtype),
                         "value_labels": "; ".join(f"{k} = {v}" for k, v in vls.get(c, {}).items()),
                         "n_nonmissing": int(f[c].notna().sum())})
    return pd.DataFrame(rows)


def export_datasets(
    linked: LinkedData,
    study: Study,
    instruments: dict[str, Instrument],
    out_dir: Path,
    formats: tuple[str, ...] = FORMATS,
    lang: str = "en",
    attrition: pd.DataFrame | None = None,
) -> ExportResult:
    """Write `analysis_long` and `analysis_wide` in `formats`, `codebook.csv/.md`, `conflicts.csv`,
    (`attrition.csv` when given) and `snapshot.json` (content hash of each dataset) into `out_dir`."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown export format(s) {bad}; choose from {list(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    res = ExportResult(out_dir=out_dir)
    long = linked.long
    frames = {"analysis_long": long, "analysis_wide": wide_frame(long, study)}
    for name, f in frames.items():
        res.snapshots[name] = snapshot_hash(f)
        if "parquet" in formats:
            p = out_dir / f"{name}.parquet"
            f.to_parquet(p, index=False)
            res.files.append(p)
        if "csv" in formats:
            p = out_dir / f"{name}.csv"
            f.to_csv(p, index=False, date_format="%Y-%m-%d")
            res.files.append(p)
        if "sav" in formats:
            res.files.append(write_sav(f, out_dir / f"{name}.sav", study, instruments, lang))
    cb = codebook(frames, study, instruments, lang)
    cb.to_csv(out_dir / "codebook.csv", index=False)
    md = ["| dataset | variable | label | type | value labels |", "|---|---|---|---|---|"]
    md += [f"| {r.dataset} | {r.variable} | {r.label} | {r.type} | {r.value_labels} |" for r in cb.itertuples()]
    (out_dir / "codebook.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    linked.conflicts.to_csv(out_dir / "conflicts.csv", index=False)
    res.files += [out_dir / "codebook.csv", out_dir / "codebook.md", out_dir / "conflicts.csv"]
    if attrition is not None:
        attrition.to_csv(out_dir / "attrition.csv", index=False)
        res.files.append(out_dir / "attrition.csv")
    (out_dir / "snapshot.json").write_text(json.dumps(res.snapshots, indent=2), encoding="utf-8")
    res.files.append(out_dir / "snapshot.json")
    return res


def export_analysis(
    engine,  # noqa: ANN001
    study: Study,
    instruments: dict[str, Instrument],
    out_dir: Path,
    formats: tuple[str, ...] = FORMATS,
    lang: str = "en",
    rules=None,  # noqa: ANN001
    run_id: str | None = None,
) -> ExportResult:
    """Everything statisticians and the data manager need from the warehouse, in `out_dir`: the datasets
    (`export_datasets`), `attrition.csv`, `attrition_by_arm.csv`, `flow.png/.svg`, `baseline_comparison.csv`,
    `conflicts.csv`; records a `run` (kind `export`) carrying the long dataset's snapshot hash."""

    from .attrition import (
        attrition_by_arm,
        attrition_table,
        baseline_comparison,
        check_identities,
        flow_diagram,
        person_wave_status,
        read_quarantine,
    )
    from .linkage import link_warehouse
    from .snapshot import new_run_id, record_run

    linked = link_warehouse(engine, study, instruments, rules)
    from .read import batches_frame

    table = attrition_table(person_wave_status(linked.responses, read_quarantine(engine), study), study,
                            batches_frame(engine))
    broken = check_identities(table)
    if broken:
        raise RuntimeError("attrition counts do not add up (a bug; please report): " + "; ".join(broken[:5]))
    res = export_datasets(linked, study, instruments, out_dir, formats, lang, attrition=table)
    by_arm = attrition_by_arm(table, study)
    by_arm.to_csv(res.out_dir / "attrition_by_arm.csv", index=False)
    baseline_comparison(linked.long, study).to_csv(res.out_dir / "baseline_comparison.csv", index=False)
    res.files += [res.out_dir / "attrition_by_arm.csv", res.out_dir / "baseline_comparison.csv"]
    res.files += flow_diagram(by_arm, study, res.out_dir / "flow", lang)
    run_id = run_id or new_run_id("export")
    record_run(engine, run_id, "export", res.snapshots["analysis_long"],
               details={"snapshots": res.snapshots, "out_dir": str(res.out_dir), "formats": list(formats),
                        "conflicts": int(len(linked.conflicts))})
    res.run_id = run_id
    return res
