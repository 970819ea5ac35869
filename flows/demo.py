"""`cohortflow demo`: generate a study, run the pipeline into SQLite, and show what came out."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _generate_if_needed(study_dir: Path, factor: float, seed: int, console: Console) -> Path:
    """Generate the synthetic study once per (factor, seed); a second demo run reuses the same files."""
    from cohortflow.synth import generate_study

    manifest = study_dir / "truth" / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        if float(m.get("factor", -1)) == float(factor) and int(m.get("seed", -1)) == int(seed):
            console.print(f"Using the study generated earlier in {study_dir} (factor {factor}, seed {seed}).")
            return study_dir / "inbox"
    t0 = time.perf_counter()
    generate_study(study_dir, factor=factor, seed=seed)
    console.print(f"Generated a study at factor {factor} (seed {seed}) in {time.perf_counter() - t0:.1f} s: "
                  f"exports in {study_dir / 'inbox'}, the true effects in {study_dir / 'truth'}.")
    return study_dir / "inbox"


def run_demo(data_dir: Path, factor: float, seed: int, key: bytes, console: Console):
    """Generate (once), then run the whole pipeline flow and print where the results are.

    Prefect's temporary API server starts in its own process at once (home kept in `data_dir/.prefect`),
    while the study is generated and the stages' libraries are imported.
    """
    from cohortflow.flows.startup import (
        flow_run_settings,
        prestart_prefect_server,
        use_demo_prefect_home,
        warm_imports,
    )

    data_dir = Path(data_dir).resolve()
    started, started_wall = time.perf_counter(), time.time()
    use_demo_prefect_home(data_dir)
    server = prestart_prefect_server()
    inbox = _generate_if_needed(data_dir / "study", factor, seed, console)
    from cohortflow.warehouse.db import get_engine, init_warehouse

    url = f"sqlite:///{data_dir / 'cohortflow.sqlite'}"
    init_warehouse(get_engine(url))
    warm_imports()
    from cohortflow.flows.pipeline import pipeline_flow

    if server is not None:
        server.join()
    ready = time.time()
    outputs = data_dir / "outputs"
    console.print("Running the pipeline (ingest -> validate -> load -> score -> link -> model -> report) ...")
    with flow_run_settings(server):
        res = pipeline_flow(inbox=str(inbox), database_url=url, outputs_dir=str(outputs), key_hex=key.hex())
    _print_batches(res.batches, console)
    _print_truth_check(data_dir / "study" / "truth" / "truth.json", outputs, console)
    paths = res.report_paths
    stages = getattr(res, "stages", None) or {}
    if stages:
        flow_in = getattr(res, "flow_started", None) or ready
        console.print(f"Stages: before the flow {ready - started_wall:.1f} s, flow start {flow_in - ready:.1f} s, "
                      + ", ".join(f"{k} {v['seconds']:.1f} s" for k, v in stages.items())
                      + f" (peak memory {max(v['peak_rss_mib'] for v in stages.values()):.0f} MiB)")
    console.print(f"\n[bold]Done in {time.perf_counter() - started:.0f} s.[/] Run id {res.run_id}, "
                  f"data snapshot {str(res.snapshot_hash)[:12]}.")
    console.print(f"  {'Warehouse:':<21}{data_dir / 'cohortflow.sqlite'}")
    for label, attr in (("Report (HTML)", "html"), ("Effect table", "xlsx"), ("Effect table (CSV)", "csv")):
        p = getattr(paths, attr, None)
        if p:
            console.print(f"  {label + ':':<21}{p}")
    return res


def _print_batches(batches, console: Console) -> None:
    from collections import Counter

    statuses = Counter(getattr(b, "status", "?") for b in batches)
    tot = {k: sum(getattr(b, k, 0) or 0 for b in batches if getattr(b, "status", "") != "skipped")
           for k in ("rows_in", "rows_loaded", "rows_quarantined", "rows_duplicate")}
    console.print(f"Files: {len(batches)} ({', '.join(f'{v} {k}' for k, v in sorted(statuses.items()))}); "
                  f"rows in {tot['rows_in']}: loaded {tot['rows_loaded']}, quarantined {tot['rows_quarantined']}, "
                  f"duplicates {tot['rows_duplicate']}.")
    for b in batches:
        if getattr(b, "status", "") == "refused":
            console.print(f"  [red]refused[/] {getattr(b, 'file_name', '?')}: {getattr(b, 'message', '')}")


def _print_truth_check(truth_path: Path, outputs: Path, console: Console) -> None:
    """Compare the estimated pilot-vs-comparison differences in change with the generator's truth."""
    from cohortflow.flows.truth import compare_with_truth

    if not truth_path.exists() or not (outputs / "effect_table.csv").exists():
        return
    rows = compare_with_truth(truth_path, outputs / "effect_table.csv")
    if rows.empty:
        return
    t = Table(title="Difference in change since baseline: estimate vs the generator's true value")
    for col in ("outcome", "vs", "wave", "true", "estimate", "95% CI", "holds"):
        t.add_column(col, no_wrap=True)
    for r in rows.itertuples():
        t.add_row(r.outcome, r.arm2, r.wave, f"{r.true:.2f}", f"{r.estimate:.2f}",
                  f"{r.lower:.2f} to {r.upper:.2f}", "yes" if r.covered else "[red]no[/]")
    console.print(f"(estimates are {rows['arm'].iloc[0]} minus the comparison arm; "
                  f"{int(rows['covered'].sum())} of {len(rows)} intervals hold the true value)")
    console.print(t)
