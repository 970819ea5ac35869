"""Small calibration run: simulated studies with a known difference in change (benchmarks/calibration.py
runs 200 studies; its figures are in benchmarks/RESULTS.md).

Stated floor: with 20 studies the 95% CI must cover the truth in at least 80% (16/20) of studies, and the mean
estimate must lie within 3 Monte Carlo SEs of the truth. The seeds are fixed, so the test is deterministic;
with a true coverage of 95% the chance of <= 15/20 is 1.6%.
"""

from __future__ import annotations

import numpy as np
import pytest

from cohortflow.analysis.calibration import calibrate


@pytest.mark.slow
def test_small_calibration_meets_the_floor():
    s = calibrate(studies=20, scale=0.35, seed=7)
    assert s.truth == -3.0
    assert s.coverage >= 0.80
    assert abs(s.bias) < 3 * s.sd_estimate / np.sqrt(s.studies)
    # the model-based SE describes the spread of the estimates (within a factor 1.5 either way)
    assert 1 / 1.5 < s.mean_se / s.sd_estimate < 1.5
