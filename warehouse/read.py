"""Read helpers: current (non-superseded) responses and item values as frames; batch and quarantine views."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select

from .models import Batch, ItemValue, Person, QuarantineRow, Response


def responses_frame(engine: Engine, include_superseded: bool = False) -> pd.DataFrame:
    """One row per loaded response: id, batch, row, pseudonyms, role, arm, site, wave, dates, age, sex."""
    q = select(Response.id.label("response_id"), Response.batch_id, Response.row_number, Response.household_id,
               Response.person_id, Response.subject_id, Response.role, Response.arm, Response.site, Response.wave,
               Response.response_date, Response.registration_date, Response.days_since_t0,
               Response.subject_age_months, Response.subject_sex, Person.birth_year.label("subject_birth_year"),
               Response.superseded).join(Person, Person.person_id == Response.subject_id).order_by(Response.id)
    if not include_superseded:
        q = q.where(Response.superseded.is_(False))
    with engine.connect() as conn:
        df = pd.read_sql(q, conn)
    for c in ("response_date", "registration_date"):
        df[c] = pd.to_datetime(df[c])
    df["subject_age_years"] = df["subject_age_months"] / 12.0
    return df


def item_values_frame(engine: Engine, instrument: str | None = None, include_superseded: bool = False) -> pd.DataFrame:
    """Long item values of current responses: response_id, instrument, item, item_key, value, missing_reason."""
    q = (select(ItemValue.response_id, ItemValue.instrument, ItemValue.item, ItemValue.value,
                ItemValue.missing_reason)
         .join(Response, Response.id == ItemValue.response_id).order_by(ItemValue.response_id, ItemValue.item))
    if instrument is not None:
        q = q.where(ItemValue.instrument == instrument)
    if not include_superseded:
        q = q.where(Response.superseded.is_(False))
    with engine.connect() as conn:
        df = pd.read_sql(q, conn)
    df["item_key"] = df["instrument"] + "_" + df["item"]
    return df


def batches_frame(engine: Engine) -> pd.DataFrame:
    """Every batch with its counts, status and message, ordered by arm, site, wave, role and id."""
    cols = [Batch.id, Batch.file_name, Batch.status, Batch.arm, Batch.site, Batch.wave, Batch.role,
            Batch.source_name, Batch.source_version, Batch.rows_in, Batch.rows_loaded, Batch.rows_quarantined,
            Batch.rows_duplicate, Batch.item_values, Batch.superseded_by, Batch.message, Batch.problems,
            Batch.sha256, Batch.size_bytes, Batch.started_at, Batch.finished_at, Batch.read_seconds,
            Batch.load_seconds, Batch.code_version]
    with engine.connect() as conn:
        df = pd.read_sql(select(*cols).order_by(Batch.arm, Batch.site, Batch.wave, Batch.role, Batch.id), conn)
    return df


def quarantine_frame(engine: Engine, include_released: bool = False) -> pd.DataFrame:
    """Quarantined rows with their file, row number, reasons and release state (payload left out)."""
    q = (select(QuarantineRow.id, QuarantineRow.batch_id, Batch.file_name, QuarantineRow.row_number,
                QuarantineRow.reasons, QuarantineRow.released_at, QuarantineRow.released_response_id)
         .join(Batch, Batch.id == QuarantineRow.batch_id).order_by(QuarantineRow.id))
    if not include_released:
        q = q.where(QuarantineRow.released_at.is_(None))
    with engine.connect() as conn:
        return pd.read_sql(q, conn)


# --- compact, streamed reads for large warehouses ------------------------------------------------------------

_CHUNK_ROWS = 500_000


def _codes(values: list, lookup: dict[str, int]) -> np.ndarray:
    """Integer codes of `values` in `lookup` (new values get the next code); None -> -1."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object), use_na_sentinel=True)
    remap = np.array([lookup.setdefault(u, len(lookup)) for u in uniques] + [-1], dtype=np.int32)
    return remap[codes]


def _sorted_categorical(codes: np.ndarray, lookup: dict[str, int]) -> pd.Categorical:
    """Categorical with lexically sorted categories (so sorting by it sorts by text, as for plain strings)."""
    names = sorted(lookup)
    new = np.array([0] * len(lookup) + [-1], dtype=np.int32)
    for pos, name in enumerate(names):
        new[lookup[name]] = pos
    return pd.Categorical.from_codes(new[codes], categories=pd.Index(names, dtype="str"))


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.array([], dtype=dtype)


def superseded_response_ids(engine: Engine) -> np.ndarray:
    """Ids of superseded responses (usually few), to filter long tables without a join."""
    with engine.connect() as conn:
        ids = conn.execute(select(Response.id).where(Response.superseded.is_(True))).scalars().all()
    return np.asarray(ids, dtype=np.int64)


