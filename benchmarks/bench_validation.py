"""Benchmark: validation time per file and per expectation on generated studies (factor 1 and 10).

Usage: python benchmarks/bench_validation.py [--factors 1 10] [--work DIR] [--docs-files N]

For each factor it generates a study with synth (or reuses DIR/factor_<f> when it exists), reads every export
with ingest, then validates each file once (the first call in the process pays the GX import and context;
it is reported apart). Printed: files, rows, read time, validation time in all and per file (median, p95,
max), the split between the derived checks and the GX run, GX time per expectation, the cost of
building Data Docs for a few batches, and the whole inbox in batch mode (validate_mapped_files). Paste the table into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def run(factor: float, work: Path, docs_files: int) -> dict:
    from cohortflow.config.sources import load_source_definitions
    from cohortflow.config.study import load_study
    from cohortflow.ingest.mapping import match_source, read_export
    from cohortflow.ingest.readers import BadFileError
    from cohortflow.instruments.registry import load_instruments
    from cohortflow.synth import generate_study
    from cohortflow.validation import validate_mapped_file, validate_mapped_files
    from cohortflow.validation.suite import build_suite, clear_suite_cache

    study, instruments, sources = load_study(), load_instruments(), load_source_definitions()
    out_dir = work / f"factor_{factor:g}"
    t = time.perf_counter()
    if not (out_dir / "inbox").is_dir():
        generate_study(out_dir, factor=factor, seed=20241120, study=study, instruments=instruments)
    gen_s = time.perf_counter() - t

    mapped = []
    t = time.perf_counter()
    for path in sorted((out_dir / "inbox").iterdir()):
        try:
            src = match_source(path, sources)
            mapped.append((path.name, src, read_export(path, src, instruments)))
        except BadFileError:
            continue
    read_s = time.perf_counter() - t

    clear_suite_cache()
    t = time.perf_counter()
    for src in {id(s): s for _, s, _ in mapped}.values():
        build_suite(src, study, instruments)
    suite_s = time.perf_counter() - t

    # warm-up: GX import and context (paid once per process)
    t = time.perf_counter()
    validate_mapped_file(mapped[0][2], study, instruments, source=mapped[0][1])
    first_s = time.perf_counter() - t

    per_file, checks, gx, per_exp, rows = [], [], [], [], 0
    t_all = time.perf_counter()
    for _name, src, m in mapped:
        t = time.perf_counter()
        out = validate_mapped_file(m, study, instruments, source=src)
        per_file.append(time.perf_counter() - t)
        tm = getattr(out, "timings", {}) or {}
        if tm.get("n_expectations"):
            checks.append(tm["checks_seconds"])
            gx.append(tm["gx_seconds"])
            per_exp.append(tm["gx_seconds"] / tm["n_expectations"])
        rows += len(m.frame)
    all_s = time.perf_counter() - t_all

    # batch mode: one GX run per source version over all files (validate_mapped_files)
    t = time.perf_counter()
    validate_mapped_files([m for _, _, m in mapped], study, instruments, sources=[s for _, s, _ in mapped])
    batch_s = time.perf_counter() - t

    docs_s = []
    docs_dir = out_dir / "validation_docs"
    for _name, src, m in mapped[:docs_files]:
        t = time.perf_counter()
        validate_mapped_file(m, study, instruments, source=src, docs_dir=docs_dir)
        docs_s.append(time.perf_counter() - t)

    return {
        "factor": factor, "files": len(mapped), "rows": rows, "generate_s": gen_s, "read_s": read_s,
        "suite_build_s": suite_s, "first_call_s": first_s, "validate_all_s": all_s,
        "per_file_median_s": statistics.median(per_file), "per_file_p95_s": _pct(per_file, 0.95),
        "per_file_max_s": max(per_file), "checks_median_s": statistics.median(checks),
        "gx_median_s": statistics.median(gx), "gx_per_expectation_ms": 1000 * statistics.median(per_exp),
        "n_expectations": out.timings.get("n_expectations") if hasattr(out, "timings") else None,
        "docs_per_file_s": statistics.median(docs_s) if docs_s else float("nan"),
        "batch_all_s": batch_s, "batch_per_file_s": batch_s / len(mapped),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--work", type=Path, default=Path("data/bench_validation"))
    ap.add_argument("--docs-files", type=int, default=5)
    args = ap.parse_args()
    print(f"# validation benchmark, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    keys = ["factor", "files", "rows", "read_s", "suite_build_s", "first_call_s", "validate_all_s",
            "per_file_median_s", "per_file_p95_s", "per_file_max_s", "checks_median_s", "gx_median_s",
            "n_expectations", "gx_per_expectation_ms", "docs_per_file_s", "batch_all_s", "batch_per_file_s"]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for f in args.factors:
        r = run(f, args.work, args.docs_files)
        print("| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |",
              flush=True)


if __name__ == "__main__":
    main()
