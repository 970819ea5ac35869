"""Cluster bootstrap of mixed-model statistics and parallel fitting of many models.

* :func:`cluster_bootstrap` resamples clusters (households) with replacement. Given a fast-engine
  :class:`LmmFit`, a resample is the same design with block weights (a household drawn twice counts as two
  independent households, exactly as relabelling it would), warm-started at the full-data theta: no design
  matrices are rebuilt. Given any function of a data frame, it resamples rows by cluster and relabels the
  id columns so duplicated clusters stay distinct.
* :func:`bootstrap_design` does the same on a prepared :class:`LmmDesign` (the analysis plan's models):
  ``statistic(beta, row_weights)`` may also use the resample's row multiplicities (e.g. baseline SDs for d).
* :func:`fit_many` fits many models (outcomes, sensitivity analyses, imputations) across processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cohortflow.warehouse.memory import can_fork_workers

from .fastlmm_api import LmmFit, _lmmfit_from_fast, fit_mixed
from .fastlmm_core import LmmDesign, fit_design, single_threaded_blas, theta_hessian


@dataclass
class BootstrapResult:
    """Bootstrap replicates of named statistics, with the full-data estimate and interval methods."""

    estimate: pd.Series
    replicates: pd.DataFrame
    n_failed: int
    seconds: float
    cluster: str
    n_clusters: int
    seed: int | None
    method: str

    @property
    def se(self) -> pd.Series:
        """Bootstrap standard error of each statistic (SD of the replicates)."""
        return self.replicates.std(ddof=1)

    def ci(self, level: float = 0.95, kind: str = "percentile") -> pd.DataFrame:
        """Confidence intervals: ``percentile`` (quantiles of the replicates) or ``basic`` (reflected).

        Out: frame indexed by statistic with ``estimate, lower, upper``.
        """
        a = (1.0 - level) / 2.0
        lo = self.replicates.quantile(a)
        hi = self.replicates.quantile(1.0 - a)
        if kind == "percentile":
            lower, upper = lo, hi
        elif kind == "basic":
            lower, upper = 2 * self.estimate - hi, 2 * self.estimate - lo
        else:
            raise ValueError(f"kind must be 'percentile' or 'basic', not {kind!r}")
        return pd.DataFrame({"estimate": self.estimate, "lower": lower, "upper": upper})


def _default_statistic(fit: LmmFit) -> pd.Series:
    return fit.fe_params


def _cluster_of_blocks(fit: LmmFit, data: pd.DataFrame, cluster: str) -> tuple[np.ndarray, int]:
    """Cluster index of each block of the fitted design; the blocks must be nested in the clusters."""
    if cluster not in data.columns:
        raise ValueError(f"cluster column {cluster!r} is not in the data")
    if cluster == fit.groups:
        return np.arange(fit.design.n_blocks), fit.design.n_blocks
    rows = data.iloc[fit.row_index][[fit.groups, cluster]]
    pairs = rows.drop_duplicates()
    if pairs[fit.groups].duplicated().any():
        bad = pairs.loc[pairs[fit.groups].duplicated(), fit.groups].iloc[0]
        raise ValueError(
            f"group {bad!r} of column {fit.groups!r} lies in more than one {cluster!r}: blocks must be nested "
            "in the bootstrap clusters (resample by the model's groups or an enclosing column)"
        )
    cl_of_group = pd.Series(pairs[cluster].to_numpy(), index=pairs[fit.groups].to_numpy())
    labels = fit.design.block_labels
    codes, uniq = pd.factorize(cl_of_group.loc[labels].to_numpy(), sort=False)
    return codes, len(uniq)


#: state shared with forked bootstrap workers (fit, statistic, inverse Hessian, weights), set by the parent
_BOOT_STATE: dict = {}


def _refit_chunk(rows: range) -> tuple[list[pd.Series], int]:
    """Refit the resamples ``rows`` of the weight matrix in _BOOT_STATE; (statistics, number failed)."""
    fit, statistic, hess_inv, weights = (_BOOT_STATE[k] for k in ("fit", "statistic", "hess_inv", "weights"))
    design = fit.design
    xnames = list(fit.fe_params.index)
    out, failed = [], 0
    t0 = time.perf_counter()
    with single_threaded_blas():
        for r in rows:
            w = weights[r]
            try:
                ff = fit_design(design, reml=fit.reml, start=fit.theta, weights=w, polish=False, hess_inv=hess_inv)
                refit = _lmmfit_from_fast(ff, xnames, design.terms, int(w @ design.block_nobs), fit.groups, None, 0, t0)
                out.append(pd.Series(statistic(refit), dtype=float))
            except (FloatingPointError, np.linalg.LinAlgError, ValueError):
                failed += 1
    return out, failed


def _refit_design_chunk(rows: range) -> tuple[list[np.ndarray], int]:
    """Refit resamples ``rows`` of a prepared design (state in _BOOT_STATE); (statistic vectors, failed)."""
    st = _BOOT_STATE
    design, theta, reml, hess_inv = st["design"], st["theta"], st["reml"], st["hess_inv"]
    counts, cl_of_block, cl_of_row, statistic = st["counts"], st["cl_of_block"], st["cl_of_row"], st["statistic"]
    out, failed = [], 0
    with single_threaded_blas():
        for r in rows:
            w = counts[r][cl_of_block]
            try:
                ff = fit_design(design, reml=reml, start=theta, weights=w, polish=False, hess_inv=hess_inv)
                if not ff.converged:  # second try: full optimisation with the Newton polish
                    ff = fit_design(design, reml=reml, start=theta, weights=w, polish=True)
                if not ff.converged:
                    raise ValueError("no convergence")
                out.append(np.asarray(statistic(ff.beta, counts[r][cl_of_row]), float))
            except (FloatingPointError, np.linalg.LinAlgError, ValueError):
                failed += 1
    return out, failed


def _one_blas_thread_for_good() -> None:
    """Process-pool initializer: one BLAS thread in a worker started by spawn (forked ones inherit it)."""
    single_threaded_blas().__enter__()


def _run_chunks(chunk_fn: Callable[[range], tuple[list, int]], n: int, n_jobs: int) -> tuple[list, int]:
    """Run ``chunk_fn`` over ``range(n)``, split across ``n_jobs`` forked processes where possible."""
    if n_jobs > 1 and n > 1 and can_fork_workers():
        bounds = np.linspace(0, n, n_jobs + 1).astype(int)
        chunks = [range(bounds[k], bounds[k + 1]) for k in range(n_jobs)]
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("fork")) as pool:
            parts = list(pool.map(chunk_fn, chunks))
    else:
        parts = [chunk_fn(range(n))]
    return [r for part in parts for r in part[0]], sum(part[1] for part in parts)


def bootstrap_design(
    design: LmmDesign,
    theta: np.ndarray,
    cluster: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    names: Sequence[str],
    n: int = 1000,
    seed: int | None = None,
    reml: bool = True,
    n_jobs: int = 1,
) -> BootstrapResult:
    """Cluster bootstrap of ``statistic`` on a prepared design (block weights, warm starts at ``theta``).

    In: the design (rows in the order given to :class:`LmmDesign`), the full-data theta (design order),
    the cluster label of each row (blocks must be nested in clusters), ``statistic(beta, row_weights) ->
    vector`` named by ``names`` (row_weights: how often each row's cluster was drawn; all ones for the full
    data), number of resamples, seed, REML, worker processes (results do not depend on them).
    Out: :class:`BootstrapResult`; resamples whose refit fails or does not converge are counted, not used.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    t0 = time.perf_counter()
    cl_of_row, uniq = pd.factorize(pd.Series(np.asarray(cluster)), sort=False)
    if len(cl_of_row) != design.n_obs or (cl_of_row < 0).any():
        raise ValueError(f"cluster must give a label for each of the design's {design.n_obs} rows, without gaps")
    n_cl = len(uniq)
    sorted_cl = cl_of_row[design.order]
    first = np.searchsorted(design.row_block, np.arange(design.n_blocks))
    cl_of_block = sorted_cl[first]
    if np.any(sorted_cl != cl_of_block[design.row_block]):
        raise ValueError("the model's blocks are not nested in the bootstrap clusters (a group spans two clusters)")
    theta = np.asarray(theta, float)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n_cl, n_cl), minlength=n_cl) for _ in range(n)]).astype(float)
    with single_threaded_blas():
        ev = design.evaluator(reml=reml)
        beta = ev.evaluate(theta, grad=False)["beta"]
        est = pd.Series(np.asarray(statistic(beta, np.ones(design.n_obs)), float), index=list(names))
        hess_inv = None
        try:
            h = theta_hessian(ev, theta)
            if np.all(np.linalg.eigvalsh(h) > 0):
                hess_inv = np.linalg.inv(h)
        except (FloatingPointError, np.linalg.LinAlgError):
            hess_inv = None
    _BOOT_STATE.update(design=design, theta=theta, reml=reml, hess_inv=hess_inv, counts=counts,
                       cl_of_block=cl_of_block, cl_of_row=cl_of_row, statistic=statistic)
    try:
        reps, failed = _run_chunks(_refit_design_chunk, n, n_jobs)
    finally:
        _BOOT_STATE.clear()
    return BootstrapResult(
        estimate=est,
        replicates=pd.DataFrame(np.array(reps).reshape(len(reps), len(est)), columns=list(names)),
        n_failed=failed,
        seconds=time.perf_counter() - t0,
        cluster="cluster",
        n_clusters=n_cl,
        seed=seed,
        method="fast engine, block weights, warm start at the full-data theta",
    )


