"""Loading export files into the warehouse: one transaction per file, every row accounted for.

Public: `ingest_file(path, engine, sources, study, instruments, key, validate=None) -> BatchReport` and
`ingest_inbox(inbox_dir, engine, ...) -> list[BatchReport]`.

A file is read and validated outside the transaction; the write (batch, households, persons, responses,
item values, quarantine rows, rule results, superseding earlier batches of the same arm/site/wave/role)
happens in one transaction behind a write lock, so a crash leaves the warehouse as it was before the file
and two concurrent ingests neither deadlock nor load a file twice. rows_in = rows_loaded +
rows_quarantined + rows_duplicate for every loaded batch. Refused files raise nothing: the report (and a
`batch` row with status `refused`) carries the message.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, func, insert, select, update

from cohortflow.config.sources import SourceDefinition
from cohortflow.config.study import Study
from cohortflow.ingest.checks import basic_validation, id_checks, study_field_checks
from cohortflow.ingest.mapping import file_digest, match_source, read_export
from cohortflow.ingest.outcome import ROW_FAILURE_COLUMNS, MappedFile, ValidationOutcome
from cohortflow.ingest.pseudonymise import pseudonyms
from cohortflow.ingest.readers import BadFileError
from cohortflow.instruments.model import Instrument

from .db import WRITE_LOCK_KEY, take_write_lock
from .models import Batch, Household, Person, QuarantineRow, Response, ValidationResult
from .packed import BLOCK_COLUMNS, block_rows, stored_answers

Validator = Callable[[MappedFile], ValidationOutcome]
FILE_SUFFIXES = (".sav", ".csv", ".xlsx", ".dta")
PRIVATE_COLUMNS = {"household_raw", "person_raw", "subject_raw", "subject_birth_date", "informant_birth_date"}
ITEM_BATCH = 50_000


@dataclass
class BatchReport:
    """What became of one file: status (`loaded`, `refused`, `skipped`) with counts and messages."""

    file_name: str
    sha256: str
    size: int
    status: str
    batch_id: int | None = None
    source: str | None = None
    source_version: str | None = None
    arm: str | None = None
    site: str | None = None
    wave: str | None = None
    role: str | None = None
    rows_in: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_duplicate: int = 0
    item_values: int = 0
    message: str = ""
    problems: list[dict[str, Any]] = field(default_factory=list)
    supersedes: list[int] = field(default_factory=list)
    read_seconds: float = 0.0
    load_seconds: float = 0.0

    @property
    def accounted(self) -> bool:
        return self.rows_in == self.rows_loaded + self.rows_quarantined + self.rows_duplicate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@lru_cache(maxsize=1)
def code_version() -> str:
    """cohortflow's version plus the git commit when run from a checkout."""
    from cohortflow import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent).stdout.strip()
    except Exception:
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _scope(fl: dict[str, str | None]) -> str:
    return "|".join(fl.get(f) or "*" for f in ("arm", "site", "wave", "role"))


