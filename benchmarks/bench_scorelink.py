"""Time the score-store and linkage stages on a loaded warehouse (issue #9): seconds and peak RSS per phase.

    python benchmarks/bench_scorelink.py --database-url sqlite:////tmp/x/warehouse.sqlite \
        --scores-cache /tmp/x/scores.parquet --phases score store link

Phases (each in this process, peak RSS sampled every 50 ms and reset per phase; run one phase per process
for a clean peak):

* `score`: the scoring stage as the pipeline runs it (`score_warehouse`, forced: item read, fingerprints,
  scoring, store), after emptying the `score` table; also writes the scores frame to `--scores-cache`.
* `store`: empty the `score` table, then `store_scores_bulk` of the cached scores frame (the store alone).
* `restore`: `store_scores_bulk` again onto the stored scores (the re-score path: upsert).
* `link`: the link stage as the pipeline runs it: `build_analysis_dataset` (scores read by a forked child),
  then `write_and_hash` (Parquet write and snapshot hash at the same time; with `--baseline` code that lacks
  it, one after the other). `with_children_peak_mib` = the peak of this process's RSS plus its children's
  private memory sampled together (the machine's share of the stage).
* `analyse`: the model flow on the linked frame as the pipeline runs it (`run_analysis` with the plan's
  workers, forked); needs `link` earlier in the same run. The peak of the forked workers (sum of the RSS of
  this process's children, sampled) is printed beside this process's peak.
* `report`: `write_report` of the analysis result into a temporary folder (the linked frame freed first, as
  the pipeline does); needs `analyse` earlier in the same run.

`--dump DIR` writes the snapshot hash, a hash of the stored score table after a score/store/restore phase
(every column, id order) and the analysis result's tables (contrasts, sensitivity, balance,
resilience, per-outcome EMMs) as Parquet into DIR, to compare two versions of the code to the last digit
(`--compare DIR1 DIR2` does that and exits).

Scores phases modify the database (scores replaced): give them a copy; link/analyse/report only read it.
Prints one line per phase and the load average.
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

from cohortflow.warehouse.memory import children_mib as _children_mib  # noqa: E402
from cohortflow.warehouse.memory import cpu_seconds as _cpu_seconds  # noqa: E402
from cohortflow.warehouse.memory import rss_mib as _rss_mib  # noqa: E402


class Meter:
    """Wall seconds and peak RSS of named phases (a sampling thread)."""

    def __init__(self) -> None:
        self.peak = _rss_mib()
        self.child_peak = self.child_private_peak = self.total_peak = 0.0
        self.results: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            own = _rss_mib()
            self.peak = max(self.peak, own)
            rss, private = _children_mib()
            self.child_peak = max(self.child_peak, rss)
            self.child_private_peak = max(self.child_private_peak, private)
            self.total_peak = max(self.total_peak, own + private)  # this process + its children's own pages

    @contextmanager
    def phase(self, name: str):
        before = _rss_mib()
        self.peak = before
        self.child_peak = self.child_private_peak = self.total_peak = 0.0
        load = os.getloadavg()[0]
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        yield
        self.peak = max(self.peak, _rss_mib())
        self.results[name] = {"seconds": round(time.perf_counter() - t0, 2),
                              "cpu_seconds": round(_cpu_seconds() - cpu0, 2), "peak_rss_mib": round(self.peak),
                              "rss_before_mib": round(before), "rss_after_mib": round(_rss_mib()),
                              "children_rss_peak_mib": round(self.child_peak),
                              "children_private_peak_mib": round(self.child_private_peak),
                              "with_children_peak_mib": round(max(self.total_peak, self.peak)),
                              "load": f"{load:.1f}->{os.getloadavg()[0]:.1f}"}
        print(f"{name}: {self.results[name]}", flush=True)


def _empty_scores(engine) -> None:  # noqa: ANN001
    from sqlalchemy import text

    with engine.begin() as conn:  # PostgreSQL: TRUNCATE, so repeated runs do not insert behind dead rows
        conn.execute(text("TRUNCATE score" if engine.dialect.name == "postgresql" else "DELETE FROM score"))
        conn.execute(text("DELETE FROM run WHERE kind = 'scoring'"))


def _score_table_hash(engine) -> str:  # noqa: ANN001
    """sha256 of every stored score row (all columns but `id`, in id order; values as the driver gives them):
    two stores of the same frame must give the same hash (PostgreSQL's id sequence goes on after a DELETE,
    so the id values themselves differ between runs)."""
    import hashlib

    h = hashlib.sha256()
    with engine.connect() as conn:
        cols = "response_id, instrument, instrument_version, scale, score, n_items, n_answered, prorated, " \
               "above_cutoff, band"
        cur = conn.connection.driver_connection.cursor()
        cur.execute(f"SELECT {cols} FROM score ORDER BY id")
        while rows := cur.fetchmany(100_000):
            h.update(repr(rows).encode())
        cur.close()
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--scores-cache", type=Path, default=None)
    ap.add_argument("--phases", nargs="+", default=["store", "link"],
                    choices=["score", "store", "restore", "link", "analyse", "report"])
    ap.add_argument("--workers", type=int, default=None, help="run_analysis workers (default: the plan's)")
    ap.add_argument("--dump", type=Path, default=None, help="write the snapshot and result tables here")
    ap.add_argument("--compare", type=Path, nargs=2, default=None, help="compare two --dump folders and exit")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line here")
    ap.add_argument("--label", default="")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="folder with older read.py, snapshot.py, linkage.py and store.py (those present) to time "
                         "instead (git show REV:...)")
    args = ap.parse_args()
    if args.compare:
        sys.exit(_compare(*args.compare))
    if not args.database_url:
        ap.error("--database-url is required (except with --compare)")
    if args.baseline:
        import importlib.util

        for name, file in (("cohortflow.warehouse.read", "read.py"), ("cohortflow.warehouse.snapshot", "snapshot.py"),
                           ("cohortflow.warehouse.linkage", "linkage.py"), ("cohortflow.scoring.store", "store.py")):
            if not (args.baseline / file).exists():
                continue
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
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / "score_table_score.txt").write_text(_score_table_hash(engine) + "\n")
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
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / f"score_table_{phase}.txt").write_text(_score_table_hash(engine) + "\n")
            del scores
        elif phase == "link":
            study = load_study()
            out = Path(tempfile.mkdtemp(prefix="bench-link-"))
            with meter.phase("link"):
                t = time.perf_counter()
                data = build_analysis_dataset(engine, study, instruments)
                info["link_build_s"] = round(time.perf_counter() - t, 2)
                t = time.perf_counter()
                linkage = sys.modules["cohortflow.warehouse.linkage"]  # the --baseline one when given
                if hasattr(linkage, "write_and_hash"):  # Parquet and hash at the same time, as link_task does
                    info["snapshot"] = linkage.write_and_hash(data, out / "analysis_long.parquet")
                    info["link_parquet_hash_s"] = round(time.perf_counter() - t, 2)
                else:
                    linkage.write_long_parquet(data, out / "analysis_long.parquet")
                    info["link_parquet_s"] = round(time.perf_counter() - t, 2)
                    t = time.perf_counter()
                    info["snapshot"] = snapshot_hash(data)
                    info["link_hash_s"] = round(time.perf_counter() - t, 2)
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / "parquet_sha256.txt").write_text(_file_sha256(out / "analysis_long.parquet") + "\n")
                (args.dump / "frame_fingerprint.json").write_text(_frame_fingerprint(data))
            (out / "analysis_long.parquet").unlink()
            out.rmdir()
            info["long_rows"] = len(data)
            print({k: info[k] for k in ("link_build_s", "link_parquet_s", "link_hash_s", "link_parquet_hash_s",
                                        "long_rows", "snapshot") if k in info}, flush=True)
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / "snapshot.txt").write_text(info["snapshot"] + "\n")
        elif phase == "analyse":
            from cohortflow.analysis.models import run_analysis
            from cohortflow.analysis.plan import load_analysis_plan

            plan = load_analysis_plan()
            with meter.phase("analyse"):
                result = run_analysis(data, plan, load_study(), workers=args.workers)
            info["failures"] = sorted(result.failures)
            info["job_seconds"] = getattr(result, "job_seconds", {})
            print({"failures": info["failures"], "job_seconds": info["job_seconds"]}, flush=True)
            if args.dump:
                _dump(result, args.dump)
        elif phase == "report":
            from cohortflow.analysis.report import default_run_info, write_report

            data = None  # the pipeline frees the linked frame before the report
            out = Path(tempfile.mkdtemp(prefix="bench-report-"))
            with meter.phase("report"):
                write_report(result, plan, load_study(), instruments, out, default_run_info("bench", "bench"))
    data = None
    info["phases"] = meter.results
    info["load_after"] = os.getloadavg()
    print(f"load average {info['load_before']} -> {info['load_after']}", flush=True)
    if args.json:
        with args.json.open("a") as fh:
            fh.write(json.dumps(info) + "\n")


def _file_sha256(path: Path) -> str:
    """SHA-256 hex of a file's bytes (the Parquet file: same schema, metadata and values = same bytes)."""
    import hashlib

    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _frame_fingerprint(frame) -> str:  # noqa: ANN001
    """JSON of the frame's shape, index, column order, dtypes and a SHA-256 of every column's raw storage
    (values and NA mask; categorical codes and categories): equal fingerprints = same frame to the bit."""
    import hashlib

    import numpy as np
    import pandas as pd

    def digest(parts: list[bytes]) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(len(p).to_bytes(8, "little") + p)
        return h.hexdigest()

    cols = {}
    for c in frame.columns:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype):
            parts = [np.asarray(s.cat.codes).tobytes(), "\x1f".join(map(str, s.cat.categories)).encode(),
                     str(s.cat.categories.dtype).encode()]
        elif hasattr(s.array, "_mask"):
            parts = [s.array._data.tobytes(), s.array._mask.tobytes()]
        elif s.dtype.kind in "biufcmM":
            parts = [np.ascontiguousarray(s.to_numpy()).tobytes()]
        else:
            parts = ["\x1f".join("\x00NA" if v is None or v is pd.NA or v != v else str(v)
                                  for v in s.tolist()).encode()]
        cols[str(c)] = {"dtype": str(s.dtype), "sha256": digest(parts)}
    return json.dumps({"shape": list(frame.shape), "index": repr(frame.index), "columns": cols}, indent=1) + "\n"


