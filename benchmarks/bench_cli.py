"""Start-up time of the `cohortflow` command line: `--help`, `version`, `status` on an empty warehouse.

Each command runs as a fresh process (`python -c ...`), REPEAT times; the median wall time is printed with the
load average. `--baseline COMMIT` also times flows/cli.py and flows/commands_ingest.py as they were at COMMIT
(taken from git and run by path), so before and after are measured in the same run.

    .venv/bin/python benchmarks/bench_cli.py --baseline 14ded2a
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEW = "from cohortflow.cli import main; import sys; sys.argv[0] = 'cohortflow'; main()"
# the old CLI, run by path, with the old commands_ingest module put in place first
OLD = ("import importlib.util, runpy, sys\n"
       "spec = importlib.util.spec_from_file_location('cohortflow.flows.commands_ingest', sys.argv.pop(1))\n"
       "mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod; spec.loader.exec_module(mod)\n"
       "ns = runpy.run_path(sys.argv.pop(1)); sys.argv[0] = 'cohortflow'; ns['app']()\n")


def timed(argv: list[str], repeat: int) -> float:
    """Median wall seconds of running argv `repeat` times (output discarded)."""
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="git commit whose flows/cli.py + commands_ingest.py to time as 'before'")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    url = f"sqlite:///{tmp / 'empty.sqlite'}"
    from cohortflow.warehouse.db import init_warehouse

    init_warehouse(url)  # a warehouse with the schema and no batches: status reads it
    commands = {"--help": ["--help"], "version": ["version"],
                "status (schema, no batches)": ["status", "--database-url", url],
                "analysis --help": ["analysis", "--help"], "synth --help": ["synth", "--help"]}
    old_files = None
    if args.baseline:
        old_files = []
        for rel in ("flows/commands_ingest.py", "flows/cli.py"):
            text = subprocess.run(["git", "show", f"{args.baseline}:{rel}"], cwd=ROOT, capture_output=True,
                                  text=True, check=True).stdout
            p = tmp / rel.replace("/", "_")
            p.write_text(text)
            old_files.append(str(p))
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"median of {args.repeat} runs")
    print(f"{'command':28s} {'before':>8s} {'after':>8s}")
    for name, argv in commands.items():
        before = timed([sys.executable, "-c", OLD, *old_files, *argv], args.repeat) if old_files else float("nan")
        after = timed([sys.executable, "-c", NEW, *argv], args.repeat)
        print(f"{name:28s} {before:7.2f}s {after:7.2f}s")


if __name__ == "__main__":
    main()