def _jsonable(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    if isinstance(v, pd.Timestamp | datetime):
        return None if pd.isna(v) else v.strftime("%Y-%m-%d")
    if isinstance(v, str | int | float | bool):
        return v
    return str(v)


def _ymd(s: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Year, month, day (float arrays, NaN where missing) and the missing mask of a date column."""
    a = _day_array(s)
    nat = np.isnat(a)
    y = a.astype("datetime64[Y]").astype("int64") + 1970
    m = a.astype("datetime64[M]").astype("int64") % 12 + 1
    d = (a - a.astype("datetime64[M]")).astype("int64") + 1
    out = [v.astype("float64") for v in (y, m, d)]
    for v in out:
        v[nat] = np.nan
    return out[0], out[1], out[2], nat


def _day_array(s: pd.Series) -> np.ndarray:
    """A date column as datetime64[D] (NaT where missing); no pandas conversion when it already is datetime64."""
    if s.dtype.kind == "M":
        return s.to_numpy().astype("datetime64[D]")
    return pd.to_datetime(s).to_numpy(dtype="datetime64[D]")


def _months_between(birth: pd.Series, at: pd.Series) -> np.ndarray:
    """Completed months from birth to `at` (NaN when either is missing)."""
    by, bm, bd, _ = _ymd(birth)
    ay, am, ad, _ = _ymd(at)
    return (ay - by) * 12 + (am - bm) - (ad < bd)


def _dates(s: pd.Series) -> list[Any]:
    """ISO date strings (None for NaT): what SQLAlchemy's Date stores on SQLite and COPY accepts."""
    a = _day_array(s)
    txt = np.datetime_as_string(a, unit="D").astype(object)
    txt[np.isnat(a)] = None
    return txt.tolist()


def _ints(s: pd.Series) -> list[int | None]:
    return [None if np.isnan(v) else int(v) for v in pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)]


# --- recording refused files ----------------------------------------------------------------------

def _record_refused(engine: Engine, report: BatchReport, path: Path, source: SourceDefinition | None) -> BatchReport:
    """Store (once per SHA-256) a `refused` batch row carrying the message; return the report."""
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            take_write_lock(conn)
            row = conn.execute(select(Batch.id, Batch.status).where(Batch.sha256 == report.sha256)).first()
            if row is not None:
                report.batch_id = row.id
                if row.status != "refused":  # loaded meanwhile by another process
                    report.status, report.message = "skipped", f"{path.name}: already loaded as batch {row.id}"
                return report
            values = dict(
                file_name=path.name, file_path=str(path), sha256=report.sha256, size_bytes=report.size,
                source_name=report.source, source_version=report.source_version,
                file_format=source.format if source else path.suffix.lstrip("."),
                arm=report.arm, site=report.site, wave=report.wave, role=report.role,
                status="refused", rows_in=report.rows_in, rows_loaded=0, rows_quarantined=0, rows_duplicate=0,
                item_values=0, started_at=_now(), finished_at=_now(), read_seconds=report.read_seconds,
                load_seconds=0.0, code_version=code_version(), message=report.message, problems=report.problems,
            )
            report.batch_id = conn.execute(insert(Batch).values(**values)).inserted_primary_key[0]
    return report


def _refuse(engine: Engine, report: BatchReport, path: Path, source: SourceDefinition | None, msg: str) -> BatchReport:
    if source is not None and source.filename_regex and report.arm is None:  # what the file name tells
        m = re.fullmatch(source.filename_regex, path.name)
        for f in ("arm", "site", "wave", "role"):
            fs = getattr(source, f)
            value = fs.value if fs.value is not None else (
                m.group(fs.filename_group) if m and fs.filename_group else None)
            setattr(report, f, fs.map.get(value, value) if fs.map and value else value)
    report.status = "refused"
    report.message = msg
    report.rows_loaded = report.rows_quarantined = report.rows_duplicate = report.item_values = 0
    return _record_refused(engine, report, path, source)


# --- the main entry ---------------------------------------------------------------------------------

def ingest_file(
    path: Path | str,
    engine: Engine,
    sources: list[SourceDefinition],
    study: Study,
    instruments: dict[str, Instrument],
    key: bytes,
    validate: Validator | None = None,
) -> BatchReport:
    """Load one export file in one transaction and return its BatchReport (never raises for bad files).

    Without `validate`, the basic checks apply (ids present, codes allowed by the instrument definitions,
    duplicates). A file whose SHA-256 is already loaded is skipped; a new file for an arm/site/wave/role
    already loaded supersedes the earlier batch (its rows stay, marked superseded).
    """
    path = Path(path)
    t0 = time.perf_counter()
    report = already_loaded(path, engine)
    if report.status == "skipped":
        return report
    source, mapped, error = read_file(path, sources, instruments, report, t0)
    if mapped is None or source is None:
        return _refuse(engine, report, path, source, error)
    outcome = validate(mapped) if validate is not None else basic_validation(mapped, instruments, study)
    return load_validated(engine, path, source, mapped, outcome, study, key, report, t0)


def already_loaded(path: Path, engine: Engine, known: dict[str, tuple[int, str]] | None = None,
                   digest: tuple[str, int] | None = None) -> BatchReport:
    """A fresh report for `path` (SHA-256, size); status `skipped` when that SHA-256 is already loaded.

    `known`: the batches of these files as `stored_batches` gave them (no query then); `digest`: the
    file's (SHA-256, size) when already computed."""
    sha, size = digest if digest is not None else file_digest(path)
    report = BatchReport(file_name=path.name, sha256=sha, size=size, status="pending")
    if known is None:
        with engine.connect() as conn:
            found = conn.execute(select(Batch.id, Batch.status).where(Batch.sha256 == sha)).first()
        row = None if found is None else (found.id, found.status)
    else:
        row = known.get(sha)
    if row is not None and row[1] != "refused":
        report.status, report.batch_id = "skipped", row[0]
        report.message = f"{path.name}: already loaded as batch {row[0]} (same SHA-256); nothing to do."
    return report


def stored_batches(engine: Engine, shas: Iterable[str]) -> dict[str, tuple[int, str]]:
    """SHA-256 -> (batch id, status) of the given digests already in the warehouse (one query per 900)."""
    with engine.connect() as conn:
        return {sha: (bid, status) for bid, sha, status in select_in(
            conn, "SELECT id, sha256, status FROM batch WHERE sha256 IN ({ins})", sorted(set(shas)))}


def read_file(path: Path, sources: list[SourceDefinition], instruments: dict[str, Instrument], report: BatchReport,
              t0: float) -> tuple[SourceDefinition | None, MappedFile | None, str]:
    """Match and read one export: (source, mapped, "") or, when it cannot be read, (source, None, message).

    Fills the report's source, arm/site/wave/role, rows_in, problems and read_seconds; writes nothing.
    """
    source: SourceDefinition | None = None
    try:
        source = match_source(path, sources)
        report.source, report.source_version = source.name, source.version
        mapped = read_export(path, source, instruments)
    except BadFileError as exc:
        msg = str(exc)
    except Exception as exc:  # an export the readers did not foresee: refuse it, keep the run going
        msg = (f"{path.name}: could not be read with source {source.label if source else '?'} "
               f"({type(exc).__name__}: {exc}). Check the file against its source definition; if it "
               "looks right, report this message to the pipeline maintainers.")
    else:
        report.read_seconds = time.perf_counter() - t0
        fl = mapped.meta["file_level"]
        report.arm, report.site, report.wave, report.role = fl["arm"], fl["site"], fl["wave"], fl["role"]
        report.rows_in = len(mapped.frame)
        report.problems = mapped.meta["problems"]
        return source, mapped, ""
    report.read_seconds = time.perf_counter() - t0
    return source, None, msg


def refuse(engine: Engine, report: BatchReport, path: Path, source: SourceDefinition | None, msg: str) -> BatchReport:
    """Mark `report` refused with `msg` and record the refusal (once per SHA-256)."""
    return _refuse(engine, report, path, source, msg)


@dataclass
class LoadPlan:
    """What `load_validated` computes from a file and its validation outcome alone, without the database: the
    study-field refusals, the rows' failures and the prepared (pseudonymised, derived) rows. `plan_load` makes
    it ahead of the load, so a caller can prepare the next file while another thread loads this one."""

    outcome: ValidationOutcome
    file_errors: list[str]
    failures: pd.DataFrame | None = None
    prepared: _Prepared | None = None


def plan_load(mapped: MappedFile, outcome: ValidationOutcome, study: Study, key: bytes) -> LoadPlan:
    """The load plan of a read file for its validation outcome (no database access)."""
    file_errors, study_rows = study_field_checks(mapped, study)
    file_errors += list(outcome.file_errors)
    if file_errors:
        return LoadPlan(outcome, file_errors)
    failures = _row_failures(mapped, outcome, study_rows)
    quarantine_reasons = _reasons_by_row(failures[failures["severity"] == "quarantine"])
    return LoadPlan(outcome, [], failures, _prepare_rows(mapped, key, quarantine_reasons))


def load_validated(engine: Engine, path: Path, source: SourceDefinition, mapped: MappedFile,
                   outcome: ValidationOutcome, study: Study, key: bytes, report: BatchReport,
                   t0: float, durable: bool = True, known_persons: set[str] | None = None,
                   plan: LoadPlan | None = None) -> BatchReport:
    """Load a read and validated file in its one transaction (or refuse it); returns the report.

    `durable=False` (PostgreSQL): the commit does not wait for its WAL flush (`synchronous_commit = off` for
    this transaction only: still all or nothing, visible and locked exactly as before, but a crash of the
    database server within a fraction of a second after the commit could lose the whole file). The caller
    must then call `flush_commits(engine)` before it reports the files as loaded (`ingest_files` does).
    `known_persons`: pseudonyms of this file's persons already in the warehouse (persons are never deleted);
    they are not offered to the person upsert again (it would leave them as they are anyway).
    `plan`: `plan_load(mapped, outcome, study, key)` made ahead; made here when missing or made for another
    outcome."""
    if plan is None or plan.outcome is not outcome:
        plan = plan_load(mapped, outcome, study, key)
    if plan.file_errors:
        return _refuse(engine, report, path, source, "\n".join(plan.file_errors))
    assert plan.failures is not None and plan.prepared is not None
    try:
        return _write(engine, path, source, mapped, outcome, plan.failures, plan.prepared, report, t0, durable,
                      known_persons)
    except _AllRowsInvalid as exc:
        return _refuse(engine, report, path, source, str(exc))


class _AllRowsInvalid(Exception):
    pass


def _row_failures(mapped: MappedFile, outcome: ValidationOutcome, study_rows: list[dict]) -> pd.DataFrame:
    """All row-level failures: reading issues, study fields, ids, validation; private values redacted."""
    ids = id_checks(mapped)
    parts = [mapped.row_issues, pd.DataFrame(study_rows, columns=ROW_FAILURE_COLUMNS) if study_rows else None,
             pd.DataFrame(ids, columns=[*ROW_FAILURE_COLUMNS, "expected"]) if ids else None, outcome.row_failures]
    parts = [p for p in parts if p is not None and len(p)]
    if not parts:
        return pd.DataFrame(columns=ROW_FAILURE_COLUMNS)
    f = pd.concat(parts, ignore_index=True)
    if "severity" not in f:
        f["severity"] = "quarantine"
    f["severity"] = f["severity"].fillna("quarantine")
    private = f["column"].isin(PRIVATE_COLUMNS | {"subject_birth_date", "informant_birth_date", "birth_date"})
    f["value"] = f["value"].astype(object).where(~private, "<redacted>")
    return f


def _reasons_by_row(f: pd.DataFrame) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    extra = "expected" in f.columns
    for rec in f.itertuples(index=False):
        reason = {"rule": rec.rule, "column": rec.column, "value": _jsonable(rec.value)}
        if extra and isinstance(rec.expected, str):
            reason["expected"] = rec.expected
        out.setdefault(int(rec.row_number), []).append(reason)
    return out


@dataclass
class _Prepared:
    frame: pd.DataFrame  # pseudonymised, derived; no raw ids, no birth dates
    item_keys: list[str]
    codes: np.ndarray  # rows x items, raw codes
    reasons: np.ndarray  # rows x items, missing reason or None
    quarantine: dict[int, list[dict[str, Any]]]
    duplicate_rows: set[int]


def _prepare_rows(mapped: MappedFile, key: bytes, quarantine: dict[int, list[dict]]) -> _Prepared:
    """Pseudonymise ids, derive age and T0 days, drop private columns, find duplicates within the file."""
    f = mapped.frame
    resp = _day_array(f["response_date"])
    reg = _day_array(f["registration_date"])
    days = (resp - reg).astype("int64").astype("float64")
    days[np.isnat(resp) | np.isnat(reg)] = np.nan
    d = _frame({
        "row_number": f["row_number"].to_numpy(dtype="int64"),
        "arm": _objects(f["arm"]), "site": _objects(f["site"]), "wave": _objects(f["wave"]),
        "role": _objects(f["role"]),
        **_pseudonym_columns(mapped, key),
        "response_date": f["response_date"].to_numpy(), "registration_date": f["registration_date"].to_numpy(),
        "subject_sex": _objects(f["subject_sex"]), "informant_sex": _objects(f["informant_sex"]),
        "subject_birth_year": _ymd(f["subject_birth_date"])[0],
        "informant_birth_year": _ymd(f["informant_birth_date"])[0],
        "subject_age_months": _months_between(f["subject_birth_date"], f["response_date"]),
        "days_since_t0": days,
    }, f.index)
    keys = mapped.item_columns
    codes = _columns(f, keys, "float64")
    reasons = _columns(mapped.missing_reasons, keys, object)
    reasons = np.where(pd.isna(reasons), None, reasons).astype(object)  # text columns may hold NaN for None
    # duplicates within the file: an exact copy of an earlier row (every column and missing reason equal) is a
    # duplicate even when validation flagged it; then rows with the same person, subject, role, wave
    kcols = ["person_id", "subject_id", "role", "wave", "arm"]
    quarantine = {k: list(v) for k, v in quarantine.items()}
    dup_rows: set[int] = set()
    if len(set(zip(*(d[c].tolist() for c in kcols), strict=True))) == len(d):  # the common case: no repeated key
        return _Prepared(d, keys, codes, reasons, quarantine, dup_rows)
    exact = _exact_copies(f, mapped.missing_reasons, d, kcols)
    dup_rows = set(d["row_number"].to_numpy()[exact].tolist())
    quarantine = {k: v for k, v in quarantine.items() if k not in dup_rows}
    ok = ~d["row_number"].isin(list(quarantine)).to_numpy() & ~exact
    cand = d[ok]
    dupmask = cand.duplicated(kcols, keep=False)
    if dupmask.any():
        sig = pd.DataFrame(np.where(np.isnan(codes), -1e300, codes)[ok], index=cand.index).astype(str).agg("|".join, axis=1)
        sig = sig + "|" + cand["response_date"].astype(str)
        for _, grp in cand[dupmask].groupby(kcols, sort=False):
            rows = grp["row_number"].tolist()
            if sig.loc[grp.index].nunique() == 1:
                dup_rows.update(rows[1:])
            else:
                for r in rows:
                    quarantine.setdefault(int(r), []).append({
                        "rule": "conflicting_duplicate", "column": "person_id",
                        "value": f"rows {', '.join(map(str, rows))} differ for the same person, wave and role"})
    return _Prepared(d, keys, codes, reasons, quarantine, dup_rows)


def _columns(frame: pd.DataFrame, keys: list[str], dtype: object) -> np.ndarray:
    """The `keys` columns as one array (a view of the trailing block when they are the frame's last columns)."""
    if not keys:
        return np.zeros((len(frame), 0), dtype=dtype)  # type: ignore[call-overload]
    if list(frame.columns[-len(keys):]) == list(keys):
        return frame.iloc[:, len(frame.columns) - len(keys):].to_numpy(dtype=dtype)  # type: ignore[arg-type]
    return frame[keys].to_numpy(dtype=dtype)  # type: ignore[arg-type]


def _exact_copies(f: pd.DataFrame, reasons: pd.DataFrame, d: pd.DataFrame, kcols: list[str]) -> np.ndarray:
    """Rows that repeat an earlier row of the file in every column (row number aside) and missing reason."""
    maybe = d.duplicated(kcols, keep=False).to_numpy()
    if not maybe.any():
        return np.zeros(len(d), dtype=bool)
    content = pd.concat([f.drop(columns=["row_number"]).reset_index(drop=True),
                         reasons.add_prefix("missing_reason:").reset_index(drop=True)], axis=1)
    return content.duplicated(keep="first").to_numpy() & maybe


def _split_key(instruments_keys: list[str], item_index: dict[str, tuple[str, str]]) -> tuple[list[str], list[str]]:
    inst = [item_index[k][0] for k in instruments_keys]
    item = [item_index[k][1] for k in instruments_keys]
    return inst, item


def _begin_load(conn: Connection, sha256: str, scope: str, durable: bool) -> tuple[tuple | None, list[int]]:
    """Inside the open transaction: take the write lock, then (batch id, status) of this SHA-256 if stored and
    the ids of the loaded batches of this scope, in as few round trips as the backend needs (PostgreSQL: the
    lock with this transaction's settings, then one query; each statement of a PostgreSQL transaction costs a
    round trip to the server, 1-2 ms each on a busy machine)."""
    if conn.dialect.name == "postgresql":  # every statement of the load transaction is a key look-up or an
        # insert; the statistics of tables an ingest run is filling lag behind and made the planner scan them
        settings = ", set_config('enable_seqscan', 'off', true)" + (
            "" if durable else ", set_config('synchronous_commit', 'off', true)")
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock(%s){settings}", (WRITE_LOCK_KEY,))
        conn.info[_SEQSCAN_OFF] = conn.get_transaction()
        mark = "%s"
    else:
        take_write_lock(conn)  # BEGIN IMMEDIATE already holds SQLite's write lock
        conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")  # a larger page cache for this
        conn.exec_driver_sql(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_PAGES}")  # connection; checkpoint seldom
        mark = "?"
    found: tuple | None = None
    earlier: list[int] = []
    for bid, status, scoped in conn.exec_driver_sql(  # a new statement after the lock: it sees what the last
            f"SELECT id, status, 0 FROM batch WHERE sha256 = {mark} "  # writer committed
            f"UNION ALL SELECT id, status, 1 FROM batch WHERE scope = {mark} AND status = 'loaded'",
            (sha256, scope)).all():
        if scoped:
            earlier.append(int(bid))
        else:
            found = (int(bid), status)
    return found, sorted(earlier)


def flush_commits(engine: Engine) -> None:
    """PostgreSQL: make every commit before this call durable (a synchronous commit flushes all the WAL before
    it: one small write transaction that changes nothing visible). SQLite: nothing to do."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        conn.exec_driver_sql("UPDATE batch SET load_seconds = load_seconds WHERE id = (SELECT max(id) FROM batch)")


def _write(engine: Engine, path: Path, source: SourceDefinition, mapped: MappedFile, outcome: ValidationOutcome,
           failures: pd.DataFrame, p: _Prepared, report: BatchReport, t0: float, durable: bool = True,
           known_persons: set[str] | None = None) -> BatchReport:
    """The one transaction per file."""

    t_load = time.perf_counter()
    d = p.frame
    n = len(d)
    fl = mapped.meta["file_level"]
    scope = _scope(fl)
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            row, earlier = _begin_load(conn, report.sha256, scope, durable)
            if row is not None and row[1] != "refused":
                report.status, report.batch_id = "skipped", row[0]
                report.message = f"{path.name}: already loaded as batch {row[0]} (same SHA-256); nothing to do."
                return report
            refused_id = row[0] if row is not None else None
            quarantine = dict(p.quarantine)
            dup_rows = set(p.duplicate_rows)
            load_mask = ~d["row_number"].isin(list(quarantine) + list(dup_rows)).to_numpy()
            # duplicates against rows already loaded (current, not about to be superseded)
            _against_warehouse(conn, d, p, load_mask, earlier, quarantine, dup_rows)
            load_mask = ~d["row_number"].isin(list(quarantine) + list(dup_rows)).to_numpy()
            n_loaded = int(load_mask.sum())
            if n_loaded == 0 and quarantine and len(dup_rows) == 0:
                raise _AllRowsInvalid(_all_invalid_message(path, quarantine, n))
            now = _now()
            values = dict(
                file_name=path.name, file_path=str(path), sha256=report.sha256, size_bytes=report.size,
                source_name=source.name, source_version=source.version, file_format=source.format,
                arm=fl["arm"], site=fl["site"], wave=fl["wave"], role=fl["role"], scope=scope, status="loaded",
                rows_in=n, rows_loaded=n_loaded, rows_quarantined=len(quarantine), rows_duplicate=len(dup_rows),
                item_values=n_loaded * len(p.item_keys), started_at=now, finished_at=None,
                read_seconds=report.read_seconds, code_version=code_version(), message=None,
                problems=mapped.meta["problems"], supersedes=earlier or None,
            )
            if refused_id is not None:
                conn.execute(update(Batch).where(Batch.id == refused_id).values(**values))
                batch_id = refused_id
            else:
                batch_id = conn.execute(insert(Batch).values(**values)).inserted_primary_key[0]
            if earlier:
                conn.execute(update(Batch).where(Batch.id.in_(earlier)).values(status="superseded",
                                                                                 superseded_by=batch_id))
                conn.execute(update(Response).where(Response.batch_id.in_(earlier)).values(superseded=True))
            ld = d[load_mask]
            _insert_households_persons(conn, ld, batch_id, known_persons)
            first_id = (conn.execute(select(func.max(Response.id))).scalar() or 0) + 1
            resp_ids = np.arange(first_id, first_id + n_loaded, dtype=np.int64)
            _insert_responses(conn, ld, resp_ids, batch_id)
            inst, item = _split_key(p.item_keys, _item_index_for(p.item_keys, mapped))
            _insert_item_values(conn, resp_ids, inst, item, p.codes[load_mask], p.reasons[load_mask])
            _insert_quarantine(conn, d, p, quarantine, batch_id, mapped)
            _insert_rule_results(conn, outcome, failures, batch_id, n)
            report.load_seconds = time.perf_counter() - t_load
            conn.execute(update(Batch).where(Batch.id == batch_id).values(
                finished_at=_now(), load_seconds=report.load_seconds))
    report.status, report.batch_id, report.supersedes = "loaded", batch_id, earlier
    report.rows_loaded, report.rows_quarantined, report.rows_duplicate = n_loaded, len(quarantine), len(dup_rows)
    report.item_values = n_loaded * len(p.item_keys)
    n_q = len(quarantine)
    report.message = (f"{path.name}: {n} rows in, {n_loaded} loaded, {n_q} quarantined, {len(dup_rows)} duplicate"
                      + (f"; supersedes batch {', '.join(map(str, earlier))}" if earlier else ""))
    return report


def _item_index_for(keys: list[str], mapped: MappedFile) -> dict[str, tuple[str, str]]:
    """Instrument and item code of each item key (from the mapping recorded in meta)."""
    idx = mapped.meta.get("item_index")
    if idx:
        return idx
    out: dict[str, tuple[str, str]] = {}
    for k in keys:
        inst, _, item = k.rpartition("_")
        out[k] = (inst, item)
    return out


def _all_invalid_message(path: Path, quarantine: dict[int, list[dict]], n: int) -> str:
    counts: dict[str, int] = {}
    for reasons in quarantine.values():
        for r in {(x["rule"], x["column"]) for x in reasons}:
            counts[f"{r[0]} ({r[1]})"] = counts.get(f"{r[0]} ({r[1]})", 0) + 1
    top = ", ".join(f"{k}: {v} rows" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:5])
    return (f"{path.name}: all {n} rows are invalid ({top}); the file was refused whole. Check that the export "
            "belongs to this source definition and study, correct it and deliver it again.")


def _against_warehouse(conn: Connection, d: pd.DataFrame, p: _Prepared, load_mask: np.ndarray, earlier: list[int],
                       quarantine: dict[int, list[dict]], dup_rows: set[int]) -> None:
    """Rows whose person/subject/role/wave/arm is already loaded: duplicate when identical, else quarantine."""
    cand = d[load_mask]
    if cand.empty:
        return
    persons = sorted({p for p in cand["person_id"].tolist() if p is not None})
    # `superseded` is filtered here, not in SQL: SQLite would otherwise pick its low-selectivity index and scan
    # every current response for each file instead of looking the file's persons up
    skip = set(earlier)
    existing: dict[tuple, tuple[int, int]] = {}
    # only the file's waves, roles and arms can match (a few values each; no index, checked per person row)
    narrow = {c: sorted({v for v in cand[c].tolist() if v is not None}) for c in ("wave", "role", "arm")}
    if not all(narrow.values()):  # rows without a wave/role/arm match no stored response
        persons = []
    for rid, pid, sid, role, wave, arm, bid, sup in select_in(
            conn, "SELECT id, person_id, subject_id, role, wave, arm, batch_id, superseded FROM response "
                  "WHERE person_id IN ({ins})", persons, also_in=narrow):
        if not sup and bid not in skip:
            existing[(pid, sid, role, wave, arm)] = (rid, bid)
    _sex_conflicts(conn, cand, earlier, quarantine)
    if not existing:
        return
    pos = {rn: i for i, rn in enumerate(d["row_number"].tolist())}
    keys = list(zip(cand["person_id"], cand["subject_id"], cand["role"], cand["wave"], cand["arm"], strict=True))
    for rn, k in zip(cand["row_number"].tolist(), keys, strict=True):
        if k not in existing:
            continue
        rec = type("Rec", (), {"row_number": rn})
        rid, bid = existing[k]
        stored = stored_answers(conn, rid)
        i = pos[rec.row_number]
        mine = {}
        for j, key in enumerate(p.item_keys):
            reason = p.reasons[i, j]
            v = None if reason is not None or np.isnan(p.codes[i, j]) else float(p.codes[i, j])
            mine[key] = (v, reason)
        if mine == stored:
            dup_rows.add(int(rec.row_number))
        else:
            quarantine.setdefault(int(rec.row_number), []).append({
                "rule": "conflicts_with_loaded", "column": "person_id",
                "value": f"batch {bid} already holds different answers for this person, wave and role; "
                         "deliver a corrected export of the whole arm/site/wave to supersede it"})


def _sex_conflicts(conn: Connection, cand: pd.DataFrame, earlier: list[int],
                   quarantine: dict[int, list[dict]]) -> None:
    """Rows giving a subject another sex than current responses already loaded for that person."""
    subjects = sorted({s for s in cand["subject_id"].tolist() if s is not None})
    skip = set(earlier)
    known: dict[str, tuple[str, int]] = {}
    for sid, sex, bid, sup in select_in(  # superseded filtered here, not in SQL: see _against_warehouse
            conn, "SELECT subject_id, subject_sex, batch_id, superseded FROM response WHERE subject_id IN ({ins}) "
                  "AND subject_sex IS NOT NULL", subjects):
        if not sup and bid not in skip:
            known.setdefault(sid, (sex, bid))
    if not known:
        return
    for rn, sid, sex in zip(cand["row_number"].tolist(), cand["subject_id"], cand["subject_sex"], strict=True):
        k = known.get(sid)
        if k is not None and isinstance(sex, str) and sex != k[0]:
            quarantine.setdefault(int(rn), []).append({
                "rule": "sex_conflict", "column": "subject_sex", "value": sex,
                "expected": f"{k[0]}, as in batch {k[1]}"})


_SEQSCAN_OFF = "cohortflow_seqscan_off"  # conn.info: the transaction in which seq scans were turned off


def select_in(conn: Connection, sql: str, values: list[Any], order: str | None = "id",
              also_in: dict[str, list[Any]] | None = None, chunk: int = 800) -> list[tuple]:
    """Rows of `sql` for `values`, plain driver statements (no SQLAlchemy compilation per file).

    In `sql`, `{ins}` stands for the IN list of `values` (`col IN ({ins})`); `also_in` adds `AND col IN (...)`
    for each column and its values. On PostgreSQL every list is one array parameter (`col = ANY(%s)`): one
    statement whatever the number of values, the same text every time (psycopg prepares it once). On SQLite the
    values go in chunks of `chunk` placeholders, each chunk ordered by `order` (a value's rows all come from one
    chunk)."""
    if not values:
        return []
    tail = f" ORDER BY {order}" if order else ""
    more = also_in or {}
    if conn.dialect.name == "postgresql":
        lists = [values, *more.values()]
        stmt = (sql.replace("IN ({ins})", f"= ANY(%s::{_pg_element_type(values)}[])")
                + "".join(f" AND {c} = ANY(%s::{_pg_element_type(v)}[])" for c, v in more.items()) + tail)
        # These look-ups always want the index. While an ingest run fills the tables their statistics lag far
        # behind (autovacuum analyses a minute or more later), and the planner, thinking the table tiny, scanned
        # all of `response` for every file (10-25 ms per file at factor 10, growing with the warehouse): seq
        # scans off for the rest of this transaction (every statement of the load transaction is a key look-up
        # or an insert). Never a prepared generic plan either (psycopg prepares after 5 executions).
        with conn.connection.driver_connection.cursor() as cur:  # same DBAPI connection, same transaction
            if conn.info.get(_SEQSCAN_OFF) is not conn.get_transaction():  # once per transaction
                cur.execute("SET LOCAL enable_seqscan = off")
                conn.info[_SEQSCAN_OFF] = conn.get_transaction()
            cur.execute(stmt, tuple(pg_array(v) for v in lists), prepare=False)
            return cur.fetchall()
    cond = "".join(f" AND {c} IN ({', '.join(['?'] * len(v))})" for c, v in more.items())
    extra = tuple(v for vs in more.values() for v in vs)
    out: list[tuple] = []
    for i in range(0, len(values), chunk):
        part = values[i:i + chunk]
        stmt = sql.format(ins=", ".join(["?"] * len(part))) + cond + tail
        out.extend(conn.exec_driver_sql(stmt, tuple(part) + extra).all())
    return out


def pg_array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal (text input form) of `values`, for a parameter cast to an array type
    (`%s::text[]`): every element double-quoted with backslash and quote escaped; None and NaN are NULL.
    Values are written with `str` (ints, dates as ISO, bools as True/False: all valid input of their type).
    psycopg adapts a Python list element by element in Python (~3 us each: 20 s of a factor-100 ingestion on
    PostgreSQL); this is one join of short strings."""
    return "{" + ",".join(
        "NULL" if v is None or (isinstance(v, float) and v != v)
        else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def _pg_element_type(values: Iterable[Any]) -> str:
    """`bigint` when every value given is an integer (ids), else `text` (pseudonyms, codes, digests)."""
    return "bigint" if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values) else "text"


def _upsert(conn: Connection, table, cols: list[str], rows: list[tuple], key: str) -> None:  # noqa: ANN001
    """Insert rows (tuples in `cols` order) whose `key` is new (ON CONFLICT DO NOTHING), sorted by key so
    writers never deadlock. PostgreSQL: one statement over one array per column (`unnest`), not one
    execution per row."""
    if not rows:
        return
    k = cols.index(key)
    rows = sorted(rows, key=lambda r: r[k])
    if conn.dialect.name == "postgresql":
        types = [table.c[c].type.compile(dialect=conn.dialect) for c in cols]
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({key}) DO NOTHING", tuple(pg_array(c) for c in zip(*rows, strict=True)))
        return
    sql = (f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join(['?'] * len(cols))}) "
           f"ON CONFLICT ({key}) DO NOTHING")
    for i in range(0, len(rows), 20_000):
        conn.exec_driver_sql(sql, rows[i:i + 20_000])


