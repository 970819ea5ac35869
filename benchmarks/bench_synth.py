"""Benchmark of cohortflow.synth.generate_study: wall time, CPU time, peak memory, files and rows per factor.

Run: .venv/bin/python benchmarks/bench_synth.py [factor ...]   (default factors 1 10 100)
Each factor runs in a fresh process (so its peak RSS is its own) writing to a temporary folder. Prints one line
per factor with the load average before and after it; figures depend on the machine and its load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0, c0 = time.perf_counter(), time.process_time()
from cohortflow.synth import generate_study
m = generate_study(Path(sys.argv[2]), factor=float(sys.argv[1]), seed=int(sys.argv[3]))
size = sum(p.stat().st_size for p in Path(sys.argv[2]).rglob("*") if p.is_file()) / 1e6
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "files": len(m.files), "rows": sum(f.n_rows for f in m.files), "persons": m.persons,
                  "mb": size}))
"""


def run(factor: float, seed: int = 20241120) -> dict:
    """One generation in a fresh process: wall/CPU seconds (imports included), peak RSS, output size."""
    with tempfile.TemporaryDirectory() as tmp:
        load_before = os.getloadavg()[0]
        out = subprocess.run([sys.executable, "-c", CHILD, str(factor), tmp, str(seed)], check=True,
                             capture_output=True, text=True)
        rec = json.loads(out.stdout.strip().splitlines()[-1])
        rec.update({"factor": factor, "load_before": load_before, "load_after": os.getloadavg()[0]})
        return rec


def main(factors: list[float]) -> None:
    print(f"cpus {os.cpu_count()}; load average = 1-minute average before -> after each run")
    print(f"{'factor':>7} {'wall s':>7} {'cpu s':>7} {'peak MB':>8} {'files':>6} {'rows':>9} {'persons':>8} "
          f"{'out MB':>7} {'load':>11}")
    for f in factors:
        r = run(f)
        print(f"{f:>7g} {r['wall']:>7.1f} {r['cpu']:>7.1f} {r['peak_mb']:>8.0f} {r['files']:>6} {r['rows']:>9} "
              f"{r['persons']:>8} {r['mb']:>7.1f} {r['load_before']:>5.2f}->{r['load_after']:<5.2f}", flush=True)


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [1.0, 10.0, 100.0])