def _dump(result, folder: Path) -> None:  # noqa: ANN001
    """The analysis result's tables as Parquet files in `folder` (for `--compare`)."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    frames = {"contrasts": result.contrasts, "sensitivity": result.sensitivity, "balance": result.balance,
              "resilience": result.resilience}
    for key, r in result.outcomes.items():
        for attr in ("contrasts", "emms", "counts", "baseline", "fixed_effects", "variance_components",
                     "above_cutoff", "clinical", "growth", "residual_diagnostics"):
            v = getattr(r, attr, None)
            if isinstance(v, pd.DataFrame):
                frames[f"{key}.{attr}"] = v
    for name, frame in frames.items():
        if isinstance(frame, pd.DataFrame):
            f = frame.copy()
            f.columns = [str(c) for c in f.columns]
            f.reset_index(drop=True).to_pickle(folder / f"{name}.pkl")
    scalars = {k: [float(r.loglik), bool(r.converged), r.fallback, r.random_structure, r.engine, r.rows_dropped,
                   None if r.theta is None else [float(t) for t in r.theta], r.warnings]
               for k, r in result.outcomes.items()}
    (folder / "methods.json").write_text(json.dumps({"methods": result.methods, "failures": result.failures,
                                                     "outcomes": scalars}, sort_keys=True, indent=1, default=str))


def _compare(a: Path, b: Path) -> int:
    """0 when two --dump folders hold identical tables (values to the last digit, NaN = NaN), else 1."""
    import pandas as pd

    bad = 0
    names = sorted({p.name for p in a.iterdir()} | {p.name for p in b.iterdir()})
    for name in names:
        pa, pb = a / name, b / name
        if not (pa.exists() and pb.exists()):
            print(f"{name}: only in one folder")
            bad += 1
            continue
        if name.endswith(".pkl"):
            try:
                pd.testing.assert_frame_equal(pd.read_pickle(pa), pd.read_pickle(pb), check_exact=True)
            except AssertionError as exc:
                print(f"{name}: differs: {str(exc)[:300]}")
                bad += 1
        elif pa.read_bytes() != pb.read_bytes():
            print(f"{name}: differs")
            bad += 1
    print(f"{len(names)} files compared, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    main()
