"""Validate one mapped export against its generated suite (Contract 2): the entry point of the stage.

`validate_mapped_file` checks the file as a whole (required columns, identifier columns, rows), derives one
check column per row rule from the definitions, runs a single Great Expectations validation of the frame
against the source version's suite, and turns GX's row indices into row failures with their severity.
Great Expectations is imported here lazily, only when a file is validated.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from .checks import CHECKS, FILE_COLUMN, HISTORY_RULES, build_context, no_failures
from .contract import (
    ID_COLUMNS,
    REQUIRED_COLUMNS,
    ROW_FAILURE_COLUMNS,
    RULE_RESULT_COLUMNS,
    MappedInput,
    ValidationOutcome,
    as_mapped_input,
    empty_frame,
    file_missing_codes,
    make_outcome,
    source_of,
    with_pseudonyms,
)
from .policy import RULE_DESCRIPTIONS
from .suite import SuiteSpec, build_suite, check_column

RESULT_FORMAT = {"result_format": "COMPLETE"}


# --- Great Expectations contexts (created once per process) -------------------------------------------

_EPHEMERAL: dict[str, Any] = {}
_GX_LOCK = threading.RLock()  # GX contexts are not thread-safe; Prefect runs tasks in a thread pool
_FILE_CONTEXTS: dict[str, Any] = {}


def _quiet(context: Any) -> Any:
    context.variables.progress_bars = {"globally": False, "profilers": False, "metric_calculations": False}
    return context


def _ephemeral() -> dict[str, Any]:
    """An in-memory GX context with one pandas data source and one whole-frame batch definition."""
    if not _EPHEMERAL:
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        import great_expectations as gx

        context = _quiet(gx.get_context(mode="ephemeral"))
        asset = context.data_sources.add_pandas("cohortflow").add_dataframe_asset("mapped_file")
        _EPHEMERAL.update(context=context, batch_definition=asset.add_batch_definition_whole_dataframe("file"),
                          suites=set())
    return _EPHEMERAL


def _run_ephemeral(frame: pd.DataFrame, suite: SuiteSpec) -> list[Any]:
    """Validate in memory; returns GX expectation results (COMPLETE for failing ones).

    Two passes keep the common case cheap: the whole suite with BOOLEAN_ONLY (about 2.5 times faster than
    COMPLETE), then only the expectations that failed again with COMPLETE for their row indices.
    """
    with _GX_LOCK:
        return _run_ephemeral_locked(frame, suite)


def _run_ephemeral_locked(frame: pd.DataFrame, suite: SuiteSpec) -> list[Any]:
    eph = _ephemeral()
    gx_suite = suite.gx_suite()
    if suite.name not in eph["suites"]:
        eph["context"].suites.add_or_update(gx_suite)
        eph["suites"].add(suite.name)
    batch = eph["batch_definition"].get_batch(batch_parameters={"dataframe": frame})
    first = batch.validate(gx_suite, result_format={"result_format": "BOOLEAN_ONLY"})
    failed = [r.expectation_config.meta.get("rule") for r in first.results if not r.success]
    if not failed:
        return list(first.results)
    import great_expectations as gx

    retry = gx.ExpectationSuite(name=f"{suite.name}__failed", expectations=[
        e for e in suite.new_gx_suite().expectations if e.meta.get("rule") in failed])
    second = batch.validate(retry, result_format=RESULT_FORMAT)
    detailed = {r.expectation_config.meta.get("rule"): r for r in second.results}
    return [detailed.get(r.expectation_config.meta.get("rule"), r) for r in first.results]


def _batch_name(file_name: str, sha256: str | None) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", file_name).strip("_")[:80] or "file"
    return f"{stem}_{sha256[:8]}" if sha256 else stem


def _run_with_docs(frame: pd.DataFrame, suite: SuiteSpec, docs_dir: Path, batch_name: str,
                   update_site: bool = True, index_columns: list[str] | None = None) -> tuple[Any, Path, Any]:
    """Validate through a file context under `docs_dir` (the result is stored there); with `update_site`
    also build that batch's Data Docs page; `index_columns` name failing rows on the page (else positions).
    Returns (validation result, its page path, its result key)."""
    with _GX_LOCK:
        return _run_with_docs_locked(frame, suite, docs_dir, batch_name, update_site, index_columns)


def _file_context(docs_dir: Path) -> Any:
    """The GX file context under `docs_dir` (created once per process)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    root = str(Path(docs_dir).resolve())
    context = _FILE_CONTEXTS.get(root)
    if context is None:
        Path(root).mkdir(parents=True, exist_ok=True)
        context = _quiet(gx.get_context(mode="file", project_root_dir=root))
        _FILE_CONTEXTS[root] = context
    return context


