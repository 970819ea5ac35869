"""Alpha (with Feldt CI) and omega total equal R's psych on the fixture made by tests/data/r/psych_alpha.R."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from cohortflow.instruments.registry import load_instruments
from cohortflow.scoring.reliability import cronbach_alpha, omega_total, scale_reliability

R_DIR = Path(__file__).parent / "data" / "r"


def _sets() -> dict[str, pd.DataFrame]:
    data = pd.read_csv(R_DIR / "psych_alpha_data.csv")
    return {s: g.drop(columns="set").dropna(axis=1, how="all") for s, g in data.groupby("set")}


R_RESULTS = pd.read_csv(R_DIR / "psych_alpha_results.csv").set_index("set")


@pytest.mark.r_reference
@pytest.mark.parametrize("set_name", list(R_RESULTS.index))
def test_alpha_and_feldt_ci_equal_psych(set_name: str):
    x = _sets()[set_name]
    ref = R_RESULTS.loc[set_name]
    got = cronbach_alpha(x)
    assert (got["n"], got["k"]) == (ref["n"], ref["k"])
    assert_allclose(got["alpha"], ref["raw_alpha"], rtol=1e-10)
    assert_allclose([got["alpha_lower"], got["alpha_upper"]], [ref["feldt_lower"], ref["feldt_upper"]], rtol=1e-8)


@pytest.mark.r_reference
@pytest.mark.parametrize("set_name", list(R_RESULTS.index))
def test_omega_total_equals_psych_fa_ml(set_name: str):
    x = _sets()[set_name]
    assert_allclose(omega_total(x), R_RESULTS.loc[set_name, "omega_total"], atol=2e-4)


def test_alpha_edge_cases():
    assert np.isnan(cronbach_alpha(np.ones((10, 3)))["alpha"])  # no variance
    assert np.isnan(cronbach_alpha(np.arange(6.0).reshape(2, 3))["alpha"])  # too few rows
    x = np.array([[1, 2, np.nan], [2, 3, 3], [3, 3, 4], [4, 5, 5], [1, 1, 2]], dtype=float)
    assert cronbach_alpha(x)["n"] == 4  # complete cases only
    # parallel items: alpha = 1
    y = np.tile(np.arange(10.0)[:, None], (1, 4))
    assert_allclose(cronbach_alpha(y)["alpha"], 1.0)


def test_scale_reliability_per_group_uses_scored_reversed_items():
    """Reversed items enter alpha after reversal: alpha per group equals alpha of the hand-mirrored items."""
    inst = load_instruments()["kidscreen10"]
    rng = np.random.default_rng(5)
    n = 400
    theta = rng.standard_normal(n)
    mirrored = np.clip(np.round(3 + theta[:, None] + rng.standard_normal((n, 10))), 1, 5)  # 'true' direction
    raw = mirrored.copy()
    rev = [j for j, c in enumerate(inst.item_codes) if inst.item(c).reversed]
    raw[:, rev] = 6 - raw[:, rev]  # as answered on the form
    iv = pd.DataFrame(
        [(r, c, raw[r, j]) for r in range(n) for j, c in enumerate(inst.item_codes)], columns=["response_id", "item", "value"]
    )
    g = pd.DataFrame({"response_id": np.arange(n), "wave": np.where(np.arange(n) < 200, "T0", "T1"),
                      "arm": np.where(np.arange(n) % 2, "a", "b")})
    out = scale_reliability(inst, iv, g).set_index(["wave", "arm"])
    assert len(out) == 4 and (out["n"] == 100).all() and (out["scale"] == "total").all()
    sel = (np.arange(n) < 200) & (np.arange(n) % 2 == 1)
    expected = cronbach_alpha(mirrored[sel])
    assert_allclose(out.loc[("T0", "a"), "alpha"], expected["alpha"], rtol=1e-12)
    assert expected["alpha"] > 0.8 and cronbach_alpha(raw[sel])["alpha"] < expected["alpha"] - 0.2  # reversal matters
    assert 0.8 < out.loc[("T0", "a"), "omega_total"] < 1
