"""Packed item storage: migration, scoring read and the block-granularity choice, measured on a real warehouse.

Usage: python benchmarks/bench_packed.py --warehouse OLD.sqlite [--work DIR] [--old-src DIR] [--database-url PG]

* migrate: copies OLD.sqlite (a warehouse in the long `item_value` schema, revision 0001; never modified) to
  --work and times `init_warehouse` (Alembic 0001 -> 0002: item_value -> item_layout + item_block).
* scoring read: in fresh processes (context read first), the scoring stage's read side without storing scores: today (item_matrices
  -> item_values_fingerprint -> score_all) on the converted copy, and with --old-src (a source tree of the code
  before packing, e.g. `git archive 005a505`) the old path (item_values_compact -> fingerprint -> score_all) on a
  second copy of OLD.sqlite. RSS from /proc/self/status: before the read, after it, and the peak (VmHWM,
  reset before the read) of the read and of read + fingerprint + scoring.
* granularity: the converted blocks written again as one block per response x instrument (what the warehouse
  stores) and as one block per response (all instruments of the response in one layout): insert time (SQLite
  multi-row executemany; PostgreSQL COPY when --database-url is given, into a scratch schema `bench_packed`
  that is dropped afterwards) and read time into per-instrument float64 matrices.
* writer: the loader's item writer on the same synthetic answers (N responses x 3 instruments, 51 items, 5%
  missing with a reason, the shape of a factor-10 CSV inbox): the long rows of the code before packing (one
  row per answer into a table shaped like `item_value`, with its foreign key; the old `_insert_item_values`
  copied here) against `warehouse.load._insert_item_values` (blocks), alternately in one process, SQLite and
  (with --database-url, public schema dropped!) PostgreSQL COPY. With --only-writer no warehouse is needed.
Prints figures and the load average; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def migrate(old: Path, work: Path) -> Path:
    """Copy `old` into `work` and upgrade the copy to the packed schema; returns the copy."""
    from sqlalchemy import text

    from cohortflow.warehouse.db import get_engine, init_warehouse

    new = work / "packed.sqlite"
    shutil.copyfile(old, new)
    size_old = new.stat().st_size
    engine = get_engine(f"sqlite:///{new}")
    t = time.perf_counter()
    init_warehouse(engine)
    dt = time.perf_counter() - t
    with engine.connect() as conn:
        blocks = conn.execute(text("SELECT count(*) FROM item_block")).scalar()
        layouts = conn.execute(text("SELECT count(*) FROM item_layout")).scalar()
        answers = conn.execute(text("SELECT sum(length(codes)) / 8 FROM item_block")).scalar()
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    t = time.perf_counter()
    subprocess.run(["sqlite3", str(new), "VACUUM"], check=False)
    vac = time.perf_counter() - t
    print(f"migrate 0001 -> 0002: {dt:.1f} s for {answers:,} item values -> {blocks:,} blocks, {layouts} layouts; "
          f"file {size_old / 2**20:,.0f} MiB -> {new.stat().st_size / 2**20:,.0f} MiB after VACUUM ({vac:.1f} s) "
          f"| load avg {load_average()}", flush=True)
    return new


SCORING_NEW = """
import resource, time, json, sys
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.engine import item_values_fingerprint, score_all
from cohortflow.warehouse.db import get_engine
from cohortflow.warehouse.read import item_matrices, scoring_context
insts = load_instruments(); e = get_engine(sys.argv[1])
ctx = scoring_context(e); base = _status("VmRSS"); _reset_peak()
t = time.perf_counter(); items = list(item_matrices(e)); t_read = time.perf_counter() - t
after_read = _status("VmRSS"); read_peak = _status("VmHWM")
t = time.perf_counter(); fp = item_values_fingerprint(items); t_fp = time.perf_counter() - t
t = time.perf_counter(); s = score_all(items, ctx, insts, on_unknown="skip"); t_score = time.perf_counter() - t
n = int(sum(b.values.size for b in items)); mb = sum(b.values.nbytes for b in items) / 2**20
print(json.dumps({"read_s": t_read, "fingerprint_s": t_fp, "score_s": t_score, "cells": n, "matrix_mib": mb,
                  "rss_before_read_mib": base, "rss_after_read_mib": after_read, "rss_peak_read_mib": read_peak,
                  "scores": len(s), "rss_peak_read_score_mib": _status("VmHWM")}))