def _run_with_docs_locked(frame: pd.DataFrame, suite: SuiteSpec, docs_dir: Path, batch_name: str,
                          update_site: bool, index_columns: list[str] | None) -> tuple[Any, Path, Any]:
    import great_expectations as gx

    context = _file_context(docs_dir)
    root = str(Path(docs_dir).resolve())
    try:
        source = context.data_sources.get("cohortflow")
    except (KeyError, ValueError, LookupError):
        source = context.data_sources.add_pandas("cohortflow")
    try:
        asset = source.get_asset(batch_name)
    except (KeyError, ValueError, LookupError):
        asset = source.add_dataframe_asset(batch_name)
    try:
        batch_def = asset.get_batch_definition("file")
    except (KeyError, ValueError, LookupError):
        batch_def = asset.add_batch_definition_whole_dataframe("file")
    gx_suite = context.suites.add_or_update(suite.new_gx_suite())
    vdef = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=batch_name, data=batch_def, suite=gx_suite))
    checkpoint = context.checkpoints.add_or_update(gx.Checkpoint(
        name=batch_name, validation_definitions=[vdef],
        result_format={**RESULT_FORMAT, "unexpected_index_column_names": index_columns} if index_columns
        else RESULT_FORMAT,
        actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if update_site else []))
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    key, validation = next(iter(result.run_results.items()))
    page = Path(root, "gx", "uncommitted", "data_docs", "local_site", "validations",
                *[str(p) for p in key.to_tuple()]).with_suffix(".html")
    return validation, page, key


# --- file-level checks ----------------------------------------------------------------------------------

def _file_checks(mi: MappedInput, suite: SuiteSpec) -> list[tuple[str, str]]:
    """(rule, message) for problems that refuse the file before any row is checked."""
    f, name, src = mi.frame, mi.file_name, suite.source_label
    problems: list[tuple[str, str]] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in f.columns]
    if missing:
        problems.append(("required_columns",
                         f"{name}: column(s) {', '.join(missing)} missing after mapping with source {src}; expected "
                         f"all of {', '.join(REQUIRED_COLUMNS)}. Check that the export has these columns and that "
                         f"the source definition maps them (identifiers, demographics, arm/site/wave/role)."))
    meta_missing = list(mi.meta.get("missing_columns") or [])
    if meta_missing:
        problems.append(("required_columns",
                         f"{name}: required export column(s) {', '.join(map(str, meta_missing))} not found (source "
                         f"{src}). Ask for a complete export, or correct required_columns in the source definition."))
    problems += _incomplete_instruments(mi, suite)
    if len(f) == 0:
        problems.append(("no_rows", f"{name}: the file has no data rows. Ask the sender for the full export."))
    else:
        empty = [c for c in ID_COLUMNS if c in f.columns and f[c].isna().all()]
        if empty:
            problems.append(("id_columns_empty",
                             f"{name}: identifier column(s) {', '.join(empty)} hold no value in any of {len(f)} "
                             f"rows (source {src}). Check that the source definition names the right identifier "
                             f"columns; rows without identifiers cannot be linked."))
    return problems


