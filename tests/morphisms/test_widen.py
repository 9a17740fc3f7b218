"""Operator-specific checks of widen.random, widen.split and widen.gradmax."""

from __future__ import annotations

import math

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.builders import GraphBuilder
from morphsearch.errors import MorphismNotApplicable
from morphsearch.morphisms import _gradmax_matrix as gm
from morphsearch.morphisms import widen
from morphsearch.morphisms._surgery import (
    batch_loss,
    mean_outgoing_norm,
    unit_outgoing,
    widen_path,
)

F64 = torch.float64
OPERATORS = ["widen.random", "widen.split", "widen.gradmax"]


def _arch(kind: str, dtype: torch.dtype = F64) -> Architecture:
    if kind == "mlp":
        return builders.mlp([6, 5, 4], dtype=dtype, seed=1)
    if kind == "mlp_bn_tanh":
        return builders.mlp([6, 5, 4], activation="tanh", batchnorm=True, dtype=dtype, seed=1)
    if kind == "cnn":
        return builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3,
                            dtype=dtype, seed=1)
    if kind == "cnn_bn":
        return builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3,
                            batchnorm=True, dtype=dtype, seed=1)
    return builders.resnet((1, 6, 6), width=3, blocks=1, num_classes=3, dtype=dtype, seed=1)


# (architecture, site): dense, dense+BN, conv->conv, the conv->pool->flatten->dense
# boundary (with and without BN), and the first conv inside a residual block.
CASES = [
    ("mlp", "fc1"),
    ("mlp_bn_tanh", "fc1"),
    ("cnn", "conv1"),
    ("cnn", "conv2"),
    ("cnn_bn", "conv2"),
    ("cnn_bn", "conv1"),
    ("resnet", "b1_conv1"),
]


def _batch(arch: Architecture, n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *arch.input_shape, generator=g, dtype=arch.dtype)
    return x, torch.randint(0, arch.output_shape[0], (n,), generator=g)


def _max_diff(a: Architecture, b: Architecture, x: torch.Tensor, train: bool) -> float:
    ma, mb = a.to_module().train(train), b.to_module().train(train)
    with torch.no_grad():
        return float((ma(x) - mb(x)).abs().max())


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize(("kind", "site"), CASES)
def test_preserves_function_float64_train_and_eval(name: str, kind: str, site: str) -> None:
    parent = _arch(kind)
    before = (parent.structure_hash, parent.weights_hash)
    batch = _batch(parent)
    child = morphisms.apply(name, parent, site, batch=batch, seed=3, k=2).child
    assert child.shape(site)[0] == parent.shape(site)[0] + 2
    probe = _batch(parent, seed=1)[0]
    assert _max_diff(parent, child, probe, train=False) <= 1e-10
    assert _max_diff(parent, child, probe, train=True) <= 1e-10
    assert (parent.structure_hash, parent.weights_hash) == before
    again = morphisms.apply(name, parent, site, batch=batch, seed=3, k=2).child
    assert again.weights_hash == child.weights_hash


@pytest.mark.parametrize("name", OPERATORS)
@pytest.mark.parametrize(("kind", "site"), [("mlp", "fc1"), ("cnn_bn", "conv2")])
def test_preserves_function_float32(name: str, kind: str, site: str) -> None:
    parent = _arch(kind, torch.float32)
    child = morphisms.apply(name, parent, site, batch=_batch(parent), k=2).child
    assert child.dtype == torch.float32
    probe = _batch(parent, seed=1)[0]
    assert _max_diff(parent, child, probe, train=False) <= 1e-5
    assert _max_diff(parent, child, probe, train=True) <= 1e-5


def test_existing_units_keep_their_weights_and_new_ones_are_appended() -> None:
    parent = _arch("cnn")
    child = morphisms.apply("widen.random", parent, "conv2", k=2).child
    torch.testing.assert_close(child.weights["conv2"]["weight"][:4],
                               parent.weights["conv2"]["weight"])
    # conv2 -> pool (3x3 map) -> flatten: each channel owns 9 consecutive features
    old = parent.weights["fc1"]["weight"]
    torch.testing.assert_close(child.weights["fc1"]["weight"][:, : old.shape[1]], old)
    assert child.weights["fc1"]["weight"].shape[1] == old.shape[1] + 2 * 9


