"""Ingesting many exports at once: read a chunk of files, validate it in batch (one GX run per source version),
load each file in its own transaction by a thread of its own while the next chunk is read and validated. The
warehouse ends exactly as with `ingest_file` called file by file in the same order.

Public: `ingest_files(paths, engine, sources, study, instruments, key, docs_dir=None, echo=None,
data_docs="failures", on_outcome=None, chunk_rows=CHUNK_ROWS, docs_builder=None) -> list[BatchReport]`, and
`DocsBuilder` (Data Docs pages built by a forked process while the work goes on).

How it stays equal to file-by-file ingestion:
* a file whose SHA-256 is already loaded (before the call) is skipped before it is read or validated;
* files are read in order (by forked reader processes a few files ahead, `_Reader`: reading only, no
  database) until `chunk_rows` rows are held; that chunk is validated, its loads are handed to
  the load thread, and the next files are read while they load; at most one chunk is loading while the next
  is read, so memory is bounded by two chunks, not the inbox;
* each file is validated against the persons history it would have seen file by file: the warehouse (which
  holds what the chunks before the one still loading really loaded), plus the persons of the chunk still
  loading and of earlier files of its own chunk as those files would leave them. The batch run assumes every
  row of those earlier files loads; just before a file is loaded its persons are looked up in the warehouse
  (which by then holds what the earlier files really loaded) and when that differs from what the batch run
  assumed (an earlier file was refused or had rows quarantined for one of these persons) the file is
  validated again on its own with the real history;
* writes (loaded and refused batches) happen in file order, one transaction per file (`load_validated`), all
  by the one load thread, which also repeats the in-transaction checks (SHA-256, supersede, duplicates and
  sex conflicts against loaded rows); after a load raised, no later file is loaded and the error is raised.
  On PostgreSQL the files' commits do not wait for their WAL flush; one synchronous commit before
  `ingest_files` returns makes them all durable (`load.flush_commits`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from sqlalchemy import Engine

from cohortflow.config.sources import SourceDefinition
from cohortflow.config.study import Study
from cohortflow.ingest.mapping import file_digest
from cohortflow.ingest.outcome import MappedFile, ValidationOutcome
from cohortflow.instruments.model import Instrument

from .load import (
    BatchReport,
    LoadPlan,
    already_loaded,
    checkpoint,
    flush_commits,
    load_validated,
    person_attributes,
    person_frame,
    plan_load,
    read_file,
    refuse,
    select_in,
    stored_batches,
)
from .memory import can_fork_workers

DataDocs = Literal["failures", "quarantine", "all", "none"]
HISTORY_COLUMNS = ["pseudonym", "sex", "birth_year"]
CHUNK_ROWS = 250_000  # rows read before a chunk is validated and loaded (bounds memory: ~3 KB per row held)
_GX_LOCK = threading.Lock()  # Great Expectations runs one at a time (the calling thread's and the load thread's)


@dataclass
class _File:
    path: Path
    report: BatchReport
    t0: float
    source: SourceDefinition | None = None
    mapped: MappedFile | None = None
    error: str = ""
    pseudonyms: list[str] | None = None
    assumed: dict[str, tuple[Any, Any]] | None = None  # history the batch validation used, for these pseudonyms
    outcome: ValidationOutcome | None = None


class DocsBuilder:
    """Data Docs pages built in a forked process of their own while ingestion (and what follows it) goes on.

    `submit(...)` takes the arguments of `validation.write_data_docs`; the frames reach the child through the
    fork (copy-on-write), nothing is pickled. One child at a time: a second `submit` first waits for the
    previous child (memory stays bounded). `wait()` waits for the last one and returns the failures as
    messages (a page that could not be built never undoes a load). Without fork (or inside a daemonic worker,
    e.g. Dask) the pages are built at once in this process. The Data Docs are the only thing the child
    writes; nothing it does reaches the warehouse.
    """

    def __init__(self) -> None:
        self._child: Any = None
        self._reader: Any = None
        self._label = ""
        self.errors: list[str] = []

    def submit(self, label: str, *args: Any, **kwargs: Any) -> None:
        """Build the pages of `write_data_docs(*args, **kwargs)` (`label`: for messages, e.g. the chunk's files)."""
        import multiprocessing as mp

        from cohortflow.validation import write_data_docs

        self._join()
        self._label = label
        if not can_fork_workers():
            self._report(_build_docs(write_data_docs, args, kwargs))
            return
        ctx = mp.get_context("fork")
        self._reader, writer = ctx.Pipe(duplex=False)
        self._child = ctx.Process(target=_docs_child, args=(writer, write_data_docs, args, kwargs), daemon=True,
                                  name="cohortflow-data-docs")
        self._child.start()
        writer.close()

    def wait(self) -> list[str]:
        """Wait until the pages are built; the messages of every build that failed since this builder began."""
        self._join()
        return list(self.errors)

    def _report(self, message: str) -> None:
        if message != "ok":
            self.errors.append(f"Data Docs of {self._label} were not built: {message}")

    def _join(self) -> None:
        if self._child is None:
            return
        try:
            message = self._reader.recv() if self._reader.poll(None) else None
        except EOFError:
            message = None
        self._child.join()
        self._report(message or f"the Data Docs process ended with exit code {self._child.exitcode}")
        self._reader.close()
        self._child = self._reader = None


def _build_docs(fn: Callable[..., Any], args: tuple, kwargs: dict) -> str:
    """Run the Data Docs build: "ok", or the error's message."""
    try:
        fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - reported by DocsBuilder.wait(); the loads stand
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _docs_child(writer: Any, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """In the forked Data Docs process: build the pages, send "ok" or the error message, end."""
    try:
        writer.send(_build_docs(fn, args, kwargs))
    finally:
        writer.close()


def _history_frame(hist: dict[str, tuple[Any, Any]]) -> pd.DataFrame:
    return pd.DataFrame([(k, *v) for k, v in hist.items()], columns=HISTORY_COLUMNS)


def _stored_persons(engine: Engine, pseudonyms: Iterable[str]) -> dict[str, tuple[Any, Any]]:
    """(sex, birth_year) of the given persons as the warehouse holds them now."""
    ids = sorted(set(pseudonyms))
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = select_in(conn, "SELECT person_id, sex, birth_year FROM person WHERE person_id IN ({ins})", ids,
                         order=None)
    return {pid: (sex, None if by is None else int(by)) for pid, sex, by in rows}


def has_quarantine(outcome: ValidationOutcome) -> bool:
    """True when validation refused the file or sends rows to quarantine (warnings alone do not count)."""
    rf = outcome.row_failures
    return bool(outcome.file_errors) or (len(rf) > 0 and bool((rf["severity"] == "quarantine").any()))


def _wants_docs(outcome: ValidationOutcome, data_docs: str) -> bool:
    return data_docs == "all" or (data_docs == "failures" and has_failures(outcome)) or (
        data_docs == "quarantine" and has_quarantine(outcome))


def failed_rules(outcome: ValidationOutcome) -> pd.DataFrame:
    """The outcome's rule results (Contract 2 `rule_results`) of the rules that failed on at least one row."""
    rr = outcome.rule_results
    return rr[pd.to_numeric(rr["n_failed"], errors="coerce").fillna(0) > 0] if len(rr) else rr


def has_failures(outcome: ValidationOutcome) -> bool:
    """True when validation refused the file, flagged rows or a rule failed (what Data Docs are read for)."""
    return bool(outcome.file_errors) or len(outcome.row_failures) > 0 or len(failed_rules(outcome)) > 0


def ingest_files(
    paths: Iterable[Path | str],
    engine: Engine,
    sources: list[SourceDefinition],
    study: Study,
    instruments: dict[str, Instrument],
    key: bytes,
    docs_dir: Path | str | None = None,
    echo: Callable[[str], Any] | None = None,
    data_docs: DataDocs = "failures",
    on_outcome: Callable[[str, ValidationOutcome], Any] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    docs_builder: DocsBuilder | None = None,
) -> list[BatchReport]:
    """Ingest export files in the given order with batch validation; one BatchReport per path.

    `docs_dir`: where Data Docs go (none without it); `data_docs`: build them for files whose validation
    found something, warnings included (`failures`, the default), for files refused or with rows sent to
    quarantine (`quarantine`: what the pipeline uses), for every file (`all`) or never (`none`). The pages
    are built after the loads of each chunk, one site build per chunk (validation.write_data_docs). `echo` receives
    each file's plain-text validation summary, `on_outcome(file_name, outcome)` each ValidationOutcome
    (e.g. to post it as an artifact). Bad files never raise: they come back refused, as from ingest_file.
    `chunk_rows`: files are read in order (by two forked reader processes, a few files ahead of this thread)
    until this many rows are held, then that chunk is validated and
    loaded (by the load thread, while the next files are read: memory stays bounded by two chunks whatever
    the size of the inbox). The summaries and `on_outcome` come per chunk, after its loads.
    `docs_builder`: build the Data Docs pages in its forked process instead of here; the caller `wait()`s for
    it when it likes (the pipeline: at its end), and this function returns without waiting for the pages.
    """

    paths = [Path(p) for p in paths]
    digests = {p: file_digest(p) for p in paths if p.is_file()}
    known = stored_batches(engine, (d[0] for d in digests.values()))
    files = [_File(p, already_loaded(p, engine, known, digests.get(p)), 0.0) for p in paths]
    reader = _Reader(sources, instruments, [f for f in files if f.report.status != "skipped"])
    run = _Run(engine, study, instruments, key, docs_dir, echo, data_docs, on_outcome, docs_builder)
    reports: list[BatchReport] = []
    chunk: list[_File] = []
    rows = 0
    try:
        for f in files:
            f.t0 = time.perf_counter()
            if f.report.status != "skipped":
                reader.read_next(f)
                rows += 0 if f.mapped is None else len(f.mapped.frame)
            chunk.append(f)
            if rows >= chunk_rows:
                run.validate_and_submit(chunk)
                reports += run.collect(keep=1)  # one chunk loads while the next is read and validated
                chunk, rows = [], 0
        if chunk:
            run.validate_and_submit(chunk)
        reports += run.collect(keep=0)
    finally:
        reader.close()
        run.close()
    flush_commits(engine)  # the files' commits did not wait for their WAL flush (PostgreSQL): one flush for all
    checkpoint(engine)
    return reports


class _Reader:
    """The files of an `ingest_files` call read (`load.read_file`: match, read, map) in file order by forked
    reader processes, a few files ahead of the calling thread. Within a chunk the calling thread has nothing to
    do but wait for its files, so the machine's cores read side by side; later chunks are also read while the
    load thread writes the earlier one.

    The readers are forked once, before the load thread starts, and read files only: they never touch the
    database. What they read comes back pickled (the mapped frame, its metadata and the report's read fields).
    They die with the process that forked them. When one dies anyway (killed, out of memory, a crash inside a
    reading library), the file it was reading and every later one are read here. Without fork (or inside a
    daemonic worker, e.g. Dask), with `PROCESSES = 0`, or for a single file, files are read here, one after the
    other, exactly as before."""

    PROCESSES = 2  # reader processes (0: read here); while they read a chunk, the calling thread mostly waits
    AHEAD = 6  # files read ahead of the one the calling thread asks for (memory: a few files' frames)

    def __init__(self, sources: list[SourceDefinition], instruments: dict[str, Instrument],
                 files: list[_File]) -> None:
        import multiprocessing as mp

        self.sources, self.instruments = sources, instruments
        self._todo = deque(files)
        self._ahead: deque[tuple[_File, Future[tuple]]] = deque()
        self._pool: ProcessPoolExecutor | None = None
        if self.PROCESSES > 0 and len(files) > 1 and can_fork_workers():
            self._pool = ProcessPoolExecutor(max_workers=self.PROCESSES, mp_context=mp.get_context("fork"),
                                             initializer=_reader_started, initargs=(sources, instruments))

    def read_next(self, f: _File) -> None:
        """Read file `f` (the next one of the list given, in order): fills its source, mapped frame or error
        and its report's read fields, as `load.read_file` does."""
        if self._pool is None:
            f.source, f.mapped, f.error = read_file(f.path, self.sources, self.instruments, f.report, f.t0)
            return
        while len(self._ahead) <= self.AHEAD and self._todo:
            g = self._todo.popleft()
            self._ahead.append((g, self._pool.submit(_read_in_child, g.path, g.report)))
        g, job = self._ahead.popleft()
        assert g is f, "files must be read in the order given"
        try:
            i, f.mapped, f.error, f.report = job.result()
        except BrokenProcessPool:  # a reader process died (killed, out of memory, a crash inside a reading
            # library): this file and the later ones are read here, one after the other, as without readers
            self._todo.extendleft(reversed([g for g, _job in self._ahead]))
            self._ahead.clear()
            self.close()
            f.source, f.mapped, f.error = read_file(f.path, self.sources, self.instruments, f.report, f.t0)
            return
        f.source = None if i is None else self.sources[i]

    def close(self) -> None:
        """End the reader processes (files read ahead but not asked for are dropped)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


_READER: dict[str, Any] = {}  # in the reader process: the sources and instruments it was forked with


def _reader_started(sources: list[SourceDefinition], instruments: dict[str, Instrument]) -> None:
    """In the reader process: keep what reading needs and die with the process that forked it (Linux)."""
    import contextlib
    import signal

    _READER.update(sources=sources, instruments=instruments)
    with contextlib.suppress(Exception):  # prctl(PR_SET_PDEATHSIG, SIGKILL): not where there is no prctl
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)


def _read_in_child(path: Path, report: BatchReport) -> tuple[int | None, MappedFile | None, str, BatchReport]:
    """In the reader process: `read_file`; the source travels back as its position in the sources list."""
    sources = _READER["sources"]
    source, mapped, error = read_file(path, sources, _READER["instruments"], report, time.perf_counter())
    at = next((i for i, s in enumerate(sources) if s is source), None)
    return at, mapped, error, report


class _NotLoaded(Exception):
    """A file after one whose load raised: not loaded (the error of the earlier file is what the caller sees)."""


@dataclass
class _Loaded:
    report: BatchReport
    outcome: ValidationOutcome | None = None
    docs: tuple[MappedFile, pd.DataFrame] | None = None  # (file, history) when its Data Docs page is wanted
    name: str = ""  # the file's name as its validation summary gives it


class _Run:
    """One `ingest_files` call: chunks validated here, their files loaded in order by one thread of its own.

    The calling thread validates a chunk, prepares each file's load (`plan_load`: checks, pseudonyms; no
    database) and hands the loads to the load thread ("cohortflow-load"), which runs them one transaction per
    file in file order; meanwhile the calling thread reads and validates the next chunk. The load thread
    mostly waits for the database (PostgreSQL's server, SQLite's B-tree work: both without the GIL), so the
    two overlap. At most one chunk is loading while the next is read. After a load raised, the later files
    are not loaded (as when loading one after another) and that error is raised by `collect`.
    """

    def __init__(self, engine: Engine, study: Study, instruments: dict[str, Instrument], key: bytes,
                 docs_dir: Path | str | None, echo: Callable[[str], Any] | None, data_docs: DataDocs,
                 on_outcome: Callable[[str, ValidationOutcome], Any] | None,
                 docs_builder: DocsBuilder | None) -> None:
        self.engine, self.study, self.instruments, self.key = engine, study, instruments, key
        self.docs_dir, self.echo, self.data_docs, self.on_outcome = docs_dir, echo, data_docs, on_outcome
        self.docs_builder = docs_builder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cohortflow-load")
        self._stop = False
        self._chunks: deque[list[tuple[_File, Future[_Loaded] | None]]] = deque()
        self._assumed: dict[str, tuple[Any, Any]] = {}  # persons as the submitted chunk's files will leave them

    def validate_and_submit(self, files: list[_File]) -> None:
        """Validate a chunk of read files in batch, then hand their loads to the load thread in file order.

        Each file is validated against the persons history it would have seen file by file: the warehouse
        (which holds every chunk before the one still loading), the persons of the chunk still loading as its
        files would leave them, and the persons of earlier files of this chunk, assuming every row of those
        files loads. The load thread checks that assumption against the warehouse just before each load."""
        from cohortflow.validation import validate_mapped_files

        readable = [f for f in files if f.mapped is not None and f.source is not None]
        frames = [person_frame(f.mapped, self.key) for f in readable]  # type: ignore[arg-type]
        for f, pf in zip(readable, frames, strict=True):
            f.pseudonyms = sorted({*pf["subject_id"].dropna(), *pf["person_id"].dropna()})
        wanted = {p for f in readable for p in f.pseudonyms or []}
        hist = {p: self._assumed[p] for p in wanted if p in self._assumed}
        hist.update(_stored_persons(self.engine, wanted.difference(hist)))
        histories = []
        for f, pf in zip(readable, frames, strict=True):
            f.assumed = {p: hist[p] for p in f.pseudonyms or [] if p in hist}
            histories.append(_history_frame(f.assumed))
            for pid, (_h, sex, by) in person_attributes(pf).items():  # as if every row of the file loads
                if pid is not None and pid not in hist:
                    hist[pid] = (sex, by)
        del frames
        with _GX_LOCK:
            outcomes = validate_mapped_files([f.mapped for f in readable], self.study, self.instruments,
                                             histories=histories, key=self.key)
        for f, out in zip(readable, outcomes, strict=True):
            f.outcome = out
        self._assumed = hist
        jobs: list[tuple[_File, Future[_Loaded] | None]] = []
        self._chunks.append(jobs)
        for f in files:
            if f.report.status == "skipped":
                jobs.append((f, None))
                continue
            plan = None
            if f.mapped is not None and f.source is not None and f.outcome is not None:
                plan = plan_load(f.mapped, f.outcome, self.study, self.key)
            jobs.append((f, self._pool.submit(self._guarded, f, plan)))

    def _guarded(self, f: _File, plan: LoadPlan | None) -> _Loaded:
        if self._stop:
            raise _NotLoaded(f.path.name)
        try:
            return self._load(f, plan)
        except BaseException:
            self._stop = True
            raise

    def _load(self, f: _File, plan: LoadPlan | None) -> _Loaded:
        """In the load thread: refuse or load one file (its one transaction)."""
        from cohortflow.validation import validate_again

        if f.mapped is None or f.source is None or f.outcome is None:
            return _Loaded(refuse(self.engine, f.report, f.path, f.source, f.error))
        actual = _stored_persons(self.engine, f.pseudonyms or [])
        outcome = f.outcome
        if actual != f.assumed:  # earlier files did not load as assumed: GX again only when the checks differ
            with _GX_LOCK:
                outcome = validate_again(f.mapped, self.study, self.instruments, outcome,
                                         history=_history_frame(actual), key=self.key)
        docs = ((f.mapped, _history_frame(actual)) if self.docs_dir is not None
                and _wants_docs(outcome, self.data_docs) else None)
        name = str(f.mapped.meta.get("file_name", "file"))
        report = load_validated(self.engine, f.path, f.source, f.mapped, outcome, self.study, self.key, f.report,
                                f.t0, durable=False, known_persons=set(actual), plan=plan)
        f.mapped = f.outcome = None  # this file's frames are no longer needed (docs keeps its own reference)
        return _Loaded(report, outcome, docs, name)

    def collect(self, keep: int) -> list[BatchReport]:
        """Wait for the loads of all but the last `keep` submitted chunks; their reports in file order. Here, in
        the calling thread: the validation summaries (`echo`), `on_outcome`, and each chunk's Data Docs."""
        from cohortflow.validation import summarise

        reports: list[BatchReport] = []
        while len(self._chunks) > keep:
            for_docs: list[tuple[MappedFile, pd.DataFrame]] = []
            for f, job in self._chunks.popleft():
                if job is None:
                    reports.append(f.report)
                    continue
                done = job.result()
                reports.append(done.report)
                if done.outcome is not None:
                    if self.echo is not None:
                        self.echo(summarise(done.outcome, done.name))
                    if self.on_outcome is not None:
                        self.on_outcome(done.name, done.outcome)
                if done.docs is not None:
                    for_docs.append(done.docs)
            self._write_docs(for_docs)
        return reports

    def _write_docs(self, for_docs: list[tuple[MappedFile, pd.DataFrame]]) -> None:
        """One Data Docs site build for a chunk's files, after its loads (here or by the DocsBuilder)."""
        from cohortflow.validation import write_data_docs

        if not for_docs or self.docs_dir is None:
            return
        args = ([m for m, _h in for_docs], self.study, self.instruments, self.docs_dir)
        kwargs = {"histories": [h for _m, h in for_docs], "key": self.key}
        if self.docs_builder is None:
            with _GX_LOCK:
                write_data_docs(*args, **kwargs)
        else:
            names = [str(m.meta.get("file_name", "file")) for m, _h in for_docs]
            self.docs_builder.submit(f"{len(names)} files ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})",
                                     *args, **kwargs)

    def close(self) -> None:
        """Let the load running now finish its transaction; the loads not started are not made (after an error
        in the calling thread). Normal ends have collected every chunk first."""
        self._stop = True
        self._pool.shutdown(wait=True, cancel_futures=True)