def _bootstrap_fit(
    fit: LmmFit,
    data: pd.DataFrame,
    cluster: str,
    n: int,
    seed: int | None,
    statistic: Callable[[LmmFit], pd.Series],
    n_jobs: int,
) -> BootstrapResult:
    t0 = time.perf_counter()
    design = fit.design
    cl_of_block, n_cl = _cluster_of_blocks(fit, data, cluster)
    rng = np.random.default_rng(seed)
    est = pd.Series(statistic(fit), dtype=float)
    # all resamples drawn up front: the result does not depend on n_jobs
    counts = np.stack([np.bincount(rng.integers(0, n_cl, n_cl), minlength=n_cl) for _ in range(n)]).astype(float)
    weights = counts[:, cl_of_block]
    with single_threaded_blas():
        hess_inv = None
        try:
            h = theta_hessian(design.evaluator(reml=fit.reml), fit.theta)
            if np.all(np.linalg.eigvalsh(h) > 0):
                hess_inv = np.linalg.inv(h)
        except (FloatingPointError, np.linalg.LinAlgError):
            hess_inv = None
    _BOOT_STATE.update(fit=fit, statistic=statistic, hess_inv=hess_inv, weights=weights)
    try:
        reps, failed = _run_chunks(_refit_chunk, n, n_jobs)
    finally:
        _BOOT_STATE.clear()
    return BootstrapResult(
        estimate=est,
        replicates=pd.DataFrame(reps).reset_index(drop=True),
        n_failed=failed,
        seconds=time.perf_counter() - t0,
        cluster=cluster,
        n_clusters=n_cl,
        seed=seed,
        method="fast engine, block weights, warm start at the full-data theta",
    )


