"""`ForkedFrame`: a frame made in a forked child comes back identical (values, dtypes, categories, index), a
failure in the child is raised in the parent with the child's traceback, and an unwanted child is ended."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from cohortflow.warehouse.read import ForkedFrame

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _frame(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame({
        "response_id": rng.integers(0, 10**12, n),
        "instrument": pd.Categorical(rng.choice(["b", "a", "c"], n), categories=pd.Index(["a", "b", "c"], dtype="str")),
        "score": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        "above_cutoff": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
        "days": pd.array(rng.choice([1, 2, None], n), dtype="Int64"),
        "date": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 99, n), unit="D"),
        "note": pd.Series(rng.choice(["x", "é", None], n), dtype="str"),
    })


def _made(n: int, pid_file: str | None = None) -> pd.DataFrame:
    if pid_file:
        with open(pid_file, "w") as fh:
            fh.write(str(os.getpid()))
    return _frame(n)


def _check_equal(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert list(got.dtypes) == list(want.dtypes)
    assert got["instrument"].cat.categories.dtype == want["instrument"].cat.categories.dtype


@pytest.mark.parametrize("n", [0, 1, 300_007])  # 300,007 rows: buffers far larger than a pipe's
def test_frame_made_in_child_equals_frame_made_here(n, tmp_path):
    pid_file = str(tmp_path / "pid")
    forked = ForkedFrame(_made, n, pid_file)
    got = forked.result()
    _check_equal(got, _frame(n))
    assert int((tmp_path / "pid").read_text()) != os.getpid()  # it was made in another process


def test_non_default_index_travels():
    want = _frame(10).set_index(pd.Index(np.arange(10) * 3))
    got = ForkedFrame(lambda: want).result()
    _check_equal(got, want)


def _fails() -> pd.DataFrame:
    raise ValueError("no such table: score")


def test_error_in_child_is_raised_with_its_traceback():
    forked = ForkedFrame(_fails)
    with pytest.raises(RuntimeError, match=r"(?s)child process failed.*ValueError: no such table: score"):
        forked.result()


def test_close_without_result_ends_the_child():
    forked = ForkedFrame(_made, 2_000_000)  # more than a pipe holds: the child blocks until the parent reads
    pid = forked._pid
    forked.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # already reaped
    with pytest.raises(RuntimeError, match="closed"):
        forked.result()


def test_garbage_collector_freeze_state_kept():
    """The parent's objects are frozen only across the fork: afterwards the collector is as it was (nothing
    frozen, or what someone else froze still frozen)."""
    import gc

    assert gc.get_freeze_count() == 0
    ForkedFrame(_made, 3).result()
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        ForkedFrame(_made, 3).result()
        # still frozen (an unfreeze would leave 0); frozen objects that other threads of a long test session
        # free meanwhile leave the frozen generation, so the count may be a few lower than before
        assert frozen > 1000 and gc.get_freeze_count() > frozen * 0.9
    finally:
        gc.unfreeze()
