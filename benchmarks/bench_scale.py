"""End to end at scale: wall time and peak memory of the whole pipeline, per stage, at given factors.

Usage:
    python benchmarks/bench_scale.py --factors 1 10 100 [--database-url postgresql://u:p@host/db]
        [--backends sqlite postgresql] [--work DIR] [--prefect-home fresh|reuse] [--json out.jsonl]

For each factor the study is generated once (seed 20241120, timed in its own process; reused from `--work`
when the manifest matches), then for each backend one child process runs `pipeline_flow` (Prefect flow,
ephemeral API server) on an empty warehouse: SQLite file, or the PostgreSQL database of `--database-url`
whose `public` schema is DROPPED and recreated (use a database of your own). The child prints per-stage
wall seconds and peak RSS (sampled in-process by `flows.pipeline.StageMeter`); the parent takes the child's
wall time and peak RSS (`wait4`). `start-up` = process start to the flow body (imports, Prefect's
ephemeral server; fresh `PREFECT_HOME` unless `--prefect-home reuse`); as in `cohortflow demo`, the server
is started early in a background thread while the database is reset and libraries are imported, unless
`--no-prestart`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED = 20241120
STAGES = ["ingest", "score", "link", "analyse", "report"]


def _wait(cmd: list[str], env: dict[str, str]) -> tuple[float, str, int]:
    """Run `cmd`; (wall seconds, stdout, return code). The child reports its own peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    secs = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(err[-4000:])
    return secs, out, proc.returncode


def _child_env(prefect_home: Path) -> dict[str, str]:
    prefect_home.mkdir(parents=True, exist_ok=True)
    return dict(os.environ, PREFECT_HOME=str(prefect_home), PREFECT_LOGGING_LEVEL="WARNING",
                GX_ANALYTICS_ENABLED="false", PREFECT_SERVER_ANALYTICS_ENABLED="false", MPLBACKEND="Agg",
                PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120")


def generate(study_dir: Path, factor: float) -> dict:
    """Generate the study (unless the same factor and seed are there); timing of the generator process."""
    manifest = study_dir / "truth" / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if float(m.get("factor", -1)) == factor and int(m.get("seed", -1)) == SEED:
            return {"reused": True}
    code = ("import json, resource, sys, time; from pathlib import Path; from cohortflow.synth import generate_study; "
            f"t = time.perf_counter(); m = generate_study(Path({str(study_dir)!r}), factor={factor!r}, seed={SEED}); "
            "print(json.dumps({'seconds': time.perf_counter() - t, 'files': len(m.files), "
            "'rows': sum(f.n_rows for f in m.files), "
            "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")
    secs, out, rc = _wait([sys.executable, "-c", code], dict(os.environ))
    if rc:
        raise SystemExit(f"generation failed at factor {factor}")
    info = json.loads(out.strip().splitlines()[-1])
    info["wall"] = secs
    return info


def run_pipeline(study_dir: Path, url: str, outputs: Path, prefect_home: Path, no_prestart: bool = False) -> dict:
    """One child process: empty warehouse at `url`, `pipeline_flow` on the study's inbox; its figures."""
    cmd = [sys.executable, __file__, "--child", "--study", str(study_dir), "--database-url", url,
           "--outputs", str(outputs), "--spawned", repr(time.time()), *(["--no-prestart"] if no_prestart else [])]
    secs, out, rc = _wait(cmd, _child_env(prefect_home))
    if rc:
        raise SystemExit(f"pipeline failed ({url})")
    info = json.loads(out.strip().splitlines()[-1])
    info["wall"] = secs
    return info


def replicate_warehouse(url: str, copies: int) -> dict:
    """Grow a loaded warehouse to `copies` x its households: every household, person, response and item value
    is copied `copies - 1` times with new pseudonyms (last 4 hex digits replaced by `x` and the copy number), new
    response ids and row numbers; scores, runs and quarantine are not copied. For measuring the stages after
    ingestion at a size whose ingestion would take too long here. Returns the row counts."""
    from sqlalchemy import text

    from cohortflow.warehouse.db import get_engine

    engine = get_engine(url)
    pg = engine.dialect.name == "postgresql"

    def pid(col: str, k: int) -> str:
        # 'x' is not a hex digit: a copy never collides with an original pseudonym
        return (f"substr({col}, 1, 60) || 'x' || lpad('{k}', 3, '0')" if pg
                else f"substr({col}, 1, 60) || 'x' || printf('%03d', {k})")

    with engine.begin() as conn:
        conn.execute(text("DELETE FROM score"))
        max_id = conn.execute(text("SELECT max(id) FROM response")).scalar() or 0
        max_row = conn.execute(text("SELECT max(row_number) FROM response")).scalar() or 0
        # originals kept in temporary tables so each copy is made from them only
        for t in ("household", "person", "response"):
            conn.execute(text(f"CREATE TEMPORARY TABLE {t}_orig AS SELECT * FROM {t}"))
        for k in range(1, copies):
            conn.execute(text(f"INSERT INTO household (household_id, arm, site, registration_date, first_batch_id) "
                              f"SELECT {pid('household_id', k)}, arm, site, registration_date, first_batch_id "
                              f"FROM household_orig"))
            conn.execute(text(f"INSERT INTO person (person_id, household_id, sex, birth_year, first_batch_id) "
                              f"SELECT {pid('person_id', k)}, {pid('household_id', k)}, sex, birth_year, first_batch_id "
                              f"FROM person_orig"))
            cols = ("batch_id, role, arm, site, wave, response_date, registration_date, days_since_t0, "
                    "subject_age_months, subject_sex, superseded")
            conn.execute(text(f"INSERT INTO response (id, row_number, household_id, person_id, subject_id, {cols}) "
                              f"SELECT id + {k * max_id}, row_number + {k * max_row}, {pid('household_id', k)}, "
                              f"{pid('person_id', k)}, {pid('subject_id', k)}, {cols} FROM response_orig"))
            conn.execute(text(f"INSERT INTO item_block (response_id, instrument, layout_id, codes, reasons) "
                              f"SELECT response_id + {k * max_id}, instrument, layout_id, codes, reasons "
                              f"FROM item_block WHERE response_id <= {max_id}"))  # packed: layouts are shared
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                  for t in ("household", "person", "response", "item_block")}
        counts["item_value"] = conn.execute(text("SELECT sum(length(codes)) / 8 FROM item_block")).scalar() or 0
    return counts