def resample_clusters(
    data: pd.DataFrame, cluster: str, rng: np.random.Generator, relabel: Iterable[str] = ()
) -> pd.DataFrame:
    """One cluster bootstrap sample: clusters drawn with replacement, ids made unique per draw.

    In: data, cluster column, random generator, further id columns nested in the cluster (persons, subjects)
    to relabel. Out: the resampled frame; the k-th draw of a cluster gets ids suffixed ``#k``.
    """
    codes, uniq = pd.factorize(data[cluster], sort=False)
    draws = rng.integers(0, len(uniq), len(uniq))
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(uniq)))
    ends = np.searchsorted(codes[order], np.arange(len(uniq)), side="right")
    idx = np.concatenate([order[starts[d] : ends[d]] for d in draws])
    draw_no = np.repeat(np.arange(len(draws)), ends[draws] - starts[draws])
    out = data.iloc[idx].reset_index(drop=True)
    suffix = pd.Series(draw_no).astype(str).radd("#")
    for col in [cluster, *relabel]:
        out[col] = out[col].astype(str) + suffix
    return out


def cluster_bootstrap(
    fit_fn: LmmFit | Callable[[pd.DataFrame], pd.Series],
    data: pd.DataFrame,
    cluster: str = "household_id",
    n: int = 1000,
    seed: int | None = None,
    statistic: Callable[[LmmFit], pd.Series] | None = None,
    relabel: Iterable[str] = (),
    n_jobs: int = 1,
) -> BootstrapResult:
    """Cluster (household) bootstrap of statistics, ``n`` resamples.

    In: either a fast-engine :class:`LmmFit` of ``data`` (then ``statistic(refit) -> Series`` is computed on
    each refit, default the fixed effects) or a function ``data -> Series`` (then rows are resampled by
    cluster, ``cluster`` and the ``relabel`` columns made unique per draw); the data, cluster column,
    number of resamples, seed, worker processes for the fast form (forked; results do not depend on it).
    Out: :class:`BootstrapResult` (replicates, ``ci()``, ``se``).
    R equivalent of the first form: ``lme4::bootMer`` with a case (cluster) resampler.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, not {n}")
    if isinstance(fit_fn, LmmFit):
        if fit_fn.design is None or fit_fn.engine != "fast":
            raise ValueError("cluster_bootstrap needs a fast-engine fit with its design (engine='fast' or 'auto')")
        return _bootstrap_fit(fit_fn, data, cluster, n, seed, statistic or _default_statistic, n_jobs)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    est = pd.Series(fit_fn(data), dtype=float)
    reps, failed = [], 0
    for _ in range(n):
        sample = resample_clusters(data, cluster, rng, relabel)
        try:
            reps.append(pd.Series(fit_fn(sample), dtype=float))
        except (FloatingPointError, np.linalg.LinAlgError, ValueError):
            failed += 1
    return BootstrapResult(
        estimate=est,
        replicates=pd.DataFrame(reps).reset_index(drop=True),
        n_failed=failed,
        seconds=time.perf_counter() - t0,
        cluster=cluster,
        n_clusters=int(data[cluster].nunique()),
        seed=seed,
        method="resampled rows by cluster, ids relabelled per draw",
    )


def _fit_task(task: Mapping) -> LmmFit:
    kw = dict(task)
    keep = kw.pop("keep_design", False)
    kw.pop("name", None)
    fit = fit_mixed(**kw)
    return fit if keep else fit.drop_heavy()


def fit_many(
    tasks: Sequence[Mapping],
    n_jobs: int | None = None,
    mp_context: str | None = None,
) -> list[LmmFit]:
    """Fit many models, each task the keyword arguments of :func:`fit_mixed`, across processes.

    In: tasks (dicts; optional ``name`` is ignored by the fit, ``keep_design=True`` keeps the deviance
    functions), number of worker processes (default: CPU count; 1 = in this process), start method
    (default ``fork`` where available). Out: fits in the order of the tasks, without their design arrays
    unless asked. A task that raises re-raises here with the task's name.
    """
    n_jobs = n_jobs or os.cpu_count() or 1
    if n_jobs <= 1 or len(tasks) <= 1 or mp.current_process().daemon:  # daemonic workers may not have children
        return [_fit_task(t) for t in tasks]
    method = mp_context or ("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    out: list[LmmFit] = []
    with single_threaded_blas(), ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx,
                                                initializer=_one_blas_thread_for_good) as pool:
        futures = [pool.submit(_fit_task, t) for t in tasks]
        for i, fut in enumerate(futures):
            try:
                out.append(fut.result())
            except Exception as exc:
                name = tasks[i].get("name", f"task {i}")
                raise RuntimeError(f"fitting {name} failed: {exc}") from exc
    return out
