"""Writing exports exactly per docs/design.md Contract 7: .sav (pyreadstat), .xlsx (sheet `data`), .csv
(`;`, decimal comma, cp1252, dates dd-mm-yyyy). Output bytes are deterministic (timestamps fixed)."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from cohortflow.instruments.model import Instrument

from .responses import DONT_KNOW, NOT_ANSWERED

DATE_COLUMNS = ["geboortedatum", "kind_geboortedatum", "datum_melding", "datum_invullen"]
ID_LABELS = {
    "gezin_id": "Gezinsnummer",
    "resp_id": "Respondentnummer",
    "kind_id": "Respondentnummer van het kind waarover gerapporteerd wordt",
    "naam": "Naam",
    "email": "E-mailadres",
    "telefoon": "Telefoonnummer",
    "adres": "Adres",
    "bsn": "Burgerservicenummer",
    "geboortedatum": "Geboortedatum respondent",
    "geslacht": "Geslacht respondent",
    "kind_geboortedatum": "Geboortedatum kind",
    "kind_geslacht": "Geslacht kind",
    "datum_melding": "Datum melding / aanmelding",
    "datum_invullen": "Datum invullen",
    "duur_min": "Invulduur in minuten",
}
SEX_LABELS = {1: "man", 2: "vrouw"}
MISSING_LABELS = {NOT_ANSWERED: "niet beantwoord", DONT_KNOW: "weet niet"}
FIXED_TIME = (2024, 11, 20, 12, 0, 0)


def item_column(inst: Instrument, item_code: str) -> str:
    """Export column of an item: upper-case instrument code + '_' + upper-case item code (CRIES13_01)."""
    return f"{inst.code.upper()}_{item_code.upper()}"


@dataclass
class ExportSpec:
    """Labels of one export's columns: variable labels, value labels, the item columns."""

    variable_labels: dict[str, str] = field(default_factory=dict)
    value_labels: dict[str, dict[int, str]] = field(default_factory=dict)
    item_columns: list[str] = field(default_factory=list)


def export_spec(columns: list[str], instruments: list[Instrument]) -> ExportSpec:
    """Variable and value labels (Dutch) for `columns` from the id table and the instruments' definitions."""
    spec = ExportSpec()
    for c in columns:
        if c in ID_LABELS:
            spec.variable_labels[c] = ID_LABELS[c]
    for c in ("geslacht", "kind_geslacht"):
        if c in columns:
            spec.value_labels[c] = dict(SEX_LABELS)
    for inst in instruments:
        for it in inst.items:
            col = item_column(inst, it.code)
            if col not in columns:
                continue
            spec.item_columns.append(col)
            spec.variable_labels[col] = f"{inst.code.upper()} {it.code}: {it.label.nl}"[:250]
            rs = inst.response_scale_of(it)
            labels = {o.code: o.label.nl for o in rs.options} if rs.options else {}
            labels.update(MISSING_LABELS)
            spec.value_labels[col] = labels
    return spec


def _fix_sav_timestamp(path: Path) -> None:
    """Overwrite the creation date/time in the .sav header (bytes 92..109) with a fixed value."""
    with open(path, "r+b") as fh:
        head = fh.read(4)
        if head not in (b"$FL2", b"$FL3"):
            return
        fh.seek(92)
        fh.write(b"20 Nov 2412:00:00")


_SPSS_EPOCH = np.datetime64("1582-10-14", "D")
_CHUNK_ROWS = 10_000  # rows per piece of text when writing CSV/XLSX (bounded memory)


def _days(s: pd.Series) -> np.ndarray:
    """Dates of a column as datetime64[D] (NaT kept)."""
    return pd.to_datetime(s).to_numpy().astype("datetime64[D]")


def _via_unique(values: np.ndarray, missing: np.ndarray, fmt, empty: str = "") -> np.ndarray:  # noqa: ANN001
    """Object array of `fmt(value)` per element, formatting each distinct value once; `empty` where missing.

    `values` must be sortable (numbers, datetime64); a column has few distinct values (codes, dates)."""
    out = np.empty(len(values), dtype=object)
    if missing.all():
        out[:] = empty
        return out
    present = values[~missing]
    uniq, inv = np.unique(present, return_inverse=True)
    texts = np.array([fmt(u) for u in uniq] + [empty], dtype=object)
    idx = np.full(len(values), len(uniq), dtype=np.int64)
    idx[~missing] = inv.ravel()
    return texts[idx]


