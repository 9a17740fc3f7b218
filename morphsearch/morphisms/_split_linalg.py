"""The splitting matrices of one layer as a batched operator, and its extreme eigenpairs.

Every neuron ``m`` of a split site has a symmetric ``d x d`` splitting matrix of the form
(see :mod:`morphsearch.morphisms.splitting` for where each term comes from)::

    S_m = sum_r c[r,m] q_rm q_rm^T                      q_rm = x[r] - zhat[r,m] b[m]
        + A[m] (3 b_m b_m^T - C) - B_m b_m^T - b_m B_m^T

``x`` are the site's (augmented, im2col) input rows. Without train-mode batchnorm
between the layer and its activation only the first term is there with ``zhat = 0``
(``S_m = sum_r c[r,m] x_r x_r^T``). :class:`Curvature` materialises the matrices or
applies them to one vector per neuron without forming them (for wide layers);
:func:`extreme_eigenpairs` finds the smallest and largest eigenpair of each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Curvature", "Eigenpairs", "extreme_eigenpairs", "train_bn_curvature",
           "tridiagonal_ends"]


@dataclass(frozen=True)
class Curvature:
    """The splitting matrices of ``M`` neurons with ``d`` incoming weights each.

    ``x [R, d]``, ``c [R, M]``; with train-mode batchnorm also ``zhat [R, M]``,
    ``b [M, d]``, ``a [M]``, ``bb [M, d]`` (the module doc's ``A``, ``B``) and
    ``cov [d, d]`` (``C``).
    """

    x: torch.Tensor
    c: torch.Tensor
    zhat: torch.Tensor | None = None
    b: torch.Tensor | None = None
    a: torch.Tensor | None = None
    bb: torch.Tensor | None = None
    cov: torch.Tensor | None = None

    @property
    def units(self) -> int:
        return int(self.c.shape[1])

    @property
    def dim(self) -> int:
        return int(self.x.shape[1])

    def matrices(self) -> torch.Tensor:
        """``[M, d, d]``."""
        x, c = self.x, self.c
        s = torch.einsum("rm,ri,rj->mij", c, x, x)
        if self.zhat is None:
            return s
        assert self.b is not None and self.a is not None and self.bb is not None
        assert self.cov is not None
        b, zhat = self.b, self.zhat
        p = torch.einsum("rm,ri->mi", c * zhat, x)  # sum_r c zhat x_r
        kappa = (c * zhat * zhat).sum(0)
        outer = b[:, :, None] * b[:, None, :]
        s = s - _sym(p, b) + kappa[:, None, None] * outer
        return s + self.a[:, None, None] * (3 * outer - self.cov) - _sym(self.bb, b)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``S_m v_m`` for every neuron at once: ``v [M, d] -> [M, d]``."""
        xv = self.x @ v.T  # [R, M]
        if self.zhat is None:
            return (self.c * xv).T @ self.x
        assert self.b is not None and self.a is not None and self.bb is not None
        assert self.cov is not None
        b = self.b
        bv = (b * v).sum(1)
        cq = self.c * (xv - self.zhat * bv)  # c[r,m] (q_rm . v_m)
        out = cq.T @ self.x - b * (cq * self.zhat).sum(0)[:, None]
        cv = v @ self.cov  # C is symmetric
        out = out + self.a[:, None] * (3 * b * bv[:, None] - cv)
        return out - self.bb * bv[:, None] - b * (self.bb * v).sum(1)[:, None]

    def projected(self, basis: torch.Tensor) -> Curvature:
        """The matrices ``basis^T S_m basis`` for orthonormal columns ``basis [d, k]``.

        Every vector in ``S_m`` (the rows ``x``, ``b_m``, ``B_m``, ``C``'s columns) is a
        combination of the rows ``x``, so when ``basis`` spans the rows,
        ``S_m = basis (basis^T S_m basis) basis^T`` exactly."""
        def onto(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t @ basis

        cov = None if self.cov is None else basis.T @ self.cov @ basis
        return Curvature(self.x @ basis, self.c, zhat=self.zhat, b=onto(self.b), a=self.a,
                         bb=onto(self.bb), cov=cov)


def train_bn_curvature(x: torch.Tensor, z: torch.Tensor, g: torch.Tensor,
                        first: torch.Tensor, second: torch.Tensor, gamma: torch.Tensor,
                        eps: float) -> Curvature:
    """The curvature through train-mode batchnorm (derived in
    :mod:`morphsearch.morphisms.splitting`): rows ``x``, the layer's outputs ``z``, ``g =
    dL/dh``, ``sigma'`` and ``sigma''`` at BN's outputs, BN's ``gamma`` and ``eps``; the
    statistics are over all rows (biased variance), as BN's are."""
    mu, var = z.mean(0), z.var(0, unbiased=False)
    s = torch.sqrt(var + eps)
    zhat = (z - mu) / s
    xt = x - x.mean(0)
    rows = len(x)
    b = zhat.T @ xt / rows
    e = g * first * gamma / (s * s)
    return Curvature(xt, g * second * (gamma / s) ** 2, zhat=zhat, b=b, a=(e * zhat).sum(0),
                     bb=e.T @ xt, cov=xt.T @ xt / rows)


def _sym(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``u_m w_m^T + w_m u_m^T`` per neuron."""
    outer = u[:, :, None] * w[:, None, :]
    return outer + outer.transpose(1, 2)


@dataclass(frozen=True)
class Eigenpairs:
    """Smallest and largest eigenpair of each neuron's splitting matrix (unit vectors).

    Solved in the rows' span (:func:`_in_row_space`), the vectors are kept as
    coordinates in ``basis`` and lifted to the ``d`` inputs where read: all of them by
    :attr:`min_vectors` / :attr:`max_vectors`, a few by :meth:`vectors` (a split needs
    ``k`` of ``M``, and lifting all of both ends costs about half a training step of a
    1,024-unit layer at batch 128). Where 0 is the extreme eigenvalue (``min_null`` / ``max_null``),
    the vector is ``null``, a unit vector orthogonal to the rows.
    """

    min_values: torch.Tensor  # [M]
    min_coords: torch.Tensor  # [M, r]: the vectors themselves when basis is None
    max_values: torch.Tensor
    max_coords: torch.Tensor
    basis: torch.Tensor | None = None  # [d, r], orthonormal columns
    null: torch.Tensor | None = None  # [d]
    min_null: torch.Tensor | None = None  # [M] bool
    max_null: torch.Tensor | None = None

    @property
    def min_vectors(self) -> torch.Tensor:
        """``[M, d]``: the unit eigenvector of each neuron's smallest eigenvalue."""
        return self.vectors("min")

    @property
    def max_vectors(self) -> torch.Tensor:
        """``[M, d]``: the unit eigenvector of each neuron's largest eigenvalue."""
        return self.vectors("max")

    def vectors(self, end: str, neurons: Sequence[int] | torch.Tensor | None = None,
                ) -> torch.Tensor:
        """The ``end`` (``"min"`` or ``"max"``) eigenvectors of ``neurons`` (all: None),
        ``[len(neurons), d]``.

        Raises:
            ValueError: ``end`` is neither ``"min"`` nor ``"max"``.
        """
        if end not in ("min", "max"):
            raise ValueError(f"end={end!r} must be 'min' or 'max'")
        coords, null_rows = ((self.min_coords, self.min_null) if end == "min"
                             else (self.max_coords, self.max_null))
        if neurons is None:
            rows = torch.arange(len(coords))
        else:
            rows = torch.as_tensor([int(i) for i in neurons], dtype=torch.long)
        picked = coords[rows]
        if self.basis is None:
            return picked
        lifted = picked @ self.basis.T
        if null_rows is not None and self.null is not None:
            at = null_rows[rows]
            if bool(at.any()):
                lifted[at] = self.null
        return lifted


EXACT_MAX_DIM = 128
EXACT_MAX_ENTRIES = 1_000_000
"""``method="auto"`` materialises the matrices (``eigh``) up to ``EXACT_MAX_DIM`` incoming
weights per neuron (plus bias) and ``EXACT_MAX_ENTRIES`` matrix entries in all, and uses
Lanczos on matrix-free products beyond (measured: for 1,024 neurons of 65 weights,
Lanczos reaches ``lambda_min`` to 1e-6 in 20 steps at 2/5 of the cost of ``eigh``)."""


def extreme_eigenpairs(
    curv: Curvature, *, method: str = "auto", iters: int = 24, seed: int = 0,
    tol: float = 1e-9,
) -> Eigenpairs:
    """``"exact"``: ``eigh`` of every matrix; ``"fast"``: batched Lanczos with full
    reorthogonalisation on :meth:`Curvature.matvec`, at most ``iters`` steps, stopping
    early once every neuron's extreme Ritz values are within about ``tol`` (relative; see
    :func:`_lanczos_extremes`); ``"auto"``: exact for small matrices (:data:`EXACT_MAX_ENTRIES`), else fast.

    With fewer rows than inputs (a batch of 128 into a 1,024-input layer), ``"auto"`` and
    ``"fast"`` solve in the rows' span (:func:`_in_row_space`): the same eigenpairs, from
    ``rows``-dimensional matrices.

    Raises:
        ValueError: an unknown method (the morphism turns it into its own error).
    """
    if method in ("auto", "fast") and curv.x.shape[0] < curv.dim:
        return _in_row_space(curv, method=method, iters=iters, seed=seed, tol=tol)
    if method == "auto":
        small = curv.dim <= EXACT_MAX_DIM + 1 and curv.units * curv.dim**2 <= EXACT_MAX_ENTRIES
        method = "exact" if small else "fast"
    if method == "exact":
        vals, vecs = torch.linalg.eigh(curv.matrices())
        return Eigenpairs(vals[:, 0], vecs[:, :, 0], vals[:, -1], vecs[:, :, -1])
    if method == "fast":
        generator = torch.Generator().manual_seed(seed)
        lo, hi = _lanczos_extremes(curv.matvec, curv.units, curv.dim, iters, tol, generator,
                                   curv.x.dtype)
        return Eigenpairs(_rayleigh(curv, lo), lo, _rayleigh(curv, hi), hi)
    raise ValueError(f"method={method!r} must be 'auto', 'exact' or 'fast'")


def _in_row_space(curv: Curvature, *, method: str, iters: int, seed: int, tol: float,
                  ) -> Eigenpairs:
    """Eigenpairs of ``S_m = Q T_m Q^T`` from those of ``T_m`` (:meth:`Curvature.projected`,
    ``Q`` an orthonormal basis of the rows, from a QR factorisation of ``x^T``); the
    vectors stay in ``Q``'s coordinates until read (:class:`Eigenpairs`).

    ``S_m`` is zero on the ``d - rows`` directions orthogonal to the rows, so its smallest
    eigenvalue is ``min(lambda_min(T_m), 0)`` (and its largest ``max(lambda_max(T_m), 0)``);
    where 0 wins, the eigenvector is a unit vector orthogonal to the rows."""
    basis, _ = torch.linalg.qr(curv.x.T)  # [d, rows]
    pairs = extreme_eigenpairs(curv.projected(basis), method=method, iters=iters, seed=seed,
                               tol=tol)
    generator = torch.Generator().manual_seed(seed)
    null = torch.randn(curv.dim, generator=generator, dtype=basis.dtype)
    null = null - basis @ (basis.T @ null)
    null = null / null.norm().clamp_min(1e-300)

    lo_null, hi_null = pairs.min_values > 0, pairs.max_values < 0
    return Eigenpairs(pairs.min_values.masked_fill(lo_null, 0.0), pairs.min_coords,
                      pairs.max_values.masked_fill(hi_null, 0.0), pairs.max_coords,
                      basis, null, lo_null, hi_null)


def _rayleigh(curv: Curvature, v: torch.Tensor) -> torch.Tensor:
    return (v * curv.matvec(v)).sum(dim=1)


def _lanczos_extremes(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
    dim: int,
    iters: int,
    tol: float,
    generator: torch.Generator,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Lanczos: the Ritz vectors of the smallest and the largest Ritz value.

    Stops once every extreme Ritz pair's residual ``|S y - theta y| = beta_j |s_j|``
    (``s_j`` the last entry of the tridiagonal's eigenvector) is at most ``sqrt(tol)``
    times the matrix's scale (``max |alpha|``). The Ritz value's error is at most the
    residual, and about its square over the gap to the next eigenvalue: ~``tol`` where
    the extreme eigenvalue stands apart, up to ~``sqrt(tol)`` where the spectrum's end is
    crowded. Tested after steps 8, 12, 16, ... with :func:`tridiagonal_ends` of the
    tridiagonals, whose vectors are then the answer's."""
    steps = min(iters, dim)
    tol = max(tol, 100 * torch.finfo(dtype).eps)  # float32 cannot settle below its rounding
    basis = torch.empty(batch, steps, dim, dtype=dtype)  # batch-major: products on a prefix
    alpha = torch.zeros(batch, steps, dtype=dtype)
    beta = torch.zeros(batch, steps, dtype=dtype)
    q = _unit(torch.randn(batch, dim, generator=generator, dtype=dtype))
    for j in range(steps):
        basis[:, j] = q
        w = matvec(q)
        alpha[:, j] = (w * q).sum(dim=1)
        w = _orthogonalised(w, basis[:, : j + 1])
        beta[:, j] = w.norm(dim=1)
        scale = alpha[:, : j + 1].abs().amax(dim=1).clamp_min(1e-300)
        stalled = beta[:, j] <= 1e-12 * scale
        if bool(stalled.any()):  # an invariant subspace: continue from a fresh direction
            fresh = _orthogonalised(
                torch.randn(batch, dim, generator=generator, dtype=dtype), basis[:, : j + 1]
            )
            beta[:, j] = torch.where(stalled, torch.zeros_like(beta[:, j]), beta[:, j])
            w = torch.where(stalled[:, None], fresh, w)
        q = _unit(w)
        if j + 1 == steps or (j >= 7 and j % 4 == 3):
            ends = tridiagonal_ends(alpha[:, : j + 1], beta[:, :j])  # [b, j + 1, 2]
            residual = beta[:, j, None] * ends[:, -1].abs()
            if j + 1 == steps or bool((residual <= tol**0.5 * scale[:, None]).all()):
                break
    vectors = torch.bmm(ends.transpose(1, 2), basis[:, : j + 1])  # [b, 2, d]
    return _unit(vectors[:, 0]), _unit(vectors[:, 1])


def tridiagonal_ends(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Unit eigenvectors ``[b, n, 2]`` of the smallest and the largest eigenvalue of ``b``
    symmetric tridiagonals (diagonals ``alpha [b, n]``, off-diagonals ``beta [b, n - 1]``).

    A batched ``eigh`` of small matrices pays LAPACK's per-matrix overhead (about 7 ms
    for 1,024 tridiagonals of 12, a training step of a 1,024-unit layer at batch 128);
    this is vectorised over the batch in float64 instead, 2-3.5x faster for sizes 12-24
    (bench/BENCHMARKS.md):
    Laguerre's iteration on the characteristic polynomial from below every eigenvalue
    (monotone and cubically convergent where all roots are real, as here; evaluated by
    the pivots of ``T - x I``), then two steps of inverse iteration just below the
    eigenvalue found. The largest end is the smallest of ``-T``."""
    a = alpha.detach().to("cpu", torch.float64).numpy()
    b = beta.detach().to("cpu", torch.float64).numpy()
    scale = np.abs(a).max(axis=1)
    if b.shape[1]:
        scale = np.maximum(scale, np.abs(b).max(axis=1))
    scale = np.where(scale > 0, scale, 1.0)[:, None]  # an all-zero matrix: any unit vector
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        a, b = a / scale, b / scale  # entries at most 1: the tolerances below are absolute
        both_a = np.concatenate([a, -a])
        both_b = np.concatenate([b, -b])  # -T's off-diagonal: flips its vectors' signs
        lowest = _laguerre_smallest(both_a, both_b)
        vectors = _inverse_iteration(both_a, both_b, lowest - 1e-12)
    half = len(a)
    ends = np.stack([vectors[:half], vectors[half:]], axis=2)
    return torch.from_numpy(ends).to(alpha.device, alpha.dtype)


def _laguerre_smallest(a: np.ndarray, b: np.ndarray, iters: int = 20) -> np.ndarray:
    """The smallest eigenvalue of each tridiagonal (entries at most 1): to about 1e-15
    where it is simple; a repeated one converges linearly, and may stop up to ~1e-5
    below it (12 repeated 2x2 blocks). Only the shift of the inverse iteration uses it,
    whose vectors then still have residuals of ~1e-8 (tested)."""
    rows, n = a.shape
    radius = np.zeros_like(a)
    radius[:, :-1] += np.abs(b)
    radius[:, 1:] += np.abs(b)
    x = (a - radius).min(axis=1) - 1e-3  # Gershgorin: below every eigenvalue
    cols, cols_b2 = np.ascontiguousarray(a.T), np.ascontiguousarray((b * b).T)
    todo = np.arange(rows)  # rows still moving: the rest are left out of the sweep
    for _ in range(iters):
        at, b2, xt = cols[:, todo], cols_b2[:, todo], x[todo]
        # pivots q_k of T - x I and their x-derivatives: log det = sum log q_k
        q = at[0] - xt
        dq, ddq = -np.ones_like(xt), np.zeros_like(xt)
        below = q > 0  # x below every eigenvalue: every pivot positive
        inv = 1.0 / q
        g = dq * inv
        grad, curv = g.copy(), g * g - ddq * inv  # d/dx log det, -d2/dx2 log det
        for k in range(1, n):
            r = b2[k - 1] * inv
            ddq = r * inv * (ddq - 2 * dq * dq * inv)
            dq = r * dq * inv - 1.0
            q = at[k] - xt - r
            below &= q > 0
            inv = 1.0 / q
            g = dq * inv
            grad += g
            curv += g * g - ddq * inv
        root = np.sqrt(np.maximum((n - 1) * (n * curv - grad * grad), 0.0))
        step = np.where(below, n / (root - grad), 0.0)
        x[todo] = xt + step
        todo = todo[below & (step > 1e-14)]  # the shift below needs no more
        if not len(todo):
            break
    return x


def _inverse_iteration(a: np.ndarray, b: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Unit solutions of ``(T - shift I) v = v_prev``, twice from a fixed start: with
    ``shift`` just below the smallest eigenvalue, its eigenvector. ``T - shift I`` is positive
    definite there, so its ``L D L^T`` needs no pivoting."""
    n = a.shape[1]
    d = np.empty_like(a)
    low = np.zeros_like(a)
    d[:, 0] = a[:, 0] - shift
    for k in range(1, n):
        low[:, k] = b[:, k - 1] / d[:, k - 1]
        d[:, k] = a[:, k] - shift - low[:, k] * b[:, k - 1]
    # a fixed start with no symmetry: from the ones vector, the wanted eigenvector of a
    # mirror-symmetric tridiagonal can be orthogonal to the start (LAPACK's stein also
    # starts from pseudo-random entries)
    v = np.broadcast_to(np.random.default_rng(0).uniform(0.5, 1.5, n), a.shape).copy()
    for _ in range(2):
        y = v.copy()
        for k in range(1, n):
            y[:, k] -= low[:, k] * y[:, k - 1]
        y /= d
        for k in range(n - 2, -1, -1):
            y[:, k] -= low[:, k + 1] * y[:, k + 1]
        v = y / np.linalg.norm(y, axis=1, keepdims=True)
    return v


def _orthogonalised(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``w`` minus its projection on ``basis [b, j, d]``, per batch item: one classical
    Gram-Schmidt pass (full reorthogonalisation; the extreme Ritz pairs need no more)."""
    coef = torch.bmm(basis, w[:, :, None])  # [b, j, 1]
    return w - torch.bmm(coef.transpose(1, 2), basis)[:, 0]


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
