"""Batch ingestion (`ingest_files`) leaves exactly the warehouse that file-by-file `ingest_file` with the
pipeline's validator leaves: on hand-made exports where two files of one run disagree on a child's sex or an
earlier file's row is quarantined, and on a generated study with every synth fault."""

from __future__ import annotations

import pandas as pd
import pytest
from ingest_exports import build_rows, write_export

from cohortflow.config.study import load_study
from cohortflow.flows.commands_validation import flow_validator
from cohortflow.ingest.mapping import load_sources
from cohortflow.instruments.registry import load_instruments
from cohortflow.warehouse.batch_ingest import ingest_files
from cohortflow.warehouse.db import get_engine, init_warehouse
from cohortflow.warehouse.dump import canonical_dump
from cohortflow.warehouse.load import inbox_files, ingest_file

KEY = b"batch-test-key-0123456789"
INST = load_instruments()
STUDY = load_study()
SOURCES = load_sources()


def _file_by_file(engine, files):
    validate = flow_validator(engine, STUDY, INST, KEY, artifacts=False)
    return [ingest_file(p, engine, SOURCES, STUDY, INST, KEY, validate=validate) for p in files]


def _both(tmp_path, files, **kwargs):
    one = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'one.sqlite'}"))
    many = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'many.sqlite'}"))
    ref = _file_by_file(one, files)
    got = ingest_files(files, many, SOURCES, STUDY, INST, KEY, **kwargs)
    return ref, got, canonical_dump(one), canonical_dump(many)


def _summary(reports):
    return [(r.file_name, r.status, r.batch_id, r.rows_in, r.rows_loaded, r.rows_quarantined, r.rows_duplicate,
             r.message) for r in reports]


@pytest.mark.parametrize("chunk_rows", [250_000, 7, 1])  # one chunk; chunks of two files; one file per chunk
def test_sex_conflict_between_files_of_one_run(tmp_path, chunk_rows):
    t0 = build_rows(INST, "vt", "VT01", "T0", "child", 6)
    t1 = build_rows(INST, "vt", "VT01", "T1", "child", 6, seed=5)
    t2 = build_rows(INST, "vt", "VT01", "T2", "child", 6, seed=6)
    t1.loc[2, "geslacht"] = 3 - t1.loc[2, "geslacht"]  # disagrees with T0 of the same run
    # T0 row 2 is quarantined (outside the window) with another sex: it never reaches the warehouse, so T1's
    # row 2 must not be held against it (the batch run assumed it would load and must validate T1 again)
    t0.loc[1, "datum_invullen"] = pd.Timestamp(t0.loc[1, "datum_melding"]) + pd.Timedelta(days=545)
    t0.loc[1, "geslacht"] = 3 - t0.loc[1, "geslacht"]
    files = [write_export(t0, tmp_path / "vt_VT01_T0_child.csv"), write_export(t1, tmp_path / "vt_VT01_T1_child.csv"),
             write_export(t2, tmp_path / "vt_VT01_T2_child.csv")]
    ref, got, dump_ref, dump_got = _both(tmp_path, files, chunk_rows=chunk_rows)
    assert _summary(got) == _summary(ref)
    assert dump_got == dump_ref
    quarantined = {(r[1], r[2]): r[3] for r in dump_got["quarantine_row"]}
    assert "sex" in quarantined[(got[1].batch_id, 3)]  # the conflict with T0 of the same run was caught
    assert (got[1].batch_id, 2) not in quarantined  # and not held against T0's quarantined row
    assert "window" in quarantined[(got[0].batch_id, 2)]


def test_exact_duplicate_row_counts_as_duplicate_not_quarantined(tmp_path):
    """An exact copy of an earlier row of the file (every column equal) is a duplicate with validation too;
    a row with the same person, wave and role but other answers stays quarantined."""
    rows = build_rows(INST, "vt", "VT01", "T0", "adult", 5)
    other = rows.iloc[[3]].copy()
    other["PSS_02"] = 1 if rows.loc[3, "PSS_02"] != 1 else 2
    data = pd.concat([rows, rows.iloc[[1]], other], ignore_index=True)  # row 6 copies row 2; row 7 differs from 4
    files = [write_export(data, tmp_path / "vt_VT01_T0_adult.csv")]
    ref, got, dump_ref, dump_got = _both(tmp_path, files)
    assert _summary(got) == _summary(ref)
    assert dump_got == dump_ref
    rep = got[0]
    assert (rep.rows_in, rep.rows_loaded, rep.rows_quarantined, rep.rows_duplicate) == (7, 5, 1, 1)
    assert rep.accounted
    with get_engine(f"sqlite:///{tmp_path / 'many.sqlite'}").connect() as conn:
        quarantined = sorted(x for (x,) in conn.exec_driver_sql("select row_number from quarantine_row"))
        loaded = sorted(x for (x,) in conn.exec_driver_sql("select row_number from response"))
    assert (quarantined, loaded) == ([7], [1, 2, 3, 4, 5])


