"""Pseudonymisation at the door: keyed HMAC-SHA-256 of household and person identifiers.

The key comes from `COHORTFLOW_PSEUDONYM_KEY`; only the demo may generate one (explicitly, into its data
folder, mode 600). The same raw id gives the same pseudonym in every wave and file; ids are normalised
(trimmed, upper-cased) first so that `g-pt03-0012 ` and `G-PT03-0012` are one household.
"""

from __future__ import annotations

import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

KEY_ENV = "COHORTFLOW_PSEUDONYM_KEY"
KEY_FILE = ".pseudonym_key"
MIN_KEY_CHARS = 16


class PseudonymKeyError(RuntimeError):
    """No usable pseudonymisation key: the message says how to provide one."""


def get_pseudonym_key(data_dir: Path | None = None, allow_generated_key: bool = False) -> bytes:
    """The HMAC key: COHORTFLOW_PSEUDONYM_KEY, else (demo only) `<data_dir>/.pseudonym_key`, made if absent."""
    value = os.environ.get(KEY_ENV)
    if value:
        if len(value) < MIN_KEY_CHARS:
            raise PseudonymKeyError(
                f"{KEY_ENV} is {len(value)} characters; use at least {MIN_KEY_CHARS} "
                f"(e.g. `python -c \"import secrets; print(secrets.token_hex(32))\"`)."
            )
        return value.encode("utf-8")
    if not allow_generated_key:
        raise PseudonymKeyError(
            f"No pseudonymisation key: set {KEY_ENV} to a secret of at least {MIN_KEY_CHARS} characters, kept "
            "outside the repository and the database (the same key must be used for every ingest, or the same "
            "person gets different pseudonyms). Only the demo generates its own key."
        )
    if data_dir is None:
        raise PseudonymKeyError("allow_generated_key needs the data folder to keep the generated key in")
    path = Path(data_dir) / KEY_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(secrets.token_hex(32))
    os.chmod(path, 0o600)
    return path.read_text(encoding="utf-8").strip().encode("utf-8")


def normalise_id(raw: object) -> str | None:
    """Trimmed, upper-cased text of a raw id; None for blanks. Numeric ids lose a trailing '.0'."""
    if raw is None or (isinstance(raw, float) and np.isnan(raw)) or raw is pd.NA:
        return None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    text = str(raw).strip().upper()
    return text or None


def pseudonym(key: bytes, kind: str, raw: object) -> str | None:
    """HMAC-SHA-256 hex of `<kind>:<normalised id>`; None when the id is blank."""
    norm = normalise_id(raw)
    if norm is None:
        return None
    return _hmac(key, f"{kind}:{norm}")


@lru_cache(maxsize=500_000)
def _hmac(key: bytes, message: str) -> str:
    return hmac.digest(key, message.encode(), "sha256").hex()  # one C call: ~3x hmac.new().hexdigest()


_SERIES_CACHE: dict[tuple[bytes, str], dict[object, str]] = {}  # (key, kind) -> raw id -> pseudonym
_SERIES_CACHE_MAX = 1_000_000  # raw ids per (key, kind) before the cache starts again


def pseudonyms(key: bytes, kind: str, raw: pd.Series | np.ndarray | list) -> np.ndarray:
    """Pseudonyms (object array; None for blanks) of a column of raw ids, each distinct id hashed once per process.

    Text ids that give a pseudonym are cached per (key, kind) as they are, so the same id in later files of a
    run (or in the validation and the loader of one file) costs one dictionary look-up.
    """
    vals = raw.to_numpy(dtype=object) if isinstance(raw, pd.Series) else np.asarray(raw, dtype=object)
    cache = _SERIES_CACHE.setdefault((key, kind), {})
    if len(cache) > _SERIES_CACHE_MAX:
        cache.clear()
    get = cache.get
    out = []
    for v in vals.tolist():
        p = get(v) if type(v) is str else None  # text ids only: 1 == 1.0 == True would share an entry
        if p is None:
            p = pseudonym(key, kind, v)
            if p is not None and type(v) is str:
                cache[v] = p
        out.append(p)
    arr = np.empty(len(out), dtype=object)
    arr[:] = out
    return arr


def pseudonymise_series(key: bytes, kind: str, raw: pd.Series) -> pd.Series:
    """Pseudonyms of a column of raw ids (see `pseudonyms`); blanks become None."""
    return pd.Series(pseudonyms(key, kind, raw), index=raw.index, dtype=object)
