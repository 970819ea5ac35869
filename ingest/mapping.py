"""From an export file to a MappedFile: find its source definition, read it, map columns onto items.

Public: `load_sources(dir=None)`, `match_source(path, sources)`, `read_export(path, source, instruments)`.
Direct identifiers never enter the MappedFile; raw household/person ids do (they are pseudonymised by the
loader right after validation), and so does the subject's birth date (turned into age, then dropped).
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cohortflow.config.sources import SourceDefinition, load_source_definitions
from cohortflow.instruments.model import Instrument
from cohortflow.instruments.registry import load_instruments

from .outcome import ROW_FAILURE_COLUMNS, MappedFile
from .readers import BadFileError, RawExport, read_raw

FIELDS = ("arm", "site", "wave", "role")
SYSTEM_MISSING = "system_missing"


class NoSourceError(BadFileError):
    """No source definition fits the file name."""


def load_sources(dir: Path | str | None = None) -> list[SourceDefinition]:  # noqa: A002 - public name
    """All source definitions in `dir` (default config/sources plus COHORTFLOW_SOURCE_DIRS)."""
    return load_source_definitions(Path(dir) if dir is not None else None)


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 hex and size in bytes of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _header(path: Path, source: SourceDefinition) -> list[str]:
    """The column names of a file, read cheaply; [] when it cannot be read."""
    try:
        if source.format in ("sav", "dta"):
            import pyreadstat

            fn = pyreadstat.read_sav if source.format == "sav" else pyreadstat.read_dta
            _, meta = fn(str(path), metadataonly=True)
            return list(meta.column_names)
        if source.format == "xlsx":
            from .readers import XLSX_ENGINES, _has_calamine

            eng = "calamine" if "calamine" in XLSX_ENGINES and _has_calamine() else "openpyxl"
            return [str(c) for c in pd.read_excel(path, sheet_name=source.sheet or 0, nrows=0, engine=eng).columns]
        with open(path, "rb") as fh:
            line = fh.readline().decode("utf-8-sig", errors="replace")
        delim = max((";", ",", "\t", "|"), key=line.count) if source.csv.delimiter == "auto" else source.csv.delimiter
        return [c.strip().strip('"') for c in line.rstrip("\r\n").split(delim)]
    except Exception:
        return []


def _version_key(v: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\-]", v))


def match_source(path: Path | str, sources: list[SourceDefinition]) -> SourceDefinition:
    """The source definition for a file: by file name; between versions, the one whose columns fit best.

    Raises NoSourceError (a BadFileError) naming the file and the patterns known.
    """
    path = Path(path)
    cands = [s for s in sources if s.matches(path.name)]
    if not cands:
        pats = sorted({s.file_pattern for s in sources})
        raise NoSourceError(
            f"{path.name}: no source definition matches this file name (known patterns: {pats}). "
            "Rename the file to the agreed pattern or add a source definition in config/sources/."
        )
    if len(cands) == 1:
        return cands[0]
    header = set(_header(path, cands[0]))

    def fit(s: SourceDefinition) -> tuple:
        needed = [s.identifiers.household, s.identifiers.person, *s.required_columns, *s.columns]
        present = sum(c in header for c in needed)
        return (all(c in header for c in [s.identifiers.household, s.identifiers.person, *s.required_columns]),
                present / max(len(needed), 1), _version_key(s.version))

    return max(cands, key=fit)


def _canon(name: str) -> str:
    """Lower-case, without separators, numbers without leading zeros: 'PSS_07' and 'pss7' are equal."""
    return re.sub(r"0+(\d)", r"\1", re.sub(r"[^a-z0-9]", "", name.lower()))


def closest(name: str, known: list[str]) -> str | None:
    """The closest known column name (same up to case, separators and leading zeros first), or None."""
    known = [k for k in known if k != name]
    canon = _canon(name)
    for k in known:
        if _canon(k) == canon:
            return k
    lower = {k.lower(): k for k in known}
    hit = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.5)
    return lower[hit[0]] if hit else None


def _is_ignored(col: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(col, p) for p in patterns)


def auto_item_columns(instruments: dict[str, Instrument]) -> dict[str, str]:
    """Upper-case column names `<INSTRUMENT>_<ITEM>` -> item key, for every defined instrument item."""
    return {f"{i.code}_{it}".upper(): i.item_key(it) for i in instruments.values() for it in i.item_codes}


def _item_index(instruments: dict[str, Instrument]) -> dict[str, tuple[str, str]]:
    return {i.item_key(it): (i.code, it) for i in instruments.values() for it in i.item_codes}


def _parse_dates(s: pd.Series, fmt: str | None) -> tuple[pd.Series, pd.Series]:
    """Dates from a column; returns (datetime64 series, mask of non-blank cells that did not parse)."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return s.astype("datetime64[ns]"), pd.Series(False, index=s.index)
    if pd.api.types.is_numeric_dtype(s):  # Excel serial day numbers
        out = pd.to_datetime(s, unit="D", origin="1899-12-30", errors="coerce")
        return out.astype("datetime64[ns]"), s.notna() & out.isna()
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind in ("date", "datetime", "datetime64"):  # date objects (e.g. SPSS DATE, Excel dates)
        out = pd.to_datetime(s, errors="coerce").astype("datetime64[ns]")
        return out, s.notna() & out.isna()
    if kind.startswith("mixed"):  # dates and text
        s = s.map(lambda v: pd.Timestamp(v).strftime("%Y-%m-%d") if hasattr(v, "year") else v)
    vals = s.to_numpy(dtype=object)  # plain Python strings: pandas string ops cost ~ms per small column
    na = pd.isna(vals)
    txt = np.array([None if m else str(v).strip() or None for v, m in zip(vals.tolist(), na.tolist(), strict=True)],
                   dtype=object)
    blank = np.array([t is None for t in txt.tolist()], dtype=bool)
    out = _parse_texts(txt, fmt)
    return pd.Series(out, index=s.index), pd.Series(~blank & np.isnat(out), index=s.index)


