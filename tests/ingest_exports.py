"""Small exports shaped like Contract 7 (docs/design.md) for ingest and warehouse tests.

`build_rows` makes deterministic fake respondents with direct identifiers; `write_export` writes them as
.sav (labels, user-missing -9/-7), .xlsx (sheet data), .csv (';', decimal comma, cp1252, dd-mm-yyyy) or .dta.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

FIRST = ["Jan", "Sanne", "Émile", "Fatima", "Kees", "Ömer", "Lotte", "Daan", "Noor", "Björn"]
LAST = ["de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder", "Bos", "Vos"]


def bsn(i: int) -> str:
    """A fake 9-digit number passing the Dutch 11-test."""
    base = 100000000 + i * 7919
    while True:
        digits = [int(c) for c in str(base)[:9]]
        s = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
        if s % 11 == 0:
            return "".join(map(str, digits))
        base += 1


ROLE_ITEMS = {"child": ["cries13", "cyrm_r"], "adult": ["pss"], "parent": ["cries13"]}


WAVE_DAYS = {"T0": 30, "T1": 395, "T2": 575}


def build_rows(instruments: dict, arm: str, site: str, wave: str, role: str, n: int, seed: int = 1,
               wave_days: int | None = None) -> pd.DataFrame:
    """n respondents of one role with ids, direct identifiers, dates (inside the wave window), sex and
    valid item codes."""
    wave_days = WAVE_DAYS.get(wave, 30) if wave_days is None else wave_days
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        hh = f"G-{site}-{i + 1:04d}"
        reg = date(2025, 1, 6) + timedelta(days=int(i * 3))
        who = {"adult": "V1", "child": "K1", "parent": "V1"}[role]
        child_birth = date(2012, 1, 1) + timedelta(days=int(i * 37 % 1500))
        adult_birth = date(1985, 3, 1) + timedelta(days=int(i * 53 % 4000))
        r = {
            "gezin_id": hh, "resp_id": f"{hh}-{who}",
            "naam": f"{FIRST[i % 10]} {LAST[(i // 10) % 10]}{i}", "email": f"person{i}.{site.lower()}@example.nl",
            "telefoon": f"06-{12345678 + i:08d}", "adres": f"Dorpsstraat {i + 1}, {1000 + i} AB Utrecht",
            "bsn": bsn(i),
            "geboortedatum": child_birth if role == "child" else adult_birth,
            "geslacht": 1 + (i % 2),
            "datum_melding": reg, "datum_invullen": reg + timedelta(days=wave_days + i % 10),
            "duur_min": 12.5 + i % 7,
        }
        if role == "parent":
            r["kind_id"] = f"{hh}-K1"
            r["kind_geboortedatum"] = child_birth
            r["kind_geslacht"] = 2 - (i % 2)
        for code in ROLE_ITEMS[role]:
            inst = instruments[code]
            for it in inst.items:
                opts = inst.response_scale_of(it).codes
                r[f"{code}_{it.code}".upper()] = int(rng.choice(opts))
        rows.append(r)
    return pd.DataFrame(rows)


def write_export(df: pd.DataFrame, path: Path, fmt: str | None = None) -> Path:
    """Write rows as an export in the format of the path's suffix (Contract 7 conventions)."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    out = df.copy()
    date_cols = [c for c in out.columns if c.startswith(("geboortedatum", "kind_geboortedatum", "datum_"))]
    if fmt == "sav":
        import pyreadstat

        for c in date_cols:
            out[c] = pd.to_datetime(out[c]).astype("datetime64[ns]")  # pyreadstat misreads [s] units
        items = [c for c in out.columns if c.upper() == c and "_" in c]
        labels = {c: {-9: "niet beantwoord", -7: "weet niet"} for c in items}
        missing = {c: [-9, -7] for c in items}
        pyreadstat.write_sav(out, str(path), column_labels={c: c.replace("_", " ") for c in out.columns},
                             variable_value_labels=labels, missing_ranges=missing)
    elif fmt == "dta":
        import pyreadstat

        for c in date_cols:
            out[c] = pd.to_datetime(out[c]).astype("datetime64[ns]")  # pyreadstat misreads [s] units
        pyreadstat.write_dta(out, str(path))
    elif fmt == "xlsx":
        for c in date_cols:
            out[c] = pd.to_datetime(out[c]).dt.strftime("%d-%m-%Y")
        out.to_excel(path, sheet_name="data", index=False)
    elif fmt == "csv":
        for c in date_cols:
            out[c] = pd.to_datetime(out[c]).dt.strftime("%d-%m-%Y")
        out.to_csv(path, sep=";", decimal=",", index=False, encoding="cp1252")
    else:
        raise ValueError(fmt)
    return path


DIRECT_IDENTIFIER_COLUMNS = ["naam", "email", "telefoon", "adres", "bsn", "geboortedatum", "kind_geboortedatum"]


def identifier_values(df: pd.DataFrame) -> set[str]:
    """Every direct identifier value (and raw id) of the rows, as text forms that could leak."""
    out: set[str] = set()
    for c in [*DIRECT_IDENTIFIER_COLUMNS, "gezin_id", "resp_id", "kind_id"]:
        if c not in df:
            continue
        for v in df[c].dropna():
            if hasattr(v, "year"):
                d = pd.Timestamp(v)
                out.update({d.strftime("%Y-%m-%d"), d.strftime("%d-%m-%Y")})
            else:
                out.add(str(v))
    return out
