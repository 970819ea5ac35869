"""The analysis CLI command writes the result tables for a plan and a dataset."""

from __future__ import annotations

import json

import pandas as pd
import yaml
from typer.testing import CliRunner

from cohortflow.analysis.simulate import default_spec, simulate_study
from cohortflow.flows.commands_analysis import app


def test_run_writes_tables(tmp_path):
    df = simulate_study(default_spec(["proeftuin", "vt", "gi"], ["T0", "T1", "T2"], scale=0.4), seed=2)
    data = tmp_path / "analysis.csv"
    df.to_csv(data, index=False)
    plan = tmp_path / "analysis.yaml"
    plan.write_text(yaml.safe_dump({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"random_effects": {"slope": None}, "engine": "profiled"},
        "outcomes": [{"name": "sim.total"}, {"name": "nope.total"}]}), encoding="utf-8")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", str(data), "--out", str(out), "--plan", str(plan), "--no-sensitivity"])
    # a failed outcome is a data problem: exit 1, the other outcomes' tables are still written
    assert r.exit_code == 1, r.output
    assert "failed: nope.total" in r.output
    c = pd.read_csv(out / "contrasts.csv")
    assert set(c["kind"]) == {"within_change", "diff_in_change"}
    assert len(c[c["kind"] == "diff_in_change"]) == 4
    assert c.loc[c["kind"] == "diff_in_change", "p_adj"].notna().all()
    meta = json.loads((out / "methods.json").read_text())
    assert "nope.total" in meta["failures"] and "no rows with outcome == 'nope.total'" in meta["failures"]["nope.total"]
    assert "Satterthwaite" in meta["methods"]["sim.total"]


def test_run_json_summary_names_outcomes_failures_and_files(tmp_path):
    """`analysis run --json` prints one JSON object a script can read: outcomes, failures, snapshot, files."""
    from cohortflow.warehouse.snapshot import snapshot_hash

    df = simulate_study(default_spec(["proeftuin", "vt", "gi"], ["T0", "T1", "T2"], scale=0.3), seed=3)
    data = tmp_path / "analysis.parquet"
    df.to_parquet(data, index=False)
    plan = tmp_path / "analysis.yaml"
    plan.write_text(yaml.safe_dump({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"random_effects": {"slope": None}, "engine": "profiled"},
        "outcomes": [{"name": "sim.total"}]}), encoding="utf-8")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", str(data), "--out", str(out), "--plan", str(plan), "--no-sensitivity",
                                 "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["outcomes"] == ["sim.total"] and summary["failures"] == {}
    assert summary["snapshot_hash"] == snapshot_hash(pd.read_parquet(data))
    assert set(summary["files"]) == {"contrasts", "emmeans", "counts", "sensitivity", "balance", "methods"}
    assert all((out / p.split("/")[-1]).exists() for p in summary["files"].values())


def test_run_bootstrap_and_workers_options_override_the_plan(tmp_path):
    """`--bootstrap` turns on the plan's household bootstrap (off in the plan) and `--workers 2` fits the
    outcomes on two processes: the bootstrap limits reach contrasts.csv, the estimates equal a serial run's."""
    df = simulate_study(default_spec(["proeftuin", "vt", "gi"], ["T0", "T1", "T2"], scale=0.3), seed=4)
    data = tmp_path / "analysis.parquet"
    df.to_parquet(data, index=False)
    plan = tmp_path / "analysis.yaml"
    plan.write_text(yaml.safe_dump({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"random_effects": {"slope": None}, "workers": 1},
        "outcomes": [{"name": "sim.total", "primary": True},
                     {"name": "sim.total", "key": "sim.above", "family": "binomial", "response": "above_cutoff"}],
        "sensitivity": {"bootstrap": {"enabled": False, "resamples": 200, "workers": 1}}}), encoding="utf-8")
    runs = {}
    for name, extra in {"serial": [], "boot": ["--bootstrap", "--workers", "2"]}.items():
        out = tmp_path / name
        r = CliRunner().invoke(app, ["run", str(data), "--out", str(out), "--plan", str(plan), "--no-sensitivity",
                                     *extra])
        assert r.exit_code == 0, r.output
        runs[name] = pd.read_csv(out / "contrasts.csv")
    assert "boot_lower" not in runs["serial"].columns
    b = runs["boot"]
    dic = b[(b["outcome"] == "sim.total") & (b["kind"] == "diff_in_change")]
    assert len(dic) == 4 and dic[["boot_lower", "boot_upper"]].notna().all().all()
    assert ((dic["boot_lower"] < dic["estimate"]) & (dic["estimate"] < dic["boot_upper"])).all()
    pd.testing.assert_series_equal(runs["serial"]["estimate"], b["estimate"], rtol=1e-10)


def test_run_analysis_reports_progress_per_outcome_in_plan_order():
    from cohortflow.analysis.models import run_analysis
    from cohortflow.analysis.plan import AnalysisPlan
    from cohortflow.config.study import load_study

    df = simulate_study(default_spec(["proeftuin", "vt", "gi"], ["T0", "T1", "T2"], scale=0.3), seed=5)
    plan = AnalysisPlan.model_validate({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"random_effects": {"slope": None}},
        "outcomes": [{"name": "sim.total"}, {"name": "nope.total"},
                     {"name": "sim.total", "key": "sim.above", "family": "binomial", "response": "above_cutoff"}]})
    for workers in (1, 2):
        seen: list[str] = []
        res = run_analysis(df, plan, load_study(), sensitivity=False, workers=workers, progress=seen.append)
        assert seen == ["sim.total", "nope.total", "sim.above"]  # a failed outcome is reported done too
        assert set(res.failures) == {"nope.total"}


def test_workers_fall_back_to_serial_inside_a_daemonic_process():
    """A Dask or multiprocessing worker is daemonic and may not start processes: `workers: 2` then fits the
    outcomes one after the other, with the same results, instead of failing."""
    import multiprocessing as mp

    df = simulate_study(default_spec(["proeftuin", "vt", "gi"], ["T0", "T1", "T2"], scale=0.3), seed=6)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_fit_in_child, args=(df, q), daemon=True)
    p.start()
    got = q.get(timeout=600)
    p.join(timeout=60)
    assert not isinstance(got, str), got
    want = _fit_two(df, workers=1)
    pd.testing.assert_series_equal(got, want, rtol=1e-10)


def _fit_two(df, workers):
    from cohortflow.analysis.models import run_analysis
    from cohortflow.analysis.plan import AnalysisPlan
    from cohortflow.config.study import load_study

    plan = AnalysisPlan.model_validate({
        "intervention_arm": "proeftuin", "comparison_arms": ["vt", "gi"],
        "defaults": {"random_effects": {"slope": None}},
        "outcomes": [{"name": "sim.total"},
                     {"name": "sim.total", "key": "sim.above", "family": "binomial", "response": "above_cutoff"}]})
    res = run_analysis(df, plan, load_study(), sensitivity=False, workers=workers)
    assert res.failures == {}, res.failures
    return res.contrasts["estimate"].reset_index(drop=True)


def _fit_in_child(df, q):
    try:
        q.put(_fit_two(df, workers=2))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        q.put(f"{type(exc).__name__}: {exc}")