def _incomplete_instruments(mi: MappedInput, suite: SuiteSpec) -> list[tuple[str, str]]:
    """Instruments present in the file with some of their item columns missing (a renamed or dropped column)."""
    closest = {str(p.get("column", "")).lower(): p.get("closest") for p in mi.meta.get("problems") or []
               if isinstance(p, dict) and p.get("kind") == "missing_column"}
    out = []
    for code, inst in suite.instruments.items():
        keys = [inst.item_key(i.code) for i in inst.items]
        absent = [k for k in keys if k not in mi.frame.columns]
        if 0 < len(absent) < len(keys):
            hints = [f"{k} (closest column in the file: {closest[k.lower()]!r})" if closest.get(k.lower()) else k
                     for k in absent]
            out.append(("item_columns_incomplete",
                        f"{mi.file_name}: instrument {code} has {len(keys) - len(absent)} of {len(keys)} item "
                        f"columns; missing {', '.join(hints)} (source {suite.source_label}). Map the renamed "
                        f"column in the source definition or ask the sender for a corrected export."))
    return out


# --- the entry point ------------------------------------------------------------------------------------

def _details_to_column(n: int, details: pd.DataFrame) -> pd.Series:
    """The derived GX column of a rule: per row the failure reasons joined, or None."""
    col = pd.Series([None] * n, dtype="object")
    if len(details):
        joined = (details["column"].astype(str) + ": " + details["value"].astype(str)).groupby(details["pos"]).agg("; ".join)
        col.iloc[joined.index.to_numpy()] = joined.to_numpy()
    return col


@dataclass
class _Prepared:
    """A file after the file checks and the derived checks, ready for (or finished without) GX."""

    mi: MappedInput
    suite: SuiteSpec
    errors: list[str]
    results: list[dict[str, Any]]
    t_start: float
    frame: pd.DataFrame | None = None
    details: dict[str, pd.DataFrame] = field(default_factory=dict)
    gx_frame: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    history: pd.DataFrame | None = None
    extra_missing: tuple[float, ...] = ()

    @property
    def done(self) -> bool:
        return self.gx_frame is None


def _prepare_head(mapped: object, study: Study, instruments: dict[str, Instrument], source: object | None,
                  history: pd.DataFrame | None, key: bytes | None) -> _Prepared:
    """File-level checks and the frame the row checks read (with pseudonyms when a history is given)."""
    t_start = time.perf_counter()
    mi = as_mapped_input(mapped)
    suite = build_suite(source if source is not None else source_of(mi.meta), study, instruments)
    policy = suite.policy
    p = _Prepared(mi, suite, [], [], t_start)
    for rule, msg in _file_checks(mi, suite):
        if policy.of(rule) == "refuse" or rule in ("required_columns", "no_rows"):
            p.errors.append(msg)
        p.results.append({"rule": rule, "severity": policy.of(rule), "n_checked": 1, "n_failed": 1,
                          "examples": [msg]})
    if p.errors:
        return p
    frame = mi.frame.reset_index(drop=True)
    if history is not None and key is not None:
        frame = with_pseudonyms(frame, key)
    if history is not None and len(history) and not {"subject_id", "person_id"} & set(frame.columns):
        raise ValueError(f"{mi.file_name}: a history of earlier waves was given but the frame has no subject_id/"
                         f"person_id pseudonyms to compare it with; pass key= (the pseudonymisation key) too")
    p.frame, p.history, p.extra_missing = frame, history, file_missing_codes(mi.meta)
    return p


def _group_key(p: _Prepared) -> tuple:
    """Files with the same key are checked together on their stacked frames (same suite, columns, missing codes)."""
    assert p.frame is not None
    return (p.suite.name, tuple(p.frame.columns), tuple(str(t) for t in p.frame.dtypes), p.extra_missing,
            p.history is None)


