"""The floor of any loader of this warehouse: copy the rows an ingestion stored into an empty warehouse.

    python benchmarks/bench_write_floor.py SOURCE_URL TARGET_URL

SOURCE_URL: a warehouse an ingestion filled (e.g. the factor-10 one of bench_scale.py). TARGET_URL: a SQLite file
(deleted first) or PostgreSQL (its public schema is dropped!). The households, persons, responses and item
blocks of every source batch are written again, already prepared (the same tuples, no reading, mapping,
validation, pseudonymisation or look-ups), one transaction per batch, with the loader's own bulk insert
(`warehouse.load._bulk`: COPY on PostgreSQL, multi-row VALUES on SQLite). Batches and item layouts are written
first and not timed. Prints wall seconds, this process's CPU and (PostgreSQL) the server's CPU.

What it answers: issue #3 asks that ingestion cost at most twice the raw read of the exports (pyreadstat /
pandas, benchmarks/bench_ingest.py). A loader that stores these rows in one transaction per file cannot cost
less than this copy.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import _reset, load_average, server_cpu  # noqa: E402

from cohortflow.warehouse.db import get_engine, init_warehouse, take_write_lock  # noqa: E402
from cohortflow.warehouse.load import _bulk  # noqa: E402

TABLES = ["batch", "item_layout", "household", "person", "response", "item_block"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source_url")
    ap.add_argument("target_url")
    args = ap.parse_args()
    src = get_engine(args.source_url)
    if args.target_url.startswith("postgresql"):
        _reset(args.target_url)
    else:
        Path(args.target_url.split("///", 1)[1]).unlink(missing_ok=True)
    dst = init_warehouse(get_engine(args.target_url))
    stored: dict[str, tuple[list[str], list[tuple]]] = {}
    with src.connect() as conn:
        for table in TABLES:
            res = conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")
            stored[table] = (list(res.keys()), [tuple(r) for r in res.fetchall()])
    print({t: len(v[1]) for t, v in stored.items()}, flush=True)
    bcols, batches = stored["batch"]
    hcols, households = stored["household"]
    pcols, persons = stored["person"]
    rcols, responses = stored["response"]
    kcols, blocks = stored["item_block"]
    by_batch: dict[int, dict[str, list[tuple]]] = defaultdict(lambda: defaultdict(list))
    for h in households:
        by_batch[h[hcols.index("first_batch_id")]]["household"].append(h)
    for p in persons:
        by_batch[p[pcols.index("first_batch_id")]]["person"].append(p)
    of_response: dict[int, list[tuple]] = defaultdict(list)
    for k in blocks:
        of_response[k[0]].append(k)
    for r in responses:
        by_batch[r[rcols.index("batch_id")]]["response"].append(r)
    with dst.begin() as conn:  # not timed: the batch rows (without their supersede links) and the layouts
        _bulk(conn, "item_layout", *stored["item_layout"])
        _bulk(conn, "batch", bcols, [tuple(None if c == "supersedes" else v for c, v in zip(bcols, b, strict=True))
                                     for b in batches])
    before = load_average()
    t, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        rows = by_batch[b[0]]
        with dst.connect() as conn:
            conn.execution_options(write_lock=True)
            with conn.begin():
                take_write_lock(conn)
                _bulk(conn, "household", hcols, rows["household"])
                _bulk(conn, "person", pcols, rows["person"])
                _bulk(conn, "response", rcols, rows["response"])
                _bulk(conn, "item_block", kcols, [k for r in rows["response"] for k in of_response[r[0]]])
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    srv = server_cpu(dst) if args.target_url.startswith("postgresql") else 0.0
    print(f"copy of the stored rows, one transaction per batch ({len(batches)}): wall {wall:.2f} s, client CPU "
          f"{cpu:.2f} s, server CPU {srv:.2f} s, client + server {cpu + srv:.2f} s | load average {before} -> "
          f"{load_average()}", flush=True)


if __name__ == "__main__":
    main()