def _none(v: Any) -> Any:
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else v


def person_attributes(ld: pd.DataFrame) -> dict[str, list[Any]]:
    """Person pseudonym -> [household_id, sex, birth_year] as the `person` rows of these prepared rows
    (subjects and informants; the first row giving a value wins)."""
    people: dict[str, list[Any]] = {}
    homes = ld["household_id"].tolist()
    for id_col, sex_col, year_col in (("subject_id", "subject_sex", "subject_birth_year"),
                                      ("person_id", "informant_sex", "informant_birth_year")):
        for pid, h, sx, by in zip(ld[id_col].tolist(), homes, ld[sex_col].tolist(), ld[year_col].tolist(),
                                  strict=True):
            sx = sx if isinstance(sx, str) else None
            by = None if by is None or (by != by if isinstance(by, float) else pd.isna(by)) else int(by)
            cur = people.get(pid)
            if cur is None:
                people[pid] = [h, sx, by]
            else:
                cur[1] = cur[1] or sx
                cur[2] = cur[2] or by
    return people


def person_frame(mapped: MappedFile, key: bytes) -> pd.DataFrame:
    """The pseudonymised person columns of a mapped file (what `person_attributes` reads), for all rows."""
    f = mapped.frame
    return _frame({
        **_pseudonym_columns(mapped, key),
        "subject_sex": _objects(f["subject_sex"]), "informant_sex": _objects(f["informant_sex"]),
        "subject_birth_year": _ymd(f["subject_birth_date"])[0],
        "informant_birth_year": _ymd(f["informant_birth_date"])[0],
    }, pd.RangeIndex(len(f)))