def test_skips_loaded_files_before_reading(tmp_path):
    t0 = build_rows(INST, "vt", "VT01", "T0", "child", 4)
    path = write_export(t0, tmp_path / "vt_VT01_T0_child.csv")
    engine = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'w.sqlite'}"))
    first = ingest_files([path], engine, SOURCES, STUDY, INST, KEY)
    assert first[0].status == "loaded"
    again = ingest_files([path], engine, SOURCES, STUDY, INST, KEY)
    assert again[0].status == "skipped" and again[0].batch_id == first[0].batch_id
    assert again[0].read_seconds == 0.0  # not read


@pytest.mark.slow
@pytest.mark.parametrize("chunk_rows", [250_000, 300])  # the whole inbox in one chunk; chunks of a few files
def test_generated_study_same_warehouse_as_file_by_file(tmp_path, chunk_rows):
    synth = pytest.importorskip("cohortflow.synth.generate")
    from cohortflow.synth.faults import FAULTS

    synth.generate_study(tmp_path / "study", factor=0.05, seed=7, faults=sorted(FAULTS))
    files = inbox_files(tmp_path / "study" / "inbox")
    ref, got, dump_ref, dump_got = _both(tmp_path, files, chunk_rows=chunk_rows, docs_dir=tmp_path / "docs")
    assert _summary(got) == _summary(ref)
    assert {r.status for r in got} >= {"loaded", "refused"}
    for table in dump_ref:
        assert dump_got[table] == dump_ref[table], table
    assert any((tmp_path / "docs").rglob("*.html"))  # Data Docs for the files with failures (a build per chunk)


def test_data_docs_modes_choose_files_by_what_validation_found():
    """`quarantine` (the pipeline's mode) builds Data Docs only for refused files and files with quarantined
    rows; `failures` also for files whose rules only warned; `all` always; `none` never."""
    from cohortflow.ingest.outcome import ValidationOutcome
    from cohortflow.warehouse.batch_ingest import _wants_docs

    def rows(severity: str) -> pd.DataFrame:
        return pd.DataFrame([{"row_number": 3, "rule": "missing_share", "column": "pss", "value": "x",
                              "severity": severity}])

    clean = ValidationOutcome()
    warned = ValidationOutcome(row_failures=rows("warn"))
    quarantined = ValidationOutcome(row_failures=rows("quarantine"))
    refused = ValidationOutcome(file_errors=["no id column"])
    want = {"none": [False, False, False, False], "quarantine": [False, False, True, True],
            "failures": [False, True, True, True], "all": [True, True, True, True]}
    for mode, expected in want.items():
        assert [_wants_docs(o, mode) for o in (clean, warned, quarantined, refused)] == expected, mode


@pytest.mark.parametrize(("chunk_rows", "most_held"), [(1, 2), (7, 4), (250_000, 4)])
def test_files_held_at_once_bounded_by_chunk_rows(tmp_path, monkeypatch, chunk_rows, most_held):
    """Files are read until `chunk_rows` rows are held, then validated and handed to the load thread; the next
    chunk is read while one loads: at most two chunks, `most_held` read-but-not-loaded files, at any time
    (4 files of 6 rows), plus the files the reader process has read ahead (`_Reader.AHEAD`, here 1)."""
    import cohortflow.warehouse.batch_ingest as bi

    held: list[int] = []
    live: set[str] = set()

    def reading(self, f):
        real_read(self, f)
        live.add(f.path.name)
        held.append(len(live) + len(self._ahead))  # handed to this process + read ahead by the reader process

    def loading(engine, path, *a, **kw):
        live.discard(path.name)
        return real_load(engine, path, *a, **kw)

    real_read, real_load = bi._Reader.read_next, bi.load_validated
    monkeypatch.setattr(bi._Reader, "read_next", reading)
    monkeypatch.setattr(bi._Reader, "AHEAD", 1)
    monkeypatch.setattr(bi, "load_validated", loading)
    files = [write_export(build_rows(INST, "vt", "VT01", w, "child", 6, seed=i), tmp_path / f"vt_VT01_{w}_child.csv")
             for i, w in enumerate(["T0", "T1", "T2"])]
    files.append(write_export(build_rows(INST, "vt", "VT02", "T0", "child", 6), tmp_path / "vt_VT02_T0_child.csv"))
    engine = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'w.sqlite'}"))
    reports = ingest_files(files, engine, SOURCES, STUDY, INST, KEY, data_docs="none", chunk_rows=chunk_rows)
    assert [r.status for r in reports] == ["loaded"] * 4
    assert len(held) == 4 and max(held) <= most_held + 1 and not live