@pytest.mark.parametrize(("kind", "site"), [("mlp", "fc1"), ("cnn_bn", "conv2"),
                                            ("resnet", "b1_conv1")])
def test_gradmax_new_units_output_zeros(kind: str, site: str) -> None:
    parent = _arch(kind)
    child = morphisms.apply("widen.gradmax", parent, site, batch=_batch(parent), k=2).child
    module = child.to_module().train()
    seen: list[torch.Tensor] = []
    module.get_submodule(f"layers.{site}").register_forward_hook(
        lambda m, a, out: seen.append(out))
    with torch.no_grad():
        module(_batch(parent, seed=2)[0])
    width = parent.shape(site)[0]
    assert float(seen[0][:, width:].abs().max()) == 0.0
    assert float(seen[0][:, :width].abs().max()) > 0.0


def test_sites_exclude_tied_normalised_and_output_layers() -> None:
    assert morphisms.sites("widen.gradmax", _arch("resnet")) == ["b1_conv1"]
    assert morphisms.sites("widen.split", _arch("mlp")) == ["fc1"]  # fc2 feeds the output
    b = GraphBuilder((4,))
    h = b.add("layernorm", b.add("linear", b.input, out_features=3, name="fc1"))
    arch = b.build(b.add("linear", h, out_features=2, name="fc2"))
    assert morphisms.sites("widen.random", arch) == []
    with pytest.raises(MorphismNotApplicable, match="layernorm node 'ln1'"):
        widen_path(arch, "fc1")
    with pytest.raises(MorphismNotApplicable, match="add node 'b1_add'"):
        widen_path(_arch("resnet"), "b1_conv2")


