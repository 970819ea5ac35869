"""Scoring throughput in item values per second (goal: >= 5 million item values/s).

Factor 1 = every shipped instrument answered 3,000 times (about the planned study: 1,700 households x
several respondents x 3 waves, each answering a few instruments), factor 10 = 30,000 times. Item values are
random valid codes with 5% missing, long format `response_id, instrument, item, value` as read from the
warehouse. Timed: `score_all` over all instruments (pivot, score maps, reversal, scales, cut-offs, bands,
classifications, output frame), best of 3 runs. Wall time suffers when other jobs share the cores; the
CPU-time column (this process only; the engine is single-threaded) is the steadier figure.

Instrument and item columns are categoricals (as read from Parquet or after `astype("category")`); with
`--str-columns` they are plain strings and the string-to-category conversion is timed too. With `--wide` the
same values are given as the warehouse's wide per-instrument blocks (`warehouse.read.InstrumentItems`, what
`warehouse.read.item_matrices` reads from the packed item blocks and `scoring.store.score_warehouse` scores).

Run: .venv/bin/python benchmarks/bench_scoring.py [--factors 1 10] [--str-columns | --wide]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import pandas as pd

from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.engine import score_all
from cohortflow.warehouse.read import InstrumentItems

BASE_RESPONSES = 3000


def make_item_values(instruments: dict, n_responses: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    next_id = 0
    for code in sorted(instruments):
        inst = instruments[code]
        ids = np.arange(next_id, next_id + n_responses, dtype=np.int64)
        next_id += n_responses
        for it in inst.items:
            rs = inst.response_scale_of(it)
            if rs.options:
                vals = rng.choice(np.array(rs.codes, dtype=float), size=n_responses)
            else:
                lo, hi = rs.numeric
                vals = rng.integers(int(lo), int(hi) + 1, size=n_responses).astype(float)
            vals[rng.random(n_responses) < 0.05] = np.nan
            frames.append(pd.DataFrame({"response_id": ids, "instrument": code, "item": it.code, "value": vals}))
    iv = pd.concat(frames, ignore_index=True)
    iv["instrument"] = iv["instrument"].astype("category")
    iv["item"] = iv["item"].astype("category")
    ctx = pd.DataFrame(
        {
            "role": rng.choice(["adult", "parent", "child"], size=next_id),
            "subject_age_years": rng.uniform(3, 60, size=next_id),
            "subject_sex": rng.choice(["male", "female"], size=next_id),
        },
        index=pd.RangeIndex(next_id, name="response_id"),
    )
    return iv, ctx


def wide_blocks(iv: pd.DataFrame) -> list[InstrumentItems]:
    """The long frame as one wide block per instrument (rows by response id, items in definition order)."""
    out = []
    for code, part in iv.groupby("instrument", observed=True):
        items = list(dict.fromkeys(part["item"].astype(str)))
        wide = part.pivot(index="response_id", columns="item", values="value")
        out.append(InstrumentItems(str(code), wide.index.to_numpy(dtype=np.int64), items,
                                   np.ascontiguousarray(wide[items].to_numpy(dtype=np.float64))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--factors", type=float, nargs="+", default=[1, 10])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--str-columns", action="store_true", help="instrument/item as plain str, not categorical")
    ap.add_argument("--wide", action="store_true", help="wide per-instrument blocks (the warehouse's scoring input)")
    args = ap.parse_args()
    insts = load_instruments()
    print(f"python {platform.python_version()}, pandas {pd.__version__}, numpy {np.__version__}, {len(insts)} instruments")
    print("| factor | responses | item values | score rows | best wall (s) | item values/s (wall) | best CPU (s) | item values/s (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for factor in args.factors:
        iv, ctx = make_item_values(insts, int(BASE_RESPONSES * factor))
        if args.str_columns:
            iv = iv.astype({"instrument": "str", "item": "str"})
        data = wide_blocks(iv) if args.wide else iv
        walls, cpus = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            out = score_all(data, ctx, insts)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        wall, cpu = min(walls), min(cpus)
        print(
            f"| {factor:g} | {len(ctx):,} | {len(iv):,} | {len(out):,} | {wall:.3f} | {len(iv) / wall / 1e6:.2f} M "
            f"| {cpu:.3f} | {len(iv) / cpu / 1e6:.2f} M |"
        )


if __name__ == "__main__":
    main()
