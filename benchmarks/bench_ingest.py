"""Ingest throughput beside the raw read of the same files (goal: ingestion at most twice the raw read).

Usage: python benchmarks/bench_ingest.py [--factors 1 10] [--database-url URL] [--write-results]

Exports: the synthetic generator's (cohortflow.synth.generate_study) when it is installed, else a
vectorised stand-in with the Contract 7 layout (child files: CRIES-13 + CYRM-R, adult files: PSS).
For .sav and CSV separately: raw read = pyreadstat.read_sav / pandas.read_csv (';', decimal comma, cp1252)
of every file; ingest = ingest_file of every file into an empty warehouse (read, map, pseudonymise, check,
one transaction per file). Prints rows/s, item values/s and the ratio ingest / raw read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
KEY = b"benchmark-key-0123456789abcdef"


def standin_exports(inbox: Path, factor: float, seed: int = 1) -> None:
    """Contract 7 exports: per format 10 sites x 3 waves x (child, adult), 500 x factor rows each
    (about 0.5 M item values per format at factor 1)."""
    import pyreadstat

    from cohortflow.instruments.registry import load_instruments

    inst = load_instruments()
    rng = np.random.default_rng(seed)
    n = max(2, int(round(500 * factor)))
    offsets = {"T0": 30, "T1": 395, "T2": 575}
    for arm, fmt, prefix in (("proeftuin", "sav", "PT"), ("vt", "csv", "VT")):
        for s in range(1, 11):
            site = f"{prefix}{s:02d}"
            for wave, off in offsets.items():
                for role, codes in (("child", ["cries13", "cyrm_r"]), ("adult", ["pss"])):
                    hh = np.array([f"G-{site}-{i:04d}" for i in range(1, n + 1)], dtype=object)
                    who = "K1" if role == "child" else "V1"
                    reg = pd.Timestamp(date(2025, 1, 6)) + pd.to_timedelta(np.arange(n) % 300, unit="D")
                    birth = (pd.Timestamp(date(2011, 1, 1)) if role == "child" else pd.Timestamp(date(1985, 1, 1))) \
                        + pd.to_timedelta(np.arange(n) * 7 % 1200, unit="D")
                    df = pd.DataFrame({
                        "gezin_id": hh, "resp_id": hh + f"-{who}",
                        "naam": [f"Naam {site} {i}" for i in range(n)],
                        "email": [f"p{i}@{site.lower()}.example.nl" for i in range(n)],
                        "telefoon": [f"06-{20000000 + i}" for i in range(n)],
                        "adres": [f"Straat {i}, Utrecht" for i in range(n)],
                        "bsn": [f"{100000000 + i * 11}" for i in range(n)],
                        "geboortedatum": birth, "geslacht": (1 + np.arange(n) % 2).astype(float),
                        "datum_melding": reg, "datum_invullen": reg + pd.Timedelta(days=off),
                        "duur_min": np.round(rng.uniform(5, 40, n), 1),
                    })
                    items = {}
                    for c in codes:
                        for it in inst[c].items:
                            opts = np.array(inst[c].response_scale_of(it).codes, dtype=float)
                            col = rng.choice(opts, n)
                            col[rng.random(n) < 0.03] = -9
                            items[f"{c}_{it.code}".upper()] = col
                    df = pd.concat([df, pd.DataFrame(items)], axis=1)
                    path = inbox / f"{arm}_{site}_{wave}_{role}.{fmt}"
                    if fmt == "sav":
                        for col in ("geboortedatum", "datum_melding", "datum_invullen"):
                            df[col] = df[col].astype("datetime64[ns]")
                        pyreadstat.write_sav(df, str(path), missing_ranges={c: [-9, -7] for c in items})
                    else:
                        for col in ("geboortedatum", "datum_melding", "datum_invullen"):
                            df[col] = df[col].dt.strftime("%d-%m-%Y")
                        df.to_csv(path, sep=";", decimal=",", index=False, encoding="cp1252")


def make_exports(inbox: Path, factor: float) -> str:
    try:
        from cohortflow.synth.generate import generate_study
    except ImportError:
        inbox.mkdir(parents=True, exist_ok=True)
        standin_exports(inbox, factor)
        return "stand-in exports (cohortflow.synth not installed)"
    generate_study(inbox.parent, factor=factor, seed=11)
    return "cohortflow.synth.generate_study"


def raw_read(files: list[Path], fmt: str) -> float:
    import pyreadstat

    t = time.perf_counter()
    for f in files:
        if fmt == "sav":
            pyreadstat.read_sav(str(f), user_missing=True)
        else:
            pd.read_csv(f, sep=";", decimal=",", encoding="cp1252")
    return time.perf_counter() - t


def run(factor: float, url: str | None, work: Path) -> list[dict]:
    from sqlalchemy import text

    from cohortflow.config.study import load_study
    from cohortflow.ingest.mapping import load_sources
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.warehouse.db import get_engine, init_warehouse
    from cohortflow.warehouse.load import ingest_file

    inbox = work / f"f{factor:g}" / "inbox"
    origin = make_exports(inbox, factor)
    sources, study, inst = load_sources(), load_study(), load_instruments()
    out = []
    for fmt in ("sav", "csv"):
        files = sorted(inbox.glob(f"*.{fmt}"))
        if not files:
            continue
        raw_read(files[:2], fmt)  # warm caches and imports
        t_raw = min(raw_read(files, fmt) for _ in range(2))
        if url:  # start from an empty schema
            eng = get_engine(url)
            with eng.begin() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            eng.dispose()
        db = work / f"bench_{factor:g}_{fmt}.sqlite"
        engine = init_warehouse(get_engine(url or f"sqlite:///{db}"))
        t = time.perf_counter()
        rows = values = 0
        t_read = 0.0
        for f in files:
            rep = ingest_file(f, engine, sources, study, inst, KEY)
            rows += rep.rows_in
            values += rep.item_values
            t_read += rep.read_seconds
        t_ing = time.perf_counter() - t
        with engine.connect() as conn:
            stored = conn.execute(text("select count(*) from item_value")).scalar()
        assert stored == values, (stored, values)
        engine.dispose()
        out.append({"factor": factor, "format": fmt, "files": len(files), "rows": rows, "item_values": values,
                    "raw_read_s": t_raw, "ingest_s": t_ing, "read_map_s": t_read, "origin": origin,
                    "backend": (url or "sqlite").split(":")[0]})

        print(f"factor {factor:g} {fmt}: {len(files)} files, {rows} rows, {values} item values | raw read "
              f"{t_raw:.2f} s | ingest {t_ing:.2f} s (read+map {t_read:.2f} s) = {rows / t_ing:,.0f} rows/s, "
              f"{values / t_ing:,.0f} item values/s | ingest/raw = {t_ing / t_raw:.1f}x", flush=True)
    return out


def raw_read_any(files: list[Path]) -> float:
    """Seconds to read every file with the plain reader of its format (sav, csv, xlsx); unreadable ones skipped."""
    import pyreadstat

    t = time.perf_counter()
    for f in files:
        try:
            if f.suffix == ".sav":
                pyreadstat.read_sav(str(f), user_missing=True)
            elif f.suffix == ".xlsx":
                pd.read_excel(f)
            elif f.suffix == ".csv":
                pd.read_csv(f, sep=";", decimal=",", encoding="cp1252")
        except Exception:  # noqa: BLE001 - damaged exports of the fault injection
            continue
    return time.perf_counter() - t


def run_validated(factor: float, url: str | None, work: Path) -> dict:
    """The whole generated inbox (every format, every synth fault) with Great Expectations validation through
    `ingest_files` (one GX run per source version, one transaction per file) against the raw read."""
    from cohortflow.config.study import load_study
    from cohortflow.ingest.mapping import load_sources
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.synth.faults import FAULTS
    from cohortflow.synth.generate import generate_study
    from cohortflow.validation.engine import _ephemeral
    from cohortflow.warehouse.batch_ingest import ingest_files
    from cohortflow.warehouse.db import get_engine, init_warehouse
    from cohortflow.warehouse.load import inbox_files

    root = work / f"v{factor:g}"
    generate_study(root, factor=factor, seed=11, faults=sorted(FAULTS))
    files = inbox_files(root / "inbox")
    raw_read_any(files[:3])
    t_raw = raw_read_any(files)
    _ephemeral()  # the Great Expectations import and context (about 4 s once per process) are not counted
    if url:
        _reset(url)
    engine = init_warehouse(get_engine(url or f"sqlite:///{work / f'bench_v{factor:g}.sqlite'}"))
    t = time.perf_counter()
    reps = ingest_files(files, engine, load_sources(), load_study(), load_instruments(), KEY, data_docs="none")
    t_ing = time.perf_counter() - t
    engine.dispose()
    rows = sum(r.rows_in for r in reps)
    status = {s: sum(r.status == s for r in reps) for s in ("loaded", "refused", "skipped")}
    print(f"factor {factor:g} validated batch: {len(files)} files ({status}), {rows} rows | raw read {t_raw:.2f} s | "
          f"ingest_files {t_ing:.2f} s = {rows / t_ing:,.0f} rows/s | ingest/raw = {t_ing / t_raw:.1f}x", flush=True)
    return {"factor": factor, "files": len(files), "rows": rows, "raw_read_s": t_raw, "ingest_s": t_ing,
            "status": status, "backend": (url or "sqlite").split(":")[0]}


def _reset(url: str) -> None:
    from sqlalchemy import text

    from cohortflow.warehouse.db import get_engine

    eng = get_engine(url)
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    eng.dispose()


def write_validated_results(results: list[dict]) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    head = "## Ingest with validation, whole inbox (benchmarks/bench_ingest.py --validated)"
    lines = [head, "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
             f"({os.cpu_count()} cores, shared with other jobs), backend {results[0]['backend']}. Generated study "
             "with every synth fault; ingest = warehouse.batch_ingest.ingest_files (read, map, GX validation one run "
             "per source version, one transaction per file; no Data Docs); raw read = the plain reader of each "
             "file's format. The GX import/context (about 4 s, once per process) is not counted.", "",
             "| factor | files | rows | raw read s | ingest s | rows/s | ingest / raw |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['factor']:g} | {r['files']} | {r['rows']:,} | {r['raw_read_s']:.2f} | {r['ingest_s']:.2f} "
                     f"| {r['rows'] / r['ingest_s']:,.0f} | {r['ingest_s'] / r['raw_read_s']:.1f}x |")
    _write_section(path, head, "\n".join(lines) + "\n")


def _write_section(path: Path, head: str, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + section + (text[nxt + 1:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    print(f"wrote {path}")


def write_results(results: list[dict]) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    head = "## Ingest throughput (benchmarks/bench_ingest.py)"
    lines = [head, "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on this machine "
             f"({os.cpu_count()} cores), backend {results[0]['backend']}, exports from {results[0]['origin']}.",
             "Raw read = pyreadstat.read_sav / pandas.read_csv of the same files; ingest = ingest_file per file "
             "(read, map, pseudonymise, basic checks, one transaction with bulk insert of item values).", "",
             "| factor | format | files | rows | item values | raw read s | ingest s | rows/s | item values/s "
             "| ingest / raw |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['factor']:g} | {r['format']} | {r['files']} | {r['rows']:,} | {r['item_values']:,} | "
                     f"{r['raw_read_s']:.2f} | {r['ingest_s']:.2f} | {r['rows'] / r['ingest_s']:,.0f} | "
                     f"{r['item_values'] / r['ingest_s']:,.0f} | {r['ingest_s'] / r['raw_read_s']:.1f}x |")
    section = "\n".join(lines) + "\n"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if head in text:
        start = text.index(head)
        nxt = text.find("\n## ", start + len(head))
        text = text[:start] + section + (text[nxt + 1:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--factors", nargs="+", type=float, default=[1.0, 10.0])
    ap.add_argument("--database-url", default=None, help="PostgreSQL URL (its public schema is dropped!)")
    ap.add_argument("--write-results", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--validated", action="store_true",
                    help="the whole generated inbox with GX validation through ingest_files (issue #3/#4 goal)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    results = []
    try:
        if args.validated:
            results = [run_validated(f, args.database_url, work) for f in args.factors]
            if args.write_results:
                write_validated_results(results)
            return
        for f in args.factors:
            results += run(f, args.database_url, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.write_results and results:
        write_results(results)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
