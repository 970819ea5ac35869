"""Fast linear mixed models for many small independent blocks (lme4's profiled deviance, batched numpy).

The model is ``y = X beta + Z b + e`` with ``b ~ N(0, sigma^2 Lambda Lambda')`` and ``e ~ N(0, sigma^2 I)``;
``Lambda`` is lme4's relative covariance factor, parameterised by ``theta`` (the lower triangle of each
random-effect term's Cholesky factor, column by column, as in lme4). The random effects fall into independent
*blocks* (a subject, or a household with its persons nested inside): ``Z`` and ``Lambda`` are block diagonal.

For one block with ``M = Lambda' Z'Z Lambda + I`` (q x q, eigenvalues >= 1), Woodbury gives
``Z'V^{-1}`` products from the block's sufficient statistics ``Z'Z``, ``S = Z'[X y]`` only:

* ``[X y]' V^{-1} [X y] sigma^2 = Omega - sum_i S_i' K_i S_i`` with ``K = Lambda M^{-1} Lambda'``,
* ``log|V| = sum_i log|M_i| + N log sigma^2``.

So one evaluation of the profiled (RE)ML deviance costs O(blocks q^3), done for all blocks at once with
stacked numpy arrays. Blocks with the same ``Z'Z`` (persons sharing a pattern of observed waves) share ``M``:
their ``S_i (x) S_i`` products are summed once, and an evaluation then costs O(patterns) instead of
O(blocks). The analytic gradient with respect to ``theta`` (derived below in ``_Evaluator.evaluate``) lets
L-BFGS-B converge tightly; a few Newton steps on the free parameters polish the optimum.

Entry points: :func:`fit_lmm_fast` (arrays in, :class:`FastLmmFit` out) and :class:`LmmDesign` (the
precomputed blocks, reusable for bootstrap refits with block weights).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse

CovKind = Literal["full", "diag"]

#: lme4's default tolerance for a singular fit (``isSingular(tol = 1e-4)`` on the diagonal of theta).
SINGULAR_TOL = 1e-4


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a 2-d array (first-seen order) and the index of each row's distinct row (hashing)."""
    if a.shape[1] == 1:
        codes, uniq = pd.factorize(a[:, 0], sort=False)
        return np.asarray(uniq).reshape(-1, 1), codes
    _, first, inv = np.unique(a, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # distinct rows in first-seen order
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return a[first[order]], rank[np.asarray(inv).ravel()]


def spd_inverse_logdet(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverses and log-determinants of a stack of small symmetric positive definite matrices (G, q, q).

    Cholesky factors, their triangular inverses and M^-1 = L^-T L^-1 element by element over the whole stack
    (batch axis last, so every step is one vectorised operation over G matrices): for the q <= ~12 blocks of a
    mixed model this is several times faster than LAPACK's LU per matrix behind np.linalg.inv + slogdet (the
    same numbers to rounding; tests/test_fastlmm_engine.py). Returns (inverses (G, q, q), log|M| (G,)).
    """
    inv, logdet = _spd_inverse_logdet_last(np.ascontiguousarray(m.transpose(1, 2, 0)))
    return inv.transpose(2, 0, 1), logdet


def _spd_inverse_logdet_last(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """spd_inverse_logdet with the batch axis last: (q, q, G) in (only the lower triangle is read), out."""
    q, _, g = a.shape
    low = np.zeros_like(a)
    inv_diag = np.empty((q, g))
    for j in range(q):
        d = a[j, j] - (low[j, :j] ** 2).sum(0) if j else a[j, j].copy()
        if not (d > 0).all():
            raise np.linalg.LinAlgError("a matrix of the stack is not positive definite")
        low[j, j] = np.sqrt(d)
        inv_diag[j] = 1.0 / low[j, j]
        for i in range(j + 1, q):
            v = a[i, j] - (low[i, :j] * low[j, :j]).sum(0) if j else a[i, j]
            low[i, j] = v * inv_diag[j]
    logdet = 2.0 * np.log(low[np.arange(q), np.arange(q)]).sum(0)
    linv = np.zeros_like(a)  # L^-1, lower triangular: forward substitution column by column
    for j in range(q):
        linv[j, j] = inv_diag[j]
        for i in range(j + 1, q):
            linv[i, j] = -(low[i, j:i] * linv[j:i, j]).sum(0) * inv_diag[i]
    out = np.empty_like(a)
    for i in range(q):  # (L^-T L^-1)[i, j] = sum_{k >= max(i, j)} linv[k, i] linv[k, j]
        for j in range(i + 1):
            out[i, j] = (linv[i:, i] * linv[i:, j]).sum(0)
            out[j, i] = out[i, j]
    return out, logdet


def _block_pieces(lam: np.ndarray, ztz_last: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every block (batch axis last): M = Lambda' Z'Z Lambda + I, then P = M^-1 Lambda' and K = Lambda P.

    `lam` (q, q) is shared by the blocks and mostly zero (diagonal for uncorrelated terms): the products run
    over its nonzero entries only, one vectorised operation over the blocks each. Returns (P (G, q, q),
    K (G, q, q), log|M| (G,)).
    """
    q = lam.shape[0]
    rows, cols = np.nonzero(lam)
    by_col: list[list[tuple[int, float]]] = [[] for _ in range(q)]  # column a: (c, Lambda[c, a])
    by_row: list[list[tuple[int, float]]] = [[] for _ in range(q)]  # row b: (c, Lambda[b, c])
    for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
        by_col[c].append((r, float(lam[r, c])))
        by_row[r].append((c, float(lam[r, c])))
    g = ztz_last.shape[2]
    m = np.zeros((q, q, g))
    for a in range(q):
        for b in range(a + 1):  # lower triangle: M[a, b] = sum Lambda[c, a] Z'Z[c, d] Lambda[d, b]
            acc = m[a, b]
            for c, va in by_col[a]:
                for d, vb in by_col[b]:
                    acc += (va * vb) * ztz_last[c, d]
        m[a, a] += 1.0
    minv, logdet = _spd_inverse_logdet_last(m)
    pmat = np.zeros((q, q, g))  # P[a, b] = sum_c M^-1[a, c] Lambda[b, c]
    for b in range(q):
        for c, v in by_row[b]:
            pmat[:, b] += v * minv[:, c]
    k = np.zeros((q, q, g))  # K[a, b] = sum_c Lambda[a, c] P[c, b]
    for a in range(q):
        for c, v in by_row[a]:
            k[a] += v * pmat[c]
    return np.ascontiguousarray(pmat.transpose(2, 0, 1)), np.ascontiguousarray(k.transpose(2, 0, 1)), logdet


@dataclass(frozen=True)
class RETerm:
    """One random-effect term: ``(Z columns | factor)`` with the factor nested in the blocks.

    ``Z`` holds the term's q columns for every observation; ``levels`` the level of the term's grouping
    factor per observation (None: the block itself is the level, e.g. ``(1 + time | subject)`` with
    subjects as blocks). Levels are taken within blocks, as lme4's ``household:person``.
    ``cov`` is "full" (unstructured q x q covariance) or "diag" (independent effects).
    """

    name: str
    Z: np.ndarray
    colnames: tuple[str, ...]
    levels: np.ndarray | None = None
    cov: CovKind = "full"

    @property
    def q(self) -> int:
        return int(np.asarray(self.Z).reshape(len(self.Z), -1).shape[1])

    def theta_positions(self) -> list[tuple[int, int]]:
        """(row, col) of each theta element in the term's q x q factor, lme4 order (column-wise lower)."""
        if self.cov == "diag":
            return [(j, j) for j in range(self.q)]
        return [(i, j) for j in range(self.q) for i in range(j, self.q)]


@dataclass
class _Layout:
    """Blocks with the same number of levels per term (so the same q and the same Lambda pattern)."""

    q: int
    blocks: np.ndarray  # block indices (into the design's blocks)
    ztz: np.ndarray  # (G, q, q)
    s: np.ndarray  # (G, q, p + 1)
    lam_rows: np.ndarray
    lam_cols: np.ndarray
    lam_theta: np.ndarray
    classes: np.ndarray  # (G,) class (distinct Z'Z) of each block
    class_ztz: np.ndarray  # (C, q, q)


class LmmDesign:
    """The sufficient statistics of a blocked mixed model, computed once from the data.

    In: ``y`` (N,), ``X`` (N, p), ``blocks`` (N,) labels of the independent blocks (the outermost grouping
    factor), ``terms`` (random-effect terms nested in the blocks). Out: per-layout stacks of ``Z'Z`` and
    ``Z'[X y]`` per block, the distinct ``Z'Z`` patterns, and the theta layout.
    """

    def __init__(
        self,
        y: np.ndarray,
        X: np.ndarray,
        blocks: np.ndarray,
        terms: list[RETerm],
        xnames: list[str] | None = None,
    ) -> None:
        y = np.asarray(y, dtype=float).ravel()
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
        n = y.shape[0]
        if X.shape[0] != n or len(blocks) != n:
            raise ValueError(f"y has {n} rows, X {X.shape[0]}, blocks {len(blocks)}: they must be equal")
        if not terms:
            raise ValueError("at least one random-effect term is needed")
        for t in terms:
            if len(t.Z) != n or (t.levels is not None and len(t.levels) != n):
                raise ValueError(f"random-effect term {t.name!r} has a different number of rows than y ({n})")
        if not (np.all(np.isfinite(y)) and np.all(np.isfinite(X))):
            raise ValueError("y and X must be finite: drop rows with missing values first")
        self.n_obs = n
        self.p = X.shape[1]
        self.xnames = list(xnames) if xnames is not None else [f"x{j}" for j in range(self.p)]
        self.terms = terms
        block_codes, block_labels = pd.factorize(pd.Series(blocks), sort=False)
        if (block_codes < 0).any():
            raise ValueError("the block (group) labels have missing values: drop those rows first")
        self.block_labels = np.asarray(block_labels)
        nb = len(block_labels)
        self.n_blocks = nb
        if np.all(block_codes[1:] >= block_codes[:-1]):
            order = np.arange(n)
        else:
            order = np.argsort(block_codes, kind="stable")
        self.order = order
        bc = block_codes[order]
        self.row_block = bc
        self.xy = np.column_stack([X[order], y[order]])
        self.block_nobs = np.bincount(bc, minlength=nb).astype(float)

        # theta layout
        self.theta_slices: list[slice] = []
        lower: list[float] = []
        start = 0
        for t in terms:
            pos = t.theta_positions()
            self.theta_slices.append(slice(start, start + len(pos)))
            lower += [0.0 if i == j else -np.inf for i, j in pos]
            start += len(pos)
        self.n_theta = start
        self.theta_lower = np.array(lower)

        # levels of each term within blocks: id, rank in block, count per block
        zs, ranks, counts = [], [], []
        for t in terms:
            z = np.asarray(t.Z, dtype=float).reshape(n, -1)[order]
            if not np.all(np.isfinite(z)):
                raise ValueError(f"random-effect columns of {t.name!r} must be finite")
            zs.append(z)
            if t.levels is None:
                ranks.append(np.zeros(n, dtype=np.int64))
                counts.append(np.ones(nb, dtype=np.int64))
                continue
            lev_codes, _ = pd.factorize(pd.Series(np.asarray(t.levels)[order]), sort=False)
            if (lev_codes < 0).any():
                raise ValueError(f"the levels of {t.name!r} have missing values: drop those rows first")
            pair = bc.astype(np.int64) * (int(lev_codes.max()) + 1) + lev_codes
            u, _ = pd.factorize(pair, sort=False)  # rows sorted by block: a block's levels are consecutive
            blk_of_u = np.empty(u.max() + 1, dtype=np.int64)
            blk_of_u[u] = bc
            cnt = np.bincount(blk_of_u, minlength=nb)
            first_u = np.concatenate([[0], np.cumsum(cnt)[:-1]])
            ranks.append(u - first_u[bc])
            counts.append(cnt)
        self._z = zs
        self._ranks = ranks
        counts_arr = np.column_stack(counts)  # (nb, K)
        self.level_counts = counts_arr
        self.n_levels = counts_arr.sum(axis=0)
        keys, layout_of_block = _unique_rows(counts_arr)
        self.layouts: list[_Layout] = []
        for li, key in enumerate(keys):
            self.layouts.append(self._build_layout(key, np.flatnonzero(layout_of_block == li), layout_of_block, li))

    def _layout_rows(self, key: np.ndarray, blocks: np.ndarray, layout_of_block: np.ndarray,
                     li: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, block number within the layout, Z column per row and entry, Z value per row and entry, the
        offsets of the terms' columns in the layout's Z (the last one is q))."""
        terms = self.terms
        qs = [t.q for t in terms]
        offsets = np.concatenate([[0], np.cumsum([int(m) * q for m, q in zip(key, qs, strict=True)])])
        g_of_block = np.full(self.n_blocks, -1, dtype=np.int64)
        g_of_block[blocks] = np.arange(len(blocks))
        rows = np.flatnonzero(layout_of_block[self.row_block] == li)
        g = g_of_block[self.row_block[rows]]
        cols, vals = [], []
        for k, t in enumerate(terms):
            base = offsets[k] + self._ranks[k][rows] * t.q
            for j in range(t.q):
                cols.append(base + j)
                vals.append(self._z[k][rows, j])
        return rows, g, np.column_stack(cols), np.column_stack(vals), offsets

    def with_response(self, y: np.ndarray) -> LmmDesign:
        """The same design with another response `y` (same rows, X and random terms; e.g. an imputed data set).

        Only what depends on y is computed again (the y column of Z'[X y] per block), the same way the
        constructor computes it: the result equals `LmmDesign(y, X, blocks, terms)` to the last bit, for a
        fraction of the cost."""
        y = np.asarray(y, dtype=float).ravel()
        if y.shape[0] != self.n_obs:
            raise ValueError(f"y has {y.shape[0]} rows, the design {self.n_obs}")
        if not np.all(np.isfinite(y)):
            raise ValueError("y and X must be finite: drop rows with missing values first")
        new = object.__new__(LmmDesign)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_evaluators"})
        new.xy = self.xy.copy()
        new.xy[:, -1] = y[self.order]
        d1 = self.p + 1
        layouts = []
        keys, layout_of_block = _unique_rows(self.level_counts)
        for li, (key, lay) in enumerate(zip(keys, self.layouts, strict=True)):
            rows, g, cols_a, vals_a, offsets = self._layout_rows(key, lay.blocks, layout_of_block, li)
            q = int(offsets[-1])
            ng = len(lay.blocks)
            yr = new.xy[rows, d1 - 1]
            sy = np.zeros(ng * q)
            for a in range(cols_a.shape[1]):
                sy += np.bincount(g * q + cols_a[:, a], weights=vals_a[:, a] * yr, minlength=ng * q)
            s = lay.s.copy()
            s[:, :, d1 - 1] = sy.reshape(ng, q)
            layouts.append(_Layout(q=lay.q, blocks=lay.blocks, ztz=lay.ztz, s=s, lam_rows=lay.lam_rows,
                                   lam_cols=lay.lam_cols, lam_theta=lay.lam_theta, classes=lay.classes,
                                   class_ztz=lay.class_ztz))
        new.layouts = layouts
        return new

    def _build_layout(self, key: np.ndarray, blocks: np.ndarray, layout_of_block: np.ndarray, li: int) -> _Layout:
        terms = self.terms
        rows, g, cols_a, vals_a, offsets = self._layout_rows(key, blocks, layout_of_block, li)
        q = int(offsets[-1])
        d1 = self.p + 1
        ng = len(blocks)
        ztz = np.zeros(ng * q * q)
        for a in range(cols_a.shape[1]):
            for b in range(cols_a.shape[1]):
                ztz += np.bincount(
                    g * q * q + cols_a[:, a] * q + cols_a[:, b], weights=vals_a[:, a] * vals_a[:, b], minlength=ng * q * q
                )
        s = np.zeros(ng * q * d1)
        xy = self.xy[rows]
        for a in range(cols_a.shape[1]):
            for c in range(d1):
                s += np.bincount(g * q * d1 + cols_a[:, a] * d1 + c, weights=vals_a[:, a] * xy[:, c], minlength=ng * q * d1)
        ztz = ztz.reshape(ng, q, q)
        s = s.reshape(ng, q, d1)
        # Lambda pattern of this layout: every copy of every term's factor
        lr, lc, lt = [], [], []
        for k, t in enumerate(terms):
            pos = t.theta_positions()
            sl = self.theta_slices[k]
            for copy in range(int(key[k])):
                o = offsets[k] + copy * t.q
                for e, (i, j) in enumerate(pos):
                    lr.append(o + i)
                    lc.append(o + j)
                    lt.append(sl.start + e)
        class_ztz, classes = _unique_rows(ztz.reshape(ng, -1))
        return _Layout(
            q=q,
            blocks=blocks,
            ztz=ztz,
            s=s,
            lam_rows=np.array(lr, dtype=np.int64),
            lam_cols=np.array(lc, dtype=np.int64),
            lam_theta=np.array(lt, dtype=np.int64),
            classes=classes.ravel(),
            class_ztz=class_ztz.reshape(-1, q, q),
        )

    @property
    def n_patterns(self) -> int:
        """Number of distinct block designs (Z'Z): the work per deviance evaluation when blocks repeat."""
        return int(sum(len(lay.class_ztz) for lay in self.layouts))

    def default_theta(self) -> np.ndarray:
        """lme4's starting value: identity factors (1 on the diagonal, 0 below)."""
        return np.where(self.theta_lower == 0.0, 1.0, 0.0)

    def term_factor(self, theta: np.ndarray, k: int) -> np.ndarray:
        """The q x q relative covariance factor (lower triangular) of term k at theta."""
        t = self.terms[k]
        lam = np.zeros((t.q, t.q))
        for e, (i, j) in enumerate(t.theta_positions()):
            lam[i, j] = theta[self.theta_slices[k].start + e]
        return lam

    def evaluator(self, reml: bool = True, weights: np.ndarray | None = None) -> _Evaluator:
        """A deviance evaluator; ``weights`` are block multiplicities (bootstrap), default all 1.

        Unweighted evaluators are built once per design and criterion (REML or ML) and then shared: the fit,
        its Satterthwaite pieces and its residuals evaluate the same deviance (building one sums the outer
        products of every block: about 10% of a fit). Evaluation does not change an evaluator."""
        if weights is not None:
            return _Evaluator(self, reml, weights)
        cache = self.__dict__.setdefault("_evaluators", {})
        if reml not in cache:
            cache[reml] = _Evaluator(self, reml, None)
        return cache[reml]


@dataclass
class _Prepared:
    q: int
    ztz: np.ndarray  # (C, q, q) distinct Z'Z (aggregated) or per block (direct)
    count: np.ndarray  # (C,) weighted number of blocks
    t: np.ndarray | None  # aggregated: (C, q*q, d1*d1) sum of w S(x)S
    s: np.ndarray | None  # direct: (G, q, d1)
    lam_rows: np.ndarray
    lam_cols: np.ndarray
    lam_theta: np.ndarray


class _Evaluator:
    """Profiled (RE)ML deviance and its gradient with respect to theta, all blocks at once."""

    def __init__(self, design: LmmDesign, reml: bool, weights: np.ndarray | None) -> None:
        # Only the sizes of the design are kept, not the design: a design caches its evaluators, and a
        # reference back would make a cycle that only the cyclic collector frees (each multiple-imputation fit
        # then left its design and evaluator, ~33 MiB at factor 10, until a full collection ran).
        self.p = design.p
        self.n_theta = design.n_theta
        self.reml = reml
        p = design.p
        d1 = p + 1
        if weights is None:
            w = np.ones(design.n_blocks)
            self.omega = design.xy.T @ design.xy
        else:
            w = np.asarray(weights, dtype=float)
            if w.shape != (design.n_blocks,) or (w < 0).any():
                raise ValueError(f"weights must be {design.n_blocks} non-negative block multiplicities")
            self.omega = design.xy.T @ (design.xy * w[design.row_block][:, None])
        self.n = float(w @ design.block_nobs)
        self.n_eff = self.n - p if reml else self.n
        if self.n_eff <= 0:
            raise ValueError(f"{self.n:.0f} observations are too few for {p} fixed effects")
        self.parts: list[_Prepared] = []
        for lay in design.layouts:
            wl = w[lay.blocks]
            keep = wl > 0
            if not keep.any():
                continue
            q = lay.q
            n_cls = len(lay.class_ztz)
            ng = int(keep.sum())
            cls = lay.classes[keep]
            used = np.unique(cls)
            if len(used) * 4 <= ng:  # blocks repeat: sum S(x)S once per pattern
                remap = np.full(n_cls, -1, dtype=np.int64)
                remap[used] = np.arange(len(used))
                c = remap[cls]
                sk = lay.s[keep]
                wk = wl[keep]
                tt = np.zeros((len(used), (q * d1) ** 2))
                chunk = max(1, 4_000_000 // (q * d1) ** 2)
                for i0 in range(0, ng, chunk):
                    sc = sk[i0 : i0 + chunk].reshape(-1, q * d1)
                    outer = np.einsum("ga,gb->gab", sc, sc).reshape(len(sc), -1)
                    ind = sparse.csr_matrix(
                        (wk[i0 : i0 + chunk], (c[i0 : i0 + chunk], np.arange(len(sc)))), shape=(len(used), len(sc))
                    )
                    tt += ind @ outer
                # (C, q, d1, q, d1) -> (C, q, q, d1, d1)
                tt = tt.reshape(len(used), q, d1, q, d1).transpose(0, 1, 3, 2, 4).reshape(len(used), q * q, d1 * d1)
                count = np.bincount(c, weights=wk, minlength=len(used))
                self.parts.append(
                    _Prepared(q, lay.class_ztz[used], count, tt, None, lay.lam_rows, lay.lam_cols, lay.lam_theta)
                )
            else:
                self.parts.append(
                    _Prepared(
                        q,
                        lay.ztz[keep],
                        wl[keep],
                        None,
                        lay.s[keep],
                        lay.lam_rows,
                        lay.lam_cols,
                        lay.lam_theta,
                    )
                )
        # direct parts: count-weighted S and Z'Z laid out for one matrix product per evaluation (see evaluate)
        self._direct = [None if part.t is not None else (
            (part.s * part.count[:, None, None]).reshape(-1, d1),
            (part.ztz * part.count[:, None, None]).transpose(1, 0, 2).reshape(part.q, -1))
            for part in self.parts]
        self._ztz_last = [np.ascontiguousarray(part.ztz.transpose(1, 2, 0)) for part in self.parts]
        self.n_evals = 0

    def _lambda(self, part: _Prepared, theta: np.ndarray) -> np.ndarray:
        lam = np.zeros((part.q, part.q))
        lam[part.lam_rows, part.lam_cols] = theta[part.lam_theta]
        return lam

    def evaluate(self, theta: np.ndarray, grad: bool = True, sigma: float | None = None) -> dict:
        """Deviance at theta (profiled over beta and sigma, or at a given sigma), its gradient, and beta.

        Derivation (per block; K = Lambda M^-1 Lambda', P = M^-1 Lambda', R = I - Z'Z K):
        dK = R' dLambda P + P' dLambda' R, d log|M| = 2 tr(P Z'Z dLambda). With A = [X y]'V^-1[X y] sigma^2,
        r2 = min_beta w'Aw (w = [-beta; 1]) so dr2 = w' dA w = -2 sum tr(R S w w' S' P' dLambda'), and
        d log|A_xx| = -2 sum tr(R S_x A_xx^-1 S_x' P' dLambda'). Gradient entries are summed over every
        copy of a theta element in Lambda.
        """
        self.n_evals += 1
        theta = np.asarray(theta, dtype=float)
        p = self.p
        A = self.omega.copy()
        ld = 0.0
        cache = []
        for part, direct, ztz_last in zip(self.parts, self._direct, self._ztz_last, strict=True):
            lam = self._lambda(part, theta)
            if part.q <= 12:
                pmat, k, lds = _block_pieces(lam, ztz_last)
            else:
                m = lam.T @ part.ztz @ lam
                m += np.eye(part.q)
                minv, lds = np.linalg.inv(m), np.linalg.slogdet(m)[1]
                pmat = minv @ lam.T
                k = lam @ pmat
            ld += float(part.count @ lds)
            ks = None
            if part.t is not None:
                A -= (k.reshape(1, -1) @ part.t.reshape(-1, (p + 1) ** 2)).reshape(p + 1, p + 1)
            else:
                ks = k @ part.s
                A -= direct[0].T @ ks.reshape(-1, p + 1)
            cache.append((lam, pmat, k, ks))
        A = 0.5 * (A + A.T)
        axx = A[:p, :p]
        try:
            chol = linalg.cholesky(axx, lower=True)
        except linalg.LinAlgError as exc:
            raise FloatingPointError("X'V^-1X is not positive definite: the fixed effects are not estimable") from exc
        c = linalg.solve_triangular(chol, A[:p, p], lower=True)
        beta = linalg.solve_triangular(chol.T, c, lower=False)
        r2 = float(A[p, p] - c @ c)
        ld_x = 2.0 * float(np.log(np.diag(chol)).sum())
        n, n_eff = self.n, self.n_eff
        if sigma is None:
            dev = ld + n_eff * (1.0 + math.log(2.0 * math.pi * r2 / n_eff))
            coef_r2 = n_eff / r2
        else:
            s2 = sigma * sigma
            dev = ld + r2 / s2 + n * math.log(2.0 * math.pi * s2)
            if self.reml:
                dev -= p * math.log(2.0 * math.pi * s2)
            coef_r2 = 1.0 / s2
        if self.reml:
            dev += ld_x
        out = {"deviance": dev, "beta": beta, "r2": r2, "A": A, "chol_xx": chol, "logdet_xx": ld_x}
        if not grad:
            return out
        wv = np.concatenate([-beta, [1.0]])
        wmat = coef_r2 * np.outer(wv, wv)
        if self.reml:
            axx_inv = linalg.cho_solve((chol, True), np.eye(p))
            wmat[:p, :p] += axx_inv
        gtheta = np.zeros(self.n_theta)
        for part, direct, (_lam, pmat, k, ks) in zip(self.parts, self._direct, cache, strict=True):
            g = part.ztz
            q = part.q
            if part.t is not None:
                r = np.eye(q) - g @ k
                qm = (part.t @ wmat.ravel()).reshape(-1, q, q)
                pt = pmat.transpose(0, 2, 1)
                gm = 2.0 * np.einsum("c,cab->ab", part.count, g @ pt) - 2.0 * (r @ qm @ pt).sum(axis=0)
            else:
                # sum_i c_i R_i S_i W S_i' P_i' = sum_i (c_i R_i S_i W)(P_i S_i)' with R_i S_i = S_i - Z'Z_i K_i S_i,
                # and sum_i c_i Z'Z_i P_i': each one matrix product over all blocks
                rs = (direct[0] - (g @ ks).reshape(-1, p + 1) * np.repeat(part.count, q)[:, None]) @ wmat
                ps = pmat @ part.s
                gm = 2.0 * (direct[1] @ pmat.transpose(0, 2, 1).reshape(-1, q)) \
                    - 2.0 * (rs.reshape(-1, q, p + 1) @ ps.transpose(0, 2, 1)).sum(axis=0)
            gtheta += np.bincount(part.lam_theta, weights=gm[part.lam_rows, part.lam_cols], minlength=len(gtheta))
        out["grad"] = gtheta
        return out


@functools.cache
def _blas_controller():
    """threadpoolctl's view of the BLAS libraries in this process (numpy's and scipy's OpenBLAS), listed once."""
    import scipy.linalg  # noqa: F401 - scipy's own OpenBLAS is loaded before the libraries are listed
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def single_threaded_blas():
    """Context in which BLAS/LAPACK use one thread, in this process and in processes forked inside it; the
    previous limits come back after it (threadpoolctl).

    Many tiny matrix products and tall, narrow designs: threads only cost time, and models are fitted by as
    many processes as there are cores, so a multithreaded BLAS in each would oversubscribe them (the SVD
    behind a rank check of a 20,000 x 25 design: 6 ms on one thread, 130 ms on two threads of a busy machine).
    One thread also keeps the last digits independent of the machine's core count.
    """
    return _blas_controller().limit(limits=1, user_api="blas")


@dataclass
class FastLmmFit:
    """Result of :func:`fit_lmm_fast`: estimates at the (RE)ML optimum and the evaluator behind them."""

    theta: np.ndarray
    beta: np.ndarray
    sigma2: float
    deviance: float
    llf: float
    vcov_beta: np.ndarray
    reml: bool
    converged: bool
    boundary: bool
    n_evals: int
    seconds: float
    message: str
    design: LmmDesign = field(repr=False)
    warnings: list[str] = field(default_factory=list)

    @property
    def sigma(self) -> float:
        return math.sqrt(self.sigma2)

    def cov_term(self, k: int) -> np.ndarray:
        """Covariance matrix of term k's random effects: sigma^2 Lambda_k Lambda_k'."""
        lam = self.design.term_factor(self.theta, k)
        return self.sigma2 * lam @ lam.T


def theta_hessian(ev: _Evaluator, theta: np.ndarray) -> np.ndarray:
    """Hessian of the profiled deviance in theta, by central differences of the analytic gradient."""
    k = len(theta)
    h = np.zeros((k, k))
    for j in range(k):
        eps = 1e-5 * max(1.0, abs(theta[j]))
        tp, tm = theta.copy(), theta.copy()
        tp[j] += eps
        tm[j] -= eps
        h[:, j] = (ev.evaluate(tp)["grad"] - ev.evaluate(tm)["grad"]) / (2 * eps)
    return 0.5 * (h + h.T)


def _newton_polish(
    ev: _Evaluator, theta: np.ndarray, lower: np.ndarray, steps: int = 8
) -> tuple[np.ndarray, dict]:
    """A few Newton steps on the parameters away from their bounds (Hessian by differences of the gradient)."""
    cur = ev.evaluate(theta)
    for _ in range(steps):
        free = ~((lower == 0.0) & (theta <= 1e-10))
        # a zero diagonal fixes the elements below it in the same column only through the deviance: keep them free
        idx = np.flatnonzero(free)
        if idx.size == 0:
            break
        g = cur["grad"][idx]
        if np.max(np.abs(g)) < 1e-11 * max(1.0, abs(cur["deviance"])):
            break
        h = np.zeros((idx.size, idx.size))
        for a, j in enumerate(idx):
            eps = 1e-6 * max(1.0, abs(theta[j]))
            tp = theta.copy()
            tp[j] += eps
            tm = theta.copy()
            tm[j] -= eps
            if lower[j] == 0.0 and tm[j] < 0:
                tm[j] = theta[j]
                h[:, a] = (ev.evaluate(tp)["grad"][idx] - g) / eps
            else:
                h[:, a] = (ev.evaluate(tp)["grad"][idx] - ev.evaluate(tm)["grad"][idx]) / (2 * eps)
        h = 0.5 * (h + h.T)
        try:
            step = -np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(step)):
            break
        lam = 1.0
        improved = False
        while lam > 1e-4:
            cand = theta.copy()
            cand[idx] += lam * step
            cand = np.maximum(cand, lower)
            new = ev.evaluate(cand)
            if new["deviance"] <= cur["deviance"] + 1e-12 * abs(cur["deviance"]):
                theta, cur, improved = cand, new, True
                break
            lam /= 2
        if not improved or np.max(np.abs(lam * step)) < 1e-12:
            break
    return theta, cur


def fit_design(
    design: LmmDesign,
    reml: bool = True,
    start: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    polish: bool = True,
    hess_inv: np.ndarray | None = None,
) -> FastLmmFit:
    """Fit a prepared design: minimise the profiled (RE)ML deviance over theta, then report estimates.

    ``weights`` are block multiplicities (bootstrap); ``hess_inv`` an approximate inverse Hessian of the
    deviance at ``start`` (a refit near a known optimum then takes a few quasi-Newton steps instead of
    L-BFGS-B, which runs only if they hit a bound or stall); ``polish=False`` skips the Newton polish
    (estimates to about 1e-7 instead of 1e-10; the bootstrap's choice).
    """
    with single_threaded_blas():
        return _fit_design(design, reml, start, weights, polish, hess_inv)


def _chord_newton(
    ev: _Evaluator, x0: np.ndarray, lower: np.ndarray, hess_inv: np.ndarray, steps: int = 40
) -> tuple[np.ndarray, dict] | None:
    """BFGS from a warm start with a known inverse Hessian; None when a bound becomes active or it stalls."""
    x = x0.copy()
    hi = hess_inv.copy()
    cur = ev.evaluate(x)
    tol = 1e-6 * max(1.0, abs(cur["deviance"])) ** 0.5
    noise = 1e-12 * max(1.0, abs(cur["deviance"]))
    for _ in range(steps):
        g = cur["grad"]
        if np.max(np.abs(g)) < tol:
            return x, cur
        step = -hi @ g
        t = 1.0
        while True:
            cand = x + t * step
            if np.any(cand < lower):
                return None
            new = ev.evaluate(cand)
            if new["deviance"] <= cur["deviance"] + 1e-4 * t * (g @ step) + noise:
                break
            t /= 2
            if t < 1e-3:
                return None
        s_vec = cand - x
        y_vec = new["grad"] - g
        sy = s_vec @ y_vec
        if sy > 1e-12:
            rho = 1.0 / sy
            eye = np.eye(len(x))
            hi = (eye - rho * np.outer(s_vec, y_vec)) @ hi @ (eye - rho * np.outer(y_vec, s_vec)) + rho * np.outer(s_vec, s_vec)
        x, cur = cand, new
    return None


def _fit_design(
    design: LmmDesign,
    reml: bool,
    start: np.ndarray | None,
    weights: np.ndarray | None,
    polish: bool,
    hess_inv: np.ndarray | None,
) -> FastLmmFit:
    t0 = time.perf_counter()
    ev = design.evaluator(reml=reml, weights=weights)
    evals_before = ev.n_evals  # a shared evaluator may have counted evaluations of an earlier fit
    lower = design.theta_lower
    x0 = design.default_theta() if start is None else np.maximum(np.asarray(start, dtype=float), lower)
    warnings: list[str] = []

    def fun(th: np.ndarray) -> tuple[float, np.ndarray]:
        r = ev.evaluate(th)
        return r["deviance"], r["grad"]

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    quick = _chord_newton(ev, x0, lower, hess_inv) if hess_inv is not None else None
    if quick is not None:
        res = optimize.OptimizeResult(x=quick[0], fun=quick[1]["deviance"], success=True,
                                      message="quasi-Newton steps from the warm start")
    else:
        opts = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8}
        res = optimize.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
    # The deviance is even in each diagonal theta, so its gradient vanishes on the bound: a step that lands
    # on zero stops there. Probe positive values of every zero diagonal and restart from a better point.
    for _ in range(3):
        theta = np.asarray(res.x, dtype=float)
        zero = np.flatnonzero((lower == 0.0) & (theta <= 1e-8))
        best, best_x = res.fun, None
        for j in zero:
            for v in (0.01, 0.05, 0.2, 0.5, 1.0, 2.0, 5.0):
                cand = theta.copy()
                cand[j] = v
                dv = ev.evaluate(cand, grad=False)["deviance"]
                if dv < best - 1e-10 * abs(best):
                    best, best_x = dv, cand
        if best_x is None:
            break
        opts = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8}
        res = optimize.minimize(fun, best_x, jac=True, method="L-BFGS-B", bounds=bounds, options=opts)
    theta = np.asarray(res.x, dtype=float)
    converged = bool(res.success)
    message = str(res.message)
    if polish:
        theta, final = _newton_polish(ev, theta, lower)
    else:
        final = ev.evaluate(theta)
    # optimum at a zero variance: snap tiny diagonals to the bound exactly as lme4 reports them
    free_grad = final["grad"].copy()
    at_bound = (lower == 0.0) & (theta <= 1e-10)
    free_grad[at_bound] = np.minimum(free_grad[at_bound], 0.0)
    gnorm = float(np.max(np.abs(free_grad))) if free_grad.size else 0.0
    if not converged and gnorm < 1e-5:
        converged = True
        message += " (gradient small after polishing)"
    if gnorm > 1e-3:
        converged = False
        warnings.append(f"gradient at the optimum is {gnorm:.2g}: the fit may not have converged")
    p = design.p
    n_eff = ev.n_eff
    sigma2 = final["r2"] / n_eff
    vcov = sigma2 * linalg.cho_solve((final["chol_xx"], True), np.eye(p))
    diag_theta = np.concatenate(
        [np.diag(design.term_factor(theta, k)) for k in range(len(design.terms))]
    )
    boundary = bool((np.abs(diag_theta) < SINGULAR_TOL).any())
    if boundary:
        warnings.append("boundary (singular) fit: a random-effect variance is estimated at or near zero")
    return FastLmmFit(
        theta=theta,
        beta=final["beta"],
        sigma2=sigma2,
        deviance=final["deviance"],
        llf=-0.5 * final["deviance"],
        vcov_beta=vcov,
        reml=reml,
        converged=converged,
        boundary=boundary,
        n_evals=ev.n_evals - evals_before,
        seconds=time.perf_counter() - t0,
        message=message,
        design=design,
        warnings=warnings,
    )


def fit_lmm_fast(
    y: np.ndarray,
    X: np.ndarray,
    groups: np.ndarray,
    terms: list[RETerm],
    reml: bool = True,
    xnames: list[str] | None = None,
    start: np.ndarray | None = None,
) -> FastLmmFit:
    """Fit ``y = X beta + Z b + e`` with random-effect ``terms`` nested in independent ``groups`` blocks.

    In: response (N,), fixed-effect design (N, p), block labels (N,), random-effect terms. Out: a
    :class:`FastLmmFit` with lme4's estimates (theta, beta, sigma^2, deviance, logLik, vcov(beta)).
    Example, ``lmer(y ~ x + (1 + time | subject))``:
    ``fit_lmm_fast(y, X, subject, [RETerm("subject", np.column_stack([ones, time]), ("(Intercept)", "time"))])``.
    """
    design = LmmDesign(y, X, groups, terms, xnames=xnames)
    return fit_design(design, reml=reml, start=start)
