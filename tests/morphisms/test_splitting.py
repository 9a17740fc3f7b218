"""Operator-specific checks of split.steepest (splitting steepest descent)."""

from __future__ import annotations

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.builders import GraphBuilder
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms import splitting
from morphsearch.morphisms._surgery import batch_loss

F64 = torch.float64


def _setup(activation: str = "tanh", dtype: torch.dtype = F64) -> tuple[Architecture, tuple]:
    arch = builders.mlp([5, 7, 3], activation=activation, dtype=dtype, seed=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 5, generator=g, dtype=dtype)
    return arch, (x, torch.randn(48, 3, generator=g, dtype=dtype))


def _loss(arch: Architecture, batch: tuple) -> float:
    with torch.no_grad():
        return float(batch_loss(arch.to_module()(batch[0]), batch[1]))


@pytest.mark.parametrize("activation", ["tanh", "gelu", "selu"])
def test_loss_change_matches_second_order_prediction(activation: str) -> None:
    # L(split) - L = eps^2/2 * lambda_min + O(eps^3): the ratio tends to 1.
    arch, batch = _setup(activation)
    vals, _ = splitting.splitting_eigenvalues(arch, "fc1", batch)
    assert float(vals.min()) < 0
    eps = 0.01
    child = morphisms.apply("split.steepest", arch, "fc1", batch=batch, eps=eps).child
    ratio = (_loss(child, batch) - _loss(arch, batch)) / (eps**2 / 2 * float(vals.min()))
    assert abs(ratio - 1) < 0.01


def test_splitting_matrix_quadratic_form_is_the_second_derivative_of_the_loss() -> None:
    # v^T S_i v = d^2/d eps^2 of L(split neuron i along v by eps), at eps = 0,
    # measured by a central finite difference on the split network.
    arch, batch = _setup()
    S = splitting.splitting_matrices(arch, "fc1", batch)
    v = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=F64)
    v = v / v.norm()
    h, base = 1e-3, _loss(arch, batch)
    plus = _loss(splitting._split(arch, splitting._split_path(arch, "fc1")[0], [4],
                                  (h * v)[None]), batch)
    assert (plus - base) / (h**2 / 2) == pytest.approx(float(v @ S[4] @ v), rel=1e-3)


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


def test_eps_zero_is_an_exact_duplication() -> None:
    arch, batch = _setup()
    result = morphisms.apply("split.steepest", arch, "fc1", batch=batch, k=3, eps=0.0)
    assert result.record.preservation_error is not None
    assert result.record.preservation_error <= 1e-10
    assert result.child.shape("fc1") == (10,)


def test_fast_method_matches_exact_and_is_an_upper_bound_with_few_steps() -> None:
    arch, batch = _setup()
    exact, vecs = splitting.splitting_eigenvalues(arch, "fc1", batch)
    fast, fvecs = splitting.splitting_eigenvalues(arch, "fc1", batch, method="fast", iters=6)
    torch.testing.assert_close(fast, exact, rtol=1e-8, atol=1e-10)
    assert torch.allclose((fvecs * vecs).sum(1).abs(), torch.ones(7, dtype=F64), atol=1e-6)
    # Rayleigh quotients of a Krylov subspace never go below lambda_min.
    rough, _ = splitting.splitting_eigenvalues(arch, "fc1", batch, method="fast", iters=2)
    assert bool((rough >= exact - 1e-12).all())


def test_fast_method_on_a_wide_input_finds_the_smallest_eigenvalue() -> None:
    arch = builders.mlp([64, 4, 2], activation="tanh", dtype=F64, seed=0)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(32, 64, generator=g, dtype=F64), torch.randint(0, 2, (32,), generator=g))
    exact, _ = splitting.splitting_eigenvalues(arch, "fc1", batch)
    fast, _ = splitting.splitting_eigenvalues(arch, "fc1", batch, method="fast", iters=40)
    torch.testing.assert_close(fast, exact, rtol=1e-6, atol=1e-12)


def test_relu_sites_are_refused_with_the_reason() -> None:
    arch, batch = _setup("relu")
    assert morphisms.sites("split.steepest", arch) == []
    with pytest.raises(MorphismNotApplicable, match="relu1' is relu, whose second derivative"):
        splitting.splitting_eigenvalues(arch, "fc1", batch)
    with pytest.raises(MorphismNotApplicable, match=r"split\.steepest does not apply"):
        morphisms.apply("split.steepest", arch, "fc1", batch=batch)