def write_sav(frame: pd.DataFrame, path: Path, spec: ExportSpec) -> None:
    """SPSS .sav with variable labels, value labels and -9/-7 declared user-missing on item columns, dates
    as DATE11; written by `synth.sav` (numpy), or by pyreadstat when a text is longer than 255 bytes."""
    from .sav import MAX_STRING, SavVariable, write_sav_file

    variables = []
    for c in frame.columns:
        s = frame[c]
        label = spec.variable_labels.get(c, c)
        labels = {float(k): v for k, v in spec.value_labels.get(c, {}).items()}
        missing = [float(NOT_ANSWERED), float(DONT_KNOW)] if c in spec.item_columns else []
        if c in DATE_COLUMNS:
            days = _days(s)
            secs = (days - _SPSS_EPOCH).astype("timedelta64[D]").astype(np.int64).astype(float) * 86400.0
            secs[np.isnat(days)] = np.nan
            variables.append(SavVariable(c, secs, label, is_date=True, value_labels=labels))
        elif c in spec.item_columns or c in ("geslacht", "kind_geslacht") or pd.api.types.is_numeric_dtype(s):
            variables.append(SavVariable(c, s.to_numpy(dtype=float), label, value_labels=labels, missing=missing))
        else:
            variables.append(SavVariable(c, _texts(s)[0], label))
    if any(v.is_string and max((len(x.encode("utf-8")) for x in v.values.tolist()), default=0) > MAX_STRING
           for v in variables):
        _write_sav_pyreadstat(frame, path, spec)
        return
    write_sav_file(path, variables, len(frame), ("20 Nov 24", "12:00:00"))


def _write_sav_pyreadstat(frame: pd.DataFrame, path: Path, spec: ExportSpec) -> None:
    """write_sav through pyreadstat (cell by cell; for texts longer than 255 bytes)."""
    import pyreadstat

    cols: dict[str, object] = {}
    formats: dict[str, str] = {}
    for c in frame.columns:
        s = frame[c]
        if c in DATE_COLUMNS:
            days = _days(s)
            secs = (days - _SPSS_EPOCH).astype("timedelta64[D]").astype(np.int64).astype(float) * 86400.0
            secs[np.isnat(days)] = np.nan
            cols[c] = secs
            formats[c] = "DATE11"
        elif c in spec.item_columns or c in ("geslacht", "kind_geslacht") or pd.api.types.is_numeric_dtype(s):
            cols[c] = s.to_numpy(dtype=float)
        else:  # pyreadstat is several times faster on object than on pandas' str dtype
            cols[c] = s.to_numpy(dtype=object)
    out = pd.DataFrame(cols, copy=False)
    value_labels = {c: {float(k): v for k, v in lab.items()} for c, lab in spec.value_labels.items()}
    missing = {c: [float(NOT_ANSWERED), float(DONT_KNOW)] for c in spec.item_columns}
    pyreadstat.write_sav(out, str(path), column_labels={c: spec.variable_labels.get(c, c) for c in out.columns},
                         variable_value_labels=value_labels, missing_ranges=missing, variable_format=formats)
    _fix_sav_timestamp(path)


def _csv_field(v: str) -> str:
    return '"' + v.replace('"', '""') + '"' if (";" in v or '"' in v or "\n" in v or "\r" in v) else v


_DATE_TEXT: dict[int, str] = {}


def _date_text(day: np.datetime64) -> str:
    """dd-mm-yyyy of a datetime64[D] (cached: exports share a few thousand dates)."""
    key = int(day.astype(np.int64))
    text = _DATE_TEXT.get(key)
    if text is None:
        d = day.astype(object)  # datetime.date
        text = _DATE_TEXT[key] = f"{d.day:02d}-{d.month:02d}-{d.year:04d}"
    return text


def _float_text(v: float) -> str:
    t = repr(float(v)).replace(".", ",")
    return t[:-2] if t.endswith(",0") else t


