"""The fast engine's per-block algebra (analysis/fastlmm_core.py) against numpy's LAPACK on random blocks:
stacked Cholesky inverses and log-determinants, and M = Lambda' Z'Z Lambda + I, P = M^-1 Lambda', K = Lambda P
computed over Lambda's nonzero entries, to 1e-12 (they differ in summation order only)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from cohortflow.analysis.fastlmm_core import _block_pieces, spd_inverse_logdet


def _spd_stack(rng: np.random.Generator, g: int, q: int) -> np.ndarray:
    a = rng.normal(size=(g, q, q))
    return a @ a.transpose(0, 2, 1) + 0.1 * np.eye(q)


@pytest.mark.parametrize("q", [1, 2, 3, 5, 9])
def test_spd_inverse_logdet_matches_lapack(q):
    m = _spd_stack(np.random.default_rng(q), 50, q)
    inv, logdet = spd_inverse_logdet(m)
    assert_allclose(inv, np.linalg.inv(m), rtol=1e-10, atol=1e-12 * np.abs(np.linalg.inv(m)).max())
    assert_allclose(logdet, np.linalg.slogdet(m)[1], rtol=1e-12, atol=1e-12)


def test_spd_inverse_logdet_rejects_indefinite():
    m = np.array([[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        spd_inverse_logdet(m)


@pytest.mark.parametrize("lam", [
    np.diag([0.7, 0.0, 1.3]),  # uncorrelated terms, one at the boundary
    np.array([[0.9, 0.0, 0.0], [0.4, 0.6, 0.0], [0.0, 0.0, 1.1]]),  # a correlated pair (full 2 x 2 term)
])
def test_block_pieces_match_matrix_products(lam):
    ztz = _spd_stack(np.random.default_rng(3), 40, 3)
    pmat, k, logdet = _block_pieces(lam, np.ascontiguousarray(ztz.transpose(1, 2, 0)))
    m = lam.T @ ztz @ lam + np.eye(3)
    p_ref = np.linalg.inv(m) @ lam.T
    assert_allclose(pmat, p_ref, rtol=1e-12, atol=1e-14)
    assert_allclose(k, lam @ p_ref, rtol=1e-12, atol=1e-14)
    assert_allclose(logdet, np.linalg.slogdet(m)[1], rtol=1e-12, atol=1e-14)
