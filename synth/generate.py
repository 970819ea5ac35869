"""generate_study: a realistic synthetic study (exports per Contract 7, truth, manifest), deterministic by seed."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from cohortflow.config.study import Study, load_study
from cohortflow.instruments.model import Instrument
from cohortflow.instruments.registry import load_instruments

from .config import Questionnaires, SynthModel, load_questionnaires, load_synth_model
from .exports import WRITERS, export_spec, item_column
from .faults import FILE_FAULTS, FRAME_FAULTS, ExportFile, FaultInjector, check_fault_names
from .items import item_params
from .latent import draw_problem
from .manifest import ManifestFile, StudyManifest
from .population import Population, build_population
from .responses import (
    RoleBlock,
    available_instruments,
    build_role_blocks,
    observed_severity,
    participation,
    person_response,
)
from .truth import compute_truth

DEFAULT_SEED = 20241120


def _rng(seed: int, stream: str) -> np.random.Generator:
    """An independent, reproducible RNG stream per purpose (adding faults never shifts the data)."""
    return np.random.default_rng([seed, zlib.crc32(stream.encode())])


TEXT_COLUMNS = ("gezin_id", "resp_id", "naam", "email", "telefoon", "adres", "bsn", "site")


def release_memory() -> None:
    """Hand freed heap memory back to the operating system (glibc's malloc_trim, Arrow's pool), so that the
    peak memory of a large study stays near what is really in use; a no-op elsewhere."""
    import contextlib
    import ctypes
    import ctypes.util

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):  # not glibc
            ctypes.CDLL(name).malloc_trim(0)


def _person_arrays(pop: Population) -> dict[str, object]:
    """Person columns for the export files: text as the frame's own (Arrow-backed) arrays, taken per file
    (compact: Python string objects are made per file, when written), the rest as numpy arrays."""
    p = pop.persons
    out: dict[str, object] = {c: p[c].array for c in TEXT_COLUMNS}
    out["birth_date"] = p["birth_date"].to_numpy()
    out["sex"] = p["sex"].to_numpy()
    out["registration"] = pop.households["registration"].to_numpy()[p["hh_idx"].to_numpy()]
    return out


@dataclass
class _BlockExport:
    """What the export files of one role block need: the block, its answered rows' durations, and per item
    column its block position, export name and whether it holds one-decimal numbers."""

    block: RoleBlock
    parent: bool
    duration: np.ndarray  # per block row (NaN where not answered)
    item_columns: dict[str, tuple[int, bool]]  # export column -> (block column, one decimal)


def _block_export(block: RoleBlock, keep: np.ndarray, study: Study, instruments: dict[str, Instrument],
                  decimals: set[str], rng: np.random.Generator) -> _BlockExport:
    """Durations of the answered rows (about 15 s per answered item plus start-up, right-skewed, one decimal)
    and the item column map of one block."""
    answered = (~np.isnan(block.codes[keep])).sum(axis=1)
    duration = np.full(len(block.rows), np.nan)
    duration[keep] = np.round(1.5 + 0.25 * answered * rng.lognormal(0.0, 0.35, len(answered)), 1)
    cols = {}
    for j, key in enumerate(block.item_keys):
        inst = _instrument_of(key, instruments)
        cols[item_column(inst, key[len(inst.code) + 1:])] = (j, key in decimals)
    return _BlockExport(block, study.role(block.role).informant == "parent", duration, cols)


def _file_frame(be: _BlockExport, rows: np.ndarray, pa: dict[str, object], all_columns: list[str],
                columns: list[str] | None = None) -> pd.DataFrame:
    """Export rows (Contract 7 columns, item columns upper-case) of block rows `rows`; only `columns` if
    given (same values as in the whole frame)."""
    b = be.block
    inf = b.rows["informant"].to_numpy()[rows]
    sub = b.rows["subject"].to_numpy()[rows]
    want = all_columns if columns is None else [c for c in all_columns if c in set(columns)]
    out: dict[str, object] = {}
    for c in want:
        if c in be.item_columns:
            j, one_decimal = be.item_columns[c]
            v = b.codes[rows, j].astype(np.float64)
            out[c] = np.round(v, 1) if one_decimal else v
        elif c == "kind_id":
            out[c] = pa["resp_id"].take(sub)
        elif c in TEXT_COLUMNS:
            out[c] = pa[c].take(inf)
        elif c == "geboortedatum":
            out[c] = pa["birth_date"][inf]
        elif c == "geslacht":
            out[c] = pa["sex"][inf]
        elif c == "kind_geboortedatum":
            out[c] = pa["birth_date"][sub]
        elif c == "kind_geslacht":
            out[c] = pa["sex"][sub]
        elif c == "datum_melding":
            out[c] = pa["registration"][inf]
        elif c == "datum_invullen":
            out[c] = b.rows["date"].to_numpy()[rows]
        elif c == "duur_min":
            out[c] = be.duration[rows]
        else:
            raise KeyError(f"export column {c!r} is not known to the generator")
    return pd.DataFrame(out, columns=want)


def _instrument_of(key: str, instruments: dict[str, Instrument]) -> Instrument:
    best = max((c for c in instruments if key.startswith(c + "_")), key=len)
    return instruments[best]


def _id_columns(parent: bool) -> list[str]:
    """Contract 7 identifier and date columns of an export, in order (before the item columns)."""
    cols = ["gezin_id", "resp_id"] + (["kind_id"] if parent else [])
    cols += ["naam", "email", "telefoon", "adres", "bsn", "geboortedatum", "geslacht"]
    if parent:
        cols += ["kind_geboortedatum", "kind_geslacht"]
    return cols + ["datum_melding", "datum_invullen", "duur_min"]


def generate_study(
    out_dir: Path,
    factor: float = 1.0,
    seed: int = DEFAULT_SEED,
    faults: Iterable[str] | None = None,
    study: Study | None = None,
    instruments: dict[str, Instrument] | None = None,
    *,
    model: SynthModel | None = None,
    questionnaires: Questionnaires | None = None,
    truth_persons_per_arm: int | None = None,
) -> StudyManifest:
    """Generate a synthetic study under `out_dir`: exports in `inbox/`, truth and manifest in `truth/`.

    `factor` scales the study's targets (1 = study.yaml's targets); `seed` fixes everything; `faults`
    names faults to inject (see cohortflow.synth.faults.FAULTS). Returns the manifest (also written to
    `out_dir/truth/manifest.json`). Export files (.sav/.xlsx/.csv) already in `out_dir/inbox` are removed. `truth_persons_per_arm` overrides model.yaml's Monte Carlo size.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    fault_list = list(faults or [])
    check_fault_names(fault_list)
    out_dir = Path(out_dir)
    study = study or load_study()
    instruments = instruments if instruments is not None else load_instruments()
    model = model or load_synth_model()
    quest = questionnaires or load_questionnaires()

    avail = available_instruments(study, quest, instruments)
    used_insts = sorted({c for codes in avail.values() for c in codes})
    constructs = sorted({instruments[c].construct_code for c in used_insts})

    # the truth first: its Monte Carlo arrays come and go before the study's own data take memory
    used_by_arm = {c: sorted({a for (a, _r), codes in avail.items() if c in codes}) for c in used_insts}
    truth = compute_truth(study, model, instruments, used_by_arm, _rng(seed, "truth"), truth_persons_per_arm)
    truth.update({"seed": seed, "factor": factor})
    release_memory()

    pop = build_population(study, model, quest, factor, _rng(seed, "population"))
    release_memory()
    problems = {c: draw_problem(study, model, pop, c, _rng(seed, f"latent:{c}")) for c in constructs}
    # baseline questionnaires, baseline response, observed baseline severity, then MAR attrition at the
    # follow-ups; follow-up questionnaires are drawn for the responding informants only
    insts_used = {c: instruments[c] for c in used_insts}
    items_rng = _rng(seed, "items")
    base = study.baseline_wave
    blocks = build_role_blocks(study, pop, insts_used, avail, problems, model, items_rng, waves=[base])
    u = _rng(seed, "person_response").random((len(pop.persons), len(study.wave_codes)))
    hh0, _ = participation(study, model, pop, None, _rng(seed, "attrition"))
    responded0 = person_response(study, model, pop, hh0, u)
    severity = observed_severity(blocks, base, pop, instruments, responded0)
    hh_resp, dropout = participation(study, model, pop, severity, _rng(seed, "attrition"))
    responded = person_response(study, model, pop, hh_resp, u)
    blocks += build_role_blocks(study, pop, insts_used, avail, problems, model, items_rng,
                                waves=[w for w in study.wave_codes if w != base], responded=responded)
    release_memory()

    # export files per arm/site/wave/role: planned here, each frame built only when written (bounded memory)
    dur_rng = _rng(seed, "duration")
    pa = _person_arrays(pop)
    decimals = {p.key for c in used_insts for p in item_params(instruments[c], model.items)
                if p.numeric is not None and not p.integer}
    files: dict[str, ExportFile] = {}
    n_persons = len(pop.persons)
    answered = {w: np.zeros(n_persons, dtype=bool) for w in study.wave_codes}
    role_answered = {r.code: np.zeros(n_persons, dtype=bool) for r in study.roles}
    for b in blocks:
        informant = b.rows["informant"].to_numpy()
        keep = responded[b.wave].to_numpy()[informant]
        answered[b.wave][informant[keep]] = True
        role_answered[b.role][informant[keep]] = True
        be = _block_export(b, keep, study, instruments, decimals, dur_rng)
        kept = np.flatnonzero(keep)
        order = pd.DataFrame({"arm": b.rows["arm"].to_numpy()[kept], "site": pa["site"].take(informant[kept]),
                              "resp_id": pa["resp_id"].take(informant[kept])})
        if be.parent:
            order["kind_id"] = pa["resp_id"].take(b.rows["subject"].to_numpy()[kept])
        order = order.sort_values(list(order.columns), kind="stable")
        for (arm, site), g in order.groupby(["arm", "site"], sort=True):
            rows = kept[g.index.to_numpy()]
            inst_list = [instruments[c] for c in b.instruments[arm]]
            item_cols = {item_column(i, it) for i in inst_list for it in i.item_codes}
            cols = _id_columns(be.parent) + [c for c in be.item_columns if c in item_cols]
            fmt = quest.format_of(arm)
            rel = f"inbox/{arm}_{site}_{b.wave}_{b.role}.{fmt}"
            files[rel] = ExportFile(rel, arm, site, b.wave, b.role, fmt, export_spec(cols, inst_list), inst_list,
                                    cols, len(rows), partial(_file_frame, be, rows, pa, cols))

    injector = FaultInjector(study, files, _rng(seed, "faults"))
    for kind in FRAME_FAULTS:
        for _ in range(fault_list.count(kind)):
            getattr(injector, kind)()
    file_fault_targets = []
    for kind in FILE_FAULTS:
        for _ in range(fault_list.count(kind)):
            if kind == "empty_file":
                file_fault_targets.append((kind, None, _free_layout_path(study, quest, files, injector)))
            else:
                file_fault_targets.append((kind, injector.pick_file_fault(kind), None))

    inbox = out_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for old in inbox.iterdir():  # exports of an earlier run here would mix with this one
        if old.is_file() and old.suffix in (".sav", ".xlsx", ".csv"):
            old.unlink()
    for f in files.values():
        WRITERS[f.format](f.frame, out_dir / f.path, f.spec)
        f.release()
    release_memory()
    manifest_files = [ManifestFile(path=f.path, arm=f.arm, site=f.site, wave=f.wave, role=f.role, format=f.format,
                                   n_rows=f.n_rows) for f in files.values()]
    for kind, f, extra in file_fault_targets:
        if kind == "truncated_file":
            injector.truncate(out_dir, f)
        elif kind == "wrong_format":
            injector.wrong_format(out_dir, f)
        else:
            rel, arm, site, wave, role, fmt = extra
            injector.empty_file(out_dir, None, rel)  # type: ignore[arg-type]
            manifest_files.append(ManifestFile(path=rel, arm=arm, site=site, wave=wave, role=role, format=fmt,
                                               n_rows=0))

    # truth
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    (truth_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=False), encoding="utf-8")
    persons_table(study, pop, problems, answered, dropout, role_answered).to_parquet(
        truth_dir / "persons.parquet", index=False)

    manifest = StudyManifest(
        out_dir=out_dir, seed=seed, factor=factor, files=manifest_files, faults=injector.records,
        households=pop.households.groupby("arm").size().reindex(study.arm_codes).fillna(0).astype(int).to_dict(),
        persons=len(pop.persons),
    )
    manifest.write()
    return manifest