def _new_incoming_grad(child: Architecture, site: str, width: int,
                       batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    module = child.to_module().train()
    loss = batch_loss(module(batch[0]), batch[1])
    weight = module.get_submodule(f"layers.{site}").weight
    (grad,) = torch.autograd.grad(loss, weight)
    return grad[width:].reshape(grad.shape[0] - width, -1)


@pytest.mark.parametrize(("kind", "site"), CASES)
def test_gradmax_gradient_norm_matches_singular_values(kind: str, site: str) -> None:
    parent = _arch(kind)
    batch = _batch(parent, n=16)
    sv = widen.gradmax_singular_values(parent, site, batch)
    assert bool((sv[:-1] >= sv[1:]).all())
    k, c = 2, 0.7
    child = morphisms.apply("widen.gradmax", parent, site, batch=batch, k=k, scale=c,
                            scale_mode="fixed").child
    norms = _new_incoming_grad(child, site, parent.shape(site)[0], batch).norm(dim=1)
    torch.testing.assert_close(norms, c * sv[:k], rtol=1e-4, atol=0.0)


def test_gradmax_matrix_is_dz_h_outer_product_for_dense_relu() -> None:
    # Closed form of eq. 11 with f'(0) = 1: M = sum_n dL/dz2[n] x[n]^T (mean loss).
    parent = _arch("mlp")
    x, y = _batch(parent, n=16)
    module = parent.to_module()
    z2: list[torch.Tensor] = []
    module.get_submodule("layers.fc2").register_forward_hook(lambda m, a, out: z2.append(out))
    (dz2,) = torch.autograd.grad(batch_loss(module(x), y), z2)
    torch.testing.assert_close(widen.gradmax_matrix(parent, "fc1", (x, y)), dz2.T @ x,
                               rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("kind", "site"), [("mlp", "fc1"), ("cnn", "conv2")])
def test_gradmax_beats_random_growth_of_the_same_norm(kind: str, site: str) -> None:
    parent = _arch(kind)
    batch = _batch(parent, n=16)
    width = parent.shape(site)[0]
    opts = {"k": 1, "scale": 1.0, "scale_mode": "fixed"}
    best = _new_incoming_grad(morphisms.apply("widen.gradmax", parent, site, batch=batch,
                                              **opts).child, site, width, batch).norm()
    for seed in range(5):
        rand = morphisms.apply("widen.random", parent, site, seed=seed, **opts).child
        assert _new_incoming_grad(rand, site, width, batch).norm() < best


def test_split_noise_keeps_function_and_duplicates_given_units() -> None:
    parent = _arch("cnn")
    child = morphisms.apply("widen.split", parent, "conv2", units=[1, 1, 3], noise=0.5).child
    torch.testing.assert_close(child.weights["conv2"]["weight"][4:],
                               parent.weights["conv2"]["weight"][[1, 1, 3]])
    probe = _batch(parent)[0]
    assert _max_diff(parent, child, probe, train=True) <= 1e-10
    with pytest.raises(MorphismNotApplicable, match=r"units=\[9\] must be .* in \[0, 4\)"):
        morphisms.apply("widen.split", parent, "conv2", units=[9])


def test_random_zero_outgoing_preserves_and_bad_option_is_named() -> None:
    parent = _arch("cnn_bn")
    child = morphisms.apply("widen.random", parent, "conv1", zero="outgoing", k=3).child
    assert float(child.weights["conv1"]["weight"][3:].abs().min()) > 0.0
    assert float(child.weights["conv2"]["weight"][:, 3:].abs().max()) == 0.0
    assert _max_diff(parent, child, _batch(parent)[0], train=True) <= 1e-10
    with pytest.raises(MorphismNotApplicable, match="zero='both' must be"):
        morphisms.apply("widen.random", parent, "conv1", zero="both")


def test_random_eps_incoming_moves_the_function_by_order_eps() -> None:
    parent = _arch("cnn_bn")
    x = _batch(parent)[0]
    exact = morphisms.apply("widen.random", parent, "conv1", k=2, seed=3).child
    diffs = []
    for eps in (1e-2, 1e-3):
        result = morphisms.apply("widen.random", parent, "conv1", k=2, seed=3, eps=eps)
        new_rows = result.child.weights["conv1"]["weight"][3:].reshape(2, -1)
        torch.testing.assert_close(new_rows.norm(dim=1), torch.full((2,), eps, dtype=F64))
        # same outgoing weights as eps=0: only the incoming side changed
        assert torch.equal(result.child.weights["conv2"]["weight"],
                           exact.weights["conv2"]["weight"])
        diffs.append(_max_diff(parent, result.child, x, train=False))
        assert result.record.preservation_error is not None
        assert result.record.preservation_error > 0
    assert 5 < diffs[0] / diffs[1] < 20  # O(eps): ten times smaller eps, ~ten times less
    random = morphisms.get("widen.random")
    assert random.preserves({"eps": 0.0}) and not random.preserves({"eps": 1e-3})
    with pytest.raises(MorphismNotApplicable, match="needs zero='incoming'"):
        morphisms.apply("widen.random", parent, "conv1", zero="outgoing", eps=0.1)
    with pytest.raises(MorphismNotApplicable, match="eps=-1 must be a number >= 0"):
        morphisms.apply("widen.random", parent, "conv1", eps=-1)


def test_gradmax_refuses_more_units_than_directions() -> None:
    parent = builders.mlp([3, 2, 1], dtype=F64)
    x = torch.randn(4, 3, dtype=F64)
    with pytest.raises(MorphismNotApplicable, match="k=2 is more than the 1 available"):
        morphisms.apply("widen.gradmax", parent, "fc1", batch=(x, torch.randn(4, 1, dtype=F64)),
                        k=2)


def _chain(site_op: str, path: list[tuple[str, dict]], consumers: list[dict],
           input_shape: tuple[int, ...] | None = None, **site_attrs: object) -> Architecture:
    """input -> site -> path chain -> consumers (summed) -> output, float64. A conv site
    (``conv1d`` on a (2, 11) signal, ``conv2d`` on a 2x7x6 image by default) has conv
    consumers of its own kind (attrs with a ``kernel_size``) or linear ones."""
    conv = site_op != "linear"
    default = {"conv1d": (2, 11), "conv2d": (2, 7, 6)}.get(site_op, (6,))
    b = GraphBuilder(input_shape or default)
    if conv:
        h = b.add(site_op, b.input, name="site",
                  **{"out_channels": 3, "kernel_size": 3, "padding": 1, **site_attrs})
    else:
        h = b.add("linear", b.input, out_features=4, name="site")
    for i, (op, attrs) in enumerate(path):
        h = b.add(op, h, name=f"p{i}", **attrs)
    outs = []
    for j, attrs in enumerate(consumers):
        op = site_op if "kernel_size" in attrs else "linear"
        z = b.add(op, h, name=f"c{j}", **attrs)
        if op != "linear":
            z = b.add("flatten", z, name=f"cf{j}")
            z = b.add("linear", z, out_features=3, name=f"head{j}")
        outs.append(z)
    out = outs[0] if len(outs) == 1 else b.add("add", *outs, name="join")
    return b.build(out, dtype=F64, seed=2)


def _conv(**kw: object) -> dict:
    return {"out_channels": 4, "kernel_size": 3, "padding": 1, **kw}


_LIN = {"out_features": 3}
_BN: tuple[str, dict] = ("batchnorm", {})
_BN_EPS: tuple[str, dict] = ("batchnorm", {"eps": 1e-3})
_FLAT: tuple[str, dict] = ("flatten", {})

def _dropout_upstream() -> Architecture:
    # dropout before the site: the closed form must draw the auxiliary path's masks
    b = GraphBuilder((6,))
    h = b.add("relu", b.add("linear", b.add("dropout", b.input, p=0.5), out_features=4,
                            name="fc1"))
    return b.build(b.add("linear", h, out_features=3, name="fc2"), dtype=F64, seed=3)


# (label, architecture, site) whose gradmax matrix has a closed form
CLOSED_FORM_CASES = [
    *[(f"mlp_{act}", builders.mlp([6, 4, 5, 3], activation=act, dtype=F64, seed=1), site)
      for act in ("relu", "tanh", "identity", "gelu") for site in ("fc1", "fc2")],
    ("mlp_bn_tanh", _arch("mlp_bn_tanh"), "fc1"),
    ("mlp_bn_relu", builders.mlp([6, 4, 5, 3], batchnorm=True, dtype=F64, seed=1), "fc2"),
    ("linear_act_bn", _chain("linear", [("relu", {}), _BN_EPS], [_LIN]), "site"),
    ("dropout_upstream", _dropout_upstream(), "fc1"),
    ("linear_linear", _chain("linear", [], [_LIN]), "site"),
    ("linear_relu_tanh", _chain("linear", [("relu", {}), ("tanh", {})], [_LIN]), "site"),
    ("linear_two_consumers", _chain("linear", [("tanh", {})], [_LIN, _LIN]), "site"),
    ("linear_bn_two_consumers", _chain("linear", [_BN, ("relu", {})], [_LIN, _LIN]), "site"),
    ("cnn_relu", _arch("cnn"), "conv1"),
    ("conv_conv", _chain("conv2d", [], [_conv()]), "site"),
    ("conv_stride2_pad0", _chain("conv2d", [("tanh", {})], [_conv(stride=2, padding=0)]),
     "site"),
    ("conv_k5_stride2", _chain("conv2d", [("relu", {})], [_conv(kernel_size=5, stride=2,
                                                                  padding=2)]), "site"),
    ("conv_site_stride2_k2", _chain("conv2d", [("relu", {})], [_conv()], (2, 9, 8), stride=2,
                                    kernel_size=2, padding=0), "site"),
    ("conv_k1", _chain("conv2d", [("gelu", {})], [_conv(kernel_size=1, padding=0)]), "site"),
    ("conv_two_consumers", _chain("conv2d", [("relu", {})], [_conv(), _conv(stride=3)]),
     "site"),
    ("cnn_bn_relu", _arch("cnn_bn"), "conv1"),
    ("conv_relu_bn", _chain("conv2d", [("relu", {}), _BN_EPS], [_conv(stride=2)]), "site"),
    ("conv_bn_two_consumers", _chain("conv2d", [_BN, ("tanh", {})], [_conv(), _conv(padding=0)]),
     "site"),
    ("conv_flatten", _chain("conv2d", [("relu", {}), _FLAT], [_LIN]), "site"),
    ("conv_bn_flatten", _chain("conv2d", [_BN, ("relu", {}), _FLAT], [_LIN]), "site"),
    ("conv_flatten_bn", _chain("conv2d", [("relu", {}), _FLAT, _BN_EPS], [_LIN]), "site"),
    ("conv_bn_flatten_bn", _chain("conv2d", [_BN, ("tanh", {}), _FLAT, _BN], [_LIN, _LIN]),
     "site"),
]


@pytest.mark.parametrize("targets", ["labels", "regression"])
@pytest.mark.parametrize(("label", "arch", "site"), CLOSED_FORM_CASES,
                         ids=[c[0] for c in CLOSED_FORM_CASES])
def test_closed_form_equals_the_auxiliary_network_path(label: str, arch: Architecture,
                                                       site: str, targets: str) -> None:
    # Each closed form (one backward pass of the parent, or none where the consumer is
    # the last layer) must give exactly the matrix of the general auxiliary-network path
    # it shortcuts: same rows, same columns, float64, for both losses.
    g = torch.Generator().manual_seed(1)
    n = 10
    x = torch.randn(n, *arch.input_shape, generator=g, dtype=F64)
    y = (torch.randint(0, arch.output_shape[0], (n,), generator=g) if targets == "labels"
         else torch.randn(n, *arch.output_shape, generator=g, dtype=F64))
    batch = (x, y)
    wp = widen_path(arch, site)
    form = gm._closed_form(arch, wp)
    assert form is not None, label
    fast = gm._closed_form_gradmax_matrix(arch, wp, batch, form)
    general = gm._auxiliary_gradmax_matrix(arch, wp, batch)
    assert fast.shape == general.shape
    assert float(general.abs().max()) > 0.0
    torch.testing.assert_close(fast, general, rtol=1e-10,
                               atol=1e-10 * float(general.abs().max()))
    torch.testing.assert_close(widen.gradmax_matrix(arch, site, batch), fast, rtol=0, atol=0)


def _branching_path() -> Architecture:
    b = GraphBuilder((6,))
    h = b.add("relu", b.add("linear", b.input, out_features=4, name="fc1"))
    a = b.add("linear", h, out_features=3, name="fa")
    c = b.add("linear", b.add("tanh", h), out_features=3, name="fb")
    return b.build(b.add("add", a, c), dtype=F64)


@pytest.mark.parametrize(("arch", "site"), [
    (_arch("cnn"), "conv2"),  # relu -> maxpool -> flatten
    (builders.mlp([6, 4, 3], dropout=0.25, dtype=F64), "fc1"),
    (builders.mlp([6, 4, 3], activation="selu", dtype=F64), "fc1"),  # f'(0) not tabled
    (_branching_path(), "fc1"),
])
def test_pooling_dropout_and_unknown_slopes_take_the_auxiliary_path(arch: Architecture,
                                                                    site: str) -> None:
    assert gm._closed_form(arch, widen_path(arch, site)) is None


@pytest.mark.parametrize(("arch", "site"), [
    *[(_arch(kind), site) for kind, site in CASES],
    (_chain("linear", [("tanh", {})], [_LIN, _LIN]), "site"),
    (_chain("conv2d", [("relu", {})], [_conv(), _conv(kernel_size=1, padding=0)]), "site"),
])
def test_mean_outgoing_norm_is_the_mean_of_per_unit_norms(arch: Architecture,
                                                          site: str) -> None:
    wp = widen_path(arch, site)
    norms = [math.sqrt(sum(float((p**2).sum()) for p in unit_outgoing(arch, wp, u)))
             for u in range(wp.width)]
    assert mean_outgoing_norm(arch, wp) == pytest.approx(sum(norms) / len(norms), rel=1e-12)


def test_a_batch_gradmax_cannot_use_is_refused_with_the_reason() -> None:
    plain, normed = builders.mlp([6, 4, 3]), builders.mlp([6, 4, 3], batchnorm=True)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    bad_x = x.clone()
    bad_x[2, 1] = float("nan")
    cases = [
        ((bad_x, y), "inputs contain NaN"),
        ((x, torch.full((8, 3), float("inf"))), "targets contain NaN or infinite"),
        ((torch.randn(8, 5), y), r"do not fit the network's input shape \(6,\)"),
        ((x, y[:5]), "with 5 targets"),
        ((x,), "must be a pair"),
    ]
    cases += [((x, torch.tensor([0, 1, 2, 3, 0, 1, 2, 0])), r"labels .* in \[0, 3\) .* 0\.\.3"),
              ((x, y - 1), r"got labels -1\.\."),
              ((x, y[:, None]), r"shape \[N\] for this network's outputs \(3,\), got \(8, 1\)")]
    for batch, reason in cases:
        with pytest.raises(MorphismNotApplicable, match=reason):
            morphisms.apply("widen.gradmax", plain, "fc1", batch=batch)  # type: ignore[arg-type]
    with pytest.raises(MorphismNotApplicable, match="at least 2 samples"):
        morphisms.apply("widen.gradmax", normed, "fc1", batch=(x[:1], y[:1]))
    morphisms.apply("widen.gradmax", normed, "fc1", batch=(x[:2], y[:2]))  # 2 is enough
