"""Benchmark of cohortflow.synth.generate_study: wall time, files and rows per factor.

Run: .venv/bin/python benchmarks/bench_synth.py [factor ...]   (default factors 0.1 1 10)
Prints one line per factor; figures depend on the machine and its load (os.getloadavg is printed).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from cohortflow.synth import generate_study


def main(factors: list[float]) -> None:
    print(f"load average {os.getloadavg()[0]:.2f}, cpus {os.cpu_count()}")
    print(f"{'factor':>7} {'seconds':>8} {'files':>6} {'rows':>8} {'persons':>8} {'MB':>7}")
    for f in factors:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            m = generate_study(Path(tmp), factor=f)
            dt = time.perf_counter() - t
            size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file()) / 1e6
            print(f"{f:>7g} {dt:>8.2f} {len(m.files):>6} {sum(x.n_rows for x in m.files):>8} {m.persons:>8} {size:>7.1f}")


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [0.1, 1.0, 10.0])
