"""Report plots drawn over forked workers (issue #9): the same files, byte for byte, as drawn one by one."""

from __future__ import annotations

from report_builders import build_result, simple_plan, simulate

from cohortflow.analysis.report import write_report
from cohortflow.config.study import load_study
from cohortflow.instruments.registry import load_instruments

RUN_INFO = {"run_id": "run-test-par", "snapshot_hash": "abc123", "timestamp": "2026-11-24 05:00 UTC",
            "software": {"cohortflow": "test"}}


def test_plots_from_two_workers_are_the_bytes_of_one(tmp_path):
    study = load_study()
    plan = simple_plan(study)
    result = build_result(simulate(study, plan), plan, study)
    paths = {w: write_report(result, plan, study, load_instruments(), tmp_path / f"w{w}", RUN_INFO, plot_workers=w)
             for w in (1, 2)}
    one, two = paths[1], paths[2]
    assert [p.name for p in one.plots] == [p.name for p in two.plots] and len(one.plots) >= 3
    for a, b in zip(one.plots, two.plots, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
        assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("report.html", "appendix.html", "effect_table.csv", "effect_table.md"):
        assert (one.out_dir / name).read_bytes() == (two.out_dir / name).read_bytes(), name
