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

import functools
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
    ``cov [d, d]`` (``C``), and, where ``bb = e^T x``, ``e [R, M]`` (as
    :func:`train_bn_curvature` builds it: then :meth:`row_operator` applies).
    """

    x: torch.Tensor
    c: torch.Tensor
    zhat: torch.Tensor | None = None
    b: torch.Tensor | None = None
    a: torch.Tensor | None = None
    bb: torch.Tensor | None = None
    cov: torch.Tensor | None = None
    e: torch.Tensor | None = None

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

    @functools.cached_property
    def _by_neuron(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``c`` and ``zhat`` neuron-major (``[M, R]``), laid out once for :meth:`matvec`
        and :meth:`row_operator`."""
        zhat = None if self.zhat is None else self.zhat.T.contiguous()
        return self.c.T.contiguous(), zhat

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``S_m v_m`` for every neuron at once: ``v [M, d] -> [M, d]``.

        Neuron-major throughout (``v x^T`` is ``[M, R]``, scaled in place): half the time
        of the row-major products at 1,169 rows of 65 inputs (measured)."""
        c, zhat = self._by_neuron
        xv = v @ self.x.T  # [M, R]: x_r . v_m
        if zhat is None:
            return xv.mul_(c) @ self.x
        assert self.b is not None and self.a is not None and self.bb is not None
        assert self.cov is not None
        b = self.b
        bv = (b * v).sum(1)
        cq = c * (xv - zhat * bv[:, None])  # c[r,m] (q_rm . v_m)
        out = cq @ self.x - b * (cq * zhat).sum(1)[:, None]
        cv = v @ self.cov  # C is symmetric
        out = out + self.a[:, None] * (3 * b * bv[:, None] - cv)
        return out - self.bb * bv[:, None] - b * (self.bb * v).sum(1)[:, None]

    @property
    def row_form(self) -> bool:
        """Whether every vector in ``S_m`` is known as a combination of the rows, which
        :meth:`row_operator` needs: without train-mode batchnorm, or with it as
        :func:`train_bn_curvature` builds it (``b = zhat^T x / R``, ``bb = e^T x``,
        ``cov = x^T x / R``)."""
        return self.zhat is None or self.e is not None

    def row_operator(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The map ``u -> w`` with ``S_m x^T z_m = x^T w_m`` for every neuron, where
        ``u = z x x^T`` (``u_m`` holds ``x_r . y_m`` for ``y_m = x^T z_m``); ``[M, R]``
        both. Its constant tensors are laid out once, neuron-major.

        Without batchnorm ``w = c^T * u``; through train-mode batchnorm every term of the
        module doc's ``S_m y`` is a combination of the rows too (``b_m = x^T zhat_m / R``,
        ``B_m = x^T e_m``, ``C y = x^T u / R``).

        Raises:
            ValueError: the curvature is not in the rows' form (:attr:`row_form`).
        """
        c, zhat = self._by_neuron
        if zhat is None:
            return lambda u: c * u
        if self.e is None or self.a is None:
            raise ValueError("row_operator: batchnorm terms without the rows' weights e")
        rows = len(self.x)
        e = self.e.T.contiguous()
        b, a = zhat / rows, self.a[:, None]

        def apply(u: torch.Tensor) -> torch.Tensor:
            t = _dot(b, u)[:, None]  # b_m . y
            s = _dot(e, u)[:, None]  # B_m . y
            p = c * (u - zhat * t)  # c[r,m] (q_rm . y_m)
            out = p - b * _dot(p, zhat)[:, None] - e * t - b * s
            return out + a * (3 * b * t - u / rows)

        return apply

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
                     bb=e.T @ xt, cov=xt.T @ xt / rows, e=e)


