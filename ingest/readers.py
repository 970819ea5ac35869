"""Readers for survey exports: SPSS .sav, CSV, Excel .xlsx and Stata .dta.

Each returns a RawExport: the frame with the file's own columns plus its metadata (variable labels, value
labels, user-missing codes, detected CSV dialect). A file that cannot be read raises BadFileError with a
message naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

MAGIC = {
    "sav": (b"$FL2", b"$FL3"),
    "xlsx": (b"PK\x03\x04",),
}
BOMS = [(b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")]


class BadFileError(ValueError):
    """The file is refused whole; the message names the file, what is wrong and what to do."""


@dataclass
class RawExport:
    """A file as read: its frame (columns as in the file) and what the format tells about them."""

    frame: pd.DataFrame
    format: str
    variable_labels: dict[str, str] = field(default_factory=dict)
    value_labels: dict[str, dict[Any, str]] = field(default_factory=dict)
    user_missing: dict[str, list[float]] = field(default_factory=dict)
    dialect: dict[str, str] = field(default_factory=dict)


def sniff_format(head: bytes) -> str | None:
    """The format the first bytes suggest: sav, xlsx, dta, xls, zip, text, binary, or None when empty."""
    if not head:
        return None
    if head.startswith(MAGIC["sav"]):
        return "sav"
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(b"<stata_dta>") or head[:1] in (b"\x71", b"\x72", b"\x73") and head[1:2] in (b"\x01", b"\x02"):
        return "dta"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        return "xls"
    if any(head.startswith(b) for b, _ in BOMS):
        return "text"
    if b"\x00" in head:
        return "binary"
    return "text"


def _refuse(path: Path, what: str, todo: str) -> BadFileError:
    return BadFileError(f"{path.name}: {what}. {todo}")


def check_format(path: Path, expected: str) -> None:
    """Refuse empty files and files whose content is another format than their source declares."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    found = sniff_format(head)
    if found is None:
        raise _refuse(path, "the file is empty (0 bytes)", "Export it again from the survey tool and replace the file.")
    want = {"csv": "text"}.get(expected, expected)
    if found != want:
        names = {"sav": "an SPSS .sav file", "xlsx": "an Excel .xlsx/zip file", "dta": "a Stata .dta file",
                 "text": "a text (CSV) file", "xls": "an old Excel .xls file", "binary": "binary data"}
        raise _refuse(
            path,
            f"the content is {names.get(found, found)}, but the source definition expects {names.get(want, want)}",
            f"Export the data again as {expected} (do not rename files to change their format), "
            "or add a source definition for this format.",
        )


def _labels_meta(meta) -> tuple[dict, dict, dict]:  # noqa: ANN001 - pyreadstat metadata
    var_labels = {k: v for k, v in (meta.column_names_to_labels or {}).items() if v}
    value_labels = dict(meta.variable_value_labels or {})
    user_missing: dict[str, list[float]] = {}
    for col, ranges in (getattr(meta, "missing_ranges", None) or {}).items():
        vals: list[float] = []
        for r in ranges:
            lo, hi = r.get("lo"), r.get("hi")
            if isinstance(lo, int | float) and lo == hi:
                vals.append(float(lo))
            elif isinstance(lo, int | float) and isinstance(hi, int | float) and hi - lo <= 100:
                vals.extend(float(v) for v in range(int(lo), int(hi) + 1))
        if vals:
            user_missing[col] = vals
    return var_labels, value_labels, user_missing


def read_sav(path: Path) -> RawExport:
    """SPSS .sav with user-missing codes kept as values (their codes listed in `user_missing`)."""
    import pyreadstat

    try:
        df, meta = pyreadstat.read_sav(str(path), user_missing=True)
    except Exception as exc:  # pyreadstat raises its own ReadstatError / PyreadstatError
        raise _refuse(path, f"not a readable SPSS file ({exc}); it may be truncated or damaged",
                      "Export it again from the survey tool and replace the file.") from None
    var_labels, value_labels, user_missing = _labels_meta(meta)
    return RawExport(df, "sav", var_labels, value_labels, user_missing)


def read_dta(path: Path) -> RawExport:
    """Stata .dta with variable and value labels."""
    import pyreadstat

    try:
        df, meta = pyreadstat.read_dta(str(path), user_missing=True)
    except Exception as exc:
        raise _refuse(path, f"not a readable Stata file ({exc}); it may be truncated or damaged",
                      "Export it again and replace the file.") from None
    var_labels, value_labels, user_missing = _labels_meta(meta)
    return RawExport(df, "dta", var_labels, value_labels, user_missing)


XLSX_ENGINES = ("calamine", "openpyxl")  # calamine (Rust) reads ~4x faster; openpyxl the fallback