def _stacked_history(preps: list[_Prepared]) -> pd.DataFrame | None:
    """The files' histories in one frame with the file's position in the group (FILE_COLUMN); one history
    shared by every file is passed on as it is (looked up by pseudonym only)."""
    if all(p.history is preps[0].history for p in preps):
        return preps[0].history
    parts = [h.assign(**{FILE_COLUMN: k}) for k, p in enumerate(preps) if (h := p.history) is not None and len(h)]
    if not parts:
        return None if all(p.history is None for p in preps) else preps[0].history
    return pd.concat(parts, ignore_index=True)


def _check_group(preps: list[_Prepared], study: Study) -> None:
    """Run the derived row checks once on the stacked frames of files sharing a group key; split per file.

    Row-local checks give the same failures stacked or file by file; the two checks that compare rows with
    each other (duplicate keys, sex/birth year across rows and against the history) key their comparisons by
    the file's position (FILE_COLUMN), so every file's details equal those of a run on the file alone.
    """
    t = time.perf_counter()
    first = preps[0]
    suite, policy = first.suite, first.suite.policy
    frames = [p.frame for p in preps]
    if len(preps) == 1:
        stacked, history = frames[0], first.history
    else:
        stacked = pd.concat([f.assign(**{FILE_COLUMN: k}) for k, f in enumerate(frames)],  # type: ignore[union-attr]
                            ignore_index=True)
        history = _stacked_history(preps)
    assert stacked is not None
    items = {k: s for k, s in suite.items.items() if k in stacked.columns}
    ctx = build_context(stacked, study, suite.instruments, items, policy, history, first.extra_missing)
    rules = [r for r in suite.rules if r in CHECKS]
    details = {rule: CHECKS[rule](ctx) for rule in rules}
    n = len(stacked)
    gx = stacked[list(REQUIRED_COLUMNS)].copy()
    for rule in rules:
        gx[check_column(rule)] = _details_to_column(n, details[rule])
    starts = np.cumsum([0] + [len(f) for f in frames])  # type: ignore[arg-type]
    share = (time.perf_counter() - t) / len(preps)
    if len(preps) == 1:
        first.details, first.gx_frame = details, gx
        first.timings["checks_seconds"] = share
        return
    which = {rule: np.searchsorted(starts, d["pos"].to_numpy(), side="right") - 1 for rule, d in details.items()
             if len(d)}
    none = no_failures()  # one empty frame shared by the files' passing rules (details are only read)
    for k, p in enumerate(preps):
        lo, hi = int(starts[k]), int(starts[k + 1])
        p.details = {}
        for rule, d in details.items():
            if rule not in which or not (sel := which[rule] == k).any():
                p.details[rule] = none
                continue
            sub = d[sel].reset_index(drop=True)
            sub["pos"] = sub["pos"].to_numpy() - lo
            p.details[rule] = sub
        p.gx_frame = gx.iloc[lo:hi].reset_index(drop=True)
        p.timings["checks_seconds"] = share


def _prepare_many(mapped_files: list[object], study: Study, instruments: dict[str, Instrument],
                  sources: list[object | None], histories: list[pd.DataFrame | None],
                  key: bytes | None) -> list[_Prepared]:
    """File checks per file, then the row checks once per group of files with the same suite and columns."""
    preps = [_prepare_head(m, study, instruments, s, h, key)
             for m, s, h in zip(mapped_files, sources, histories, strict=True)]
    groups: dict[tuple, list[_Prepared]] = {}
    for p in preps:
        if not p.errors:
            groups.setdefault(_group_key(p), []).append(p)
    for members in groups.values():
        _check_group(members, study)
    return preps


def _prepare(mapped: object, study: Study, instruments: dict[str, Instrument], source: object | None,
             history: pd.DataFrame | None, key: bytes | None) -> _Prepared:
    """File-level checks, then the derived check columns; a refused file stops here (gx_frame None)."""
    return _prepare_many([mapped], study, instruments, [source], [history], key)[0]