def _sym(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``u_m w_m^T + w_m u_m^T`` per neuron."""
    outer = u[:, :, None] * w[:, None, :]
    return outer + outer.transpose(1, 2)


@dataclass(frozen=True)
class Eigenpairs:
    """Smallest and largest eigenpair of each neuron's splitting matrix (unit vectors).

    Solved in the rows' span (:func:`_in_row_space`), each vector is kept as coefficients
    of the columns of ``basis`` (the rows, or an orthonormal basis of them) and lifted to
    the ``d`` inputs where read: all of them by :attr:`min_vectors` /
    :attr:`max_vectors`, a few by :meth:`vectors` (a split needs ``k`` of ``M``, and
    lifting all of both ends costs about 2/5 of a training step of a 1,024-unit layer at
    batch 128). Where 0 is the extreme eigenvalue (``min_null`` / ``max_null``), the
    vector is :attr:`null`, a unit vector orthogonal to the rows.
    """

    min_values: torch.Tensor  # [M]
    min_coords: torch.Tensor  # [M, r]: the vectors themselves when basis is None
    max_values: torch.Tensor | None  # None: solved for the smallest end only
    max_coords: torch.Tensor | None
    basis: torch.Tensor | None = None  # [d, r]: a vector is basis @ its coords
    min_null: torch.Tensor | None = None  # [M] bool
    max_null: torch.Tensor | None = None
    seed: int = 0  # draws the null vector

    @property
    def min_vectors(self) -> torch.Tensor:
        """``[M, d]``: the unit eigenvector of each neuron's smallest eigenvalue."""
        return self.vectors("min")

    @property
    def max_vectors(self) -> torch.Tensor:
        """``[M, d]``: the unit eigenvector of each neuron's largest eigenvalue."""
        return self.vectors("max")

    @functools.cached_property
    def null(self) -> torch.Tensor:
        """``[d]``: a unit vector orthogonal to the columns of ``basis``, drawn from
        ``seed``: the eigenvector where an extreme eigenvalue is the 0 off the rows."""
        assert self.basis is not None
        span, _ = torch.linalg.qr(self.basis)
        generator = torch.Generator().manual_seed(self.seed)
        v = torch.randn(len(self.basis), generator=generator, dtype=self.basis.dtype)
        for _ in range(2):  # twice: little is left where the rows nearly fill R^d
            v = v - span @ (span.T @ v)
        return v / _floor(v.norm())

    def vectors(self, end: str, neurons: Sequence[int] | torch.Tensor | None = None,
                ) -> torch.Tensor:
        """The ``end`` (``"min"`` or ``"max"``) eigenvectors of ``neurons`` (all: None),
        ``[len(neurons), d]``.

        Raises:
            ValueError: ``end`` is neither ``"min"`` nor ``"max"``, or ``"max"`` was not
                solved for (``ends="min"``).
        """
        if end not in ("min", "max"):
            raise ValueError(f"end={end!r} must be 'min' or 'max'")
        coords, null_rows = ((self.min_coords, self.min_null) if end == "min"
                             else (self.max_coords, self.max_null))
        if coords is None:
            raise ValueError("the largest eigenpairs were not solved for: pass ends='both'")
        rows = (slice(None) if neurons is None
                else torch.as_tensor([int(i) for i in neurons], dtype=torch.long))
        picked = coords[rows]
        if self.basis is None:
            return picked
        lifted = picked @ self.basis.T  # unit: the coordinates are, in the basis' metric
        if null_rows is not None:
            at = null_rows[rows]
            if bool(at.any()):
                lifted[at] = self.null
        return lifted


EXACT_MAX_DIM = 128
EXACT_MAX_ENTRIES = 1_000_000
"""``method="auto"`` materialises the matrices (``eigh``) up to ``EXACT_MAX_DIM`` incoming
weights per neuron (plus bias) and ``EXACT_MAX_ENTRIES`` matrix entries in all, and uses
Lanczos on matrix-free products beyond (measured: for 1,024 neurons of 65 weights,
Lanczos reaches ``lambda_min`` to 1e-5 in 20 steps at about 1/3 of the cost of ``eigh``)."""


def extreme_eigenpairs(
    curv: Curvature, *, method: str = "auto", iters: int = 24, seed: int = 0,
    tol: float = 1e-9, ends: str = "both",
) -> Eigenpairs:
    """``"exact"``: ``eigh`` of every matrix; ``"fast"``: batched Lanczos on matrix-free
    products (:func:`_lanczos_extremes`), at most ``iters`` steps, stopping early once
    every neuron's extreme Ritz values are within about ``tol`` (relative), then one
    Rayleigh-Ritz refinement of each end (:func:`_refined`); ``"auto"``: exact for small
    matrices (:data:`EXACT_MAX_ENTRIES`), else fast.

    With fewer rows than inputs (a batch of 128 into a 1,024-input layer), ``"auto"`` and
    ``"fast"`` solve in the rows' span (:func:`_in_row_space`): the same eigenpairs, from
    ``rows``-dimensional problems.

    ``ends="min"`` leaves the largest end out of the fast method (``max_values`` is None):
    a plain split reads only the smallest, and the largest costs 10-30 % more.

    Raises:
        ValueError: an unknown method or ``ends``, or ``iters`` below 1 (the morphism
            turns it into its own error).
    """
    if ends not in ("min", "both"):
        raise ValueError(f"ends={ends!r} must be 'min' or 'both'")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters={iters!r} must be an int >= 1")
    if method in ("auto", "fast") and curv.x.shape[0] < curv.dim:
        return _in_row_space(curv, method=method, iters=iters, seed=seed, tol=tol,
                             ends=ends)
    if method == "auto":
        method = "exact" if _small(curv.units, curv.dim) else "fast"
    if method == "exact":
        vals, vecs = torch.linalg.eigh(curv.matrices())  # both ends come with it
        return Eigenpairs(vals[:, 0], vecs[:, :, 0], vals[:, -1], vecs[:, :, -1])
    if method == "fast":
        def draw(generator: torch.Generator) -> torch.Tensor:
            return torch.randn(curv.units, curv.dim, generator=generator, dtype=curv.x.dtype)

        (lo_value, lo), (hi_value, hi) = _extreme_pairs(
            _Space(curv.matvec, draw, curv.dim), iters, tol, seed, ends == "both")
        return Eigenpairs(lo_value, lo, hi_value, hi)
    raise ValueError(f"method={method!r} must be 'auto', 'exact' or 'fast'")


def _small(units: int, dim: int) -> bool:
    return dim <= EXACT_MAX_DIM + 1 and units * dim**2 <= EXACT_MAX_ENTRIES


def _in_row_space(curv: Curvature, *, method: str, iters: int, seed: int, tol: float,
                  ends: str) -> Eigenpairs:
    """The eigenpairs of ``S_m`` from a problem the size of the rows' span.

    ``S_m`` is zero on the ``d - rows`` directions orthogonal to the rows, so its smallest
    eigenvalue is ``min(lambda_min, 0)`` over the span (and its largest ``max(lambda_max,
    0)``); where 0 wins, the eigenvector is a unit vector orthogonal to the rows.

    In the span, ``y_m = x^T z_m``, and ``S_m y_m = x^T w_m`` with ``w`` a function of
    ``u = z x x^T`` alone (:meth:`Curvature.row_operator`); ``y . y' = z . u'``. Lanczos
    runs on the row coefficients ``z`` with the rows' Gram matrix ``x x^T``: one
    ``[R, R]`` product a step, against two products with the rows and a QR
    factorisation on an orthonormal basis of them, and the vectors stay as ``z`` until
    read (:class:`Eigenpairs`). That needs rows that are numerically independent
    (:func:`_independent_rows`). Small problems (``"auto"``, as in
    :func:`extreme_eigenpairs`), curvatures without the rows' form and dependent rows take
    that basis ``Q`` (QR of ``x^T``, exact whatever the rows' rank) and the matrices
    ``Q^T S_m Q`` (:meth:`Curvature.projected`)."""
    problem = None
    if curv.row_form and not (method == "auto" and _small(curv.units, len(curv.x))):
        problem = _independent_rows(curv)
    if problem is not None:
        rows, apply, gram = problem

        def draw(generator: torch.Generator) -> torch.Tensor:
            return torch.randn(curv.units, len(rows), generator=generator, dtype=rows.dtype)

        space = _Space(apply, draw, len(rows), image=lambda z: z @ gram)
        (lo_value, lo_coords), (hi_value, hi_coords) = _extreme_pairs(
            space, iters, tol, seed, ends == "both")
        basis = rows.T
    else:
        basis, _ = torch.linalg.qr(curv.x.T)  # [d, rows]
        pairs = extreme_eigenpairs(curv.projected(basis), method=method, iters=iters,
                                   seed=seed, tol=tol, ends=ends)
        lo_value, lo_coords = pairs.min_values, pairs.min_coords
        hi_value, hi_coords = pairs.max_values, pairs.max_coords
    lo_null = lo_value > 0
    hi_null = None
    if hi_value is not None:
        hi_null = hi_value < 0
        hi_value = hi_value.masked_fill(hi_null, 0.0)
    return Eigenpairs(lo_value.masked_fill(lo_null, 0.0), lo_coords, hi_value, hi_coords,
                      basis, lo_null, hi_null, seed)


def _independent_rows(curv: Curvature,
                      ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor],
                                 torch.Tensor] | None:
    """The rows to carry coefficients of, the coefficient map on them and their Gram
    matrix; None where the rows are (numerically) dependent.

    Train-mode batchnorm centres the rows, so the last is minus the sum of the others:
    the others span the same space, ``u`` of the last is ``-sum(u)``, and its
    coefficient in ``w`` moves onto the others. Then the Gram matrix's Cholesky pivots
    must stay above ``sqrt(eps)`` of its largest diagonal, or the rows count as
    dependent: a Krylov space in a singular metric runs out before ``rows`` steps
    (duplicate rows, a batch smaller than the steps through batchnorm) and divides
    rounding noise by its norm. (The pivots do not bound the condition number; rows of
    condition 3e13 with large pivots stayed accurate in the review's checks.)"""
    rows, apply = curv.x, curv.row_operator()
    eps = torch.finfo(rows.dtype).eps
    if curv.zhat is not None and len(rows) > 1:
        total = rows.sum(dim=0).norm()
        if float(total) <= eps**0.5 * float(rows.norm()):
            full = apply
            rows = rows[:-1]

            def apply(u: torch.Tensor) -> torch.Tensor:
                w = full(torch.cat([u, -u.sum(dim=1, keepdim=True)], dim=1))
                return w[:, :-1] - w[:, -1:]

    gram = rows @ rows.T
    factor, info = torch.linalg.cholesky_ex(gram)
    pivots = torch.diagonal(factor) ** 2
    if int(info) or not float(pivots.min()) > eps**0.5 * float(gram.diagonal().max()):
        return None
    return rows, apply, gram


