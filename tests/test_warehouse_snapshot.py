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


def _by_definition(frame: pd.DataFrame) -> str:
    """The snapshot hash computed straight from its definition, row by row in Python (the reference)."""
    names = sorted(frame.columns)
    canon = {}
    for c in names:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype) or s.dtype == object or pd.api.types.is_string_dtype(s):
            canon[c] = ("s", ["\x00NA" if pd.isna(v) else str(v) for v in s.tolist()])
        else:
            vals = [np.nan if pd.isna(v) else float(v) + 0.0 for v in s.tolist()]
            canon[c] = ("f", vals)

    def sort_key(i: int) -> tuple:
        return tuple((canon[c][1][i],) if canon[c][0] == "s" else
                     ((1, 0.0) if np.isnan(canon[c][1][i]) else (0, canon[c][1][i])) for c in names)

    order = sorted(range(len(frame)), key=sort_key)
    h = hashlib.sha256(f"rows={len(frame)};cols={len(names)}".encode())
    for c in names:
        kind, vals = canon[c]
        h.update(b"\x1e" + c.encode() + b"\x1f" + kind.encode())
        if kind == "s":
            h.update("\x1f".join(vals[i] for i in order).encode("utf-8"))
        else:
            h.update(np.array([vals[i] for i in order], dtype="<f8").tobytes())
    return h.hexdigest()


def test_snapshot_hash_text_gathered_in_chunks_matches_definition(monkeypatch):
    """Text columns are gathered from byte tables of their distinct values (fixed-width pseudonyms, texts of
    different lengths with non-ASCII letters and missing values, object and categorical storage) in chunks of
    a few rows: the digest is that of the row-by-row definition, for every chunk size."""
    import cohortflow.warehouse.snapshot as snap

    rng = np.random.default_rng(7)
    n = 23
    pseud = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(6)]
    frame = pd.DataFrame({
        "person_id": pd.Categorical([pseud[i] for i in rng.integers(0, 6, n)]),
        "role": pd.Series(rng.choice(["kind", "ouder", "jongere", None], n), dtype="str"),
        "label": pd.Series(rng.choice(["é", "ab", "ßßß", "", "z"], n).tolist(), dtype=object),
        "outcome": pd.Categorical(rng.choice(["a.x", "bb.yy", "ccc.z"], n)),
        "score": np.where(rng.random(n) < 0.2, np.nan, rng.integers(0, 4, n) / 2),
    })
    frame.loc[3, "outcome"] = np.nan
    expected = _by_definition(frame)
    for step in (1, 2, 5, 22, 23, 1_000_000):
        monkeypatch.setattr(snap, "_CHUNK_ROWS", step)
        assert snap.snapshot_hash(frame) == expected, step
    one_text = pd.DataFrame({"t": pd.Series(["same"] * 4, dtype="str")})  # one distinct text, fixed width
    assert snap.snapshot_hash(one_text) == _by_definition(one_text)
    all_missing = pd.DataFrame({"t": pd.Series([None, None], dtype=object)})
    assert snap.snapshot_hash(all_missing) == _by_definition(all_missing)