def _free_layout_path(study: Study, quest: Questionnaires, files: dict[str, ExportFile],
                      injector: FaultInjector) -> tuple[str, str, str, str, str, str]:
    """A layout path (arm, site, wave, role) that no generated file uses, for an empty file; roles and arms
    that have files elsewhere first (a site without households at that wave, say)."""
    with_files = {(f.arm, f.role) for f in files.values()}
    cands = []
    for arm in study.arms:
        for site in [s.code for s in arm.sites] or [arm.code.upper()]:
            for wave in study.waves_of(arm.code):
                for role in study.roles:
                    fmt = quest.format_of(arm.code)
                    rel = f"inbox/{arm.code}_{site}_{wave}_{role.code}.{fmt}"
                    if rel not in files and rel not in injector.used:
                        cands.append(((arm.code, role.code) not in with_files, rel, arm.code, site, wave, role.code,
                                      fmt))
    if not cands:
        raise ValueError("fault 'empty_file': every layout path already has a file")
    best = min(cands, key=lambda c: c[0])
    injector.used.add(best[1])
    return best[1:]  # type: ignore[return-value]


def persons_table(
    study: Study, pop: Population, problems: dict[str, pd.DataFrame], answered: dict[str, np.ndarray],
    dropout: pd.Series, role_answered: dict[str, np.ndarray],
) -> pd.DataFrame:
    """truth/persons.parquet: raw ids, arm, site, member, roles answered, birth date, sex, waves responded,
    household dropout wave, latent problem level at baseline per construct (+ = worse).

    `answered[wave]` / `role_answered[role]`: per person, answered at least one questionnaire (as informant)
    at the wave / in the role."""
    p = pop.persons
    hh = pop.households
    out = pd.DataFrame({
        "gezin_id": p["gezin_id"], "resp_id": p["resp_id"], "arm": p["arm"], "site": p["site"],
        "member": p["member"],
        "roles": _joined_flags(role_answered, sorted(role_answered)),
        "birth_date": p["birth_date"], "sex": p["sex"].map({1: "male", 2: "female"}),
        "registration_date": hh["registration"].to_numpy()[p["hh_idx"].to_numpy()],
    })
    for w in study.wave_codes:
        out[f"responded_{w}"] = answered[w]
    out["waves_responded"] = _joined_flags(answered, study.wave_codes)
    out["dropout_wave"] = dropout.to_numpy()[p["hh_idx"].to_numpy()]
    base = study.baseline_wave
    for c, prob in problems.items():
        out[f"theta_{base}_{c}"] = prob[base].to_numpy()
    return out


def _joined_flags(flags: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Per person, the names whose flag is set, comma-joined in the order of `names` ('' when none)."""
    code = np.zeros(len(flags[names[0]]), dtype=np.int64)
    for k, n in enumerate(names):
        code |= flags[n].astype(np.int64) << k
    texts = np.array([",".join(n for k, n in enumerate(names) if c >> k & 1) for c in range(2 ** len(names))],
                     dtype=object)
    return texts[code]