def replicated(args: argparse.Namespace, work: Path) -> None:
    """`--replicate-from`: grow a loaded warehouse, then time the flow's stages after ingestion on it."""
    if args.database_url:
        url, label = args.database_url, "postgresql"
    else:
        target = work / f"warehouse-x{args.copies}.sqlite"
        shutil.copyfile(args.replicate_from, target)
        url, label = f"sqlite:///{target}", "sqlite"
    t0 = time.perf_counter()
    counts = replicate_warehouse(url, args.copies)
    print(f"grew the warehouse x{args.copies} in {time.perf_counter() - t0:.1f} s: {counts}", flush=True)
    empty = work / "empty-study"
    (empty / "inbox").mkdir(parents=True, exist_ok=True)
    home = work / f"prefect-home-{time.time_ns()}"
    cmd = [sys.executable, __file__, "--child", "--keep-db", "--study", str(empty), "--database-url", url,
           "--outputs", str(work / f"outputs-x{args.copies}-{label}"), "--spawned", repr(time.time())]
    secs, out, rc = _wait(cmd, _child_env(home))
    shutil.rmtree(home, ignore_errors=True)
    if rc:
        raise SystemExit("pipeline failed")
    info = json.loads(out.strip().splitlines()[-1])
    info["wall"] = secs
    st = info["stages"]
    print(f"x{args.copies} {label}: wall {secs:.1f} s, peak {info['peak_rss_mib']:.0f} MiB, "
          + ", ".join(f"{s} {st[s]['seconds']:.1f} s (peak {st[s]['peak_rss_mib']:.0f})" for s in STAGES if s in st)
          + f", {info['n_scores']} score rows; load {_load()}", flush=True)
    if args.json:
        with args.json.open("a") as fh:
            fh.write(json.dumps({"replicated": args.copies, "backend": label, "counts": counts, "load": _load(),
                                 **info}) + "\n")


def _reset_database(url: str) -> None:
    from sqlalchemy import text

    from cohortflow.warehouse.db import get_engine, init_warehouse

    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
    elif engine.url.database:
        Path(engine.url.database).unlink(missing_ok=True)
    init_warehouse(get_engine(url))


