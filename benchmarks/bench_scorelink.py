"""Time the score-store and linkage stages on a loaded warehouse (issue #9): seconds and peak RSS per phase.

    python benchmarks/bench_scorelink.py --database-url sqlite:////tmp/x/warehouse.sqlite \
        --scores-cache /tmp/x/scores.parquet --phases score store link

Phases (each in this process, peak RSS sampled every 50 ms and reset per phase; run one phase per process
for a clean peak):

* `score`: the scoring stage as the pipeline runs it (`score_warehouse`, forced: item read, fingerprints,
  scoring, store), after emptying the `score` table; also writes the scores frame to `--scores-cache`.
* `store`: empty the `score` table, then `store_scores_bulk` of the cached scores frame (the store alone).
* `restore`: `store_scores_bulk` again onto the stored scores (the re-score path: upsert).
* `link`: the link stage as the pipeline runs it: `build_analysis_dataset`, Parquet write, snapshot hash.

The database is modified (scores replaced): give it a copy. Prints one line per phase and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Meter:
    """Wall seconds and peak RSS of named phases (a sampling thread)."""

    def __init__(self) -> None:
        self.peak = _rss_mib()
        self.results: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss_mib())

    @contextmanager
    def phase(self, name: str):
        before = _rss_mib()
        self.peak = before
        t0 = time.perf_counter()
        yield
        self.peak = max(self.peak, _rss_mib())
        self.results[name] = {"seconds": round(time.perf_counter() - t0, 2), "peak_rss_mib": round(self.peak),
                              "rss_before_mib": round(before)}
        print(f"{name}: {self.results[name]}", flush=True)


def _empty_scores(engine) -> None:  # noqa: ANN001
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM score"))
        conn.execute(text("DELETE FROM run WHERE kind = 'scoring'"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--scores-cache", type=Path, default=None)
    ap.add_argument("--phases", nargs="+", default=["store", "link"],
                    choices=["score", "store", "restore", "link"])
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line here")
    ap.add_argument("--label", default="")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="folder with older snapshot.py, linkage.py and store.py to time instead (git show REV:...)")
    args = ap.parse_args()
    if args.baseline:
        import importlib.util

        for name, file in (("cohortflow.warehouse.snapshot", "snapshot.py"), ("cohortflow.warehouse.linkage", "linkage.py"),
                           ("cohortflow.scoring.store", "store.py")):
            spec = importlib.util.spec_from_file_location(name, args.baseline / file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)

    import pandas as pd

    from cohortflow.config.study import load_study
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.scoring.store import score_warehouse, store_scores_bulk
    from cohortflow.warehouse.db import get_engine
    from cohortflow.warehouse.linkage import build_analysis_dataset
    from cohortflow.warehouse.snapshot import snapshot_hash

    engine = get_engine(args.database_url)
    instruments = load_instruments()
    meter = Meter()
    info: dict = {"label": args.label, "url": args.database_url.split("@")[-1], "load_before": os.getloadavg()}
    for phase in args.phases:
        if phase == "score":
            _empty_scores(engine)
            with meter.phase("score"):
                n = score_warehouse(engine, instruments, "bench", force=True)
            info["n_scores"] = n
            if args.scores_cache:
                from cohortflow.warehouse.scores import scores_frame
                scores_frame(engine).drop(columns=["scoring_run"]).to_parquet(args.scores_cache)
        elif phase in ("store", "restore"):
            scores = pd.read_parquet(args.scores_cache)
            if phase == "store":
                _empty_scores(engine)
            with meter.phase(phase):
                store_scores_bulk(engine, scores, f"bench-{phase}")
            info["n_scores"] = len(scores)
            del scores
        else:
            study = load_study()
            out = Path(tempfile.mkdtemp(prefix="bench-link-"))
            with meter.phase("link"):
                t = time.perf_counter()
                data = build_analysis_dataset(engine, study, instruments)
                info["link_build_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                if args.baseline:
                    data.to_parquet(out / "analysis_long.parquet", index=False)
                else:
                    from cohortflow.warehouse.linkage import write_long_parquet
                    write_long_parquet(data, out / "analysis_long.parquet")
                info["link_parquet_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                info["snapshot"] = snapshot_hash(data)
                info["link_hash_s"] = round(time.perf_counter() - t, 2)
            info["long_rows"] = len(data)
            print({k: info[k] for k in ("link_build_s", "link_parquet_s", "link_hash_s", "long_rows", "snapshot")},
                  flush=True)
            del data
    info["phases"] = meter.results
    info["load_after"] = os.getloadavg()
    print(f"load average {info['load_before']} -> {info['load_after']}", flush=True)
    if args.json:
        with args.json.open("a") as fh:
            fh.write(json.dumps(info) + "\n")


if __name__ == "__main__":
    main()