def _failing_positions(gx_results: list[Any], label: str,
                       locate: Any = None) -> dict[str, list[int]]:
    """Rule -> positions GX found failing (row rules); raises when GX could not evaluate a rule.

    `locate`: when GX named failing rows by index columns (`unexpected_index_column_names`: each failing
    row a dict of column -> value), a function from that dict to the row's position."""
    out: dict[str, list[int]] = {}
    for res in gx_results:
        rule = (res.expectation_config.meta or {}).get("rule")
        if res.exception_info and res.exception_info.get("raised_exception"):
            raise RuntimeError(f"{label}: Great Expectations could not evaluate rule {rule}: "
                               f"{res.exception_info.get('exception_message')}")
        found = (res.result or {}).get("unexpected_index_list") or []
        idx = sorted(locate(i) if locate is not None else int(i) for i in found)
        if not res.success and not idx and rule != "required_columns":
            raise RuntimeError(f"{label}: rule {rule} failed in Great Expectations without row indices")
        if not res.success and rule == "required_columns":
            out["required_columns"] = [-1]
        out.setdefault(rule, idx)
    return out


def _file_share(failing: dict[str, list[int]], lo: int, hi: int) -> dict[str, list[int]]:
    """The failing positions of the file at stacked rows [lo, hi), as positions in that file."""
    local = {rule: [q - lo for q in pos if lo <= q < hi] for rule, pos in failing.items()
             if rule != "required_columns"}
    if failing.get("required_columns"):
        local["required_columns"] = [-1]
    return local


def _conclude(p: _Prepared, failing_by_rule: dict[str, list[int]], docs_path: Path | None) -> ValidationOutcome:
    """Turn GX's failing positions into row failures, rule results and refusals (Contract 2)."""
    policy, name, frame = p.suite.policy, p.mi.file_name, p.frame
    assert frame is not None
    n = len(frame)
    errors, results, row_parts = p.errors, p.results, []
    if failing_by_rule.get("required_columns"):
        errors.append(f"{name}: Great Expectations found required columns missing (source {p.suite.source_label}).")
    row_numbers = frame["row_number"].to_numpy()
    quarantined: set[int] = set()
    for rule, d in p.details.items():
        sev = policy.of(rule)
        failing = failing_by_rule.get(rule, [])
        if not failing:  # the common case: no frame work
            results.append({"rule": rule, "severity": sev, "n_checked": n, "n_failed": 0, "examples": []})
            continue
        d = d[d["pos"].isin(failing)].sort_values("pos", kind="stable")
        examples = [f"row {int(row_numbers[q])} {c}: {v}" for q, c, v in
                    d[["pos", "column", "value"]].head(policy.examples_per_rule).itertuples(index=False)]
        results.append({"rule": rule, "severity": sev, "n_checked": n, "n_failed": len(failing),
                        "examples": examples})
        if not failing:
            continue
        row_parts.append(pd.DataFrame({
            "row_number": row_numbers[d["pos"].to_numpy()], "rule": rule, "column": d["column"].to_numpy(),
            "value": d["value"].to_numpy(), "severity": "warn" if sev == "warn" else "quarantine"}))
        if sev == "refuse":
            errors.append(f"{name}: {len(failing)} row(s) fail rule {rule} ({RULE_DESCRIPTIONS[rule]}), which refuses "
                          f"the file for source {p.suite.source_label}; first: {examples[0] if examples else ''}. "
                          f"Correct the export and deliver it again.")
        if sev != "warn":
            quarantined.update(failing)

    all_failed = n >= policy.thresholds["all_rows_failed_min_rows"] and len(quarantined) == n
    results.append({"rule": "all_rows_failed", "severity": policy.of("all_rows_failed"), "n_checked": 1,
                    "n_failed": int(all_failed), "examples": []})
    if all_failed and policy.of("all_rows_failed") == "refuse":
        top = max((r for r in results if r["rule"] in p.details), key=lambda r: r["n_failed"], default=None)
        hint = f" Most failures: {top['rule']} ({top['n_failed']} rows), e.g. {top['examples'][:1]}." if top else ""
        errors.append(f"{name}: all {n} rows fail validation (source {p.suite.source_label}), so the file is refused "
                      f"whole.{hint} Check that the file is the right export for this source and wave.")
        results[-1]["examples"] = [errors[-1]]
    p.timings["total_seconds"] = time.perf_counter() - p.t_start
    return _finish(errors, row_parts, results, p.mi, docs_path, p.timings)


