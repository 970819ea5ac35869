"""Benchmark: wave linkage and export time at study size factor 1 and 10.

Builds warehouse-shaped frames (response, score) of the configured study directly (households from the
arms' targets x factor, 2 adults + 1-2 children each, every wave, ~70% response per follow-up wave, 10
scales per response), because generating and ingesting factor 10 through the files takes far longer than
the linkage itself. Times `link_waves`, `wide_frame`, `snapshot_hash` and writing Parquet, CSV and .sav.

    .venv/bin/python benchmarks/bench_linkage.py --factors 1 10

Measured 2026-11-23 on the 2-core build machine (pandas 3.1, pyreadstat 1.3), nothing else running:

| factor | responses | long rows | link_waves s | wide s | snapshot s | export s (parquet,csv,sav) |
|---|---|---|---|---|---|---|
| 1 | 19,537 | 195,370 | 0.48 | 0.13 | 0.75 | 5.22 |
| 10 | 195,236 | 1,952,360 | 5.98 | 2.16 | 12.51 | 59.12 |

Export includes both datasets in all three formats, the codebook and two snapshot hashes; at factor 10 about
a third is CSV, a quarter .sav and a fifth the hashes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cohortflow.config.study import Study, load_study
from cohortflow.warehouse.export import export_datasets
from cohortflow.warehouse.linkage import link_waves, snapshot_hash, wide_frame

N_SCALES = 10


def build_frames(study: Study, factor: float, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Warehouse-shaped response and score frames for a study of `factor` x the arms' targets."""
    rng = np.random.default_rng(seed)
    roles = {(r.informant, r.subject): r.code for r in study.roles}
    rows = []
    for arm in study.arms:
        n_hh = int(round((arm.target_households or arm.target_respondents or 0) * factor))
        sites = [s.code for s in arm.sites] or ["S"]
        waves = study.waves_of(arm.code)
        hh = np.arange(n_hh)
        site = rng.choice(sites, n_hh)
        reg = pd.Timestamp("2023-01-01") + pd.to_timedelta(rng.integers(0, 365, n_hh), "D")
        members = []
        for k, (inf, subj, age) in enumerate([("self", "adult", 400), ("self", "adult", 410), ("self", "child", 130),
                                              ("parent", "child", 130)]):
            if (inf, subj) not in roles:
                continue
            members.append((k, roles[(inf, subj)], age))
        for w in waves:
            wave = study.wave(w)
            p = 1.0 if w == study.baseline_wave else 0.7
            for k, role, age in members:
                take = rng.random(n_hh) < p
                day = wave.offset_days + rng.integers(-20, 21, take.sum())
                h = hh[take]
                hid = [f"{arm.code}-{i}" for i in h]
                inf_k = 0 if role == roles.get(("parent", "child")) else k
                subj_k = 2 if role == roles.get(("parent", "child")) else k
                rows.append(pd.DataFrame({
                    "household_id": hid, "person_id": [f"{x}-{inf_k}" for x in hid],
                    "subject_id": [f"{x}-{subj_k}" for x in hid], "role": role, "arm": arm.code, "site": site[take],
                    "wave": w, "registration_date": reg[take], "days_since_t0": day,
                    "subject_age_months": age + day // 30, "subject_sex": np.where(h % 2 == 0, "male", "female")}))
    r = pd.concat(rows, ignore_index=True)
    r["response_date"] = r["registration_date"] + pd.to_timedelta(r["days_since_t0"], "D")
    r["response_id"] = np.arange(1, len(r) + 1)
    s = pd.DataFrame({"response_id": np.repeat(r["response_id"].to_numpy(), N_SCALES),
                      "instrument": "bench", "scale": np.tile([f"s{i}" for i in range(N_SCALES)], len(r)),
                      "score": rng.normal(20, 5, len(r) * N_SCALES).round(1)})
    s["above_cutoff"] = s["score"] >= 25
    return r, s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0, 10.0])
    ap.add_argument("--formats", default="parquet,csv,sav")
    args = ap.parse_args()
    study = load_study()
    print("| factor | responses | long rows | link_waves s | wide s | snapshot s | export s (" + args.formats + ") |")
    print("|---|---|---|---|---|---|---|")
    for f in args.factors:
        r, s = build_frames(study, f)
        t = time.perf_counter()
        ld = link_waves(r, s, None, study)
        t_link = time.perf_counter() - t
        t = time.perf_counter()
        wide_frame(ld.long, study)
        t_wide = time.perf_counter() - t
        t = time.perf_counter()
        snapshot_hash(ld.long)
        t_snap = time.perf_counter() - t
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            export_datasets(ld, study, {}, Path(d), tuple(args.formats.split(",")))
            t_exp = time.perf_counter() - t
        print(f"| {f:g} | {len(r):,} | {len(ld.long):,} | {t_link:.2f} | {t_wide:.2f} | {t_snap:.2f} | {t_exp:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
