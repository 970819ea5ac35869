"""ingest_files of one inbox into an empty warehouse: wall, client CPU (all threads and the reader processes) and
PostgreSQL server CPU.

    python benchmarks/bench_ingest_inbox.py INBOX DATABASE_URL [--chunk-rows N]

DATABASE_URL: a SQLite file (deleted first) or PostgreSQL (its public schema is dropped!). No Data Docs. Prints
one line: files by status, rows, wall seconds, client and server CPU seconds, summed read+map and load seconds,
load average before and after. Used for the load-thread comparison in RESULTS.md (section ingest6).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_ingest import KEY, _reset, load_average, server_cpu  # noqa: E402

from cohortflow.config.study import load_study  # noqa: E402
from cohortflow.ingest.mapping import load_sources  # noqa: E402
from cohortflow.instruments.registry import load_instruments  # noqa: E402
from cohortflow.warehouse.batch_ingest import CHUNK_ROWS, ingest_files  # noqa: E402
from cohortflow.warehouse.db import get_engine, init_warehouse  # noqa: E402
from cohortflow.warehouse.load import inbox_files  # noqa: E402
from cohortflow.warehouse.memory import cpu_seconds  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inbox", type=Path)
    ap.add_argument("database_url")
    ap.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    args = ap.parse_args()
    url = args.database_url
    if url.startswith("postgresql"):
        _reset(url)
    else:
        Path(url.split("///", 1)[1]).unlink(missing_ok=True)
    engine = init_warehouse(get_engine(url))
    files = inbox_files(args.inbox)
    before = load_average()
    t, c = time.perf_counter(), cpu_seconds()
    reps = ingest_files(files, engine, load_sources(), load_study(), load_instruments(), KEY, data_docs="none",
                        chunk_rows=args.chunk_rows)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    srv = server_cpu(engine) if url.startswith("postgresql") else 0.0
    status = {s: sum(r.status == s for r in reps) for s in ("loaded", "refused", "skipped")}
    print(f"chunk_rows {args.chunk_rows}: {status}, {sum(r.rows_in for r in reps):,} rows in, "
          f"{sum(r.rows_loaded or 0 for r in reps):,} loaded | wall {wall:.1f} s, client CPU (readers included) "
          f"{cpu:.1f} s, server "
          f"CPU {srv:.1f} s, sum {cpu + srv:.1f} s | read+map {sum(r.read_seconds for r in reps):.1f} s, load "
          f"{sum(r.load_seconds for r in reps):.1f} s | load average {before} -> {load_average()}", flush=True)


if __name__ == "__main__":
    main()