def validate_mapped_file(
    mapped: object,
    study: Study,
    instruments: dict[str, Instrument],
    source: object | None = None,
    history: pd.DataFrame | None = None,
    docs_dir: Path | str | None = None,
    *,
    key: bytes | None = None,
) -> ValidationOutcome:
    """Validate one MappedFile (Contract 1) and return its ValidationOutcome (Contract 2).

    `history`: earlier (pseudonym, sex, birth_year) of persons already in the warehouse (the `person`
    table), compared with the frame's `subject_id` / `person_id` pseudonyms; when the frame has none and
    `key` (the pseudonymisation key) is given, they are computed here with ingest's function. Ingest's
    own structural row issues (`mapped.row_issues`) are not repeated: the loader merges them. `docs_dir`:
    when given, the validation runs in a GX file context there and builds the batch's Data Docs page (its
    path is set as `outcome.docs_path`). Failures of rules whose severity is `refuse`, or a file where
    every row fails, refuse the file (`file_errors`).
    """
    p = _prepare(mapped, study, instruments, source, history, key)
    if p.done:
        return _finish(p.errors, [], p.results, p.mi, None)
    assert p.gx_frame is not None
    t_gx = time.perf_counter()
    docs_path = None
    if docs_dir is not None:
        validation, page, _key = _run_with_docs(p.gx_frame, p.suite, Path(docs_dir),
                                                _batch_name(p.mi.file_name, p.mi.meta.get("sha256")))
        docs_path = page if page.exists() else None
        gx_results = list(validation.results)
    else:
        gx_results = _run_ephemeral(p.gx_frame, p.suite)
    p.timings["gx_seconds"] = time.perf_counter() - t_gx
    p.timings["n_expectations"] = len(gx_results)
    return _conclude(p, _failing_positions(gx_results, p.mi.file_name), docs_path)


def validate_mapped_files(
    mapped_files: list[object],
    study: Study,
    instruments: dict[str, Instrument],
    sources: list[object | None] | None = None,
    history: pd.DataFrame | None = None,
    *,
    key: bytes | None = None,
    histories: list[pd.DataFrame | None] | None = None,
) -> list[ValidationOutcome]:
    """Validate several files with one GX run per source version; outcomes as from validate_mapped_file.

    GX costs about the same per expectation whatever the row count, so stacking the files of a source
    version into one frame makes the GX part of a whole inbox cost about as much as one file. Every file
    is checked against the same `history`: validate earlier waves first (one call per wave) so that the
    next call's history holds them, or give `histories` (one per file, instead of `history`) when files of
    the same call see different histories. No Data Docs here: use validate_mapped_file(docs_dir=...) for those.
    """
    srcs = list(sources) if sources is not None else [None] * len(mapped_files)
    if len(srcs) != len(mapped_files):
        raise ValueError(f"validate_mapped_files: {len(mapped_files)} files but {len(srcs)} sources")
    hists = list(histories) if histories is not None else [history] * len(mapped_files)
    if len(hists) != len(mapped_files):
        raise ValueError(f"validate_mapped_files: {len(mapped_files)} files but {len(hists)} histories")
    preps = _prepare_many(mapped_files, study, instruments, srcs, hists, key)
    outcomes: list[ValidationOutcome | None] = [None] * len(preps)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(preps):
        if p.done:
            outcomes[i] = _finish(p.errors, [], p.results, p.mi, None)
        else:
            groups.setdefault(p.suite.name, []).append(i)
    for members in groups.values():
        frames = [preps[i].gx_frame for i in members]
        starts = np.cumsum([0] + [len(f) for f in frames])  # type: ignore[arg-type]
        t_gx = time.perf_counter()
        gx_results = _run_ephemeral(pd.concat(frames, ignore_index=True), preps[members[0]].suite)
        failing = _failing_positions(gx_results, f"{len(members)} files of {preps[members[0]].suite.source_label}")
        gx_share = (time.perf_counter() - t_gx) / len(members)
        for k, i in enumerate(members):
            preps[i].timings.update(gx_seconds=gx_share, n_expectations=len(gx_results))
            outcomes[i] = _conclude(preps[i], _file_share(failing, int(starts[k]), int(starts[k + 1])), None)
            outcomes[i].gx_frame = preps[i].gx_frame  # type: ignore[union-attr]  # for validate_again
            outcomes[i].check_details = preps[i].details  # type: ignore[union-attr]
    return [o for o in outcomes if o is not None]


