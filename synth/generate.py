"""generate_study: a realistic synthetic study (exports per Contract 7, truth, manifest), deterministic by seed."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from cohortflow.config.study import Study, load_study
from cohortflow.instruments.model import Instrument
from cohortflow.instruments.registry import load_instruments

from .config import Questionnaires, SynthModel, load_questionnaires, load_synth_model
from .exports import WRITERS, export_spec, item_column
from .faults import FILE_FAULTS, FRAME_FAULTS, ExportFile, FaultInjector, check_fault_names
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


def _duration(items: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Minutes taken: about 15 s per answered item plus start-up, right-skewed, one decimal."""
    answered = items.notna().sum(axis=1).to_numpy()
    return np.round(1.5 + 0.25 * answered * rng.lognormal(0.0, 0.35, len(items)), 1)


def _block_frame(
    block: RoleBlock, keep: np.ndarray, pop: Population, study: Study, instruments: dict[str, Instrument],
    rng: np.random.Generator,
) -> pd.DataFrame:
    """Export rows (Contract 7 columns, item columns upper-case) of one role block's answered questionnaires."""
    rows = block.rows[keep]
    items = block.items[keep]
    p = pop.persons
    inf = rows["informant"].to_numpy()
    sub = rows["subject"].to_numpy()
    role = study.role(block.role)
    out = pd.DataFrame({"gezin_id": p["gezin_id"].to_numpy()[inf], "resp_id": p["resp_id"].to_numpy()[inf]})
    if role.informant == "parent":
        out["kind_id"] = p["resp_id"].to_numpy()[sub]
    for c in ("naam", "email", "telefoon", "adres", "bsn"):
        out[c] = p[c].to_numpy()[inf]
    out["geboortedatum"] = p["birth_date"].to_numpy()[inf]
    out["geslacht"] = p["sex"].to_numpy()[inf]
    if role.informant == "parent":
        out["kind_geboortedatum"] = p["birth_date"].to_numpy()[sub]
        out["kind_geslacht"] = p["sex"].to_numpy()[sub]
    out["datum_melding"] = pop.households["registration"].to_numpy()[p["hh_idx"].to_numpy()[inf]]
    out["datum_invullen"] = rows["date"].to_numpy()
    out["duur_min"] = _duration(items, rng)
    for key in items.columns:
        inst = _instrument_of(key, instruments)
        out[item_column(inst, key[len(inst.code) + 1:])] = items[key].to_numpy()
    out["arm"] = rows["arm"].to_numpy()
    out["site"] = p["site"].to_numpy()[inf]
    return out


def _instrument_of(key: str, instruments: dict[str, Instrument]) -> Instrument:
    best = max((c for c in instruments if key.startswith(c + "_")), key=len)
    return instruments[best]


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

    pop = build_population(study, model, quest, factor, _rng(seed, "population"))
    problems = {c: draw_problem(study, model, pop, c, _rng(seed, f"latent:{c}")) for c in constructs}
    blocks = build_role_blocks(study, pop, {c: instruments[c] for c in used_insts}, avail, problems, model,
                               _rng(seed, "items"))

    # baseline response, observed baseline severity, then MAR attrition at the follow-ups
    u = _rng(seed, "person_response").random((len(pop.persons), len(study.wave_codes)))
    hh0, _ = participation(study, model, pop, None, _rng(seed, "attrition"))
    responded0 = person_response(study, model, pop, hh0, u)
    severity = observed_severity(blocks, study.baseline_wave, pop, instruments, responded0)
    hh_resp, dropout = participation(study, model, pop, severity, _rng(seed, "attrition"))
    responded = person_response(study, model, pop, hh_resp, u)

    # export frames per arm/site/wave/role
    dur_rng = _rng(seed, "duration")
    files: dict[str, ExportFile] = {}
    answered_roles: dict[int, set[str]] = {}
    answered = pd.DataFrame(False, index=pop.persons.index, columns=study.wave_codes)
    for b in blocks:
        keep = responded[b.wave].to_numpy()[b.rows["informant"].to_numpy()]
        informants = b.rows.loc[keep, "informant"].to_numpy()
        answered.loc[informants, b.wave] = True
        for i in informants:
            answered_roles.setdefault(int(i), set()).add(b.role)
        frame = _block_frame(b, keep, pop, study, instruments, dur_rng)
        for (arm, site), g in frame.groupby(["arm", "site"], sort=True):
            inst_list = [instruments[c] for c in b.instruments[arm]]
            keep_cols = [c for c in g.columns if c not in ("arm", "site")]
            item_cols = {item_column(i, it) for i in inst_list for it in i.item_codes}
            cols = [c for c in keep_cols if not c.isupper() or c in item_cols]
            sort_cols = ["resp_id", "kind_id"] if "kind_id" in g else ["resp_id"]
            g = g.sort_values(sort_cols, kind="stable")[cols].reset_index(drop=True)
            fmt = quest.format_of(arm)
            rel = f"inbox/{arm}_{site}_{b.wave}_{b.role}.{fmt}"
            files[rel] = ExportFile(rel, arm, site, b.wave, b.role, fmt, g, export_spec(cols, inst_list), inst_list)

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
    manifest_files = [ManifestFile(path=f.path, arm=f.arm, site=f.site, wave=f.wave, role=f.role, format=f.format,
                                   n_rows=len(f.frame)) for f in files.values()]
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
    used_by_arm = {c: sorted({a for (a, _r), codes in avail.items() if c in codes}) for c in used_insts}
    truth = compute_truth(study, model, instruments, used_by_arm, _rng(seed, "truth"), truth_persons_per_arm)
    truth.update({"seed": seed, "factor": factor})
    (truth_dir / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=False), encoding="utf-8")
    persons_table(study, pop, problems, answered, dropout, answered_roles).to_parquet(
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
    study: Study, pop: Population, problems: dict[str, pd.DataFrame], answered: pd.DataFrame,
    dropout: pd.Series, answered_roles: dict[int, set[str]],
) -> pd.DataFrame:
    """truth/persons.parquet: raw ids, arm, site, member, roles answered, birth date, sex, waves responded,
    household dropout wave, latent problem level at baseline per construct (+ = worse)."""
    p = pop.persons
    hh = pop.households
    out = pd.DataFrame({
        "gezin_id": p["gezin_id"], "resp_id": p["resp_id"], "arm": p["arm"], "site": p["site"],
        "member": p["member"],
        "roles": [",".join(sorted(answered_roles.get(i, set()))) for i in p.index],
        "birth_date": p["birth_date"], "sex": p["sex"].map({1: "male", 2: "female"}),
        "registration_date": hh["registration"].to_numpy()[p["hh_idx"].to_numpy()],
    })
    for w in study.wave_codes:  # answered at least one questionnaire (as informant) at the wave
        out[f"responded_{w}"] = answered[w].to_numpy()
    flags = out[[f"responded_{w}" for w in study.wave_codes]].to_numpy()
    out["waves_responded"] = [",".join(w for w, f in zip(study.wave_codes, row, strict=True) if f) for row in flags]
    out["dropout_wave"] = dropout.to_numpy()[p["hh_idx"].to_numpy()]
    base = study.baseline_wave
    for c, prob in problems.items():
        out[f"theta_{base}_{c}"] = prob[base].to_numpy()
    return out