_DATE_CACHE: dict[str | None, dict[str, np.datetime64]] = {}  # format -> date text -> parsed (NaT: not a date)
_DATE_CACHE_MAX = 200_000


def _parse_texts(txt: np.ndarray, fmt: str | None) -> np.ndarray:
    """datetime64[ns] of stripped date texts (None: blank); each distinct text parsed once per process.

    With `fmt`, texts in that format, else ISO 8601; without, any format with the day first. Every text is
    parsed on its own (pandas' format="mixed"/explicit formats), so caching per text changes no result."""
    cache = _DATE_CACHE.setdefault(fmt, {})
    if len(cache) > _DATE_CACHE_MAX:
        cache.clear()
    texts = txt.tolist()
    new = sorted({t for t in texts if t is not None and t not in cache})
    if new:
        arr = np.array(new, dtype=object)
        if fmt:
            parsed = np.asarray(pd.to_datetime(arr, format=fmt, errors="coerce"), dtype="datetime64[ns]")
            retry = np.isnat(parsed)
            if retry.any():  # ISO dates are always accepted too
                iso = np.asarray(pd.to_datetime(np.where(retry, arr, None), format="ISO8601", errors="coerce"),
                                 dtype="datetime64[ns]")
                parsed = np.where(retry, iso, parsed)
        else:
            parsed = np.asarray(pd.to_datetime(arr, format="mixed", dayfirst=True, errors="coerce"),
                                dtype="datetime64[ns]")
        cache.update(zip(new, parsed, strict=True))
    nat = np.datetime64("NaT", "ns")
    return np.array([nat if t is None else cache[t] for t in texts], dtype="datetime64[ns]")


def _first_present(cands: list[str], columns: set[str]) -> str | None:
    return next((c for c in cands if c in columns), None)


def _reason_slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40] or "user_missing"