def _float_texts(arr: np.ndarray) -> np.ndarray:
    """CSV text of floats with a decimal comma and no trailing ',0' (what `_float_text` gives), quickly for
    one-decimal values (durations): from integer tenths."""
    missing = np.isnan(arr)
    vals = np.where(missing, 0.0, arr)
    tenths = np.round(vals * 10.0)
    if np.all(tenths / 10.0 == vals) and np.all(np.abs(tenths) < 2**52):
        t = tenths.astype(np.int64)
        return _via_unique(t, missing, lambda v: f"{'-' if v < 0 else ''}{abs(v) // 10}"
                                                 + (f",{abs(v) % 10}" if v % 10 else ""))
    return _via_unique(arr, missing, _float_text)


def _texts(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(object array of the column's values as text with '' for missing, missing mask); only non-str
    values are converted one by one."""
    arr = s.to_numpy(dtype=object)
    missing = pd.isna(arr)
    if missing.any():
        arr = arr.copy()
        arr[missing] = ""
    if not all(t is str for t in set(map(type, arr))):
        arr = np.array([v if type(v) is str else str(v) for v in arr], dtype=object)
    return arr, missing


def _csv_columns(frame: pd.DataFrame, spec: ExportSpec) -> list[np.ndarray]:
    """Per column, the CSV field text of each row (object arrays)."""
    cols: list[np.ndarray] = []
    for c in frame.columns:
        s = frame[c]
        if c in DATE_COLUMNS:
            days = _days(s)
            txt = _via_unique(days, np.isnat(days), _date_text)
        elif c in spec.item_columns or c in ("geslacht", "kind_geslacht"):
            arr = s.to_numpy(dtype=float)
            txt = _via_unique(arr, np.isnan(arr), lambda v: str(int(v)))
        elif pd.api.types.is_float_dtype(s):
            txt = _float_texts(s.to_numpy(dtype=float))
        else:
            txt, _ = _texts(s)
            joined = "\0".join(txt)
            if any(ch in joined for ch in ';"\r\n'):  # rare: quote only the fields that need it
                txt = np.array([_csv_field(v) for v in txt], dtype=object)
        cols.append(txt)
    return cols


def _csv_chunks(frame: pd.DataFrame, spec: ExportSpec):  # noqa: ANN202 - generator of str
    """The CSV text in pieces of at most _CHUNK_ROWS rows (header first), CRLF line ends."""
    yield ";".join(_csv_field(str(c)) for c in frame.columns) + "\r\n"
    for lo in range(0, len(frame), _CHUNK_ROWS):
        cols = _csv_columns(frame.iloc[lo:lo + _CHUNK_ROWS], spec)
        yield "".join([";".join(row) + "\r\n" for row in zip(*cols, strict=True)])


def csv_text(frame: pd.DataFrame, spec: ExportSpec) -> str:
    """The CSV content: `;` separated, decimal comma, dates dd-mm-yyyy, item codes as integers, CRLF."""
    return "".join(_csv_chunks(frame, spec))


def write_csv(frame: pd.DataFrame, path: Path, spec: ExportSpec) -> None:
    """CSV as exported from Excel on Dutch Windows: `;`, decimal comma, cp1252."""
    with open(path, "wb") as fh:
        for piece in _csv_chunks(frame, spec):
            fh.write(piece.encode("cp1252"))


def _col_letter(i: int) -> str:
    """Excel column letters of 0-based column index `i` (0 -> A, 26 -> AA)."""
    out = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        out = chr(65 + r) + out
    return out


_XLSX_STATIC = {
    "[Content_Types].xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
        '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
        '<Default Extension="xml" ContentType="application/xml"/>'
        '<Override PartName="/xl/workbook.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
        '<Override PartName="/xl/worksheets/sheet1.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
        '<Override PartName="/xl/styles.xml" '
        'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
        '<Override PartName="/docProps/core.xml" '
        'ContentType="application/vnd.openxmlformats-package.core-properties+xml"/>'
        "</Types>"
    ),
    "_rels/.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'officeDocument" Target="xl/workbook.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/package/2006/relationships/metadata/'
        'core-properties" Target="docProps/core.xml"/>'
        "</Relationships>"
    ),
    "docProps/core.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<cp:coreProperties xmlns:cp="http://schemas.openxmlformats.org/package/2006/metadata/core-properties" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:dcterms="http://purl.org/dc/terms/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<dc:creator>cohortflow.synth</dc:creator>"
        '<dcterms:created xsi:type="dcterms:W3CDTF">2024-11-20T12:00:00Z</dcterms:created>'
        '<dcterms:modified xsi:type="dcterms:W3CDTF">2024-11-20T12:00:00Z</dcterms:modified>'
        "</cp:coreProperties>"
    ),
    "xl/workbook.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
        'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
        '<sheets><sheet name="data" sheetId="1" r:id="rId1"/></sheets></workbook>'
    ),
    "xl/_rels/workbook.xml.rels": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'worksheet" Target="worksheets/sheet1.xml"/>'
        '<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'styles" Target="styles.xml"/>'
        "</Relationships>"
    ),
    "xl/styles.xml": (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        '<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
        '<numFmts count="1"><numFmt numFmtId="164" formatCode="dd\\-mm\\-yyyy"/></numFmts>'
        '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
        '<fills count="2"><fill><patternFill patternType="none"/></fill>'
        '<fill><patternFill patternType="gray125"/></fill></fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
        '<xf numFmtId="164" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    ),
}
_EXCEL_EPOCH = np.datetime64("1899-12-30", "D")


def _xlsx_cells(frame: pd.DataFrame, spec: ExportSpec) -> list[np.ndarray]:
    """Per column, the cell XML of each data row (object arrays; `<c/>` = empty cell). Cells carry no `r`
    reference: SpreadsheetML places them in order, so an empty cell is written as `<c/>`."""
    out = []
    for c in frame.columns:
        s = frame[c]
        if c in DATE_COLUMNS:
            days = _days(s)
            serial = (days - _EXCEL_EPOCH).astype("timedelta64[D]").astype(np.int64)
            cells = _via_unique(serial, np.isnat(days), lambda d: f'<c s="1"><v>{int(d)}</v></c>', "<c/>")
        elif c in spec.item_columns or c in ("geslacht", "kind_geslacht") or pd.api.types.is_numeric_dtype(s):
            arr = s.to_numpy(dtype=float)
            integer = c in spec.item_columns or c in ("geslacht", "kind_geslacht")
            cells = _via_unique(arr, np.isnan(arr),
                                (lambda v: f"<c><v>{int(v)}</v></c>") if integer else
                                (lambda v: f"<c><v>{float(v)!r}</v></c>"), "<c/>")
        else:
            txt, missing = _texts(s)
            if any(ch in "\0".join(txt) for ch in "&<>"):
                txt = np.array([escape(v) for v in txt], dtype=object)
            cells = np.array(['<c t="inlineStr"><is><t>' + v + "</t></is></c>" for v in txt], dtype=object)
            cells[missing] = "<c/>"
        out.append(cells)
    return out


def write_xlsx(frame: pd.DataFrame, path: Path, spec: ExportSpec) -> None:
    """.xlsx with one sheet `data`: header row, dates as Excel dates (dd-mm-yyyy), empty cells for
    system-missing. Written as plain SpreadsheetML in pieces (openpyxl is 50x slower); readable by
    openpyxl/pandas."""
    header = "".join(f'<c t="inlineStr"><is><t>{escape(str(c))}</t></is></c>' for c in frame.columns)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, text in _XLSX_STATIC.items():
            zi = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, text.encode("utf-8"), compresslevel=1)
        zi = zipfile.ZipInfo("xl/worksheets/sheet1.xml", date_time=FIXED_TIME)
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi._compresslevel = 1  # noqa: SLF001 - ZipFile.open(..., "w") takes the level from the ZipInfo
        with zf.open(zi, "w") as fh:
            fh.write(('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                      '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'
                      f'<sheetData><row r="1">{header}</row>').encode())
            for lo in range(0, len(frame), _CHUNK_ROWS):
                cols = _xlsx_cells(frame.iloc[lo:lo + _CHUNK_ROWS], spec)
                fh.write("".join([f'<row r="{lo + i + 2}">' + "".join(row) + "</row>"
                                  for i, row in enumerate(zip(*cols, strict=True))]).encode("utf-8"))
            fh.write(b"</sheetData></worksheet>")


WRITERS = {"sav": write_sav, "xlsx": write_xlsx, "csv": write_csv}