@pytest.mark.parametrize("processes", [1, 2])
def test_files_read_by_reader_processes_load_as_read_here(tmp_path, monkeypatch, processes):
    """With reader processes (forked: each file is read in another process, which leaves a mark in a file),
    the warehouse, the reports and the read fields equal those of reading every file in this process; a file
    that cannot be read comes back refused with its message either way."""
    import os

    import cohortflow.warehouse.batch_ingest as bi

    marks = tmp_path / "readers.txt"
    real_read = bi.read_file

    def marking(path, *a, **kw):
        with marks.open("a") as fh:
            fh.write(f"{os.getpid()} {path.name}\n")
        return real_read(path, *a, **kw)

    monkeypatch.setattr(bi, "read_file", marking)
    files = _four_files(tmp_path)
    broken = tmp_path / "vt_VT03_T0_child.csv"
    broken.write_bytes(b"\x00\x01 not a csv \xff\xfe")
    files.insert(2, broken)
    out = {}
    for mode, n in (("here", 0), ("forked", processes)):
        monkeypatch.setattr(bi._Reader, "PROCESSES", n)
        marks.unlink(missing_ok=True)
        engine = init_warehouse(get_engine(f"sqlite:///{tmp_path / f'{mode}.sqlite'}"))
        reports = ingest_files(files, engine, SOURCES, STUDY, INST, KEY, data_docs="none")
        pids = {line.split()[0] for line in marks.read_text().splitlines()}
        assert len(marks.read_text().splitlines()) == len(files)  # every file read once
        assert (pids == {str(os.getpid())}) == (mode == "here"), (mode, pids)
        out[mode] = (canonical_dump(engine), [_comparable(r) for r in reports])
    assert out["forked"] == out["here"]
    statuses = [r["status"] for r in out["here"][1]]
    assert statuses == ["loaded", "loaded", "refused", "loaded", "loaded"]
    assert broken.name in out["forked"][1][2]["message"]


def _comparable(report) -> dict:
    d = report.as_dict()
    for volatile in ("read_seconds", "load_seconds", "batch_id"):
        d.pop(volatile)
    return d


def _four_files(tmp_path):
    files = [write_export(build_rows(INST, "vt", "VT01", w, "child", 6, seed=i), tmp_path / f"vt_VT01_{w}_child.csv")
             for i, w in enumerate(["T0", "T1", "T2"])]
    files.append(write_export(build_rows(INST, "vt", "VT02", "T0", "child", 6), tmp_path / "vt_VT02_T0_child.csv"))
    return files


@pytest.mark.parametrize("chunk_rows", [1, 250_000])  # a chunk per file; one chunk
def test_loads_run_in_file_order_on_the_load_thread_callbacks_here(tmp_path, monkeypatch, chunk_rows):
    """Every load runs on the one load thread, in file order; `on_outcome` and `echo` are called in the calling
    thread, once per file, in file order; reports come back in file order."""
    import threading

    import cohortflow.warehouse.batch_ingest as bi

    loads: list[tuple[str, str]] = []
    real_load = bi.load_validated

    def loading(engine, path, *a, **kw):
        loads.append((path.name, threading.current_thread().name))
        return real_load(engine, path, *a, **kw)

    monkeypatch.setattr(bi, "load_validated", loading)
    files = _four_files(tmp_path)
    seen: list[tuple[str, str]] = []
    echoed: list[str] = []
    engine = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'w.sqlite'}"))
    reports = ingest_files(files, engine, SOURCES, STUDY, INST, KEY, data_docs="none", chunk_rows=chunk_rows,
                           on_outcome=lambda name, _o: seen.append((name, threading.current_thread().name)),
                           echo=echoed.append)
    names = [p.name for p in files]
    assert [r.file_name for r in reports] == names and [r.status for r in reports] == ["loaded"] * 4
    assert [n for n, _t in loads] == names
    assert {t for _n, t in loads} != {threading.current_thread().name}
    assert all(t.startswith("cohortflow-load") for _n, t in loads)
    assert seen == [(n, threading.current_thread().name) for n in names]
    assert len(echoed) == 4 and all(n in e for n, e in zip(names, echoed, strict=True))


