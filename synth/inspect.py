"""Reading generated exports back (for tests, benchmarks and demos; the pipeline's reader is `ingest`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .exports import DATE_COLUMNS
from .manifest import ManifestFile, StudyManifest


def read_export(path: Path, fmt: str) -> pd.DataFrame:
    """One generated export as a frame: dates as datetime64, item codes as floats (NaN = empty cell),
    `bsn` and ids as text. User-missing codes (-9, -7) are kept."""
    if fmt == "csv":
        frame = pd.read_csv(path, sep=";", decimal=",", encoding="cp1252", dtype={"bsn": str, "telefoon": str},
                            keep_default_na=False, na_values=[""])
        for c in DATE_COLUMNS:
            if c in frame:
                frame[c] = pd.to_datetime(frame[c], format="%d-%m-%Y")
    elif fmt == "xlsx":
        frame = pd.read_excel(path, sheet_name="data", dtype={"bsn": str, "telefoon": str}, engine="calamine")
    elif fmt == "sav":
        import pyreadstat

        frame, _ = pyreadstat.read_sav(str(path), user_missing=True)
        for c in DATE_COLUMNS:
            if c in frame:
                frame[c] = pd.to_datetime(frame[c])
    else:
        raise ValueError(f"{path}: unknown format {fmt!r}; expected csv, xlsx or sav")
    return frame


def read_study(out_dir: Path, manifest: StudyManifest | None = None,
               skip: set[str] | None = None) -> pd.DataFrame:
    """All exports of a generated study in one frame with `file`, `row_number`, arm, site, wave, role.

    Files in `skip` (relative paths) and empty files are left out.
    """
    out_dir = Path(out_dir)
    manifest = manifest or StudyManifest.read(out_dir / "truth" / "manifest.json")
    parts = []
    for f in manifest.files:
        f: ManifestFile
        if (skip and f.path in skip) or (out_dir / f.path).stat().st_size == 0:
            continue
        frame = read_export(out_dir / f.path, f.format)
        frame.insert(0, "row_number", range(1, len(frame) + 1))
        frame.insert(0, "file", f.path)
        for k in ("arm", "site", "wave", "role"):
            frame[k] = getattr(f, k)
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)
