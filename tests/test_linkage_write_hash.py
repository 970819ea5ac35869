"""`write_and_hash`: the Parquet file and the snapshot hash made at the same time are those made one after the
other, and an error in either is raised, not lost."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

import cohortflow.warehouse.linkage as linkage
from cohortflow.warehouse.linkage import write_and_hash, write_long_parquet
from cohortflow.warehouse.snapshot import snapshot_hash


def _long(n: int = 5_000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    pseud = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(50)]
    return pd.DataFrame({
        "household_id": pd.Categorical([pseud[i] for i in rng.integers(0, 50, n)]),
        "wave": pd.Categorical(rng.choice(["T0", "T1", "T2"], n)),
        "days_since_t0": pd.array(rng.integers(0, 400, n), dtype="Int64"),
        "score": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
        "above_cutoff": pd.array(rng.choice([True, False, None], n), dtype="boolean"),
        "response_date": pd.to_datetime("2024-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D"),
    })


def test_concurrent_write_and_hash_equal_sequential(tmp_path):
    long = _long()
    seq = write_long_parquet(long, tmp_path / "seq.parquet", rows_per_group=700)
    digest = snapshot_hash(long)
    got = write_and_hash(long, tmp_path / "conc.parquet")
    assert got == digest
    assert (tmp_path / "conc.parquet").read_bytes() == write_long_parquet(long, tmp_path / "seq2.parquet").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "conc.parquet"), long)
    assert pd.read_parquet(seq).equals(long)


def test_error_in_hash_is_raised(tmp_path, monkeypatch):
    def broken(frame):  # noqa: ANN001, ANN202
        raise RuntimeError("hash failed")

    monkeypatch.setattr(linkage, "snapshot_hash", broken)
    with pytest.raises(RuntimeError, match="hash failed"):
        write_and_hash(_long(100), tmp_path / "x.parquet")
    assert (tmp_path / "x.parquet").exists()  # the write itself went through


def test_error_in_write_is_raised(tmp_path):
    with pytest.raises(OSError):
        write_and_hash(_long(100), tmp_path / "missing-folder" / "x.parquet")