def read_xlsx(path: Path, sheet: str | int | None, text_columns: set[str], engine: str | None = None) -> RawExport:
    """Excel .xlsx: the named sheet (default the first); identifier and date columns kept as text.

    `engine`: "calamine" or "openpyxl"; None tries calamine (when installed) and falls back to openpyxl for a
    workbook calamine cannot open, so a damaged file is refused with openpyxl's message as before."""
    engines = [engine] if engine else [e for e in XLSX_ENGINES if e != "calamine" or _has_calamine()]
    for i, eng in enumerate(engines):
        try:
            xl = pd.ExcelFile(path, engine=eng)
        except Exception as exc:
            if i + 1 < len(engines):
                continue
            raise _refuse(path, f"not a readable Excel workbook ({type(exc).__name__}: {exc}); it may be truncated",
                          "Save it again from Excel as .xlsx and replace the file.") from None
        with xl:
            if sheet is not None and not isinstance(sheet, int) and sheet not in xl.sheet_names:
                raise _refuse(path, f"has no sheet {sheet!r} (sheets: {xl.sheet_names})",
                              "Rename the data sheet or set `sheet:` in the source definition.")
            conv = {c: _cell_text for c in text_columns if isinstance(c, str)}  # names not in the sheet ignored
            try:
                df = pd.read_excel(xl, sheet_name=sheet if sheet is not None else 0, converters=conv)
            except Exception:
                if i + 1 < len(engines):
                    continue
                raise
        return RawExport(df, "xlsx")
    raise AssertionError("unreachable")  # pragma: no cover


def _cell_text(v: Any) -> str:
    """A text column's cell as text (both engines give whole numbers as int, so no '.0' appears)."""
    return str(v)


def _has_calamine() -> bool:
    try:
        import python_calamine  # noqa: F401
    except ImportError:
        return False
    return True


def detect_encoding(path: Path, data: bytes, configured: str) -> str:
    """BOM, else the configured encoding, else UTF-8, else cp1252; refuse when none decodes the file."""
    for bom, enc in BOMS:
        if data.startswith(bom):
            return enc
    candidates = [configured] if configured != "auto" else ["utf-8", "cp1252"]
    for enc in candidates:
        try:
            data.decode(enc)
            return enc
        except (UnicodeDecodeError, LookupError):
            continue
    bad = None
    try:
        data.decode(candidates[0])
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = f"byte 0x{data[exc.start]:02x} at line {line}"
    except LookupError:
        bad = f"unknown encoding {candidates[0]!r}"
    raise _refuse(path, f"cannot be decoded as {' or '.join(candidates)} ({bad})",
                  "Save it again as UTF-8 (or as the encoding set in `csv.encoding` of the source definition).")


def detect_delimiter(first_line: str, configured: str) -> str:
    """The configured delimiter, else the most frequent of ; , tab | in the header line."""
    if configured != "auto":
        return configured
    counts = {d: first_line.count(d) for d in (";", ",", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


_DECIMAL_COMMA = re.compile(r"(?:^|[;\t|])\s*-?\d+,\d+\s*(?=[;\t|]|$)", re.MULTILINE)


def detect_decimal(sample: str, delimiter: str, configured: str) -> str:
    """The configured decimal mark, else ',' when the delimiter is not ',' and numbers like 12,5 occur."""
    if configured != "auto":
        return configured
    if delimiter == ",":
        return "."
    return "," if _DECIMAL_COMMA.search(sample) else "."


def read_csv(path: Path, options, text_columns: set[str]) -> RawExport:  # noqa: ANN001 - CsvOptions
    """CSV with encoding (BOM), delimiter and decimal mark detected or configured."""
    data = path.read_bytes()
    encoding = detect_encoding(path, data, options.encoding)
    text = data.decode(encoding)
    if text.startswith("\ufeff"):
        text = text[1:]
    first_line = text.split("\n", 1)[0]
    delimiter = detect_delimiter(first_line, options.delimiter)
    decimal = detect_decimal(text[:200_000], delimiter, options.decimal)
    header = next(csv.reader([first_line], delimiter=delimiter), [])
    header = [h.strip() for h in header]
    if text and not text.endswith(("\n", "\r")):  # a cut-off file: is its last record complete?
        last = text.rstrip("\r\n").rsplit("\n", 1)[-1]
        fields = next(csv.reader([last], delimiter=delimiter), [])
        if len(fields) < len(header):
            line = text.count("\n") + 1
            raise _refuse(path, f"is truncated: line {line} has {len(fields)} of {len(header)} fields and no line "
                                "end", "Copy or export the file again completely and replace it.")
    dtype = {c: "str" for c in header if c in text_columns}
    try:
        df = pd.read_csv(io.StringIO(text), sep=delimiter, decimal=decimal, dtype=dtype,
                         keep_default_na=False, na_values=[""], skipinitialspace=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise _refuse(path, f"is not a well-formed CSV file ({str(exc).strip()}); it may be truncated",
                      "Export it again and replace the file.") from None
    df.columns = [str(c).strip() for c in df.columns]
    return RawExport(df, "csv", dialect={"encoding": encoding, "delimiter": delimiter, "decimal": decimal})


def read_raw(path: Path, source, text_columns: set[str]) -> RawExport:  # noqa: ANN001 - SourceDefinition
    """Read `path` in the format its source definition declares, after checking the content matches."""
    path = Path(path)
    check_format(path, source.format)
    if source.format == "sav":
        raw = read_sav(path)
    elif source.format == "dta":
        raw = read_dta(path)
    elif source.format == "xlsx":
        raw = read_xlsx(path, source.sheet, text_columns)
    else:
        raw = read_csv(path, source.csv, text_columns)
    if len(raw.frame.columns) == 0:
        raise _refuse(path, "has no columns", "Export it again with a header row.")
    if len(raw.frame) == 0:
        raise _refuse(path, "has a header but no data rows", "Check the export's filter settings and export again.")
    return raw