DOCS_FILE_COLUMN = "file"  # the file name beside row_number on a Data Docs page of several files


def write_data_docs(
    mapped_files: list[object],
    study: Study,
    instruments: dict[str, Instrument],
    docs_dir: Path | str,
    *,
    histories: list[pd.DataFrame | None],
    key: bytes | None = None,
) -> list[ValidationOutcome]:
    """Data Docs for several files: one page per source version, its failing rows named by file and row
    number; outcomes as from validate_mapped_file(docs_dir=...), `docs_path` = the page of the file's group.

    A GX validation costs about the same per expectation whatever the row count (~0.4 s for a suite here) and
    GX compiles its page templates once per site build: the files of a source version are validated as one
    stacked frame through the file context under `docs_dir`, then the site is built once. Twenty small files
    cost a few seconds instead of ~20 s for a page each. `histories`: one per file, as for
    validate_mapped_files. The outcomes equal those of validate_mapped_file file by file.
    """
    if len(histories) != len(mapped_files):
        raise ValueError(f"write_data_docs: {len(mapped_files)} files but {len(histories)} histories")
    preps = _prepare_many(mapped_files, study, instruments, [None] * len(mapped_files), histories, key)
    groups: dict[str, list[_Prepared]] = {}
    for p in preps:
        if not p.done:
            groups.setdefault(p.suite.name, []).append(p)
    runs, keys = [], []
    for members in groups.values():
        frames = [p.gx_frame.assign(**{DOCS_FILE_COLUMN: p.mi.file_name}) for p in members]  # type: ignore[union-attr]
        starts = np.cumsum([0] + [len(f) for f in frames])
        stacked = pd.concat(frames, ignore_index=True)
        where = {(f, int(r)): q for q, (f, r) in enumerate(zip(stacked[DOCS_FILE_COLUMN], stacked["row_number"],
                                                                strict=True))}
        shas = "".join(str(p.mi.meta.get("sha256") or p.mi.file_name) for p in members)
        name = _batch_name(f"{members[0].suite.name}_{len(members)}_files",
                           hashlib.sha256(shas.encode()).hexdigest())
        t_gx = time.perf_counter()
        validation, page, result_key = _run_with_docs(stacked, members[0].suite,
                                                      Path(docs_dir), name, update_site=False,
                                                      index_columns=[DOCS_FILE_COLUMN, "row_number"])
        share = (time.perf_counter() - t_gx) / len(members)
        failing = _failing_positions(list(validation.results), f"{len(members)} files of "
                                     f"{members[0].suite.source_label}",
                                     lambda row, where=where: where[(row[DOCS_FILE_COLUMN], int(row["row_number"]))])
        runs.append((members, starts, failing, page, share))
        keys.append(result_key)
    if keys:
        with _GX_LOCK:
            _file_context(Path(docs_dir)).build_data_docs(resource_identifiers=keys)
    done: dict[int, ValidationOutcome] = {}
    for members, starts, failing, page, share in runs:
        for k, p in enumerate(members):
            p.timings.update(gx_seconds=share)
            done[id(p)] = _conclude(p, _file_share(failing, int(starts[k]), int(starts[k + 1])),
                                    page if page.exists() else None)
    return [done[id(p)] if id(p) in done else _finish(p.errors, [], p.results, p.mi, None) for p in preps]