def child(args: argparse.Namespace) -> None:
    """In the child: reset the warehouse, run the flow, print one JSON line of figures."""
    import atexit
    import gc
    import resource

    atexit.register(gc.freeze)  # as the cohortflow command does: no final collections over every object at exit

    entered = time.time()
    server = None
    if not args.no_prestart:
        from cohortflow.flows.startup import prestart_prefect_server, warm_imports

        server = prestart_prefect_server()
    t0 = time.perf_counter()
    if not args.keep_db:
        _reset_database(args.database_url)
    reset = time.perf_counter() - t0
    if server is not None:
        warm_imports()
    from cohortflow.flows.pipeline import pipeline_flow
    from cohortflow.flows.startup import flow_run_settings

    if server is not None:
        server.join()
    called = time.time()
    with flow_run_settings(server):
        res = pipeline_flow(inbox=str(Path(args.study) / "inbox"), database_url=args.database_url,
                            outputs_dir=str(args.outputs), key_hex=("5a" * 32))
    done = time.time()
    rows = {k: sum(getattr(b, k, 0) or 0 for b in res.batches) for k in ("rows_in", "rows_loaded", "rows_quarantined")}
    print(json.dumps({
        "python_start": entered - float(args.spawned), "reset_db": reset, "before_flow": called - entered,
        "prefect_start": (res.flow_started or called) - called, "flow_total": done - called,
        "stages": res.stages, "n_scores": res.n_scores, "files": len(res.batches), **rows,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "snapshot": res.snapshot_hash}))


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0])
    ap.add_argument("--database-url", default=None, help="PostgreSQL URL (its public schema is recreated)")
    ap.add_argument("--backends", nargs="+", default=None, help="sqlite and/or postgresql (default: both if a URL)")
    ap.add_argument("--work", type=Path, default=None, help="folder for studies and warehouses (kept)")
    ap.add_argument("--prefect-home", choices=["fresh", "reuse"], default="fresh")
    ap.add_argument("--json", type=Path, default=None, help="append one JSON line per run here")
    ap.add_argument("--no-prestart", action="store_true",
                    help="let the flow start Prefect's server (default: start it early, as `cohortflow demo` does)")
    ap.add_argument("--replicate-from", default=None,
                    help="instead of generating and ingesting: copy this loaded SQLite warehouse file (or use the "
                         "loaded PostgreSQL warehouse of --database-url as is), grow it --copies times, then run "
                         "the flow on an empty inbox (scoring, linkage, models, report)")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--keep-db", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--study", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--outputs", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--spawned", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    backends = args.backends or (["sqlite", "postgresql"] if args.database_url else ["sqlite"])
    if "postgresql" in backends and not args.database_url:
        raise SystemExit("--backends postgresql needs --database-url")
    work = args.work or Path(tempfile.mkdtemp(prefix="cf-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; load average at start {_load()}", flush=True)
    if args.replicate_from:
        replicated(args, work)
        return
    head = (f"{'factor':>6} {'backend':>10} {'rows in':>9} {'wall s':>7} {'peak MiB':>8} {'start s':>7} "
            + " ".join(f"{s + ' s':>9}" for s in STAGES) + f" {'stage peaks MiB':>30}  load")
    print(head, flush=True)
    for f in args.factors:
        study = work / f"study-f{f:g}"
        gen = generate(study, f)
        if not gen.get("reused"):
            print(f"{f:>6g} {'generate':>10} {gen['rows']:>9} {gen['wall']:>7.1f} {gen['peak_rss_mib']:>8.0f}   "
                  f"({gen['files']} files)  load {_load()}", flush=True)
        for backend in backends:
            url = (args.database_url if backend == "postgresql"
                   else f"sqlite:///{work / f'warehouse-f{f:g}.sqlite'}")
            home = work / "prefect-home" if args.prefect_home == "reuse" else work / f"prefect-home-{time.time_ns()}"
            info = run_pipeline(study, url, work / f"outputs-f{f:g}-{backend}", home, args.no_prestart)
            if args.prefect_home == "fresh":
                shutil.rmtree(home, ignore_errors=True)
            st = info["stages"]
            start = info["python_start"] + info.get("before_flow", info["reset_db"]) + info["prefect_start"]
            peaks = "/".join(f"{st.get(s, {}).get('peak_rss_mib', 0):.0f}" for s in STAGES)
            tree = max((st.get(s, {}).get("peak_tree_mib", 0) for s in STAGES), default=0)
            print(f"{f:>6g} {backend:>10} {info['rows_in']:>9} {info['wall']:>7.1f} {info['peak_rss_mib']:>8.0f} "
                  f"{start:>7.1f} " + " ".join(f"{st.get(s, {}).get('seconds', float('nan')):>9.1f}" for s in STAGES)
                  + f" {peaks:>30}  tree {tree:.0f}  {_load()}", flush=True)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps({"factor": f, "backend": backend, "generate": gen, "load": _load(),
                                         "prefect_home": args.prefect_home, **info}) + "\n")


if __name__ == "__main__":
    main()