def _to_codes(col: pd.Series, string_missing: dict[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numeric codes of an item column; returns (codes, string-missing reasons, non-numeric text mask)."""
    n = len(col)
    str_reason = np.full(n, None, dtype=object)
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype="float64", na_value=np.nan), str_reason, np.zeros(n, dtype=bool)
    txt = col.astype("object").where(col.notna(), None)
    txt = txt.map(lambda v: None if v is None else str(v).strip())
    for code, reason in string_missing.items():
        str_reason[(txt == code).to_numpy()] = reason
    cleaned = txt.map(lambda v: None if v is None or v == "" else v.replace(",", "."))
    codes = pd.to_numeric(cleaned, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = np.isnan(codes) & cleaned.notna().to_numpy() & pd.isna(str_reason)
    return codes, str_reason, bad


def read_export(
    path: Path | str,
    source: SourceDefinition,
    instruments: dict[str, Instrument] | None = None,
) -> MappedFile:
    """Read one export with its source definition and map it onto study fields and item keys (Contract 1).

    Raises BadFileError (message names the file, the problem and what to do) when the file cannot be used
    at all: unreadable, wrong format, empty, or an identifier / required column missing.
    """
    t0 = time.perf_counter()
    path = Path(path)
    instruments = instruments if instruments is not None else load_instruments()
    sha256, size = file_digest(path)
    ids = source.identifiers
    demo = source.demographics
    field_cols = [getattr(source, f).column for f in FIELDS if getattr(source, f).column]
    date_cols = [*demo.response_date, *demo.registration_date, *demo.subject_birth_date, *demo.informant_birth_date]
    text_cols = {ids.household, ids.person, *([ids.subject] if ids.subject else []), *field_cols, *date_cols,
                 *source.direct_identifiers}
    id_cols = {ids.household, ids.person, *([ids.subject] if ids.subject else []), *field_cols}
    raw: RawExport = read_raw(path, source, id_cols if source.format == "xlsx" else text_cols)
    df = raw.frame
    n = len(df)
    columns = set(df.columns)
    problems: list[dict[str, Any]] = []
    issues: list[dict[str, Any]] = []
    row_numbers = np.arange(1, n + 1)

    auto_map = auto_item_columns(instruments) if source.item_columns == "instrument_item_upper" else {}
    known_names = [ids.household, ids.person, *([ids.subject] if ids.subject else []), *field_cols, *date_cols,
                   *demo.subject_sex, *demo.informant_sex, *source.direct_identifiers, *source.columns, *auto_map]

    def missing_col(col: str, what: str) -> BadFileError:
        near = closest(col, [c for c in df.columns if isinstance(c, str)])
        hint = f" (closest column in the file: {near!r})" if near else ""
        return BadFileError(
            f"{path.name}: no {what} column {col!r}{hint}. Source {source.label} needs it: fix the export or "
            "add a new version of the source definition in config/sources/ with the new column name."
        )

    for col in [ids.household, ids.person, *source.required_columns]:
        if col not in columns:
            raise missing_col(col, "identifier" if col in (ids.household, ids.person) else "required")

    # --- arm/site/wave/role ---------------------------------------------------------------
    m = re.fullmatch(source.filename_regex, path.name) if source.filename_regex else None
    out: dict[str, Any] = {"row_number": row_numbers}
    file_level: dict[str, str | None] = {}
    for f in FIELDS:
        fs = getattr(source, f)
        if fs.column is not None:
            if fs.column not in columns:
                raise missing_col(fs.column, f)
            raw_vals = df[fs.column].to_numpy(dtype=object)
            texts = [None if m else str(v).strip() or None
                     for v, m in zip(raw_vals.tolist(), pd.isna(raw_vals).tolist(), strict=True)]
            if fs.map:
                texts = [fs.map.get(v, v) if v is not None else None for v in texts]
            distinct = set(texts)
            file_level[f] = str(texts[0]) if len(distinct) == 1 and texts[0] is not None else None
            arr = np.empty(n, dtype=object)
            arr[:] = texts
            out[f] = arr
        else:
            v = fs.value if fs.value is not None else (m.group(fs.filename_group) if m else None)
            if v is None:
                raise BadFileError(f"{path.name}: the file name does not give {f} (pattern {source.filename_regex!r}). "
                                   "Rename the file to the agreed pattern.")
            v = fs.map.get(v, v) if fs.map else v
            file_level[f] = v
            out[f] = np.full(n, v, dtype=object)

    # --- identifiers -------------------------------------------------------------------------
    def id_col(col: str) -> pd.Series:
        s = df[col]
        as_int = pd.api.types.is_float_dtype(s)  # 123.0 -> '123'
        vals = s.to_numpy(dtype=object)
        na = pd.isna(vals)
        out = np.array([None if miss else ((str(int(v)) if float(v).is_integer() else str(v)) if as_int
                                           else str(v)).strip() or None
                        for v, miss in zip(vals.tolist(), na.tolist(), strict=True)], dtype=object)
        return pd.Series(out, index=s.index, dtype=object)

    person = id_col(ids.person)
    household = id_col(ids.household)
    if ids.household_from_person:
        derived = person.str.extract(ids.household_from_person)["household"]
        household = household.where(household.notna(), derived)
    subject = person.copy()
    if ids.subject and ids.subject in columns:
        subj = id_col(ids.subject)
        subject = subj.where(subj.notna(), person)
    out["household_raw"] = household.to_numpy(dtype=object)
    out["person_raw"] = person.to_numpy(dtype=object)
    out["subject_raw"] = subject.to_numpy(dtype=object)

    # --- dates and sex ---------------------------------------------------------------------------
    used_demo: set[str] = set()
    for name, cands in (("response_date", demo.response_date), ("registration_date", demo.registration_date),
                        ("subject_birth_date", demo.subject_birth_date),
                        ("informant_birth_date", demo.informant_birth_date)):
        col = _first_present(cands, columns)
        if col is None:
            out[name] = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
            if cands:
                problems.append({"kind": "missing_column", "column": cands[0],
                                 "closest": closest(cands[0], list(map(str, df.columns))),
                                 "message": f"no column for {name} (tried {cands})"})
            continue
        used_demo.add(col)
        parsed, bad = _parse_dates(df[col], demo.date_format)
        out[name] = parsed.to_numpy()
        private = name.endswith("birth_date")
        for rn, v in zip(row_numbers[bad.to_numpy()], df[col][bad], strict=False):
            issues.append({"row_number": int(rn), "rule": "date_unparseable", "column": name,
                           "value": "<redacted>" if private else str(v), "severity": "quarantine"})
    for name, cands in (("subject_sex", demo.subject_sex), ("informant_sex", demo.informant_sex)):
        col = _first_present(cands, columns)
        codes = {str(k): v for k, v in demo.sex_codes.items()}
        if col is None:
            out[name] = np.full(n, None, dtype=object)
            continue
        used_demo.add(col)
        raw_vals = df[col].to_numpy(dtype=object)
        arr = np.empty(n, dtype=object)
        arr[:] = [None if m else codes.get(str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip())
                  for v, m in zip(raw_vals.tolist(), pd.isna(raw_vals).tolist(), strict=True)]
        out[name] = arr

    # --- items -----------------------------------------------------------------------------------
    index = _item_index(instruments)
    col_to_key: dict[str, str] = {}
    for col in df.columns:
        if isinstance(col, str) and col in auto_map:
            col_to_key[col] = auto_map[col]
    for col, key in source.columns.items():
        if key not in index:
            problems.append({"kind": "unknown_item", "column": col, "closest": closest(key, list(index)),
                             "message": f"source maps {col!r} to {key!r}, which no instrument definition has"})
            continue
        if col in columns:
            col_to_key[col] = key
        else:
            problems.append({"kind": "missing_column", "column": col,
                             "closest": closest(col, [c for c in map(str, df.columns) if c not in col_to_key]),
                             "message": f"mapped column {col!r} ({key}) is not in the file"})
    checkbox_cols: dict[str, list[tuple[str, str]]] = {}
    for fld, key in source.checkboxes.items():
        prefix = fld + source.checkbox_separator
        boxes = [(c, c[len(prefix):]) for c in df.columns if isinstance(c, str) and c.startswith(prefix)]
        if key not in index:
            problems.append({"kind": "unknown_item", "column": fld, "closest": closest(key, list(index)),
                             "message": f"checkbox {fld!r} maps to {key!r}, which no instrument definition has"})
        elif not boxes:
            problems.append({"kind": "missing_column", "column": prefix + "*",
                             "closest": closest(prefix, list(map(str, df.columns))),
                             "message": f"no checkbox columns {prefix}<code> for {key}"})
        else:
            checkbox_cols[key] = boxes
    # partially present instruments (auto mode): report the absent item columns
    if auto_map:
        present = {index[k][0] for k in col_to_key.values()}
        have = set(col_to_key.values())
        for inst_code in sorted(present):
            inst = instruments[inst_code]
            for it in inst.item_codes:
                key = inst.item_key(it)
                if key not in have:
                    col = f"{inst_code}_{it}".upper()
                    problems.append({"kind": "missing_column", "column": col,
                                     "closest": closest(col, [c for c in map(str, df.columns) if c not in col_to_key]),
                                     "message": f"item column {col!r} of {inst_code} is not in the file"})

    used = {ids.household, ids.person, *([ids.subject] if ids.subject else []), *field_cols, *used_demo,
            *col_to_key, *(c for boxes in checkbox_cols.values() for c, _ in boxes)}
    for col in df.columns:
        name = str(col)
        if name in used or name in source.direct_identifiers or _is_ignored(name, source.ignore_columns):
            continue
        if name in date_cols or name in demo.subject_sex or name in demo.informant_sex:
            continue
        problems.append({"kind": "unmapped_column", "column": name, "closest": closest(name, known_names),
                         "message": f"column {name!r} is not mapped to any item and was not loaded"})

    item_keys = sorted(set(col_to_key.values()) | set(checkbox_cols))
    string_missing = {k: v for k, v in source.missing_codes.items() if not _is_number(k)}
    numeric_missing = {float(k): v for k, v in source.missing_codes.items() if _is_number(k)}
    key_to_col = {v: k for k, v in col_to_key.items()}
    codes_m, reasons_m, missing_map = _item_matrix(df, item_keys, key_to_col, checkbox_cols, string_missing,
                                                   numeric_missing, raw, source, index, row_numbers, issues)

    base = pd.DataFrame({c: pd.Series(v, dtype=object, copy=False) if isinstance(v, np.ndarray) and v.dtype == object
                         else v for c, v in out.items()})  # object arrays stay object (no str inference)
    for c in ("arm", "site", "wave", "role", "household_raw", "person_raw", "subject_raw", "subject_sex",
              "informant_sex"):
        if base[c].dtype != object:
            base[c] = base[c].astype(object)
    frame = (pd.concat([base, pd.DataFrame(codes_m, columns=item_keys, index=base.index)], axis=1) if item_keys
             else base)
    meta: dict[str, Any] = {
        "path": str(path), "file_name": path.name, "sha256": sha256, "size": size,
        "source_name": source.name, "source_version": source.version, "format": raw.format,
        "dialect": raw.dialect, "variable_labels": {k: v for k, v in raw.variable_labels.items()
                                                    if k not in source.direct_identifiers},
        "value_labels": {col_to_key.get(k, k): v for k, v in raw.value_labels.items() if k in col_to_key},
        "missing_codes": missing_map, "item_columns": item_keys,
        "item_index": {k: index[k] for k in item_keys}, "column_map": col_to_key,
        "problems": problems, "unmapped_columns": [p["column"] for p in problems if p["kind"] == "unmapped_column"],
        "file_level": file_level, "read_seconds": time.perf_counter() - t0,
        "person_pattern": ids.person_pattern,
    }
    missing_reasons = (pd.DataFrame(reasons_m, columns=item_keys, index=frame.index, dtype=object) if item_keys
                       else pd.DataFrame(index=frame.index))
    row_issues = pd.DataFrame(issues, columns=ROW_FAILURE_COLUMNS)
    return MappedFile(frame=frame, meta=meta, missing_reasons=missing_reasons, row_issues=row_issues)


def _item_matrix(df: pd.DataFrame, item_keys: list[str], key_to_col: dict[str, str],
                 checkbox_cols: dict[str, list[tuple[str, str]]], string_missing: dict[str, str],
                 numeric_missing: dict[float, str], raw: RawExport, source: SourceDefinition,
                 index: dict[str, tuple[str, str]], row_numbers: np.ndarray,
                 issues: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, dict[str, dict[float, str]]]:
    """The item codes (rows x items, float) after value maps, their missing reasons (object, None when
    answered) and each item's missing-code map; row issues for text in numeric items and multiple ticks.

    Numeric item columns are taken in one block; text columns, checkbox groups and value maps column by column.
    """
    n, k = len(df), len(item_keys)
    codes = np.empty((n, k), dtype="float64")
    reasons = np.full((n, k), None, dtype=object)
    bad = np.zeros((n, k), dtype=bool)
    dtypes = df.dtypes
    block = [j for j, key in enumerate(item_keys) if key not in checkbox_cols
             and pd.api.types.is_numeric_dtype(dtypes[key_to_col[key]])
             and not pd.api.types.is_bool_dtype(dtypes[key_to_col[key]])]
    if block:
        codes[:, block] = df[[key_to_col[item_keys[j]] for j in block]].to_numpy(dtype="float64", na_value=np.nan)
    in_block = set(block)
    for j, key in enumerate(item_keys):
        if j in in_block:
            continue
        if key in checkbox_cols:
            codes[:, j], reasons[:, j], several = _collapse_checkboxes(df, checkbox_cols[key])
            for rn in row_numbers[several]:
                issues.append({"row_number": int(rn), "rule": "checkbox_several_ticked", "column": key,
                               "value": None, "severity": "quarantine"})
            continue
        src_col = key_to_col[key]
        codes[:, j], reasons[:, j], bad[:, j] = _to_codes(df[src_col], string_missing)
        for rn, v in zip(row_numbers[bad[:, j]], df[src_col].to_numpy()[bad[:, j]], strict=True):
            issues.append({"row_number": int(rn), "rule": "not_a_number", "column": key,
                           "value": f"text ({len(str(v))} characters)", "severity": "quarantine"})
    missing_map: dict[str, dict[float, str]] = {}
    by_miss: dict[tuple, list[int]] = {}
    for j, key in enumerate(item_keys):
        vmap = source.value_maps.get(key) or source.value_maps.get(index[key][0])
        if vmap:
            fm = {float(a): float(b) for a, b in vmap.items()}
            mapped = pd.Series(codes[:, j]).map(fm).to_numpy(dtype="float64", na_value=np.nan)
            codes[:, j] = np.where(np.isnan(mapped), codes[:, j], mapped)
        src_col = key_to_col.get(key, key)
        miss = dict(numeric_missing)
        for c in raw.user_missing.get(src_col, []):
            if c not in miss:
                label = raw.value_labels.get(src_col, {}).get(c) or raw.value_labels.get(src_col, {}).get(int(c))
                miss[c] = _reason_slug(label) if label else "user_missing"
        missing_map[key] = miss
        by_miss.setdefault(tuple(miss.items()), []).append(j)
    reasons[np.isnan(codes) & pd.isna(reasons) & ~bad] = SYSTEM_MISSING
    for miss_items, cols in by_miss.items():
        if not miss_items:
            continue
        sub_codes, sub = codes[:, cols], reasons[:, cols]
        for c, r in miss_items:
            sub[sub_codes == c] = r
        reasons[:, cols] = sub
    return codes, reasons, missing_map


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _collapse_checkboxes(df: pd.DataFrame, boxes: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A checkbox group used as a single choice: the ticked code; none ticked = not answered; several = bad."""
    n = len(df)
    ticked = np.zeros((n, len(boxes)), dtype=bool)
    codes = np.array([float(code) if _is_number(code) else np.nan for _, code in boxes])
    for j, (col, _) in enumerate(boxes):
        ticked[:, j] = pd.to_numeric(df[col], errors="coerce").fillna(0).to_numpy() == 1
    count = ticked.sum(axis=1)
    out = np.full(n, np.nan)
    one = count == 1
    out[one] = codes[ticked[one].argmax(axis=1)]
    reason = np.full(n, None, dtype=object)
    reason[count == 0] = "not_answered"
    return out, reason, count > 1