@dataclass(frozen=True)
class _Space:
    """Where the Lanczos vectors live, one per neuron (``[M, n]``): each vector ``y`` is
    held as coefficients ``z``, with ``u = image(z)`` where needed. ``apply`` maps ``u``
    to the coefficients of ``S y``, and ``y . y' = z . u'``.

    Plain (``image`` None): ``z = u = y``, ``apply`` the matrix-free product. In the rows'
    span (:func:`_in_row_space`): ``y = x^T z``, ``u = z x x^T``. ``draw`` gives random
    coefficients; ``dim`` bounds the space's dimension."""

    apply: Callable[[torch.Tensor], torch.Tensor]
    draw: Callable[[torch.Generator], torch.Tensor]
    dim: int
    image: Callable[[torch.Tensor], torch.Tensor] | None = None

    def of(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.image is None else self.image(z)

    def unit(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z`` scaled to a unit vector, and its image."""
        u = self.of(z)
        size = _floor(_dot(z, u).clamp_min(0.0).sqrt())[:, None]
        unit = z / size
        return unit, (u / size if u is not z else unit)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=-1)


Pair = tuple[torch.Tensor, torch.Tensor]


def _extreme_pairs(space: _Space, iters: int, tol: float, seed: int, both: bool,
                   ) -> tuple[Pair, Pair | tuple[None, None]]:
    """(value, vector) of the smallest end, and of the largest (``both``) or Nones."""
    generator = torch.Generator().manual_seed(seed)
    lo, hi = _lanczos_extremes(space, min(iters, space.dim), tol, generator, both)
    return _refined(space, lo, "min"), (_refined(space, hi, "max") if hi is not None
                                        else (None, None))


def _refined(space: _Space, y: torch.Tensor, end: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``end`` eigenpair of each neuron's matrix restricted to ``span{y, S y}``:
    Rayleigh-Ritz on two vectors. The value is at or beyond ``y``'s Rayleigh quotient
    (below it for ``"min"``), so a Lanczos vector that lost a little to rounding gets it
    back; a converged ``y`` stays as it is. Returns the value and the vector's ``z``."""
    sign = 1.0 if end == "min" else -1.0
    y, y_image = space.unit(y)
    sy = space.apply(y_image)
    theta = _dot(sy, y_image)
    r = sy - theta[:, None] * y  # the residual
    r = r - _dot(r, y_image)[:, None] * y  # orthogonal to y to rounding, even when tiny
    r_image = space.of(r)
    rho = _dot(r, r_image).clamp_min(0.0).sqrt()
    step, step_image = r / _floor(rho)[:, None], r_image / _floor(rho)[:, None]
    # again against y: what is left of a residual that was rounding along y (a
    # one-dimensional space) is small, and then y stays as it is
    along = _dot(step, y_image)[:, None]
    step, step_image = step - along * y, step_image - along * y_image
    size = _dot(step, step_image).clamp_min(0.0).sqrt()
    moved = (rho > 0) & (size > 0.5)
    step = torch.where(moved[:, None], step / _floor(size)[:, None], 0.0)
    step_image = torch.where(moved[:, None], step_image / _floor(size)[:, None], 0.0)
    gamma = torch.where(moved, _dot(space.apply(step_image), step_image), theta)
    off = torch.where(moved, rho * size, 0.0)  # step . S y = step . r: rho times what the
    # second pass left of r's direction
    # the 2x2 matrix [[theta, off], [off, gamma]]: its end value is theta + sign * shift,
    # shift <= 0, in the form without cancellation when off is tiny; its vector
    # (off, sign * shift) in the orthonormal pair (y, step)
    delta = sign * (gamma - theta) / 2
    root = torch.sqrt(delta * delta + off * off)
    shift = torch.where(delta >= 0, -off * off / _floor(delta + root), delta - root)
    norm = _floor(torch.sqrt(off * off + shift * shift))[:, None]
    vector = (off[:, None] * y + sign * shift[:, None] * step) / norm
    return theta + sign * shift, torch.where(moved[:, None], vector, y)


def _lanczos_extremes(space: _Space, steps: int, tol: float, generator: torch.Generator,
                      both: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Batched Lanczos: the Ritz vectors (as ``z``) of the smallest and (``both``) the
    largest Ritz value.

    The three-term recurrence keeps each new vector orthogonal to the current one (a
    second pass) and, up to rounding, to the one before: no reorthogonalisation against
    the older ones. Orthogonality to those drifts once a Ritz pair converges (Paige), which
    adds copies of converged values but leaves the extreme ones right; the Ritz vectors
    then lose a little, which :func:`_refined` mostly recovers. Full reorthogonalisation,
    a pass over the basis every step, cost a third of the eigenpairs of a 1,024-unit
    layer at batch 128; without it ``lambda_min`` of the benchmark's layers is within
    1.5e-5 relative error of float64 ``eigh`` in float32, against 1e-6 before
    (bench/BENCHMARKS.md), inside the stopping rule's own bound below.

    Stops once every extreme Ritz pair's residual ``|S y - theta y| = beta_j |s_j|``
    (``s_j`` the last entry of the tridiagonal's eigenvector) is at most ``sqrt(tol)``
    times the matrix's scale (``max |alpha|``). The Ritz value's error is at most the
    residual, and about its square over the gap to the next eigenvalue: ~``tol`` where
    the extreme eigenvalue stands apart, up to ~``sqrt(tol)`` where the spectrum's end is
    crowded. Tested after steps 12, 16, 20, ... (a test costs three to four steps of a
    1,024-unit layer at batch 128, and the steps before 12 rarely settle a wide matrix
    in float32) with :func:`tridiagonal_ends` of the tridiagonals. A neuron whose
    residuals are below ``tol`` of its own extreme values has its Ritz vectors taken at
    once: its later steps, run while others settle, would only add copies of its
    converged values and cost its vectors accuracy (float64, 200 steps: 1e-5 instead of
    1e-15); the others' are taken at the stop. (At ``sqrt(tol)`` of its own values, a
    float32 neuron whose start barely touched its smallest eigenvector was taken on the
    second smallest: 17 % off, tested.)"""
    q, q_image = space.unit(space.draw(generator))
    batch, dim, dtype = q.shape[0], q.shape[1], q.dtype
    tol = max(tol, 100 * torch.finfo(dtype).eps)  # float32 cannot settle below its rounding
    basis = torch.empty(steps + 1, batch, dim, dtype=dtype)  # step-major: each contiguous
    basis[0] = q
    alpha = torch.zeros(batch, steps, dtype=dtype)
    beta = torch.zeros(batch, steps, dtype=dtype)
    scratch = torch.empty_like(q)  # products are summed here: no allocation per step
    lo = torch.zeros_like(q)  # Ritz vectors, written at the test a neuron settles in
    hi = torch.zeros_like(q) if both else None
    done = torch.zeros(batch, dtype=torch.bool)

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.mul(a, b, out=scratch).sum(dim=1)

    for j in range(steps):
        q = basis[j]
        if space.image is None:
            q_image = q
        w = space.apply(q_image)
        if j:
            w.addcmul_(basis[j - 1], beta[:, j - 1, None], value=-1.0)
        a = dot(w, q_image)
        w.addcmul_(q, a[:, None], value=-1.0)
        again = dot(w, q_image)  # a second pass: alpha to rounding, w orthogonal to q
        w.addcmul_(q, again[:, None], value=-1.0)
        alpha[:, j] = a + again
        w_image = space.of(w)
        norm = dot(w, w_image).clamp_min(0.0).sqrt()
        scale = _floor(alpha[:, : j + 1].abs().amax(dim=1))
        stalled = norm <= 1e-12 * scale
        if bool(stalled.any()):  # an invariant subspace: continue from a fresh direction
            fresh = space.draw(generator)
            coef = (basis[: j + 1] * space.of(fresh)).sum(dim=2, keepdim=True)  # [j, b, 1]
            fresh = fresh - (coef * basis[: j + 1]).sum(dim=0)
            norm = torch.where(stalled, torch.zeros_like(norm), norm)
            w = torch.where(stalled[:, None], fresh, w)
            w_image = space.of(w)
            size = _floor(dot(w, w_image).clamp_min(0.0).sqrt())[:, None]
        else:
            size = _floor(norm)[:, None]
        beta[:, j] = norm
        torch.div(w, size, out=basis[j + 1])
        if space.image is not None:
            q_image = w_image.div_(size)
        if j + 1 == steps or (j >= 11 and j % 4 == 3):
            rows = (~done).nonzero()[:, 0]  # neurons not yet taken: only they are tested
            a_open, b_open = alpha[rows, : j + 1], beta[rows, :j]
            ends = tridiagonal_ends(a_open, b_open, both=both)  # [open, j + 1, e]
            residual = beta[rows, j, None] * ends[:, -1].abs()  # [open, e]
            bound = tol**0.5 * scale[rows, None]
            last = j + 1 == steps or bool((residual <= bound).all())
            # settled far past the stop, to tol of its own values: taken now
            own = _ritz_values(a_open, b_open, ends).abs()
            take = (residual <= torch.minimum(bound, tol * own)).all(dim=1) | last
            if bool(take.any()):  # their Ritz vectors now: later steps add only copies
                weights = torch.zeros(batch, j + 1, ends.shape[2], dtype=dtype)
                weights[rows] = ends * take[:, None, None]
                for k in range(j + 1):
                    for found, end in ((lo, 0), (hi, 1)):
                        if found is not None:
                            found.addcmul_(basis[k], weights[:, k, end, None])
                done[rows[take]] = True
            if last:
                break
    return lo, hi


def _ritz_values(alpha: torch.Tensor, beta: torch.Tensor, ends: torch.Tensor,
                 ) -> torch.Tensor:
    """``s^T T s`` for each unit eigenvector ``s`` in ``ends [b, n, e]`` of the
    tridiagonal ``T`` (``alpha [b, n]``, ``beta [b, n - 1]``): its eigenvalue, ``[b, e]``."""
    value = (alpha[:, :, None] * ends * ends).sum(dim=1)
    return value + 2 * (beta[:, :, None] * ends[:, :-1] * ends[:, 1:]).sum(dim=1)


def tridiagonal_ends(alpha: torch.Tensor, beta: torch.Tensor, *, both: bool = True,
                     ) -> torch.Tensor:
    """Unit eigenvectors ``[b, n, 2]`` of the smallest and the largest eigenvalue of ``b``
    symmetric tridiagonals (diagonals ``alpha [b, n]``, off-diagonals ``beta [b, n - 1]``);
    ``[b, n, 1]``, the smallest only, without ``both``.

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
        if both:
            a = np.concatenate([a, -a])
            b = np.concatenate([b, -b])  # -T's off-diagonal: flips its vectors' signs
        vectors = _inverse_iteration(a, b, _laguerre_smallest(a, b) - 1e-12)
    half = len(alpha)
    ends = np.stack([vectors[:half], vectors[half:]] if both else [vectors], axis=2)
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


def _floor(t: torch.Tensor) -> torch.Tensor:
    """``t`` raised to the smallest positive normal number of its dtype (a divisor)."""
    return t.clamp_min(torch.finfo(t.dtype).tiny)
