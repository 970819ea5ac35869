"""One BLAS thread per model-fitting process (analysis.fastlmm_core.single_threaded_blas): inside the context, in
processes forked inside it and in spawned pool workers started with its initializer; restored after."""

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest

from cohortflow.analysis.fastlmm_boot import _one_blas_thread_for_good
from cohortflow.analysis.fastlmm_core import single_threaded_blas


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [int(i["num_threads"]) for i in threadpool_info() if i.get("user_api") == "blas"]


def test_one_thread_inside_and_in_forked_workers_restored_after():
    before = _blas_threads()
    if not before:
        pytest.skip("no BLAS library loaded that threadpoolctl can see")
    with single_threaded_blas():
        assert _blas_threads() == [1] * len(before)
        with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("fork")) as pool:
            assert pool.submit(_blas_threads).result() == [1] * len(before)
    assert _blas_threads() == before


def test_spawned_workers_get_one_thread_from_the_initializer():
    if not _blas_threads():
        pytest.skip("no BLAS library loaded that threadpoolctl can see")
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                             initializer=_one_blas_thread_for_good) as pool:
        threads = pool.submit(_blas_threads).result()
    assert threads and set(threads) == {1}


class _Seen(Exception):
    pass


def test_run_analysis_fits_under_one_thread(monkeypatch):
    """The outcome jobs of run_analysis run inside the limit (seen from where they start)."""
    from cohortflow.analysis import models
    from cohortflow.analysis.plan import load_analysis_plan
    from cohortflow.config.study import load_study

    before = _blas_threads()
    if not before:
        pytest.skip("no BLAS library loaded that threadpoolctl can see")

    def spy(*args, **kwargs):
        raise _Seen(_blas_threads())

    monkeypatch.setattr(models, "_analyse_all", spy)
    with pytest.raises(_Seen) as seen:
        models.run_analysis(pd.DataFrame(), load_analysis_plan(None), load_study(), workers=1)
    assert seen.value.args[0] == [1] * len(before)
    assert _blas_threads() == before