def test_same_seed_same_child_and_parent_untouched_float32() -> None:
    arch, batch = _setup(dtype=torch.float32)
    before = arch.weights_hash
    a = morphisms.apply("split.steepest", arch, "fc1", batch=batch, method="fast", seed=4).child
    b = morphisms.apply("split.steepest", arch, "fc1", batch=batch, method="fast", seed=4).child
    assert a.weights_hash == b.weights_hash and a.dtype == torch.float32
    assert arch.weights_hash == before


def _conv_flatten_net(activation: str = "tanh") -> Architecture:
    # conv -> act -> flatten -> linear: each channel owns 4*4 inputs of the linear layer
    b = GraphBuilder((2, 4, 4))
    h = b.add(activation, b.add("conv2d", b.input, out_channels=3, kernel_size=3, padding=1,
                                stride=1, name="conv"))
    out = b.add("linear", b.add("flatten", h), out_features=3, name="fc")
    return b.build(out, dtype=F64, seed=4)


CONV_CASES = [
    # conv1 -> tanh -> conv2 (padding 1: border patches see zeros)
    ("conv_conv", builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3,
                               activation="tanh", dtype=F64, seed=3), "conv1"),
    ("conv_flatten_linear", _conv_flatten_net("gelu"), "conv"),
]


def _conv_batch(arch: Architecture) -> tuple:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, *arch.input_shape, generator=g, dtype=F64)
    return x, torch.randint(0, arch.output_shape[0], (24,), generator=g)


@pytest.mark.parametrize(("label", "arch", "site"), CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv_channels_split_along_their_filters_curvature(label: str, arch: Architecture,
                                                           site: str) -> None:
    # Each output channel is a neuron whose inputs are its im2col patches at every
    # position: the same three checks as for dense neurons.
    batch = _conv_batch(arch)
    assert site in morphisms.sites("split.steepest", arch)
    wp = splitting._split_path(arch, site)[0]
    S = splitting.splitting_matrices(arch, site, batch)
    filt = arch.weights[site]["weight"][0].numel()
    assert S.shape == (wp.width, filt + 1, filt + 1)
    # 1. v^T S_i v is the second derivative of the loss along the split (finite difference)
    v = torch.randn(filt + 1, generator=torch.Generator().manual_seed(2), dtype=F64)
    v = v / v.norm()
    h, base = 1e-3, _loss(arch, batch)
    plus = _loss(splitting._split(arch, wp, [1], (h * v)[None]), batch)
    assert (plus - base) / (h**2 / 2) == pytest.approx(float(v @ S[1] @ v), rel=1e-3)
    # 2. the loss change of the steepest split over eps^2/2 lambda_min tends to 1
    vals, vecs = splitting.splitting_eigenvalues(arch, site, batch)
    assert float(vals.min()) < 0
    eps = 0.01
    child = morphisms.apply("split.steepest", arch, site, batch=batch, eps=eps).child
    ratio = (_loss(child, batch) - _loss(arch, batch)) / (eps**2 / 2 * float(vals.min()))
    assert abs(ratio - 1) < 0.01
    # the moved filter and its copy: theta +- eps v, reshaped to the filter's shape
    worst = int(torch.argmin(vals))
    w, cw = arch.weights[site]["weight"], child.weights[site]["weight"]
    step = (eps * vecs[worst, :filt]).reshape(w.shape[1:])
    torch.testing.assert_close(cw[worst], w[worst] + step)
    torch.testing.assert_close(cw[wp.width], w[worst] - step)
    # 3. the matrix-free fast method finds the same eigenvalues
    fast, _ = splitting.splitting_eigenvalues(arch, site, batch, method="fast",
                                              iters=filt + 1)
    torch.testing.assert_close(fast, vals, rtol=1e-8, atol=1e-10)
    # eps = 0 duplicates channels exactly
    dup = morphisms.apply("split.steepest", arch, site, batch=batch, k=2, eps=0.0)
    assert dup.record.preservation_error is not None and dup.record.preservation_error <= 1e-10


def test_conv_sites_need_a_smooth_activation_right_after() -> None:
    relu = builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3, dtype=F64)
    assert morphisms.sites("split.steepest", relu) == []
    tanh = CONV_CASES[0][1]
    # conv2 reaches a maxpool before the flatten: not a splittable path
    assert morphisms.sites("split.steepest", tanh) == ["conv1", "fc1"]
    with pytest.raises(MorphismNotApplicable, match=r"one activation \[-> flatten\]"):
        splitting.splitting_matrices(tanh, "conv2", _conv_batch(tanh))
