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
ephemeral server; fresh `PREFECT_HOME` unless `--prefect-home reuse`).
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


def run_pipeline(study_dir: Path, url: str, outputs: Path, prefect_home: Path) -> dict:
    """One child process: empty warehouse at `url`, `pipeline_flow` on the study's inbox; its figures."""
    cmd = [sys.executable, __file__, "--child", "--study", str(study_dir), "--database-url", url,
           "--outputs", str(outputs), "--spawned", repr(time.time())]
    secs, out, rc = _wait(cmd, _child_env(prefect_home))
    if rc:
        raise SystemExit(f"pipeline failed ({url})")
    info = json.loads(out.strip().splitlines()[-1])
    info["wall"] = secs
    return info


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
    import resource

    entered = time.time()
    t0 = time.perf_counter()
    _reset_database(args.database_url)
    reset = time.perf_counter() - t0
    from cohortflow.flows.pipeline import pipeline_flow

    called = time.time()
    res = pipeline_flow(inbox=str(Path(args.study) / "inbox"), database_url=args.database_url,
                        outputs_dir=str(args.outputs), key_hex=("5a" * 32))
    done = time.time()
    rows = {k: sum(getattr(b, k, 0) or 0 for b in res.batches) for k in ("rows_in", "rows_loaded", "rows_quarantined")}
    print(json.dumps({
        "python_start": entered - float(args.spawned), "reset_db": reset,
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
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
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
    print(f"work folder {work}; load average at start {_load()}", flush=True)
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
            info = run_pipeline(study, url, work / f"outputs-f{f:g}-{backend}", home)
            if args.prefect_home == "fresh":
                shutil.rmtree(home, ignore_errors=True)
            st = info["stages"]
            start = info["python_start"] + info["reset_db"] + info["prefect_start"]
            peaks = "/".join(f"{st.get(s, {}).get('peak_rss_mib', 0):.0f}" for s in STAGES)
            print(f"{f:>6g} {backend:>10} {info['rows_in']:>9} {info['wall']:>7.1f} {info['peak_rss_mib']:>8.0f} "
                  f"{start:>7.1f} " + " ".join(f"{st.get(s, {}).get('seconds', float('nan')):>9.1f}" for s in STAGES)
                  + f" {peaks:>30}  {_load()}", flush=True)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps({"factor": f, "backend": backend, "generate": gen, "load": _load(),
                                         "prefect_home": args.prefect_home, **info}) + "\n")


if __name__ == "__main__":
    main()