"""

SCORING_OLD = """
import resource, time, json, sys
def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.engine import item_values_fingerprint, score_all
from cohortflow.warehouse.db import get_engine
from cohortflow.warehouse.read import item_values_compact, scoring_context
insts = load_instruments(); e = get_engine(sys.argv[1])
ctx = scoring_context(e); base = _status("VmRSS"); _reset_peak()
t = time.perf_counter(); items = item_values_compact(e); t_read = time.perf_counter() - t
after_read = _status("VmRSS"); read_peak = _status("VmHWM")
t = time.perf_counter(); fp = item_values_fingerprint(items); t_fp = time.perf_counter() - t
t = time.perf_counter(); s = score_all(items, ctx, insts, on_unknown="skip"); t_score = time.perf_counter() - t
print(json.dumps({"read_s": t_read, "fingerprint_s": t_fp, "score_s": t_score, "cells": len(items),
                  "frame_mib": items.memory_usage(deep=True).sum() / 2**20, "scores": len(s),
                  "rss_before_read_mib": base, "rss_after_read_mib": after_read, "rss_peak_read_mib": read_peak,
                  "rss_peak_read_score_mib": _status("VmHWM")}))
"""


def scoring_read(label: str, db: Path, code: str, pythonpath: str | None) -> dict:
    """Run one scoring-read snippet in a fresh process (cwd outside the worktree); its figures."""
    env = dict(os.environ, GX_ANALYTICS_ENABLED="false")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}"], env=env, cwd="/tmp", capture_output=True,
                         text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"scoring read [{label}]: " + ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v:,}"
                                                  for k, v in res.items()) + f" | load avg {load_average()}",
          flush=True)
    return res


def _per_response(rows: list[tuple], layouts: dict[int, tuple[str, list[str]]]) -> tuple[list[tuple], dict]:
    """The same answers as one block per response: layout = the response's (instrument, items) lists in
    instrument order; codes concatenated; reasons keyed by instrument + '_' + item."""
    by: dict[int, list[tuple]] = {}
    for r in rows:
        by.setdefault(r[0], []).append(r)
    combos: dict[tuple[int, ...], int] = {}
    out = []
    for rid, parts in by.items():
        parts.sort(key=lambda r: r[1])
        key = tuple(p[2] for p in parts)
        lid = combos.setdefault(key, len(combos) + 1)
        why = {}
        for p in parts:
            if p[4]:
                why.update({f"{p[1]}_{k}": v for k, v in json.loads(p[4]).items()})
        out.append((rid, lid, b"".join(p[3] for p in parts), json.dumps(why) if why else None))
    return out, {lid: [(layouts[x][0], layouts[x][1]) for x in key] for key, lid in combos.items()}


def _read_a(cur, layouts) -> dict[str, int]:  # noqa: ANN001
    cur.execute("SELECT response_id, layout_id, codes FROM blk_a")
    ids: dict[int, list] = {}
    blobs: dict[int, list] = {}
    for rid, lid, codes in cur.fetchall():
        ids.setdefault(lid, []).append(rid)
        blobs.setdefault(lid, []).append(bytes(codes))
    mats: dict[str, list] = {}
    for lid, bl in blobs.items():
        m = np.frombuffer(b"".join(bl), dtype="<f8").reshape(len(bl), -1)
        mats.setdefault(layouts[lid][0], []).append(m)
    return {k: sum(len(m) for m in v) for k, v in mats.items()}


def _read_b(cur, combos) -> dict[str, int]:  # noqa: ANN001
    cur.execute("SELECT response_id, layout_id, codes FROM blk_b")
    blobs: dict[int, list] = {}
    for _rid, lid, codes in cur.fetchall():
        blobs.setdefault(lid, []).append(bytes(codes))
    mats: dict[str, list] = {}
    for lid, bl in blobs.items():
        m = np.frombuffer(b"".join(bl), dtype="<f8").reshape(len(bl), -1)
        lo = 0
        for inst, items in combos[lid]:
            mats.setdefault(inst, []).append(m[:, lo:lo + len(items)])
            lo += len(items)
    return {k: sum(len(m) for m in v) for k, v in mats.items()}


def granularity(packed: Path, work: Path, pg_url: str | None) -> None:
    """Insert and read the converted answers as blocks per response x instrument and per response."""
    from sqlalchemy import text

    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.load import _bulk

    src = get_engine(f"sqlite:///{packed}")
    with src.connect() as conn:
        layouts = {r[0]: (r[1], json.loads(r[2])) for r in conn.execute(text(
            "SELECT id, instrument, items FROM item_layout"))}
        rows = [tuple(r) for r in conn.execute(text(
            "SELECT response_id, instrument, layout_id, codes, reasons FROM item_block ORDER BY response_id, instrument"))]
    src.dispose()
    rows_b, combos = _per_response(rows, layouts)
    ids = sorted({r[0] for r in rows})
    arr_a = np.empty((len(rows), 5), dtype=object)
    arr_a[:] = rows
    arr_b = np.empty((len(rows_b), 4), dtype=object)
    arr_b[:] = rows_b
    print(f"granularity: {len(rows):,} blocks per response x instrument ({len(layouts)} layouts) vs "
          f"{len(rows_b):,} per response ({len(combos)} layouts)", flush=True)
    for label, url in [("sqlite", f"sqlite:///{work / 'gran.sqlite'}"), ("postgresql", pg_url)]:
        if url is None:
            continue
        e = get_engine(url)
        pg = e.dialect.name == "postgresql"
        blob = "bytea" if pg else "BLOB"
        tail = "" if pg else " WITHOUT ROWID"
        with e.begin() as conn:
            if pg:
                conn.exec_driver_sql("DROP SCHEMA IF EXISTS bench_packed CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA bench_packed")
                conn.exec_driver_sql("SET search_path TO bench_packed")
            conn.exec_driver_sql("CREATE TABLE resp (id INTEGER PRIMARY KEY)")
            conn.exec_driver_sql(f"CREATE TABLE blk_a (response_id INTEGER REFERENCES resp (id), instrument "
                                 f"VARCHAR(50), layout_id INTEGER, codes {blob}, reasons TEXT, "
                                 f"PRIMARY KEY (response_id, instrument)){tail}")
            conn.exec_driver_sql(f"CREATE TABLE blk_b (response_id INTEGER PRIMARY KEY REFERENCES resp (id), "
                                 f"layout_id INTEGER, codes {blob}, reasons TEXT){tail}")
            _bulk(conn, "resp", ["id"], [(i,) for i in ids])
        times = {}
        for name, table, cols, arr in [("per response x instrument", "blk_a",
                                        ["response_id", "instrument", "layout_id", "codes", "reasons"], arr_a),
                                       ("per response", "blk_b", ["response_id", "layout_id", "codes", "reasons"],
                                        arr_b)]:
            with e.begin() as conn:
                if pg:
                    conn.exec_driver_sql("SET search_path TO bench_packed")
                t = time.perf_counter()
                _bulk(conn, table, cols, arr)
                times[name] = time.perf_counter() - t
        with e.connect() as conn:
            if pg:
                conn.exec_driver_sql("SET search_path TO bench_packed")
            cur = conn.connection.driver_connection.cursor()
            t = time.perf_counter()
            na = _read_a(cur, layouts)
            ra = time.perf_counter() - t
            t = time.perf_counter()
            nb = _read_b(cur, combos)
            rb = time.perf_counter() - t
            cur.close()
        assert na == nb, (na, nb)
        if pg:
            with e.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA bench_packed CASCADE")
        e.dispose()
        print(f"granularity [{label}]: insert per response x instrument {times['per response x instrument']:.2f} s"
              f" ({len(rows) / times['per response x instrument']:,.0f} blocks/s), per response "
              f"{times['per response']:.2f} s ({len(rows_b) / times['per response']:,.0f} blocks/s); read into "
              f"per-instrument matrices {ra:.2f} s vs {rb:.2f} s | load avg {load_average()}", flush=True)


def _old_long_insert(conn, resp_ids, inst, item, codes, reasons) -> None:  # noqa: ANN001
    """The item writer before packing (warehouse/load.py at 005a505), into `item_value_long`."""
    import pandas as pd

    from cohortflow.warehouse.load import _bulk

    n, k = codes.shape
    order = sorted(range(k), key=lambda j: (inst[j], item[j]))
    codes, reasons = codes[:, order], reasons[:, order]
    vals = codes.astype(object)
    vals[np.isnan(codes) | ~pd.isna(reasons)] = None
    rows = np.empty((n * k, 5), dtype=object)
    rows[:, 0] = np.repeat(resp_ids.astype(object), k)
    rows[:, 1] = np.tile(np.array([inst[j] for j in order], dtype=object), n)
    rows[:, 2] = np.tile(np.array([item[j] for j in order], dtype=object), n)
    rows[:, 3] = vals.ravel()
    rows[:, 4] = reasons.ravel()
    _bulk(conn, "item_value_long", ["response_id", "instrument", "item", "value", "missing_reason"], rows)


def writer(n: int, work: Path, pg_url: str | None, repeat: int = 2) -> None:
    """Old long rows vs packed blocks for the same n responses, alternately, per backend."""
    from cohortflow.warehouse.db import get_engine, init_warehouse
    from cohortflow.warehouse.load import _bulk, _insert_item_values

    rng = np.random.default_rng(7)
    sizes = {"inst_a": 25, "inst_b": 17, "inst_c": 9}
    inst = [c for c, m in sizes.items() for _ in range(m)]
    item = [f"{j + 1:02d}" for m in sizes.values() for j in range(m)]
    codes = rng.integers(0, 5, size=(n, len(inst))).astype(float)
    miss = rng.random(codes.shape) < 0.05
    codes[miss] = np.nan
    reasons = np.full(codes.shape, None, dtype=object)
    reasons[miss] = "not_answered"
    for label, url in [("sqlite", f"sqlite:///{work / 'writer.sqlite'}"), ("postgresql", pg_url)]:
        if url is None:
            continue
        if label == "sqlite":
            (work / "writer.sqlite").unlink(missing_ok=True)
        e = get_engine(url)
        pg = e.dialect.name == "postgresql"
        if pg:
            with e.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
        init_warehouse(e)
        runs = 2 * repeat
        with e.begin() as conn:
            tail = "" if pg else " WITHOUT ROWID"
            conn.exec_driver_sql("CREATE TABLE item_value_long (response_id INTEGER NOT NULL REFERENCES response (id), "
                                 "instrument VARCHAR(50) NOT NULL, item VARCHAR(50) NOT NULL, value FLOAT, "
                                 "missing_reason VARCHAR(50), PRIMARY KEY (response_id, instrument, item))" + tail)
            conn.exec_driver_sql("INSERT INTO batch (id, file_name, sha256, size_bytes, status, rows_in, rows_loaded, "
                                 "rows_quarantined, rows_duplicate, item_values) VALUES "
                                 "(1, 'f', 'x', 0, 'loaded', 0, 0, 0, 0, 0)")
            conn.exec_driver_sql("INSERT INTO household (household_id, arm, site, first_batch_id) VALUES "
                                 "('h', 'a', 's', 1)")
            conn.exec_driver_sql("INSERT INTO person (person_id, household_id, first_batch_id) VALUES ('p', 'h', 1)")
            f = False if pg else 0
            _bulk(conn, "response", ["id", "batch_id", "row_number", "household_id", "person_id", "subject_id", "role",
                                     "arm", "site", "wave", "superseded"],
                  [(i, 1, i, "h", "p", "p", "r", "a", "s", "w", f) for i in range(1, runs * n + 1)])
        times: dict[str, list[float]] = {"long rows": [], "blocks": []}
        for r in range(runs):
            kind = "long rows" if r % 2 == 0 else "blocks"
            ids = np.arange(r * n + 1, (r + 1) * n + 1, dtype=np.int64)
            with e.begin() as conn:
                t = time.perf_counter()
                if kind == "long rows":
                    _old_long_insert(conn, ids, inst, item, codes, reasons)
                else:
                    _insert_item_values(conn, ids, inst, item, codes, reasons)
                times[kind].append(time.perf_counter() - t)
        if pg:
            with e.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
        e.dispose()
        lo, bl = min(times["long rows"]), min(times["blocks"])
        print(f"writer [{label}] {n:,} responses x {len(inst)} answers = {n * len(inst):,} item values: long rows "
              f"{lo:.2f} s ({n * len(inst) / lo:,.0f} values/s, {n * len(inst):,} rows), blocks {bl:.2f} s "
              f"({n * len(inst) / bl:,.0f} values/s, {n * len(sizes):,} rows) = {lo / bl:.1f}x faster (best of "
              f"{repeat}; all: {times}) | load avg {load_average()}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warehouse", type=Path, default=None, help="old-schema SQLite warehouse (copied, not changed)")
    ap.add_argument("--writer-responses", type=int, default=80_000)
    ap.add_argument("--only-writer", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_packed"))
    ap.add_argument("--old-src", default=None, help="source tree of the code before packing (PYTHONPATH)")
    ap.add_argument("--database-url", default=None, help="PostgreSQL for the granularity test (scratch schema)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["scoring", "granularity", "writer"])
    ap.add_argument("--packed", type=Path, default=None, help="an already converted copy: skip the migration")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {load_average()}", flush=True)
    if "writer" not in args.skip:
        writer(args.writer_responses, args.work, args.database_url)
    if args.only_writer or args.warehouse is None:
        return
    packed = args.packed or migrate(args.warehouse, args.work)
    if "scoring" not in args.skip:
        scoring_read("packed: item_matrices", packed, SCORING_NEW, None)
        if args.old_src:
            old_copy = args.work / "old.sqlite"
            shutil.copyfile(args.warehouse, old_copy)
            scoring_read("long: item_values_compact", old_copy, SCORING_OLD, args.old_src)
            old_copy.unlink()
    if "granularity" not in args.skip:
        granularity(packed, args.work, args.database_url)


if __name__ == "__main__":
    main()
