"""The snapshot hash follows its written definition (checked against it worked by hand on a small frame)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from cohortflow.warehouse.snapshot import snapshot_hash


def test_snapshot_hash_follows_its_definition():
    """A two-column frame hashed by hand: header, columns in name order, rows sorted by all columns, text as
    0x1F-separated UTF-8 (missing = the marker), numbers as little-endian float64."""
    frame = pd.DataFrame({"score": [2.5, np.nan, 1.0, 2.5], "person": pd.Series(["b", "é", None, "a"], dtype="str")})
    rows = sorted(zip(["b", "é", "\x00NA", "a"], [2.5, np.nan, 1.0, 2.5], strict=True),
                  key=lambda r: (r[0], np.inf if np.isnan(r[1]) else r[1]))
    h = hashlib.sha256(b"rows=4;cols=2")
    h.update(b"\x1eperson\x1fs" + "\x1f".join(r[0] for r in rows).encode("utf-8"))
    h.update(b"\x1escore\x1ff" + np.array([r[1] for r in rows], dtype="<f8").tobytes())
    assert snapshot_hash(frame) == h.hexdigest()
    assert snapshot_hash(frame.sample(frac=1.0, random_state=2)) == h.hexdigest()
    assert snapshot_hash(frame.astype({"person": "category"})) == h.hexdigest()
