"""A plain SPSS .sav writer (uncompressed system file, UTF-8) in numpy, for the generator's exports.

pyreadstat writes cell by cell through Python (about 1 us a cell plus 20-50 ms a file); this writes the
dictionary with `struct` and the data as one numpy record array. It writes what the exports need: numeric
variables (F8.2, or DATE11 for dates) with variable labels, value labels and up to three discrete
user-missing values, and string variables up to 255 bytes. Files read back through pyreadstat/ReadStat with
the same values and metadata as pyreadstat's own (tests/test_synth_exports.py checks it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SYSMIS = -np.finfo(np.float64).max
_HIGHEST = np.finfo(np.float64).max
_LOWEST = float(np.nextafter(-np.finfo(np.float64).max, 0.0))
_F8_2 = (5 << 16) | (8 << 8) | 2
_DATE11 = (20 << 16) | (11 << 8)
_PRODUCT = b"@(#) SPSS DATA FILE - https://github.com/WizardMac/ReadStat"
MAX_STRING = 255


@dataclass
class SavVariable:
    """One variable: numeric values (float, NaN = system-missing) or text (str per row)."""

    name: str
    values: np.ndarray
    label: str = ""
    is_date: bool = False  # numeric seconds since 1582-10-14, shown as DATE11
    value_labels: dict[float, str] = field(default_factory=dict)
    missing: list[float] = field(default_factory=list)  # discrete user-missing values (at most 3)

    @property
    def is_string(self) -> bool:
        return self.values.dtype == object


def _pad(b: bytes, multiple: int, fill: bytes = b" ") -> bytes:
    return b + fill * (-len(b) % multiple)


def _cut(text: str, limit: int) -> bytes:
    """UTF-8 bytes of `text`, at most `limit`, never splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


def write_sav_file(path: Path, variables: list[SavVariable], n_rows: int, created: tuple[str, str]) -> None:
    """Write `variables` (each `n_rows` long) to `path`; `created` = ('dd Mon yy', 'hh:mm:ss') in the header.

    Raises ValueError for a string longer than 255 bytes (very long strings are not written here)."""
    widths: list[int] = []  # string width in bytes, 0 = numeric
    encoded: list[np.ndarray | None] = []
    for v in variables:
        if v.is_string:
            b = [s.encode("utf-8") for s in v.values.tolist()]
            w = max([len(x) for x in b] + [1])
            if w > MAX_STRING:
                raise ValueError(f"{v.name}: a string of {w} bytes; at most {MAX_STRING} are written here")
            widths.append(w)
            encoded.append(np.array(b, dtype=f"S{w}"))
        else:
            widths.append(0)
            encoded.append(None)
    segments = [1 if w == 0 else (w + 7) // 8 for w in widths]
    case_size = sum(segments)

    out = bytearray()
    out += struct.pack("<4s60siiiiid9s8s64s3s", b"$FL2", _pad(_PRODUCT, 60), 2, case_size, 0, 0, n_rows, 100.0,
                       created[0].encode("ascii"), created[1].encode("ascii"), b" " * 64, b"\0\0\0")
    index = 1  # 1-based dictionary index (continuation segments count)
    positions = []
    for k, (v, w, seg) in enumerate(zip(variables, widths, segments, strict=True)):
        positions.append(index)
        fmt = _DATE11 if v.is_date else _F8_2
        if w:
            fmt = (1 << 16) | (w << 8)
        label = _cut(v.label, 255) if v.label else b""
        missing = [] if w else list(v.missing)
        if len(missing) > 3:
            raise ValueError(f"{v.name}: at most 3 discrete missing values, got {missing}")
        out += struct.pack("<iiiiii8s", 2, w, 1 if label else 0, len(missing), fmt, fmt, f"V{k + 1}".encode())
        if label:
            out += struct.pack("<i", len(label)) + _pad(label, 4)
        for m in missing:
            out += struct.pack("<d", float(m))
        for _ in range(seg - 1):  # continuation records of a long string
            out += struct.pack("<iiiiii8s", 2, -1, 0, 0, 0, 0, b" " * 8)
        index += seg
    for v, w, pos in zip(variables, widths, positions, strict=True):
        if w or not v.value_labels:
            continue
        out += struct.pack("<ii", 3, len(v.value_labels))
        for value, text in v.value_labels.items():
            lab = _cut(text, 120)
            out += struct.pack("<d", float(value)) + _pad(bytes([len(lab)]) + lab, 8)
        out += struct.pack("<iii", 4, 1, pos)
    out += struct.pack("<iiii", 7, 3, 4, 8) + struct.pack("<8i", 20, 0, 0, -1, 1, 1, 2, 65001)
    out += struct.pack("<iiii", 7, 4, 8, 3) + struct.pack("<3d", SYSMIS, _HIGHEST, _LOWEST)
    out += struct.pack("<iiii", 7, 11, 4, 3 * len(variables))
    display = []  # measure unknown, width 8, alignment: text left, numbers right (as pyreadstat writes)
    for w in widths:
        display += [0, 8, 0 if w else 1]
    out += struct.pack(f"<{3 * len(variables)}i", *display)
    names = "\t".join(f"V{k + 1}={v.name}" for k, v in enumerate(variables)).encode("utf-8")
    out += struct.pack("<iiii", 7, 13, 1, len(names)) + names
    out += struct.pack("<iiii", 7, 20, 1, 5) + b"UTF-8"
    out += struct.pack("<ii", 999, 0)

    dtype = np.dtype([(f"f{k}", "<f8" if w == 0 else f"S{8 * seg}")
                      for k, (w, seg) in enumerate(zip(widths, segments, strict=True))])
    data = np.zeros(n_rows, dtype=dtype)
    for k, (v, w, seg) in enumerate(zip(variables, widths, segments, strict=True)):
        if w == 0:
            x = np.asarray(v.values, dtype=np.float64)
            data[f"f{k}"] = np.where(np.isnan(x), SYSMIS, x)
        else:  # space padded to whole segments
            data[f"f{k}"] = np.char.ljust(encoded[k], 8 * seg, b" ")
    with open(path, "wb") as fh:
        fh.write(out)
        fh.write(data.tobytes())