def read_compact(engine: Engine, query: str, kinds: dict[str, str], chunk_rows: int = _CHUNK_ROWS) -> pd.DataFrame:
    """Run a plain SELECT (columns in the order of `kinds`) and return a compact frame, streamed in chunks.

    `kinds`: column -> `int` (int64), `float` (float64, NULL = NaN), `cat` (categorical with lexically sorted
    categories, NULL = NaN) or `bool` (pandas `boolean`, NULL = NA). PostgreSQL: `COPY (query) TO STDOUT`
    parsed by pandas' C reader; SQLite: the driver's cursor in chunks of `chunk_rows`. Memory stays a few
    bytes per value instead of Python objects per row.
    """
    names = list(kinds)
    if engine.dialect.name == "postgresql":
        dtypes = {c: {"int": "int64", "float": "float64", "cat": "str", "bool": "str"}[k] for c, k in kinds.items()}
        frame = _pg_copy_frame(engine, query, dtypes)
        for c, k in kinds.items():
            if k == "cat":
                col = frame[c].astype("category")
                frame[c] = col.cat.reorder_categories(sorted(col.cat.categories))
            elif k == "bool":
                frame[c] = frame[c].map({"t": True, "f": False}).astype("boolean")
        return frame
    parts: dict[str, list[np.ndarray]] = {c: [] for c in names}
    lookups: dict[str, dict[str, int]] = {c: {} for c, k in kinds.items() if k == "cat"}
    with engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute(query)
            while rows := cur.fetchmany(chunk_rows):
                for c, col in zip(names, zip(*rows, strict=True), strict=True):
                    k = kinds[c]
                    if k == "int":
                        parts[c].append(np.fromiter(col, dtype=np.int64, count=len(col)))
                    elif k == "float":
                        parts[c].append(np.array(col, dtype=np.float64))
                    elif k == "cat":
                        parts[c].append(_codes(col, lookups[c]))
                    else:
                        parts[c].append(np.array([-1 if v is None else int(v) for v in col], dtype=np.int8))
        finally:
            cur.close()
    out = {}
    for c, k in kinds.items():
        if k == "int":
            out[c] = _joined(parts[c], np.int64)
        elif k == "float":
            out[c] = _joined(parts[c], np.float64)
        elif k == "cat":
            out[c] = _sorted_categorical(_joined(parts[c], np.int32), lookups[c])
        else:
            v = _joined(parts[c], np.int8)
            out[c] = pd.arrays.BooleanArray(v == 1, v < 0)
    return pd.DataFrame(out)


def item_values_compact(engine: Engine, include_superseded: bool = False,
                        chunk_rows: int = _CHUNK_ROWS) -> pd.DataFrame:
    """All item values as a compact frame `response_id` (int64), `instrument`, `item` (categoricals with
    sorted categories), `value` (float64, NaN = missing); unordered.

    About 20 bytes per item value (20 M values: ~400 MB) instead of Python objects per row, and no join:
    superseded responses are dropped by id afterwards.
    """
    frame = read_compact(engine, "SELECT response_id, instrument, item, value FROM item_value",
                         {"response_id": "int", "instrument": "cat", "item": "cat", "value": "float"}, chunk_rows)
    return _current(engine, frame, include_superseded)


def scores_compact(engine: Engine, include_superseded: bool = False) -> pd.DataFrame:
    """Stored scores as a compact frame `response_id, instrument, scale, score, above_cutoff` (categoricals,
    float64, boolean); unordered. The columns linkage needs, for large warehouses."""
    frame = read_compact(engine, "SELECT response_id, instrument, scale, score, above_cutoff FROM score",
                         {"response_id": "int", "instrument": "cat", "scale": "cat", "score": "float",
                          "above_cutoff": "bool"})
    return _current(engine, frame, include_superseded)


def _current(engine: Engine, frame: pd.DataFrame, include_superseded: bool) -> pd.DataFrame:
    if not include_superseded:
        old = superseded_response_ids(engine)
        if len(old):
            frame = frame[~np.isin(frame["response_id"].to_numpy(), old)].reset_index(drop=True)
    return frame


def _pg_copy_frame(engine: Engine, query: str, dtypes: dict[str, str]) -> pd.DataFrame:
    """Run `COPY (query) TO STDOUT` (CSV) on PostgreSQL and parse it with pandas in chunks of ~64 MB."""
    import io

    names = list(dtypes)
    parts: list[pd.DataFrame] = []
    buf = bytearray()

    def flush(final: bool) -> None:
        nonlocal buf
        cut = len(buf) if final else buf.rfind(b"\n") + 1
        if cut <= 0:
            return
        parts.append(pd.read_csv(io.BytesIO(bytes(buf[:cut])), header=None, names=names, dtype=dtypes,
                                 keep_default_na=False, na_values=[""]))
        buf = buf[cut:]

    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as cp:
            for data in cp:
                buf += data
                if len(buf) > 64 * 2**20:
                    flush(False)
    flush(True)
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    return pd.concat(parts, ignore_index=True)


def scoring_context(engine: Engine) -> pd.DataFrame:
    """Per current response (index `response_id`): `role`, `subject_age_years`, `subject_sex` (Contract 4's
    scoring context), read without the person join."""
    q = (select(Response.id.label("response_id"), Response.role, Response.subject_age_months, Response.subject_sex)
         .where(Response.superseded.is_(False)))
    with engine.connect() as conn:
        df = pd.read_sql(q, conn)
    df["subject_age_years"] = df["subject_age_months"] / 12.0
    return df.set_index("response_id")[["role", "subject_age_years", "subject_sex"]]