def _pseudonym_columns(mapped: MappedFile, key: bytes) -> dict[str, np.ndarray]:
    """household_id, person_id, subject_id pseudonyms (object arrays) of a mapped file's raw ids."""
    f = mapped.frame
    return {"household_id": pseudonyms(key, "household", f["household_raw"]),
            "person_id": pseudonyms(key, "person", f["person_raw"]),
            "subject_id": pseudonyms(key, "person", f["subject_raw"])}


def _objects(s: pd.Series) -> np.ndarray:
    return s.to_numpy(dtype=object)


def _frame(columns: dict[str, np.ndarray], index: pd.Index) -> pd.DataFrame:
    """A frame from numpy columns without pandas' per-column inference (object columns stay object)."""
    return pd.DataFrame({c: pd.Series(v, index=index, dtype=v.dtype, copy=False) for c, v in columns.items()},
                        index=index, copy=False)


def _insert_households_persons(conn: Connection, ld: pd.DataFrame, batch_id: int,
                               known_persons: set[str] | None = None) -> None:
    """Households and persons not yet known (first delivery wins; later ones leave them as they are).
    `known_persons`: pseudonyms known to be stored already, left out of the person upsert."""
    days = _day_array(ld["registration_date"])
    first: dict[Any, int] = {}  # household -> its row with the earliest registration date (NaT last)
    order = np.argsort(days, kind="stable")
    for i, h in zip(order.tolist(), ld["household_id"].to_numpy(dtype=object)[order].tolist(), strict=True):
        first.setdefault(h, i)
    rows = list(first.values())
    reg_days = days[rows]
    reg = (_dates(pd.Series(reg_days)) if conn.dialect.name == "sqlite"  # ISO text, as SQLAlchemy stores it
           else [None if np.isnat(v) else v.item() for v in reg_days])
    arms, sites = ld["arm"].to_numpy(dtype=object)[rows], ld["site"].to_numpy(dtype=object)[rows]
    _upsert(conn, Household.__table__, ["household_id", "arm", "site", "registration_date", "first_batch_id"],
            [(h, a, s, r, batch_id) for h, a, s, r in zip(first, arms.tolist(), sites.tolist(), reg, strict=True)],
            "household_id")
    _upsert(conn, Person.__table__, ["person_id", "household_id", "sex", "birth_year", "first_batch_id"],
            [(pid, v[0], v[1], v[2], batch_id) for pid, v in person_attributes(ld).items()
             if not known_persons or pid not in known_persons], "person_id")


