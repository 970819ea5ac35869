"""Read helpers: current (non-superseded) responses and item values as frames; batch and quarantine views."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine, select
from sqlalchemy import text as text_sql

from .models import Batch, Person, QuarantineRow, Response
from .packed import layout_items, unpack_rows


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
    """Long item values of current responses: response_id, instrument, item, item_key, value, missing_reason.

    One row per stored (response, item) answer, ordered by response_id, item (then instrument); value NaN
    when missing, missing_reason None when it has none. Unpacked from the item blocks.
    """
    ids, insts, items, values, reasons = [], [], [], [], []
    for lay, rid, codes, why in _layout_groups(engine, instrument, include_superseded, with_reasons=True):
        n, k = codes.shape
        ids.append(np.repeat(rid, k))
        insts.append(np.full(n * k, lay.instrument, dtype=object))
        items.append(np.tile(np.array(lay.items, dtype=object), n))
        values.append(codes.ravel())
        r = np.full((n, k), None, dtype=object)
        pos = {it: j for j, it in enumerate(lay.items)}
        for i, text in enumerate(why):
            if text:
                for it, reason in json.loads(text).items():
                    r[i, pos[it]] = reason
        reasons.append(r.ravel())
    df = pd.DataFrame({
        "response_id": _joined(ids, np.int64).astype(np.int64),
        "instrument": pd.array(_joined(insts, object), dtype="str"),
        "item": pd.array(_joined(items, object), dtype="str"),
        "value": _joined(values, np.float64),
        "missing_reason": _text_column(_joined(reasons, object)),
    })
    df = df.sort_values(["response_id", "item", "instrument"], kind="stable").reset_index(drop=True)
    df["item_key"] = df["instrument"] + "_" + df["item"]
    return df


def _text_column(values: np.ndarray) -> pd.Series:
    """A text column as `pd.read_sql` gives it: `str` dtype (NaN = NULL), or object Nones when all are NULL."""
    if any(v is not None for v in values):
        return pd.Series(pd.array(values, dtype="str"))
    return pd.Series(values, dtype=object)


@dataclass
class InstrumentItems:
    """The raw codes of one instrument, wide: rows = `response_ids` (ascending), columns = `item_codes`
    (every item any of its layouts holds), `values` float64 (NaN = missing or not delivered)."""

    instrument: str
    response_ids: np.ndarray
    item_codes: list[str]
    values: np.ndarray


@dataclass
class _Layout:
    id: int
    instrument: str
    items: list[str]


def _layouts(engine: Engine) -> dict[int, _Layout]:
    from .models import ItemLayout

    with engine.connect() as conn:
        return {r.id: _Layout(r.id, r.instrument, layout_items(r.items))
                for r in conn.execute(select(ItemLayout.id, ItemLayout.instrument, ItemLayout.items))}


def _layout_groups(engine: Engine, instrument: str | None, include_superseded: bool, with_reasons: bool = False,
                   chunk_rows: int = 65_536) -> Iterator[tuple[_Layout, np.ndarray, np.ndarray, list]]:
    """Per layout: (layout, response ids, codes matrix n x k, reasons texts or []) of the stored blocks, in
    one pass over item_block; superseded responses dropped by id unless `include_superseded`.

    Memory: the blocks of a layout are joined into one bytes chunk (and their ids into an int64 array) every
    `chunk_rows` blocks, so the pass holds about the raw codes (8 bytes per answer), not Python objects per
    block; each layout's matrix is then filled chunk by chunk, freeing the chunks as it goes.
    """
    layouts = _layouts(engine)
    pg = engine.dialect.name == "postgresql"
    cols = "response_id, layout_id, codes" + (", reasons" if with_reasons else "")
    sql, params = f"SELECT {cols} FROM item_block", ()
    if instrument is not None:
        sql += " WHERE instrument = " + ("%s" if pg else "?")
        params = (instrument,)
    ids: dict[int, list[int]] = {}
    blobs: dict[int, list[bytes]] = {}
    why: dict[int, list] = {}
    chunks: dict[int, list[tuple[np.ndarray, bytes]]] = {}

    def seal(lid: int) -> None:
        if ids[lid]:
            chunks[lid].append((np.asarray(ids[lid], dtype=np.int64), b"".join(blobs[lid])))
            ids[lid], blobs[lid] = [], []

    with engine.connect() as conn:  # the driver's cursor: about 3x faster than SQLAlchemy rows for blobs
        raw = conn.connection.driver_connection
        cur = raw.cursor(name="cf_item_blocks") if pg else raw.cursor()  # PostgreSQL: server-side, streamed
        try:
            cur.execute(sql, params)
            while part := cur.fetchmany(chunk_rows):
                for row in part:
                    lid = row[1]
                    if lid not in ids:
                        ids[lid], blobs[lid], why[lid], chunks[lid] = [], [], [], []
                    ids[lid].append(row[0])
                    blobs[lid].append(row[2])
                    if with_reasons:
                        why[lid].append(row[3])
                    if len(ids[lid]) >= chunk_rows:
                        seal(lid)
        finally:
            cur.close()
    old = None if include_superseded else superseded_response_ids(engine)
    for lid in sorted(ids):
        seal(lid)
        lay = layouts[lid]
        k = len(lay.items)
        parts = chunks.pop(lid)
        rid = np.concatenate([p[0] for p in parts])
        codes = np.empty((len(rid), k), dtype=np.float64)
        lo = 0
        while parts:
            r, buf = parts.pop(0)
            codes[lo:lo + len(r)] = unpack_rows([buf], len(r) * k).reshape(len(r), k)
            lo += len(r)
        texts = why.pop(lid)
        if old is not None and len(old):
            keep = ~np.isin(rid, old)
            if not keep.all():
                rid, codes = rid[keep], codes[keep]
                texts = [t for t, k_ in zip(texts, keep, strict=False) if k_] if texts else texts
        if len(rid):
            yield lay, rid, codes, texts


def item_matrices(engine: Engine, include_superseded: bool = False, instrument: str | None = None,
                  chunk_rows: int = 65_536) -> Iterator[InstrumentItems]:
    """Wide raw codes per instrument (ordered by instrument code), straight from the item blocks: no long
    frame is built, memory is about the float64 matrices (8 bytes per stored answer)."""
    by_inst: dict[str, list[tuple[_Layout, np.ndarray, np.ndarray]]] = {}
    for lay, rid, codes, _ in _layout_groups(engine, instrument, include_superseded, chunk_rows=chunk_rows):
        by_inst.setdefault(lay.instrument, []).append((lay, rid, codes))
    for name in sorted(by_inst):
        parts = by_inst.pop(name)
        items: list[str] = []
        for lay, _, _ in parts:
            items += [it for it in lay.items if it not in items]
        if len(parts) == 1 and parts[0][0].items == items:
            rid, values = parts[0][1], parts[0][2]
        else:
            col = {it: j for j, it in enumerate(items)}
            rid = np.concatenate([p[1] for p in parts])
            values = np.full((len(rid), len(items)), np.nan)
            lo = 0
            for lay, r, codes in parts:
                values[lo:lo + len(r), [col[it] for it in lay.items]] = codes
                lo += len(r)
            del parts
        order = np.argsort(rid, kind="stable")
        if (order != np.arange(len(rid))).any():
            rid, values = rid[order], values[order]
        yield InstrumentItems(name, rid, items, np.ascontiguousarray(values))


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
_NULL_FLOAT = -1.7976931348623157e308  # stands for NULL in SQLite reads (not a value a questionnaire gives)


def _joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts) if parts else np.array([], dtype=dtype)


def superseded_response_ids(engine: Engine) -> np.ndarray:
    """Ids of superseded responses (usually few), to filter long tables without a join."""
    with engine.connect() as conn:
        ids = conn.execute(select(Response.id).where(Response.superseded.is_(True))).scalars().all()
    return np.asarray(ids, dtype=np.int64)


def _combo_categorical(combos: list[tuple], j: int, combo: np.ndarray) -> pd.Categorical:
    """Column `j` of the distinct text combinations `combos`, taken per row by `combo` (row -> combination
    index), as a categorical with lexically sorted categories."""
    values = [row[j] for row in combos]
    names_sorted = sorted(set(values))
    pos = {v: i for i, v in enumerate(names_sorted)}
    remap = np.array([pos[v] for v in values] or [0], dtype=np.int32)
    return pd.Categorical.from_codes(remap[combo] if len(combo) else combo.astype(np.int32),
                                     categories=pd.Index(names_sorted, dtype="str"))


def read_compact(engine: Engine, table: str, kinds: dict[str, str], chunk_rows: int = _CHUNK_ROWS) -> pd.DataFrame:
    """Read columns of `table` into a compact frame, streamed in chunks (row order unspecified).

    `kinds`: column -> `int` (int64; exactly one, the row's id, first), `cat` (categorical with lexically
    sorted categories; NOT NULL columns), `float` (float64, NULL = NaN) or `bool` (pandas `boolean`, NULL =
    NA). PostgreSQL: `COPY ... TO STDOUT` parsed by pandas' C reader. SQLite: the text columns are replaced in
    SQL by the code of their distinct combination (a small temporary table) and packed with the id and the
    booleans into one integer, so the driver builds two or three numbers per row instead of text objects
    (about 3x faster). Memory stays a few bytes per value.
    """
    names = list(kinds)
    query = f"SELECT {', '.join(names)} FROM {table}"
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
    id_col = names[0]
    if kinds[id_col] != "int" or any(k == "int" for k in list(kinds.values())[1:]):
        raise ValueError(f"read_compact: the first column must be the only `int` column, got {kinds}")
    cats = [c for c, k in kinds.items() if k == "cat"]
    bools = [c for c, k in kinds.items() if k == "bool"]
    floats = [c for c, k in kinds.items() if k == "float"]
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        cur = raw.cursor()
        try:
            combos: list[tuple] = [()]
            join, combo_expr = "", "0"
            if cats:
                cur.execute("DROP TABLE IF EXISTS temp.cf_combo")
                cur.execute(f"CREATE TEMPORARY TABLE cf_combo AS SELECT DISTINCT {', '.join(cats)} FROM {table}")
                cur.execute(f"CREATE UNIQUE INDEX temp.cf_combo_key ON cf_combo ({', '.join(cats)})")
                combos = cur.execute(f"SELECT rowid - 1, {', '.join(cats)} FROM cf_combo ORDER BY rowid").fetchall()
                combos = [c[1:] for c in combos]
                join = " JOIN temp.cf_combo c ON " + " AND ".join(f"c.{c} = t.{c}" for c in cats)
                combo_expr = "(c.rowid - 1)"
            n_combo = max(len(combos), 1)
            packed = f"(t.{id_col} * {n_combo} + {combo_expr})"
            for b in bools:
                packed = f"({packed} * 3 + coalesce(t.{b}, 2))"
            # NULL -> a sentinel in SQL: the driver then returns plain floats (None would take numpy's slow path)
            sql = f"SELECT {packed}{''.join(f', ifnull(t.{f}, {_NULL_FLOAT!r})' for f in floats)} FROM {table} t{join}"
            keys: list[np.ndarray] = []
            vals: dict[str, list[np.ndarray]] = {f: [] for f in floats}
            cur.execute(sql)
            while rows := cur.fetchmany(chunk_rows):
                if floats:
                    cols = list(zip(*rows, strict=True))
                    keys.append(np.fromiter(cols[0], dtype=np.int64, count=len(rows)))
                    for f, col in zip(floats, cols[1:], strict=True):
                        v = np.array(col, dtype=np.float64)
                        v[v == _NULL_FLOAT] = np.nan
                        vals[f].append(v)
                else:
                    keys.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
            if cats:
                cur.execute("DROP TABLE IF EXISTS temp.cf_combo")
        finally:
            cur.close()
    key = _joined(keys, np.int64)
    decoded: dict[str, np.ndarray] = {}
    for b in reversed(bools):
        key, decoded[b] = np.divmod(key, 3)
    ids, combo = np.divmod(key, n_combo)
    out: dict[str, object] = {}
    for c, k in kinds.items():
        if k == "int":
            out[c] = ids
        elif k == "float":
            out[c] = _joined(vals[c], np.float64)
        elif k == "bool":
            v = decoded[c]
            out[c] = pd.arrays.BooleanArray(v == 1, v == 2)
        else:
            out[c] = _combo_categorical(combos, cats.index(c), combo)
    return pd.DataFrame(out)


def item_values_compact(engine: Engine, include_superseded: bool = False,
                        chunk_rows: int = _CHUNK_ROWS) -> pd.DataFrame:
    """All item values as a compact frame `response_id` (int64), `instrument`, `item` (categoricals with
    sorted categories: every instrument and item code stored, superseded responses included), `value`
    (float64, NaN = missing); unordered. About 20 bytes per item value, unpacked from the item blocks."""
    ids, insts, items, values = [], [], [], []
    in_use = _layouts_in_use(engine)
    inst_names = sorted({lay.instrument for lay in in_use})
    item_names = sorted({it for lay in in_use for it in lay.items})
    ipos = {v: i for i, v in enumerate(inst_names)}
    tpos = {v: i for i, v in enumerate(item_names)}
    for lay, rid, codes, _ in _layout_groups(engine, None, include_superseded, chunk_rows=chunk_rows):
        n, k = codes.shape
        ids.append(np.repeat(rid, k))
        insts.append(np.full(n * k, ipos[lay.instrument], dtype=np.int32))
        items.append(np.tile(np.array([tpos[it] for it in lay.items], dtype=np.int32), n))
        values.append(codes.ravel())
    return pd.DataFrame({
        "response_id": _joined(ids, np.int64).astype(np.int64),
        "instrument": pd.Categorical.from_codes(_joined(insts, np.int32),
                                                categories=pd.Index(inst_names, dtype="str")),
        "item": pd.Categorical.from_codes(_joined(items, np.int32), categories=pd.Index(item_names, dtype="str")),
        "value": _joined(values, np.float64),
    })


def _layouts_in_use(engine: Engine) -> list[_Layout]:
    with engine.connect() as conn:
        used = set(conn.execute(text_sql("SELECT DISTINCT layout_id FROM item_block")).scalars())
    return [lay for lid, lay in _layouts(engine).items() if lid in used]


def scores_compact(engine: Engine, include_superseded: bool = False) -> pd.DataFrame:
    """Stored scores as a compact frame `response_id, instrument, scale, score, above_cutoff` (categoricals,
    float64, boolean); unordered. The columns linkage needs, for large warehouses."""
    frame = _sqlite_scores_compact(engine) if engine.dialect.name == "sqlite" else None
    if frame is None:
        frame = read_compact(engine, "score",
                             {"response_id": "int", "instrument": "cat", "scale": "cat", "score": "float",
                              "above_cutoff": "bool"})
    return _current(engine, frame, include_superseded)


def _sqlite_scores_compact(engine: Engine, chunk_rows: int = _CHUNK_ROWS) -> pd.DataFrame | None:
    """`scores_compact` on SQLite: the (instrument, scale) pair replaced in SQL by its code in a small
    temporary table and packed with the response id and the cut-off flag into one number, the score beside it;
    each fetched chunk becomes one float64 array in one numpy call (the packed number stays below 2**53, so
    it is exact). None when the packed number would not fit (then `read_compact` reads it)."""
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        cur = raw.cursor()
        try:
            max_id = cur.execute("SELECT max(response_id) FROM score").fetchone()[0] or 0
            cur.execute("DROP TABLE IF EXISTS temp.cf_score_combo")
            cur.execute("CREATE TEMPORARY TABLE cf_score_combo AS SELECT DISTINCT instrument, scale FROM score")
            cur.execute("CREATE UNIQUE INDEX temp.cf_score_combo_key ON cf_score_combo (instrument, scale)")
            combos = cur.execute("SELECT rowid - 1, instrument, scale FROM cf_score_combo ORDER BY rowid").fetchall()
            n_combo = max(len(combos), 1)
            if (max_id + 1) * n_combo * 3 >= 2**53:
                return None
            sql = (f"SELECT ((t.response_id * {n_combo} + (c.rowid - 1)) * 3 + coalesce(t.above_cutoff, 2)), "
                   f"ifnull(t.score, {_NULL_FLOAT!r}) FROM score t JOIN temp.cf_score_combo c "
                   "ON c.instrument = t.instrument AND c.scale = t.scale")
            parts: list[np.ndarray] = []
            cur.execute(sql)
            while rows := cur.fetchmany(chunk_rows):
                parts.append(np.array(rows, dtype=np.float64))
            cur.execute("DROP TABLE IF EXISTS temp.cf_score_combo")
        finally:
            cur.close()
    data = np.concatenate(parts) if parts else np.empty((0, 2), dtype=np.float64)
    del parts
    key = data[:, 0].astype(np.int64)
    score = data[:, 1].copy()
    del data
    score[score == _NULL_FLOAT] = np.nan
    key, flag = np.divmod(key, 3)
    ids, combo = np.divmod(key, n_combo)
    del key
    out: dict[str, object] = {"response_id": ids}
    for j, c in ((1, "instrument"), (2, "scale")):
        out[c] = _combo_categorical(combos, j, combo)
    out["score"] = score
    out["above_cutoff"] = pd.arrays.BooleanArray(flag == 1, flag == 2)
    return pd.DataFrame(out)


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


class ForkedFrame:
    """A frame made by `make(*args)` in a forked child process while this process goes on (the machine's
    second core), handed back through a pipe as raw column buffers: `result()` waits for it.

    The child inherits the parent's memory copy-on-write (the parent's objects are frozen for the garbage
    collector across the fork, so the child's collections do not touch their pages) and must not use the
    parent's database connections: a `make` that reads the database opens its own engine
    (`scores_compact_forked` does). Columns of numpy dtypes, categoricals and masked (nullable) arrays travel
    as their buffers; any other column is pickled. An error in the child is raised by `result()` with the
    child's traceback; `close()` (also on garbage collection) ends a child whose result is not wanted. Where
    `os.fork` does not exist the frame is made in place, at once."""

    def __init__(self, make, *args) -> None:  # noqa: ANN001
        import contextlib
        import gc
        import os

        self._frame: pd.DataFrame | None = None
        self._pid = 0
        self._fd = -1
        self._owner = os.getpid()
        if not hasattr(os, "fork"):
            self._frame = make(*args)
            return
        rfd, wfd = os.pipe()
        thaw = gc.get_freeze_count() == 0  # leave objects frozen by someone else frozen
        gc.freeze()
        try:
            pid = os.fork()
        except BaseException:
            if thaw:
                gc.unfreeze()
            os.close(rfd)
            os.close(wfd)
            raise
        if pid == 0:  # the child: make the frame, send it, leave without running the parent's exit code
            os.close(rfd)
            status = 0
            try:
                _send_frame(wfd, make(*args))
            except BaseException:  # noqa: BLE001 - everything goes back to the parent
                import traceback

                status = 1
                with contextlib.suppress(BaseException):  # unless the parent stopped listening
                    _send_blob(wfd, {"error": traceback.format_exc()})
            finally:
                os._exit(status)
        if thaw:
            gc.unfreeze()
        os.close(wfd)
        self._pid, self._fd = pid, rfd

    def result(self) -> pd.DataFrame:
        """The child's frame (waits for it); raises RuntimeError with the child's traceback if it failed."""
        if self._frame is not None:
            return self._frame
        if self._fd < 0:
            raise RuntimeError("ForkedFrame: closed before its result was taken")
        try:
            self._frame = _receive_frame(self._fd)
        finally:
            self.close()
        return self._frame

    def close(self) -> None:
        """Stop listening to the child and reap it (a child still sending gets a broken pipe and exits)."""
        import os

        if os.getpid() != self._owner:  # a copy inherited by some other forked process: not ours to end
            return
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._pid:
            os.waitpid(self._pid, 0)
            self._pid = 0

    def __del__(self) -> None:
        self.close()


def _write_all(fd: int, data: memoryview | bytes) -> None:
    import os

    view = memoryview(data).cast("B")
    while len(view):
        view = view[os.write(fd, view[:1 << 24]):]


def _read_into(fd: int, view: memoryview) -> None:
    import os

    view = view.cast("B")
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:got + (1 << 24)]])
        if n == 0:
            raise RuntimeError("ForkedFrame: the child process ended before sending its whole result "
                               "(killed, or out of memory?)")
        got += n


def _send_blob(fd: int, obj: object) -> None:
    import pickle

    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, len(blob).to_bytes(8, "little") + blob)


def _receive_blob(fd: int) -> object:
    import pickle

    size = bytearray(8)
    _read_into(fd, memoryview(size))
    blob = bytearray(int.from_bytes(size, "little"))
    _read_into(fd, memoryview(blob))
    return pickle.loads(blob)


def _send_frame(fd: int, frame: pd.DataFrame) -> None:
    """A header (column names, kinds, dtypes, categories; pickled) then every column's raw buffers."""
    header: list[tuple] = []
    buffers: list[np.ndarray] = []
    for name in frame.columns:
        col = frame[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            codes = np.ascontiguousarray(col.cat.codes.to_numpy())
            header.append((name, "cat", codes.dtype.str, col.dtype))
            buffers.append(codes)
        elif isinstance(col.dtype, np.dtype) and col.dtype.kind in "biufcmM":
            values = np.ascontiguousarray(col.to_numpy())
            header.append((name, "np", values.dtype.str, None))
            buffers.append(values)
        elif hasattr(col.array, "_data") and hasattr(col.array, "_mask"):  # nullable (masked) arrays
            data, mask = np.ascontiguousarray(col.array._data), np.ascontiguousarray(col.array._mask)
            header.append((name, "masked", data.dtype.str, col.dtype))
            buffers += [data, mask]
        else:
            header.append((name, "pickle", "", col))
    _send_blob(fd, {"rows": len(frame), "index": frame.index if not isinstance(frame.index, pd.RangeIndex)
                    or frame.index.start != 0 or frame.index.step != 1 else None, "columns": header})
    for buf in buffers:
        if buf.nbytes:
            _write_all(fd, memoryview(buf.view(np.uint8).reshape(-1)))


def _receive_frame(fd: int) -> pd.DataFrame:
    head = _receive_blob(fd)
    if "error" in head:
        raise RuntimeError(f"ForkedFrame: the child process failed:\n{head['error']}")
    n = head["rows"]

    def take(dtype: str) -> np.ndarray:
        arr = np.empty(n, dtype=np.dtype(dtype))
        if arr.nbytes:
            _read_into(fd, memoryview(arr.view(np.uint8).reshape(-1)))
        return arr

    out: dict[str, object] = {}
    for name, kind, dtype, extra in head["columns"]:
        if kind == "cat":
            out[name] = pd.Categorical.from_codes(take(dtype), dtype=extra)
        elif kind == "np":
            out[name] = take(dtype)
        elif kind == "masked":
            data, mask = take(dtype), take("|b1")
            out[name] = extra.construct_array_type()(data, mask)
        else:
            out[name] = extra.array
    frame = pd.DataFrame(out, copy=False)
    if head["index"] is not None:
        frame.index = head["index"]
    return frame


def _scores_compact_in_child(engine: Engine, include_superseded: bool) -> pd.DataFrame:
    """`scores_compact` through a new engine of the same database: the parent's engine and its pooled
    connections are left untouched (not closed nor freed: a freed PostgreSQL connection would tell the server
    to end the parent's session)."""
    from .db import get_engine

    return scores_compact(get_engine(engine.url.render_as_string(hide_password=False)), include_superseded)


def scores_compact_forked(engine: Engine, include_superseded: bool = False) -> ForkedFrame:
    """`scores_compact` read by a forked child process while this one goes on; `.result()` is the frame
    (the same columns, dtypes, values and row order)."""
    return ForkedFrame(_scores_compact_in_child, engine, include_superseded)


def read_frame(engine: Engine, query, date_columns: tuple[str, ...] = ()) -> pd.DataFrame:  # noqa: ANN001
    """`pd.read_sql(query, conn)` with `pd.to_datetime` applied to `date_columns`: the same frame (values,
    dtypes), about twice as fast. The compiled query runs on the driver's cursor and its rows go through
    pandas' own read_sql conversion; on SQLite, whose driver gives dates as ISO text, the `date_columns`
    become `datetime.date` values first, as SQLAlchemy's SQLite `Date` type makes them (one parse per distinct
    date). `query`: a SQLAlchemy select whose `date_columns` are `Date` columns."""
    import datetime as dt

    try:
        from pandas.io.sql import _wrap_result
    except ImportError:  # pandas moved its helper: the slower public path gives the same frame
        with engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        for c in date_columns:
            frame[c] = pd.to_datetime(frame[c])
        return frame
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        cur = conn.connection.driver_connection.cursor()
        try:
            cur.execute(sql)
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
        finally:
            cur.close()
    if engine.dialect.name == "sqlite" and date_columns and rows:
        at = [columns.index(c) for c in date_columns]
        cache: dict[str, dt.date] = {}

        def as_date(v: str | None) -> dt.date | None:
            if v is None or isinstance(v, dt.date):
                return v
            d = cache.get(v)
            if d is None:
                d = cache[v] = dt.date.fromisoformat(v)
            return d

        cols = list(zip(*rows, strict=True))
        for j in at:
            cols[j] = tuple(as_date(v) for v in cols[j])
        rows = list(zip(*cols, strict=True))
        del cols
    frame = _wrap_result(rows, columns, coerce_float=True)
    del rows
    for c in date_columns:
        frame[c] = pd.to_datetime(frame[c])
    return frame
