"""End-to-end demo: wall time and peak memory of `cohortflow demo` at given factors (fresh folder each).

Usage: python benchmarks/bench_demo.py [--factors 1 10] [--keep DIR]
Prints one line per factor; the second run on the same folder measures a re-run (everything skipped).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(data_dir: Path, factor: float) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one `cohortflow demo` child process."""
    cmd = [str(Path(sys.executable).with_name("cohortflow")), "demo", "--data-dir", str(data_dir), "--factor", str(factor)]
    env = dict(os.environ, PREFECT_LOGGING_LEVEL="WARNING", PREFECT_HOME=str(data_dir.parent / "prefect-home"))
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    secs = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"demo failed at factor {factor}:\n{err[-3000:]}")
    # RUSAGE_CHILDREN is the maximum over waited-for children so far: the largest run's peak
    return secs, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0])
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="cf-bench-demo-"))
    print(f"{'factor':>7} {'run':>8} {'seconds':>8} {'peak MiB':>9}")
    for f in args.factors:
        d = base / f"factor-{f:g}" / "demo"
        shutil.rmtree(d.parent, ignore_errors=True)
        d.parent.mkdir(parents=True)
        for label in ("first", "re-run"):
            secs, peak = run_once(d, f)
            print(f"{f:>7g} {label:>8} {secs:>8.1f} {peak:>9.0f}", flush=True)
    if args.keep is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