RESPONSE_COLUMNS = ["id", "batch_id", "row_number", "household_id", "person_id", "subject_id", "role", "arm",
                    "site", "wave", "response_date", "registration_date", "days_since_t0", "subject_age_months",
                    "subject_sex", "superseded"]


SQLITE_CACHE_KIB = 65_536  # page cache of a loading connection (SQLite's default is 2 MiB)
# WAL pages a loading connection lets accumulate before it checkpoints (SQLite's default 1,000 pages = 4 MiB):
# with the default nearly every file's commit checkpointed, rewriting and syncing the same index pages each time
# (about 40% of the load time at factor 10). Durability is unchanged (WAL, synchronous=NORMAL); the WAL file
# grows to about 256 MiB. `checkpoint` (end of a batch ingest) copies the WAL back without waiting for readers.
SQLITE_WAL_PAGES = 65_536
SQLITE_ROWS_PER_STATEMENT = 100  # multi-row VALUES: about 1.4x the rows/s of one row per statement


def _bulk(conn: Connection, table: str, columns: list[str], rows: list[tuple] | np.ndarray) -> None:
    """Insert many rows fast inside the connection's open transaction: COPY on PostgreSQL; on SQLite the
    driver cursor's executemany of multi-row VALUES statements. `rows`: tuples, or an object array rows x columns."""
    if len(rows) == 0:
        return
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as cp:
            if isinstance(rows, np.ndarray):  # one flat list of scalars: millions of live row lists would keep
                flat, k = rows.ravel().tolist(), rows.shape[1]  # the garbage collector busy (about 2x slower)
                for i in range(0, len(flat), k):
                    cp.write_row(flat[i:i + k])
            else:
                for row in rows:
                    cp.write_row(row)
        return
    k = len(columns)
    m = max(1, min(SQLITE_ROWS_PER_STATEMENT, 900 // k))  # stay under SQLite's bound-parameter limits
    flat = (rows.ravel().tolist() if isinstance(rows, np.ndarray)
            else [v for row in rows for v in row])
    n = len(flat) // k
    full = n // m * m
    head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
    one = "(" + ", ".join("?" * k) + ")"
    cur = conn.connection.driver_connection.cursor()  # same DBAPI connection, same transaction
    try:
        if full:
            step = m * k
            cur.executemany(head + ", ".join([one] * m), (flat[i:i + step] for i in range(0, full * k, step)))
        if n > full:
            cur.executemany(head + one, (flat[i:i + k] for i in range(full * k, n * k, k)))
    finally:
        cur.close()


def checkpoint(engine: Engine) -> None:
    """SQLite: copy the write-ahead log back into the database file now (PASSIVE: never waits for readers)."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


def _insert_responses(conn: Connection, ld: pd.DataFrame, ids: np.ndarray, batch_id: int) -> None:
    n = len(ld)
    if not n:
        return
    pg = conn.dialect.name == "postgresql"
    cols = [ids.tolist(), [batch_id] * n, ld["row_number"].astype(int).tolist(), ld["household_id"].tolist(),
            ld["person_id"].tolist(), ld["subject_id"].tolist(), ld["role"].tolist(), ld["arm"].tolist(),
            ld["site"].tolist(), ld["wave"].tolist(), _dates(ld["response_date"]), _dates(ld["registration_date"]),
            _ints(ld["days_since_t0"]), _ints(ld["subject_age_months"]),
            [s if isinstance(s, str) else None for s in ld["subject_sex"]], [False if pg else 0] * n]
    _bulk(conn, "response", RESPONSE_COLUMNS, list(zip(*cols, strict=True)))


def _insert_item_values(conn: Connection, resp_ids: np.ndarray, inst: list[str], item: list[str],
                        codes: np.ndarray, reasons: np.ndarray) -> None:
    """Bulk insert of the item answers as packed blocks, one per (response, instrument), in primary-key
    order (`warehouse.packed`): multi-row executemany on SQLite, COPY on PostgreSQL."""
    n, k = codes.shape
    if n == 0 or k == 0:
        return
    _bulk(conn, "item_block", BLOCK_COLUMNS, block_rows(conn, resp_ids, inst, item, codes, reasons))


def _insert_quarantine(conn: Connection, d: pd.DataFrame, p: _Prepared, quarantine: dict[int, list[dict]],
                       batch_id: int, mapped: MappedFile) -> None:
    if not quarantine:
        return
    pos = {rn: i for i, rn in enumerate(d["row_number"].tolist())}
    miss = {k: {str(c): r for c, r in m.items()} for k, m in mapped.meta["missing_codes"].items()}
    cols = [c for c in d.columns if c != "row_number"]
    rows = []
    for rn in sorted(quarantine):
        i = pos[rn]
        payload = {c: _jsonable(d[c].iat[i]) for c in cols}
        payload["items"] = {k: _jsonable(p.codes[i, j]) for j, k in enumerate(p.item_keys)}
        payload["missing"] = {k: p.reasons[i, j] for j, k in enumerate(p.item_keys) if p.reasons[i, j] is not None}
        payload["missing_codes"] = miss
        rows.append({"batch_id": batch_id, "row_number": int(rn), "reasons": quarantine[rn], "payload": payload})
    conn.execute(insert(QuarantineRow), rows)


def _insert_rule_results(conn: Connection, outcome: ValidationOutcome, failures: pd.DataFrame, batch_id: int,
                         n: int) -> None:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in outcome.rule_results.itertuples(index=False):
        seen.add(str(r.rule))
        ex = r.examples if isinstance(r.examples, list) else ([] if r.examples is None else [r.examples])
        rows.append({"batch_id": batch_id, "rule": str(r.rule), "severity": str(r.severity),
                     "n_checked": int(r.n_checked), "n_failed": int(r.n_failed),
                     "examples": json.loads(json.dumps([_jsonable(x) for x in ex]))})
    if len(failures):
        for rule, grp in failures.groupby("rule"):
            if rule in seen:
                continue
            rows.append({"batch_id": batch_id, "rule": str(rule), "severity": str(grp["severity"].iloc[0]),
                         "n_checked": n, "n_failed": int(grp["row_number"].nunique()),
                         "examples": [int(x) for x in grp["row_number"].head(5)]})
    if rows:  # one driver executemany (JSON as text, as SQLAlchemy's JSON type stores it)
        mark = "%s" if conn.dialect.name == "postgresql" else "?"
        cols = ["batch_id", "rule", "severity", "n_checked", "n_failed", "examples"]
        conn.exec_driver_sql(
            f"INSERT INTO {ValidationResult.__tablename__} ({', '.join(cols)}) VALUES ({', '.join([mark] * 6)})",
            [(r["batch_id"], r["rule"], r["severity"], r["n_checked"], r["n_failed"], json.dumps(r["examples"]))
             for r in rows])


def inbox_files(inbox_dir: Path | str) -> list[Path]:
    """Export files in a folder (sorted by name), ignoring hidden and temporary files."""
    return sorted(p for p in Path(inbox_dir).iterdir()
                  if p.is_file() and p.suffix.lower() in FILE_SUFFIXES and not p.name.startswith((".", "~$")))


def ingest_inbox(
    inbox_dir: Path | str,
    engine: Engine,
    sources: list[SourceDefinition],
    study: Study,
    instruments: dict[str, Instrument],
    key: bytes,
    validate: Validator | None = None,
    files: Iterable[Path] | None = None,
) -> list[BatchReport]:
    """Ingest every export in `inbox_dir` (one transaction each), in name order; returns their reports."""
    return [ingest_file(f, engine, sources, study, instruments, key, validate)
            for f in (files if files is not None else inbox_files(inbox_dir))]