def validate_again(
    mapped: object,
    study: Study,
    instruments: dict[str, Instrument],
    previous: ValidationOutcome,
    history: pd.DataFrame | None = None,
    *,
    key: bytes | None = None,
) -> ValidationOutcome:
    """Validate a file again with another `history`; outcome as from validate_mapped_file.

    `previous`: the file's outcome from validate_mapped_files. Only the checks that read the history
    (HISTORY_RULES) are derived again; the others depend on the file alone and are taken from `previous`.
    When the derived check columns equal those Great Expectations already validated (e.g. the other
    history changed nothing this file's rows are compared with), GX would give the same results, so
    `previous` is returned as it is (its timings say `reused`); otherwise the file runs through GX alone.
    """
    before = getattr(previous, "gx_frame", None)
    details_before = getattr(previous, "check_details", None)
    if before is None or details_before is None:
        return validate_mapped_file(mapped, study, instruments, history=history, key=key)
    p = _prepare_head(mapped, study, instruments, None, history, key)
    if p.errors:
        return _finish(p.errors, [], p.results, p.mi, None)
    assert p.frame is not None
    t = time.perf_counter()
    rules = [r for r in p.suite.rules if r in HISTORY_RULES and r in details_before]
    details = dict(details_before)
    gx = before
    if rules:
        ctx = build_context(p.frame, study, p.suite.instruments, {}, p.suite.policy, history, p.extra_missing)
        gx = before.copy()
        for rule in rules:
            details[rule] = CHECKS[rule](ctx)
            gx[check_column(rule)] = _details_to_column(len(p.frame), details[rule])
    p.timings["checks_seconds"] = time.perf_counter() - t
    if gx.equals(before):
        previous.timings = {**(getattr(previous, "timings", None) or {}), "reused": 1.0,  # type: ignore[attr-defined]
                            "gx_seconds": 0.0, "checks_seconds": p.timings["checks_seconds"]}
        return previous
    p.details, p.gx_frame = details, gx
    t_gx = time.perf_counter()
    gx_results = _run_ephemeral(gx, p.suite)
    p.timings["gx_seconds"] = time.perf_counter() - t_gx
    p.timings["n_expectations"] = len(gx_results)
    outcome = _conclude(p, _failing_positions(gx_results, p.mi.file_name), None)
    outcome.gx_frame, outcome.check_details = gx, details  # type: ignore[attr-defined]
    return outcome


def _finish(errors: list[str], row_parts: list[pd.DataFrame], results: list[dict[str, Any]], mi: MappedInput,
            docs_path: Path | None, timings: dict[str, float] | None = None) -> ValidationOutcome:
    rows = pd.concat(row_parts, ignore_index=True) if row_parts else empty_frame(ROW_FAILURE_COLUMNS)
    if len(rows):
        rows = rows.sort_values(["row_number", "rule"], kind="stable")
    rule_results = pd.DataFrame(results, columns=RULE_RESULT_COLUMNS) if results else empty_frame(RULE_RESULT_COLUMNS)
    outcome = make_outcome(errors, rows, rule_results)
    with contextlib.suppress(AttributeError):  # a slotted dataclass: the caller finds the page under docs_dir
        outcome.docs_path = docs_path  # type: ignore[attr-defined]
        outcome.timings = timings or {}  # type: ignore[attr-defined]
    return outcome
