"""Faults injected on request into the generated exports, each recorded in the manifest.

Frame faults change a file's rows before it is written; file faults damage a written file. Every fault
uses its own file (never one another fault touched), so recorded row numbers stay exact. Faults never
change the truth (truth.json, persons.parquet describe the generated population).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from cohortflow.config.study import Study
from cohortflow.instruments.model import Instrument

from .exports import ExportSpec, csv_text
from .manifest import InjectedFault

FAULTS: dict[str, str] = {
    "duplicate_row": "a data row repeated directly below itself in the same file (the copy is the fault row)",
    "out_of_range": "one item cell holds a code outside the item's allowed codes and missing codes",
    "unknown_id": "a follow-up row whose resp_id is malformed (the household number is missing)",
    "date_outside_window": "datum_invullen lies after the wave's window (days after datum_melding, and days after "
                           "any baseline response)",
    "renamed_column": "one item column renamed in one file (leading zero dropped, e.g. PSS_03 -> PSS_3)",
    "truncated_file": "a CSV cut in the middle of its last row (a .sav cut in half when there is no CSV)",
    "empty_file": "a 0-byte file with a valid export name",
    "wrong_format": "a CSV saved under a .sav name (an .xlsx name when there is no .sav)",
    "age_rule": "an extra child self-report from a child 2 years below the role's minimum age (6 here)",
    "sex_conflict": "a person's geslacht in a follow-up wave differs from the baseline wave",
}


class ExportFile:
    """One export before writing: where it belongs, its labels and its rows.

    The frame is built on first use by `builder(columns)` (None = all columns) and dropped by `release()`
    after writing, so a whole study never sits in memory at once; a frame set by a fault stays until
    released. `columns` and `n_rows` are known without building it."""

    def __init__(self, path: str, arm: str, site: str, wave: str, role: str, format: str, spec: ExportSpec,
                 instruments: list[Instrument], columns: list[str], n_rows: int,
                 builder: Callable[[list[str] | None], pd.DataFrame]) -> None:
        self.path = path  # relative to out_dir
        self.arm, self.site, self.wave, self.role, self.format = arm, site, wave, role, format
        self.spec = spec
        self.instruments = instruments
        self.columns = list(columns)
        self.n_rows = n_rows
        self._builder = builder
        self._frame: pd.DataFrame | None = None
        self._modified = False

    @property
    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            self._frame = self._builder(None)
        return self._frame

    @frame.setter
    def frame(self, value: pd.DataFrame) -> None:
        self._frame = value
        self._modified = True
        self.columns = list(value.columns)
        self.n_rows = len(value)

    def column(self, name: str) -> pd.Series:
        """One column without building the whole frame."""
        if self._frame is not None:
            return self._frame[name]
        return self._builder([name])[name]

    def release(self) -> None:
        """Drop the built frame (a fault-modified frame is kept: it cannot be rebuilt)."""
        if not self._modified:
            self._frame = None


class FaultError(ValueError):
    """A requested fault is unknown or cannot be placed in the generated data."""


def check_fault_names(faults: list[str]) -> None:
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise FaultError(f"unknown fault(s) {unknown}; known faults: {sorted(FAULTS)}")


class FaultInjector:
    """Applies faults to `files` (ordered path -> ExportFile) with its own RNG; collects the records."""

    def __init__(self, study: Study, files: dict[str, ExportFile], rng: np.random.Generator) -> None:
        self.study = study
        self.files = files
        self.rng = rng
        self.used: set[str] = set()
        self.records: list[InjectedFault] = []

    # --- helpers -------------------------------------------------------------------------------
    def _pick(self, kind: str, ok: Callable[[ExportFile], bool]) -> ExportFile:
        cands = [f for p, f in self.files.items() if p not in self.used and f.n_rows > 0 and ok(f)]
        if not cands:
            raise FaultError(f"fault {kind!r}: no unused generated file fits it; generate a larger study "
                             "(factor) or request fewer faults")
        f = cands[int(self.rng.integers(len(cands)))]
        self.used.add(f.path)
        return f

    def _row(self, f: ExportFile, ok: np.ndarray | None = None) -> int:
        idx = np.arange(f.n_rows) if ok is None else np.flatnonzero(ok)
        if len(idx) == 0:
            raise FaultError(f"fault in {f.path}: no row fits")
        return int(idx[int(self.rng.integers(len(idx)))])

    def _record(self, kind: str, f: ExportFile, rows: list[int], column: str | None, desc: str, **details) -> None:
        self.records.append(InjectedFault(kind=kind, file=f.path, row_numbers=rows, column=column,
                                          description=desc, details=details))

    # --- frame faults --------------------------------------------------------------------------
    def duplicate_row(self) -> None:
        f = self._pick("duplicate_row", lambda f: True)
        i = self._row(f)
        fr = f.frame
        f.frame = pd.concat([fr.iloc[: i + 1], fr.iloc[[i]], fr.iloc[i + 1:]], ignore_index=True)
        self._record("duplicate_row", f, [i + 2], None, f"row {i + 2} is an exact copy of row {i + 1}",
                     duplicate_of=i + 1, resp_id=str(fr.iloc[i]["resp_id"]))

    def out_of_range(self) -> None:
        # categorical items only: a numeric answer (a 0-10 ladder, a day number) has no code list to leave
        categorical = lambda f: [c for c in f.spec.item_columns  # noqa: E731 - labels include the missing codes
                                 if any(k >= 0 for k in f.spec.value_labels.get(c, {}))]
        f = self._pick("out_of_range", lambda f: bool(categorical(f)))
        item_cols = categorical(f)
        vals = f.frame[item_cols].to_numpy(dtype=float)
        i = self._row(f, (vals >= 0).any(axis=1))
        cols = [c for c, v in zip(item_cols, vals[i], strict=True) if v >= 0]
        col = cols[int(self.rng.integers(len(cols)))]
        allowed = [k for k in f.spec.value_labels.get(col, {}) if k >= 0]
        bad = (max(allowed) if allowed else 0) + 10
        old = float(f.frame.at[i, col])
        f.frame.at[i, col] = float(bad)
        f.frame = f.frame  # changed in place: keep it (release() must not rebuild it)
        self._record("out_of_range", f, [i + 1], col, f"{col} = {bad}, allowed codes {sorted(allowed)}",
                     value=bad, original=old)

    def unknown_id(self) -> None:
        base = self.study.baseline_wave
        f = self._pick("unknown_id", lambda f: f.wave != base)
        i = self._row(f)
        old = str(f.frame.at[i, "resp_id"])
        parts = old.split("-")
        new = "-".join(parts[:-2] + parts[-1:])  # drop the household number: G-PT03-0012-V1 -> G-PT03-V1
        f.frame.at[i, "resp_id"] = new
        f.frame = f.frame  # changed in place: keep it (release() must not rebuild it)
        self._record("unknown_id", f, [i + 1], "resp_id", f"resp_id {new!r} lacks the household number",
                     value=new, original=old)

    def date_outside_window(self) -> None:
        # a role without an upper age (adults): the later date cannot also push a subject past the role's age
        try:
            f = self._pick("date_outside_window", lambda f: self.study.role(f.role).max_age_years is None)
        except FaultError:
            f = self._pick("date_outside_window", lambda f: True)
        i = self._row(f)
        hi = self.study.wave(f.wave).window_days[1]
        # past the window counted from registration AND from any baseline response (those lie at most the
        # baseline window's end after registration), so both readings of "the window" see the fault
        days = hi + 45 + max(0, self.study.wave(self.study.baseline_wave).window_days[1])
        old = pd.Timestamp(f.frame.at[i, "datum_invullen"])
        new = pd.Timestamp(f.frame.at[i, "datum_melding"]) + pd.Timedelta(days=days)
        f.frame.at[i, "datum_invullen"] = new
        f.frame = f.frame  # changed in place: keep it (release() must not rebuild it)
        self._record("date_outside_window", f, [i + 1], "datum_invullen",
                     f"datum_invullen {new:%d-%m-%Y} is {days} days after datum_melding; window of "
                     f"{f.wave} is {list(self.study.wave(f.wave).window_days)}",
                     value=f"{new:%Y-%m-%d}", original=f"{old:%Y-%m-%d}", days_after_registration=days)

    def renamed_column(self) -> None:
        def renamable(f: ExportFile) -> bool:
            return any(c.rsplit("_", 1)[-1].startswith("0") for c in f.spec.item_columns)

        f = self._pick("renamed_column", renamable)
        cols = [c for c in f.spec.item_columns if c.rsplit("_", 1)[-1].startswith("0")]
        col = cols[int(self.rng.integers(len(cols)))]
        head, tail = col.rsplit("_", 1)
        new = f"{head}_{tail.lstrip('0') or '0'}"
        f.frame = f.frame.rename(columns={col: new})
        f.spec.item_columns = [new if c == col else c for c in f.spec.item_columns]
        for table in (f.spec.variable_labels, f.spec.value_labels):
            if col in table:
                table[new] = table.pop(col)
        self._record("renamed_column", f, [], col, f"column {col} is named {new} in this file", renamed_to=new)

    def age_rule(self) -> None:
        young = {r.code: r.min_age_years for r in self.study.roles
                 if r.informant == "self" and r.subject == "child" and r.min_age_years}
        f = self._pick("age_rule", lambda f: f.role in young)
        i = self._row(f)
        age = int(np.floor(young[f.role])) - 2
        row = f.frame.iloc[[i]].copy()
        gezin = str(row["gezin_id"].iloc[0])
        new_id = f"{gezin}-K9"
        when = pd.Timestamp(row["datum_invullen"].iloc[0])
        birth = when - pd.DateOffset(years=age) - pd.Timedelta(days=100)
        row["resp_id"] = new_id
        row["geboortedatum"] = birth
        f.frame = pd.concat([f.frame, row], ignore_index=True)
        n = len(f.frame)
        self._record("age_rule", f, [n], "geboortedatum",
                     f"{f.role} self-report of {new_id}, aged {age} at datum_invullen (role minimum "
                     f"{young[f.role]:g})", age_years=age, resp_id=new_id, birth_date=f"{birth:%Y-%m-%d}")

    def sex_conflict(self) -> None:
        base = self.study.baseline_wave
        baseline_rows: dict[tuple[str, str, str], tuple[str, pd.Series]] = {}
        for p, g in self.files.items():
            if g.wave == base and g.n_rows and "kind_id" not in g.columns:
                baseline_rows[(g.arm, g.site, g.role)] = (p, g.column("resp_id"))

        def has_pair(f: ExportFile) -> bool:
            b = baseline_rows.get((f.arm, f.site, f.role))
            return f.wave != base and "kind_id" not in f.columns and b is not None and f.n_rows > 0 and \
                bool(f.column("resp_id").isin(set(b[1])).any())

        f = self._pick("sex_conflict", has_pair)
        bpath, bids = baseline_rows[(f.arm, f.site, f.role)]
        self.used.add(bpath)
        i = self._row(f, f.frame["resp_id"].isin(set(bids)).to_numpy())
        rid = str(f.frame.at[i, "resp_id"])
        old = int(f.frame.at[i, "geslacht"])
        f.frame.at[i, "geslacht"] = 3 - old
        f.frame = f.frame  # changed in place: keep it (release() must not rebuild it)
        brow = int(np.flatnonzero(bids.to_numpy() == rid)[0]) + 1
        self._record("sex_conflict", f, [i + 1], "geslacht",
                     f"{rid} has geslacht {3 - old} here but {old} in {bpath} row {brow}",
                     resp_id=rid, value=3 - old, original=old, baseline_file=bpath, baseline_row=brow)

    # --- file faults (after writing) -----------------------------------------------------------
    def pick_file_fault(self, kind: str) -> ExportFile:
        if kind == "truncated_file":
            fmts = ("csv", "sav")
        elif kind == "wrong_format":
            fmts = ("sav", "xlsx")
        else:
            fmts = ("csv", "sav", "xlsx")
        for fmt in fmts:
            try:
                return self._pick(kind, lambda f, fmt=fmt: f.format == fmt and f.n_rows >= 2)
            except FaultError:
                continue
        raise FaultError(f"fault {kind!r}: no unused file of format {fmts} with at least 2 rows")

    def truncate(self, out_dir: Path, f: ExportFile) -> None:
        path = out_dir / f.path
        data = path.read_bytes()
        if f.format == "csv":
            last_start = data.rstrip(b"\r\n").rfind(b"\n") + 1
            line_len = len(data.rstrip(b"\r\n")) - last_start
            cut = last_start + max(1, line_len // 2)
            path.write_bytes(data[:cut])
            n = f.n_rows
            self._record("truncated_file", f, [n], None,
                         f"file cut after {cut} of {len(data)} bytes, in the middle of row {n}",
                         bytes_kept=cut, original_size=len(data), complete_rows=n - 1)
        else:
            cut = len(data) // 2
            path.write_bytes(data[:cut])
            self._record("truncated_file", f, [], None, f"file cut after {cut} of {len(data)} bytes (half)",
                         bytes_kept=cut, original_size=len(data))

    def wrong_format(self, out_dir: Path, f: ExportFile) -> None:
        (out_dir / f.path).write_bytes(csv_text(f.frame, f.spec).encode("cp1252"))
        self._record("wrong_format", f, [], None, f"{f.path} holds CSV text (';', cp1252), not {f.format}",
                     actual_format="csv", expected_format=f.format)

    def empty_file(self, out_dir: Path, f: ExportFile, path: str | None) -> None:
        target = path or f.path
        (out_dir / target).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / target).write_bytes(b"")
        rec = InjectedFault(kind="empty_file", file=target, description=f"{target} is empty (0 bytes)",
                            details={"replaced_existing": path is None})
        self.records.append(rec)


FRAME_FAULTS = ["sex_conflict", "duplicate_row", "out_of_range", "unknown_id", "date_outside_window", "renamed_column",
                "age_rule"]
FILE_FAULTS = ["truncated_file", "wrong_format", "empty_file"]
