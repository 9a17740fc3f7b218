"""Operator-specific checks of split.steepest (splitting steepest descent)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.arch.compile import evaluate
from morphsearch.arch.ops import OPS
from morphsearch.builders import GraphBuilder
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms import splitting
from morphsearch.morphisms._split_linalg import (
    Curvature,
    _refined,
    _Space,
    extreme_eigenpairs,
    tridiagonal_ends,
)
from morphsearch.morphisms._surgery import batch_loss
from tests.morphisms.strategies import architectures, batch_for, outputs

F64 = torch.float64


def _setup(activation: str = "tanh", dtype: torch.dtype = F64, *, bn: bool = False,
           n: int = 48, seed: int = 2) -> tuple[Architecture, tuple]:
    arch = builders.mlp([5, 7, 3], activation=activation, batchnorm=bn, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed - 2)
    x = torch.randn(n, 5, generator=g, dtype=dtype)
    return arch, (x, torch.randn(n, 3, generator=g, dtype=dtype))


def _loss(arch: Architecture, batch: tuple, mode: str = "train") -> float:
    with torch.no_grad():
        out = evaluate(arch, batch[0], train=mode == "train", dropout=False)
        return float(batch_loss(out, batch[1]))


def _plain(step: torch.Tensor) -> list[splitting.Plan]:
    return [(step, -step, 0.5, 0.5)]


@pytest.mark.parametrize("activation", ["tanh", "gelu", "selu"])
@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn_eval"])
def test_loss_change_matches_second_order_prediction(activation: str, bn: bool) -> None:
    # Theory check: L(split) - L = eps^2/2 * lambda_min + O(eps^3), a decrease since
    # lambda_min < 0; with batchnorm in eval mode (a folded per-channel affine map).
    arch, batch = _setup(activation, bn=bn)
    mode = "eval" if bn else "train"
    vals, _ = splitting.splitting_eigenvalues(arch, "fc1", batch, mode=mode)
    assert float(vals.min()) < 0
    for eps in (0.01, 0.003):
        child = morphisms.apply("split.steepest", arch, "fc1", batch=batch, eps=eps,
                                mode=mode).child
        change = _loss(child, batch, mode) - _loss(arch, batch, mode)
        assert change < 0
        assert abs(change / (eps**2 / 2 * float(vals.min())) - 1) < 0.1


CASES = [("tanh", False, "train"), ("tanh", True, "train"), ("gelu", True, "train"),
         ("tanh", True, "eval"), ("selu", True, "eval")]


@pytest.mark.parametrize(("activation", "bn", "mode"), CASES)
def test_splitting_matrix_quadratic_form_is_the_second_derivative_of_the_loss(
        activation: str, bn: bool, mode: str) -> None:
    # v^T S_i v = d^2/d eps^2 of L(split neuron i along v by eps), at eps = 0, measured by
    # a finite difference on the split network: for train-mode batchnorm this checks
    # the derivation through the batch statistics (module doc), and signed splits
    # (weights -c, 1+c; steps v, c/(1+c) v) give -c/(1+c) v^T S_i v.
    arch, batch = _setup(activation, bn=bn)
    S = splitting.splitting_matrices(arch, "fc1", batch, mode=mode)
    wp = splitting._split_site(arch, "fc1").wp
    v = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=F64)
    v = v / v.norm()
    h, base = 1e-3, _loss(arch, batch, mode)
    plus = _loss(splitting._split(arch, wp, [4], _plain(h * v)), batch, mode)
    assert (plus - base) / (h**2 / 2) == pytest.approx(float(v @ S[4] @ v), rel=1e-3)
    c = 2.0
    signed = splitting._split(arch, wp, [4], [(h * v, c / (1 + c) * h * v, -c, 1 + c)])
    assert (_loss(signed, batch, mode) - base) / (h**2 / 2) == pytest.approx(
        -c / (1 + c) * float(v @ S[4] @ v), rel=2e-2)


@pytest.mark.parametrize("bn", [False, True])
def test_relu_splits_along_the_surrogate_direction_lower_the_loss(bn: bool) -> None:
    # relu'' = 0 a.e.: the softplus surrogate (beta = 3) only chooses the direction; the
    # child is an exact split of the real ReLU network and its loss goes down.
    for seed in (2, 3, 4):
        arch, batch = _setup("relu", bn=bn, n=256, seed=seed)
        vals, _ = splitting.splitting_eigenvalues(arch, "fc1", batch)
        assert float(vals.min()) < 0
        child = morphisms.apply("split.steepest", arch, "fc1", batch=batch, eps=0.3).child
        assert _loss(child, batch) < _loss(arch, batch)
    # a sharper surrogate is a different matrix: beta is a real parameter
    sharp = splitting.splitting_matrices(arch, "fc1", batch, beta=30.0)
    assert not torch.allclose(sharp, splitting.splitting_matrices(arch, "fc1", batch))


def test_signed_split_escapes_a_splitting_stable_neuron() -> None:
    # A neuron with lambda_min >= 0 cannot lower the loss by a plain split, but a signed
    # one along the top eigenvector predicts -c/(1+c) lambda_max < 0 and delivers it.
    arch, batch = _setup()
    vals, vecs = splitting.splitting_eigenvalues(arch, "fc1", batch)
    pairs = splitting.splitting_eigenpairs(arch, "fc1", batch)
    S = splitting.splitting_matrices(arch, "fc1", batch)
    # make neuron 0 splitting-stable: its matrix shifted so lambda_min > 0 is what the
    # signed rule sees (predicted_decrease works on any eigenpairs)
    stable = splitting.Eigenpairs(pairs.min_values.abs() + 0.01, pairs.min_vectors,
                                  pairs.max_values, pairs.max_vectors)
    value, use = splitting.predicted_decrease(stable, signed=True, signed_weight=1.0)
    assert bool(use.all()) and bool((value < 0).all())
    assert torch.allclose(value, -0.5 * pairs.max_values)
    plain, use_plain = splitting.predicted_decrease(stable, signed=False)
    assert not bool(use_plain.any()) and bool((plain > 0).all())
    assert float(vecs[0] @ S[0] @ vecs[0]) == pytest.approx(float(vals[0]))
    # on real matrices (GELU: its best split is a signed one with c = 3), the morphism
    # with signed=True realises its prediction -c/(1+c) lambda_max eps^2/2
    arch, batch = _setup("gelu")
    pairs = splitting.splitting_eigenpairs(arch, "fc1", batch)
    best, use = splitting.predicted_decrease(pairs, signed=True, signed_weight=3.0)
    i = int(torch.argmin(best))
    assert bool(use[i]) and float(best[i]) < float(pairs.min_values.min()) < 0
    eps = 0.01
    child = morphisms.apply("split.steepest", arch, "fc1", batch=batch, eps=eps,
                            signed=True, signed_weight=3.0).child
    ratio = (_loss(child, batch) - _loss(arch, batch)) / (eps**2 / 2 * float(best[i]))
    assert abs(ratio - 1) < 0.1
    out, cout = arch.weights["fc2"]["weight"], child.weights["fc2"]["weight"]
    torch.testing.assert_close(cout[:, i], -3 * out[:, i])
    torch.testing.assert_close(cout[:, 7], 4 * out[:, i])


def test_splits_the_most_negative_neurons_with_halved_outgoing_weights() -> None:
    arch, batch = _setup()
    vals, vecs = splitting.splitting_eigenvalues(arch, "fc1", batch)
    worst = [int(i) for i in torch.argsort(vals)[:2]]
    eps = 0.05
    child = morphisms.apply("split.steepest", arch, "fc1", batch=batch, k=2, eps=eps).child
    w, cw = arch.weights["fc1"]["weight"], child.weights["fc1"]["weight"]
    torch.testing.assert_close(cw[worst], w[worst] + eps * vecs[worst, :5])
    torch.testing.assert_close(cw[7:], w[worst] - eps * vecs[worst, :5])
    out, cout = arch.weights["fc2"]["weight"], child.weights["fc2"]["weight"]
    torch.testing.assert_close(cout[:, worst], out[:, worst] / 2)
    torch.testing.assert_close(cout[:, 7:], out[:, worst] / 2)
    assert _loss(child, batch) < _loss(arch, batch)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures(F64))
def test_eps_zero_preserves_the_function_whatever_the_surrogate(arch: Architecture) -> None:
    # The contract's preservation check (train and eval mode) with eps = 0, where
    # preserves() says the split is exact: plain and signed, any beta, every site.
    batch = batch_for(arch, seed=1)
    inputs, _ = batch_for(arch, n=6, seed=123)
    for site in morphisms.sites("split.steepest", arch):
        options: list[dict[str, Any]] = [
            {"beta": 3.0}, {"beta": 0.5, "signed": True, "signed_weight": 2.0}]
        for params in options:
            assert morphisms.get("split.steepest").preserves({**params, "eps": 0.0})
            child = morphisms.apply("split.steepest", arch, site, batch=batch, eps=0.0,
                                    k=1, **params).child
            for train in (False, True):
                err = (outputs(child, inputs, train=train)
                       - outputs(arch, inputs, train=train)).abs().max()
                assert float(err) <= 1e-10, (site, params, train)


def test_strategies_draw_relu_and_bn_split_sites() -> None:
    # the contract suite's random architectures reach split.steepest on ReLU/GELU MLPs,
    # CNNs and residual nets (see tests/morphisms/strategies.py)
    examples = [
        builders.mlp([4, 5, 3], activation="relu", batchnorm=True),
        builders.mlp([4, 5, 3], activation="gelu"),
        builders.cnn((1, 5, 5), channels=[3], hidden=[4], num_classes=3, batchnorm=True),
        builders.resnet((1, 4, 4), width=3, blocks=1, num_classes=3),
    ]
    expected = [["fc1"], ["fc1"], ["conv1", "fc1"], ["b1_conv1"]]
    assert [morphisms.sites("split.steepest", a) for a in examples] == expected


def _wide(rows: int, bn: bool) -> tuple[Architecture, tuple]:
    """A ReLU MLP with 200 inputs (6 hidden units, optionally batchnorm) and a batch."""
    arch = builders.mlp([200, 6, 3], activation="relu", batchnorm=bn, dtype=F64, seed=0)
    g = torch.Generator().manual_seed(0)
    return arch, (torch.randn(rows, 200, generator=g, dtype=F64),
                  torch.randint(0, 3, (rows,), generator=g))


def test_fast_method_matches_exact_on_a_wide_layer() -> None:
    # 200 inputs: "auto" takes Lanczos; eigenvalues to 1e-6 relative, vectors up to sign,
    # with and without train-mode batchnorm.
    for bn in (False, True):
        arch, batch = _wide(300, bn)
        curv = splitting.splitting_curvature(arch, "fc1", batch)
        g = torch.Generator().manual_seed(1)
        exact = extreme_eigenpairs(curv, method="exact")
        # 40 steps (the default 24 trades accuracy for cost: ~1e-4 relative here)
        auto = splitting.splitting_eigenpairs(arch, "fc1", batch, iters=40)
        for fast in (auto, extreme_eigenpairs(curv, method="fast", iters=40, seed=3)):
            torch.testing.assert_close(fast.min_values, exact.min_values, rtol=1e-6, atol=0)
            torch.testing.assert_close(fast.max_values, exact.max_values, rtol=1e-6, atol=0)
            cos = (fast.min_vectors * exact.min_vectors).sum(1).abs()
            torch.testing.assert_close(cos, torch.ones(6, dtype=F64), rtol=0, atol=1e-6)
        # the matrix-free product is the materialised matrix's
        v = torch.randn(6, 201, generator=g, dtype=F64)
        torch.testing.assert_close(curv.matvec(v), torch.einsum("mij,mj->mi",
                                                                curv.matrices(), v))


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn_train"])
def test_a_batch_with_fewer_rows_than_inputs_is_solved_in_its_span(bn: bool) -> None:
    # 50 rows into 200 inputs: "auto" and "fast" work on 50-dim matrices, and give the
    # 201-dim matrices' eigenpairs (the span holds every vector of S_m, bias included).
    arch, batch = _wide(50, bn)
    curv = splitting.splitting_curvature(arch, "fc1", batch)
    exact = extreme_eigenpairs(curv, method="exact")
    assert bool((exact.min_values < 0).all()) and bool((exact.max_values > 0).all())
    for method in ("auto", "fast"):
        found = extreme_eigenpairs(curv, method=method, iters=60, tol=1e-16)
        torch.testing.assert_close(found.min_values, exact.min_values, rtol=1e-10, atol=0)
        torch.testing.assert_close(found.max_values, exact.max_values, rtol=1e-10, atol=0)
        cos = (found.min_vectors * exact.min_vectors).sum(1).abs()
        torch.testing.assert_close(cos, torch.ones(6, dtype=F64), rtol=0, atol=1e-8)


def _is_orthonormal(basis: torch.Tensor) -> bool:
    eye = torch.eye(basis.shape[1], dtype=basis.dtype)
    return bool(torch.allclose(basis.T @ basis, eye, atol=1e-8))


@pytest.mark.parametrize("bn", [False, True], ids=["plain", "bn_train"])
def test_the_rows_coefficients_path_matches_the_orthonormal_basis_path(bn: bool) -> None:
    # 40 rows into 200 inputs, 300 neurons: "fast" runs Lanczos on the rows'
    # coefficients with their Gram matrix (through train-mode batchnorm on all rows but
    # the last, which is minus their sum); a curvature without the rows' weights e of
    # its batchnorm terms takes an orthonormal basis of the rows (QR). Both agree with
    # eigh of the 201-dim matrices; the coefficient map is S_m's own product.
    arch = builders.mlp([200, 300, 3], activation="relu", batchnorm=bn, dtype=F64, seed=0)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(40, 200, generator=g, dtype=F64),
             torch.randint(0, 3, (40,), generator=g))
    curv = splitting.splitting_curvature(arch, "fc1", batch)
    assert curv.row_form
    z = torch.randn(300, 40, generator=g, dtype=F64)
    torch.testing.assert_close(curv.row_operator()(z @ curv.x @ curv.x.T) @ curv.x,
                               curv.matvec(z @ curv.x))
    exact = extreme_eigenpairs(curv, method="exact")
    variants = [(curv, curv.x[:-1] if bn else curv.x)]
    if bn:
        variants.append((dataclasses.replace(curv, e=None), None))  # the basis path
        assert not variants[-1][0].row_form
        with pytest.raises(ValueError, match="rows' weights e"):
            variants[-1][0].row_operator()
    for variant, rows in variants:
        found = extreme_eigenpairs(variant, method="fast", iters=40, tol=1e-16)
        assert found.basis is not None
        if rows is None:
            assert _is_orthonormal(found.basis)
        else:
            assert torch.equal(found.basis, rows.T)  # the rows themselves
        torch.testing.assert_close(found.min_values, exact.min_values, rtol=1e-8, atol=0)
        torch.testing.assert_close(found.max_values, exact.max_values, rtol=1e-8, atol=0)
        for mine, theirs in ((found.min_vectors, exact.min_vectors),
                             (found.max_vectors, exact.max_vectors)):
            cos = (mine * theirs).sum(1).abs()
            torch.testing.assert_close(cos, torch.ones(300, dtype=F64), rtol=0, atol=1e-6)
            # unit as lifted from the coefficients, with no renormalising
            torch.testing.assert_close(mine.norm(dim=1), torch.ones(300, dtype=F64),
                                       rtol=0, atol=1e-10)


def _dependent(case: str) -> Curvature:
    g = torch.Generator().manual_seed(0)
    if case == "duplicate_row":
        x = torch.randn(6, 100, generator=g, dtype=F64)
        x[1] = x[0]
        return Curvature(x, torch.randn(6, 40, generator=g, dtype=F64))
    if case == "bn_batch_of_12":  # 11 independent centred rows: fewer than the steps
        arch = builders.mlp([200, 300, 3], activation="relu", batchnorm=True, dtype=F64,
                            seed=0)
        batch = (torch.randn(12, 200, generator=g, dtype=F64),
                 torch.randint(0, 3, (12,), generator=g))
        return splitting.splitting_curvature(arch, "fc1", batch)
    # ten pairs of duplicates among 20 rows
    x = torch.randn(10, 100, generator=g, dtype=F64).repeat(2, 1)
    return Curvature(x, torch.randn(20, 40, generator=g, dtype=F64))


@pytest.mark.parametrize("case", ["duplicate_row", "bn_batch_of_12", "duplicate_pairs"])
def test_dependent_rows_are_solved_on_an_orthonormal_basis(case: str) -> None:
    # Rows that are linearly dependent make the rows' Gram matrix singular: Lanczos on
    # their coefficients would run out of directions and divide rounding noise by its
    # norm (NaN, or eigenvalues 30x too large in the review's cases). Those take the QR
    # basis, exact whatever the rank; batchnorm's centred rows drop their last row
    # instead (12 rows: 11 independent ones, all 11 Lanczos steps on them).
    curv = _dependent(case)
    exact = extreme_eigenpairs(curv, method="exact")
    found = extreme_eigenpairs(curv, method="fast", iters=40, tol=1e-16)
    assert found.basis is not None
    if case == "bn_batch_of_12":
        assert torch.equal(found.basis, curv.x[:-1].T)
    else:
        assert _is_orthonormal(found.basis)
    assert found.max_values is not None
    scale = float(exact.min_values.abs().max())
    torch.testing.assert_close(found.min_values, exact.min_values, rtol=1e-8,
                               atol=1e-12 * scale)
    torch.testing.assert_close(found.max_values, exact.max_values, rtol=1e-8,
                               atol=1e-12 * scale)
    norms = found.min_vectors.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-10)


def test_an_ill_conditioned_float32_gram_matrix_takes_the_basis_too() -> None:
    # Independent rows whose Gram matrix has condition 1e8: in float32 its rounding
    # (eps times that) would swamp the metric, so the rows' coefficients are refused.
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=F64))
    v, _ = torch.linalg.qr(torch.randn(120, 30, generator=g, dtype=F64))
    x = (u * torch.logspace(0, -4, 30, dtype=F64)) @ v.T  # singular values 1 .. 1e-4
    c = torch.randn(30, 50, generator=g, dtype=F64)
    exact = extreme_eigenpairs(Curvature(x, c), method="exact")
    found = extreme_eigenpairs(Curvature(x.float(), c.float()), method="fast")
    assert found.basis is not None and found.basis.shape == (120, 30)
    assert not torch.equal(found.basis, x.float().T)
    scale = float(exact.min_values.abs().max())
    torch.testing.assert_close(found.min_values.double(), exact.min_values, rtol=1e-3,
                               atol=1e-5 * scale)


def test_neurons_that_settle_early_keep_their_accuracy_over_many_steps() -> None:
    # Half the neurons have an isolated extreme eigenvalue (settled within a few
    # steps), half a crowded one: with 200 steps of Lanczos without
    # reorthogonalisation, the early ones' later steps would only add copies of their
    # converged values; their vectors are taken when they settle (1e-5 otherwise).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 200, generator=g, dtype=F64)
    c = torch.randn(600, 64, generator=g, dtype=F64) * 0.1
    c[:5, :32] -= 50.0
    c[5:10, :32] += 50.0
    curv = Curvature(x, c)
    exact = extreme_eigenpairs(curv, method="exact")
    found = extreme_eigenpairs(curv, method="fast", iters=200, tol=1e-300)
    for mine, theirs in ((found.min_values, exact.min_values),
                         (found.max_values, exact.max_values)):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=0)
    cos = (found.min_vectors[:32] * exact.min_vectors[:32]).sum(1).abs()
    torch.testing.assert_close(cos, torch.ones(32, dtype=F64), rtol=0, atol=1e-10)


def test_the_smallest_end_alone_is_eighs_smallest_end() -> None:
    # ends="min" (what a plain split and the unsigned score read): eigh's smallest pairs,
    # no largest ones, and a clear error where one is asked for.
    for rows in (40, 400):  # in the rows' span, and in the inputs
        arch, batch = _wide(rows, bn=False)
        curv = splitting.splitting_curvature(arch, "fc1", batch)
        low = extreme_eigenpairs(curv, method="fast", iters=60, tol=1e-16, ends="min")
        exact = extreme_eigenpairs(curv, method="exact")
        torch.testing.assert_close(low.min_values, exact.min_values, rtol=1e-8, atol=0)
        cos = (low.min_vectors * exact.min_vectors).sum(1).abs()
        torch.testing.assert_close(cos, torch.ones(6, dtype=F64), rtol=0, atol=1e-6)
        assert low.max_values is None and low.max_coords is None
        with pytest.raises(ValueError, match="ends='both'"):
            low.vectors("max")
        with pytest.raises(ValueError, match="solve ends='both'"):
            splitting.predicted_decrease(low, signed=True)
    with pytest.raises(MorphismNotApplicable, match="ends='max' must be"):
        splitting.splitting_eigenpairs(arch, "fc1", batch, ends="max")


def test_a_float32_neuron_is_not_taken_before_its_smallest_eigenvalue_shows() -> None:
    # Neuron 12's random start touches its smallest eigenvector only at 1e-5 in
    # float32: Lanczos settles on its second smallest first (-100.6 against -121.0).
    # Taking a neuron early needs residuals below tol of its own values, not sqrt(tol):
    # it runs on until the smallest shows (17 % off before).
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 30, generator=g, dtype=F64)
    c = torch.randn(100, 20, generator=g, dtype=F64)
    exact = extreme_eigenpairs(Curvature(x, c), method="exact")
    found = extreme_eigenpairs(Curvature(x.float(), c.float()), method="fast")
    scale = torch.maximum(exact.min_values.abs(), exact.max_values.abs())
    assert found.max_values is not None
    for mine, theirs in ((found.min_values, exact.min_values),
                         (found.max_values, exact.max_values)):
        assert float(((mine.double() - theirs) / scale).abs().max()) < 1e-5


@pytest.mark.parametrize(("bn", "rows"), [(False, 1), (True, 2)], ids=["one_row", "bn_two"])
def test_a_one_dimensional_span_gives_unit_vectors(bn: bool, rows: int) -> None:
    # One row (or two centred by batchnorm, one after dropping the last): the residual
    # is rounding along y itself, and the refinement must leave y as it is (it gave
    # norms of sqrt(2) or 0 when it paired y with itself).
    for dtype in (F64, torch.float32):
        arch = builders.mlp([20, 64, 3], activation="tanh", batchnorm=bn, dtype=dtype,
                            seed=0)
        for seed in range(5):
            g = torch.Generator().manual_seed(seed)
            batch = (torch.randn(rows, 20, generator=g, dtype=dtype),
                     torch.randint(0, 3, (rows,), generator=g))
            pairs = splitting.splitting_eigenpairs(arch, "fc1", batch, method="fast",
                                                   seed=seed)
            for vectors in (pairs.min_vectors, pairs.max_vectors):
                norms = vectors.double().norm(dim=1)
                torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)


def test_refinement_lowers_the_rayleigh_quotient_to_the_end_of_its_plane() -> None:
    # Rayleigh-Ritz on span{y, S y}: from a rough vector the value drops below y's
    # Rayleigh quotient and is exactly the smallest eigenvalue of S on that plane; from
    # an eigenvector nothing moves.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 8, generator=g, dtype=F64)
    curv = Curvature(x, torch.randn(30, 5, generator=g, dtype=F64))
    space = _Space(curv.matvec, lambda gen: torch.randn(5, 8, generator=gen, dtype=F64), 8)
    y = torch.randn(5, 8, generator=g, dtype=F64)
    y = y / y.norm(dim=1, keepdim=True)
    value, vector = _refined(space, y, "min")
    mats = curv.matrices()
    rayleigh = torch.einsum("mi,mij,mj->m", y, mats, y)
    assert bool((value < rayleigh).all())
    for m in range(5):
        plane, _ = torch.linalg.qr(torch.stack([y[m], mats[m] @ y[m]], dim=1))
        lowest = torch.linalg.eigvalsh(plane.T @ mats[m] @ plane)[0]
        assert float(value[m]) == pytest.approx(float(lowest), rel=1e-10)
        assert float(vector[m] @ mats[m] @ vector[m]) == pytest.approx(float(lowest), rel=1e-10)
    exact = extreme_eigenpairs(curv, method="exact")
    value, vector = _refined(space, exact.max_coords, "max")
    torch.testing.assert_close(value, exact.max_values, rtol=1e-12, atol=0)
    torch.testing.assert_close(vector, exact.max_coords, rtol=0, atol=1e-8)


def test_in_the_rows_span_zero_is_an_eigenvalue_off_it() -> None:
    # S_m = sum_r c x_r x_r^T with c >= 0 (c <= 0) is semidefinite of rank 10 < 30: its
    # smallest (largest) eigenvalue is 0, with an eigenvector orthogonal to the rows.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 30, generator=g, dtype=F64)
    c = torch.rand(10, 2, generator=g, dtype=F64) * torch.tensor([1.0, -1.0], dtype=F64)
    curv = Curvature(x, c)
    pairs = extreme_eigenpairs(curv, method="fast", iters=40)
    exact = extreme_eigenpairs(curv, method="exact")
    assert pairs.min_values[0] == 0 and pairs.max_values[1] == 0
    torch.testing.assert_close(pairs.max_values[0], exact.max_values[0], rtol=1e-10, atol=0)
    torch.testing.assert_close(pairs.min_values[1], exact.min_values[1], rtol=1e-10, atol=0)
    for m, vector in ((0, pairs.min_vectors[0]), (1, pairs.max_vectors[1])):
        assert float(vector.norm()) == pytest.approx(1.0)
        assert float((curv.matrices()[m] @ vector).norm()) < 1e-12
        assert float((x @ vector).abs().max()) < 1e-12
    # a few neurons' vectors, lifted alone (what a split reads), are the same rows
    for end, whole in (("min", pairs.min_vectors), ("max", pairs.max_vectors)):
        assert pairs.basis is not None
        torch.testing.assert_close(pairs.vectors(end, [1, 0]), whole[[1, 0]], rtol=0,
                                   atol=1e-14)
        torch.testing.assert_close(pairs.vectors(end, torch.tensor([1])), whole[[1]],
                                   rtol=0, atol=1e-14)  # an argsort's indices too
    with pytest.raises(ValueError, match="'min' or 'max'"):
        pairs.vectors("minimum")


def test_few_lanczos_steps_give_upper_bounds() -> None:
    arch, batch = _setup()
    exact, _ = splitting.splitting_eigenvalues(arch, "fc1", batch, method="exact")
    rough, _ = splitting.splitting_eigenvalues(arch, "fc1", batch, method="fast", iters=2)
    assert bool((rough >= exact - 1e-12).all())  # Rayleigh quotients never go below
    with pytest.raises(MorphismNotApplicable, match="method='qr' must be"):
        splitting.splitting_eigenvalues(arch, "fc1", batch, method="qr")


def _net(*ops: tuple[str, dict]) -> Architecture:
    b = GraphBuilder((3,))
    h = b.add("linear", b.input, out_features=4, name="fc1")
    for op, attrs in ops:
        h = b.add(op, h, **attrs)
    return b.build(b.add("linear", h, out_features=2, name="head"), dtype=F64)


@pytest.mark.parametrize(("ops", "message"), [
    ((("identity", {}),), "found identity 'identity"),
    ((("dropout", {"p": 0.1}), ("relu", {})), "dropout 'dropout.*lies between the layer"),
    ((("relu", {}), ("batchnorm", {})), "after its activation 'relu.*batchnorm"),
    ((("relu", {}), ("tanh", {})), "comes tanh"),
])
def test_refused_placements_say_why(ops: tuple, message: str) -> None:
    arch = _net(*ops)
    assert morphisms.sites("split.steepest", arch) == []
    batch = batch_for(arch)
    with pytest.raises(MorphismNotApplicable, match=message):
        splitting.splitting_matrices(arch, "fc1", batch)
    with pytest.raises(MorphismNotApplicable, match=r"split\.steepest does not apply"):
        morphisms.apply("split.steepest", arch, "fc1", batch=batch)


def test_bad_mode_beta_and_weight_are_refused() -> None:
    arch, batch = _setup()
    with pytest.raises(MorphismNotApplicable, match="mode='test' must be"):
        splitting.splitting_matrices(arch, "fc1", batch, mode="test")
    with pytest.raises(MorphismNotApplicable, match="beta=0 must be > 0"):
        morphisms.apply("split.steepest", arch, "fc1", batch=batch, beta=0)
    with pytest.raises(MorphismNotApplicable, match="signed_weight=-1 must be > 0"):
        morphisms.apply("split.steepest", arch, "fc1", batch=batch, signed=True,
                        signed_weight=-1)


def test_same_seed_same_child_and_parent_untouched_float32() -> None:
    arch, batch = _setup(dtype=torch.float32)
    before = arch.weights_hash
    a = morphisms.apply("split.steepest", arch, "fc1", batch=batch, method="fast", seed=4).child
    b = morphisms.apply("split.steepest", arch, "fc1", batch=batch, method="fast", seed=4).child
    assert a.weights_hash == b.weights_hash and a.dtype == torch.float32
    assert arch.weights_hash == before


def _conv_flatten_net(activation: str = "tanh", bn: bool = False,
                      pool: bool = False) -> Architecture:
    # conv -> [bn] -> act -> [avgpool] -> flatten -> linear: each channel owns 4*4 (2*2)
    # linear inputs
    b = GraphBuilder((2, 4, 4))
    h = b.add("conv2d", b.input, out_channels=3, kernel_size=3, padding=1, name="conv")
    if bn:
        h = b.add("batchnorm", h)
    h = b.add(activation, h)
    if pool:
        h = b.add("avgpool", h, kernel_size=2)
    out = b.add("linear", b.add("flatten", h), out_features=3, name="fc")
    return b.build(out, dtype=F64, seed=4)


CONV_CASES = [
    # conv1 -> tanh -> conv2 (padding 1: border patches see zeros)
    ("conv_conv", builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3,
                               activation="tanh", dtype=F64, seed=3), "conv1"),
    ("conv_flatten_linear", _conv_flatten_net("gelu"), "conv"),
    ("conv_bn_train_flatten", _conv_flatten_net("tanh", bn=True), "conv"),
    # pooling after the activation (a maxpool works too, but its second-order expansion
    # holds only for steps below the gap between a window's two largest values)
    ("conv_bn_pool", _conv_flatten_net("tanh", bn=True, pool=True), "conv"),
]


def _conv_batch(arch: Architecture) -> tuple:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, *arch.input_shape, generator=g, dtype=F64)
    return x, torch.randint(0, arch.output_shape[0], (24,), generator=g)


@pytest.mark.parametrize(("label", "arch", "site"), CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_channels_split_along_their_filters_curvature(label: str, arch: Architecture,
                                                           site: str) -> None:
    # Each output channel is a neuron whose inputs are its im2col patches at every
    # position: the quadratic form, the theory check and the fast method.
    batch = _conv_batch(arch)
    assert site in morphisms.sites("split.steepest", arch)
    wp = splitting._split_site(arch, site).wp
    S = splitting.splitting_matrices(arch, site, batch)
    filt = arch.weights[site]["weight"][0].numel()
    assert S.shape == (wp.width, filt + 1, filt + 1)
    v = torch.randn(filt + 1, generator=torch.Generator().manual_seed(2), dtype=F64)
    v = v / v.norm()
    h, base = 1e-3, _loss(arch, batch)
    plus = _loss(splitting._split(arch, wp, [1], _plain(h * v)), batch)
    assert (plus - base) / (h**2 / 2) == pytest.approx(float(v @ S[1] @ v), rel=1e-3)
    vals, vecs = splitting.splitting_eigenvalues(arch, site, batch)
    assert float(vals.min()) < 0
    eps = 0.01
    child = morphisms.apply("split.steepest", arch, site, batch=batch, eps=eps).child
    ratio = (_loss(child, batch) - _loss(arch, batch)) / (eps**2 / 2 * float(vals.min()))
    assert abs(ratio - 1) < 0.1
    worst = int(torch.argmin(vals))
    w, cw = arch.weights[site]["weight"], child.weights[site]["weight"]
    step = (eps * vecs[worst, :filt]).reshape(w.shape[1:])
    torch.testing.assert_close(cw[worst], w[worst] + step)
    torch.testing.assert_close(cw[wp.width], w[worst] - step)
    fast, _ = splitting.splitting_eigenvalues(arch, site, batch, method="fast",
                                              iters=filt + 1)
    torch.testing.assert_close(fast, vals, rtol=1e-8, atol=1e-10)


@pytest.mark.skipif("conv1d" not in OPS, reason="conv1d is not in the op table yet "
                    "(helper 'ops' adds it)")
def test_conv1d_channels_split_like_conv2d() -> None:
    b = GraphBuilder((2, 9))
    h = b.add("conv1d", b.input, out_channels=3, kernel_size=3, padding=1, stride=2,
              name="conv")
    out = b.add("linear", b.add("flatten", b.add("tanh", h)), out_features=3, name="fc")
    arch = b.build(out, dtype=F64, seed=4)
    batch = _conv_batch(arch)
    S = splitting.splitting_matrices(arch, "conv", batch)
    assert S.shape == (3, 7, 7)
    v = torch.randn(7, generator=torch.Generator().manual_seed(2), dtype=F64)
    v = v / v.norm()
    wp = splitting._split_site(arch, "conv").wp
    h_, base = 1e-3, _loss(arch, batch)
    plus = _loss(splitting._split(arch, wp, [1], _plain(h_ * v)), batch)
    assert (plus - base) / (h_**2 / 2) == pytest.approx(float(v @ S[1] @ v), rel=1e-3)


def test_plan_gives_the_childs_structure_without_a_batch() -> None:
    for arch, site in ((_setup("relu", bn=True)[0], "fc1"), (CONV_CASES[2][1], "conv")):
        planned = morphisms.plan("split.steepest", arch, site, k=2)
        child = morphisms.apply("split.steepest", arch, site, k=2,
                                batch=batch_for(arch, n=16)).child
        assert planned.structure_hash == child.structure_hash
        assert planned.num_params == child.num_params
    with pytest.raises(MorphismNotApplicable, match="k=9 must be an int in"):
        morphisms.plan("split.steepest", arch, site, k=9)


@pytest.mark.parametrize("n", [1, 2, 7, 24])
def test_tridiagonal_ends_are_eighs_extreme_pairs(n: int) -> None:
    # Lanczos's small problems, against eigh: random tridiagonals, some split into blocks
    # (zero off-diagonals), one all zero, the identity (every vector an eigenvector), and
    # mirror-symmetric ones whose end vectors are orthogonal to the ones vector
    g = torch.Generator().manual_seed(n)
    alpha = torch.randn(64, n, generator=g, dtype=F64)
    beta = torch.randn(64, n - 1, generator=g, dtype=F64)
    beta[torch.rand(64, n - 1, generator=g) < 0.2] = 0.0
    alpha[0], beta[0] = 0.0, 0.0
    alpha[1], beta[1] = 1.0, 0.0
    alpha[2], beta[2] = 0.0, 1.0  # [[0, 1], [1, 0]] at n = 2: lambda_min's vector (1, -1)
    alpha[3], beta[3] = 2.0, -1.0  # the second difference: lambda_max's vector alternates
    t = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    values, vectors = torch.linalg.eigh(t)
    ends = tridiagonal_ends(alpha, beta)
    assert ends.shape == (64, n, 2) and ends.dtype == F64
    torch.testing.assert_close(ends.norm(dim=1), torch.ones(64, 2, dtype=F64))
    scale = t.abs().amax(dim=(1, 2)).clamp_min(1e-12)
    for end, column in ((0, 0), (1, -1)):
        v = ends[:, :, end]
        rayleigh = torch.einsum("bi,bij,bj->b", v, t, v)
        torch.testing.assert_close(rayleigh, values[:, column], rtol=0, atol=1e-12 * 8)
        residual = (torch.einsum("bij,bj->bi", t, v) - rayleigh[:, None] * v).norm(dim=1)
        assert bool((residual <= 1e-10 * scale).all())
        if n > 1:
            gap = values[:, 1] - values[:, 0] if end == 0 else values[:, -1] - values[:, -2]
            apart = gap > 1e-6 * scale
        else:
            apart = torch.ones(64, dtype=torch.bool)
        cos = (v * vectors[:, :, column]).sum(1).abs()
        torch.testing.assert_close(cos[apart], torch.ones_like(cos[apart]), rtol=0, atol=1e-9)


def test_tridiagonal_ends_with_a_many_times_repeated_smallest_eigenvalue() -> None:
    # 12 copies of one 2x2 block (what Lanczos builds after restarts on a stalled
    # neuron): each end is 12-fold; Laguerre converges only linearly there, and the
    # vectors must still be eigenvectors to well inside Lanczos's tolerance
    alpha = torch.tensor([[1.0, 3.0] * 12], dtype=F64)
    beta = torch.tensor([[0.5, 0.0] * 11 + [0.5]], dtype=F64)
    t = torch.diag_embed(alpha) + torch.diag_embed(beta, 1) + torch.diag_embed(beta, -1)
    values = torch.linalg.eigvalsh(t)
    ends = tridiagonal_ends(alpha, beta)
    for end, value in ((0, values[0, 0]), (1, values[0, -1])):
        v = ends[0, :, end]
        assert float(v.norm()) == pytest.approx(1.0)
        assert float((t[0] @ v - value * v).norm()) < 1e-7


def test_lanczos_in_float32_on_a_wide_layer_matches_float64_eigh() -> None:
    # The default path of a real network: float32, 1,024 neurons of 65 weights on the
    # digits training split. Loss of orthogonality in the Krylov basis shows here first
    # (a cheaper, periodic reorthogonalisation put lambda_min off by up to 2.6x).
    from morphsearch.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("digits", seed=0, image=False)
    arch = builders.mlp([64, 1024, 1024, 10], seed=0)
    batch = (data.x_train, data.y_train)
    found = splitting.splitting_eigenpairs(arch, "fc1", batch, method="fast")
    curv = splitting.splitting_curvature(arch.to(F64), "fc1", (batch[0].double(), batch[1]))
    exact = extreme_eigenpairs(curv, method="exact")
    torch.testing.assert_close(found.min_values.double(), exact.min_values, rtol=1e-4,
                               atol=1e-6 * float(exact.min_values.abs().max()))
    torch.testing.assert_close(found.max_values.double(), exact.max_values, rtol=1e-4,
                               atol=1e-6 * float(exact.max_values.abs().max()))