def test_a_load_that_raises_stops_the_later_loads_and_is_raised(tmp_path, monkeypatch):
    """When the load of the second of four files raises (a bug, a lost connection), the error reaches the
    caller, the files after it are never loaded (the load thread goes on no further), and the warehouse holds
    the first file only: as when the files are loaded one after another."""
    import cohortflow.warehouse.batch_ingest as bi

    calls: list[str] = []
    real_load = bi.load_validated

    def breaking(engine, path, *a, **kw):
        calls.append(path.name)
        if len(calls) == 2:
            raise RuntimeError(f"lost the connection while loading {path.name}")
        return real_load(engine, path, *a, **kw)

    monkeypatch.setattr(bi, "load_validated", breaking)
    files = _four_files(tmp_path)
    engine = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'w.sqlite'}"))
    with pytest.raises(RuntimeError, match=f"while loading {files[1].name}"):
        ingest_files(files, engine, SOURCES, STUDY, INST, KEY, data_docs="none", chunk_rows=1)
    assert calls == [files[0].name, files[1].name]
    from sqlalchemy import text

    with engine.connect() as conn:
        batches = conn.execute(text("SELECT id, file_name, status FROM batch")).all()
        response_batches = {b for (b,) in conn.execute(text("SELECT DISTINCT batch_id FROM response"))}
    assert [(name, status) for _id, name, status in batches] == [(files[0].name, "loaded")]
    assert response_batches == {batches[0][0]}


@pytest.mark.slow
def test_data_docs_built_in_background_same_pages_and_warehouse(tmp_path):
    """With a DocsBuilder the pages come from a forked process after ingest_files returned: once waited for,
    the same pages as when built in place, and the same warehouse."""
    synth = pytest.importorskip("cohortflow.synth.generate")
    from cohortflow.synth.faults import FAULTS
    from cohortflow.warehouse.batch_ingest import DocsBuilder

    synth.generate_study(tmp_path / "study", factor=0.05, seed=7, faults=sorted(FAULTS))
    files = inbox_files(tmp_path / "study" / "inbox")
    here = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'here.sqlite'}"))
    there = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'there.sqlite'}"))
    ref = ingest_files(files, here, SOURCES, STUDY, INST, KEY, docs_dir=tmp_path / "docs_here", chunk_rows=300)
    builder = DocsBuilder()
    got = ingest_files(files, there, SOURCES, STUDY, INST, KEY, docs_dir=tmp_path / "docs_there", chunk_rows=300,
                       docs_builder=builder)
    assert builder.wait() == []
    assert _summary(got) == _summary(ref)
    assert canonical_dump(there) == canonical_dump(here)

    def pages(root):
        return sorted(p.name for p in root.rglob("validations/**/*.html"))

    assert pages(tmp_path / "docs_here")  # the study has files with failures
    assert len(pages(tmp_path / "docs_there")) == len(pages(tmp_path / "docs_here"))


def test_a_data_docs_build_that_fails_is_reported_and_the_loads_stand(tmp_path, monkeypatch):
    import cohortflow.validation as validation
    from cohortflow.warehouse.batch_ingest import DocsBuilder

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(validation, "write_data_docs", broken)
    t0 = build_rows(INST, "vt", "VT01", "T0", "child", 6)
    t0.loc[1, "datum_invullen"] = pd.Timestamp(t0.loc[1, "datum_melding"]) + pd.Timedelta(days=545)  # quarantined
    path = write_export(t0, tmp_path / "vt_VT01_T0_child.csv")
    engine = init_warehouse(get_engine(f"sqlite:///{tmp_path / 'w.sqlite'}"))
    builder = DocsBuilder()
    reports = ingest_files([path], engine, SOURCES, STUDY, INST, KEY, docs_dir=tmp_path / "docs",
                           docs_builder=builder)
    assert reports[0].status == "loaded" and reports[0].rows_quarantined == 1
    errors = builder.wait()
    assert len(errors) == 1 and "vt_VT01_T0_child.csv" in errors[0] and "OSError: disk full" in errors[0]


def test_a_reader_process_that_dies_leaves_the_files_to_this_process(tmp_path, monkeypatch):
    """When a reader process dies while reading (here: it exits at the third file, as a crash or the OOM killer
    would end it), that file and the later ones are read in this process: every file loads, and the warehouse
    equals that of reading every file here."""
    import os

    import cohortflow.warehouse.batch_ingest as bi

    parent, real_read = os.getpid(), bi.read_file
    files = _four_files(tmp_path)

    read_here: list[str] = []

    def dying(path, *a, **kw):
        if os.getpid() != parent and path == files[2]:
            os._exit(9)
        if os.getpid() == parent:
            read_here.append(path.name)
        return real_read(path, *a, **kw)

    monkeypatch.setattr(bi, "read_file", dying)
    dumps = []
    for n in (0, 2):
        monkeypatch.setattr(bi._Reader, "PROCESSES", n)
        read_here.clear()
        engine = init_warehouse(get_engine(f"sqlite:///{tmp_path / f'w{n}.sqlite'}"))
        reports = ingest_files(files, engine, SOURCES, STUDY, INST, KEY, data_docs="none")
        assert [r.status for r in reports] == ["loaded"] * 4
        assert read_here == [f.name for f in (files if n == 0 else files[2:])]
        dumps.append(canonical_dump(engine))
    assert dumps[0] == dumps[1]
