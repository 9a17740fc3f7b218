"""Hypothesis strategies and helpers for tests that need random valid architectures.

``architectures()`` draws small MLPs (widths, depths, activations, batch norm, dropout),
CNNs on images and on (C, L) signals (conv1d), conv nets with rectangular kernels,
strides and padding, residual nets and branchy graphs (concat and add joins) from
``morphsearch.builders`` and ``GraphBuilder``. They are kept tiny so that many can be drawn within the test budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hypothesis import strategies as st

from morphsearch import builders
from morphsearch.arch import Architecture, NodeSpec
from morphsearch.builders import GraphBuilder
from morphsearch.errors import InvalidArchitecture

# The tensors here are tiny: extra intra-op threads only add synchronisation, and on a
# shared CI machine that costs ~30 ms per conv call (measured), 100x the work itself.
torch.set_num_threads(1)

ACTIVATION_NAMES = ("relu", "tanh", "gelu", "selu")


def _input_rank_ok(rank: int) -> bool:
    try:
        NodeSpec("input", shape=[1] * rank)
    except InvalidArchitecture:
        return False
    return True


# Spatial ranks an input may have: (C, H, W) always, (C, L) once the op table has 1-d ops.
SPATIAL_RANKS = tuple(r for r in (1, 2) if _input_rank_ok(r + 1))


@st.composite
def mlps(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Architecture:
    depth = draw(st.integers(1, 3))
    hidden = draw(st.lists(st.integers(1, 6), min_size=depth, max_size=depth))
    sizes = [draw(st.integers(2, 6)), *hidden, draw(st.integers(2, 4))]
    return builders.mlp(
        sizes,
        activation=draw(st.sampled_from(ACTIVATION_NAMES)),
        batchnorm=draw(st.booleans()),
        dropout=draw(st.sampled_from((0.0, 0.25))),
        seed=draw(st.integers(0, 2**16)),
        dtype=dtype,
    )


@st.composite
def cnns(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Architecture:
    size = draw(st.integers(4, 6))
    return builders.cnn(
        (draw(st.integers(1, 2)), size, size),
        channels=draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)),
        hidden=draw(st.lists(st.integers(1, 5), min_size=0, max_size=1)),
        num_classes=draw(st.integers(2, 4)),
        kernel_size=draw(st.sampled_from((1, 3))),
        activation=draw(st.sampled_from(("relu", "tanh"))),
        batchnorm=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
        dtype=dtype,
    )


@st.composite
def cnn1ds(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Architecture:
    """conv1d nets: the ``cnn`` builder on a signal, or the paper CNN's stride-2 chain."""
    seed = draw(st.integers(0, 2**16))
    channels = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2))
    if draw(st.booleans()):
        return builders.paper_cnn(
            (draw(st.integers(1, 2)), draw(st.integers(9, 14))), channels=channels,
            kernel_sizes=(5, 3)[: len(channels)], num_classes=draw(st.integers(2, 4)),
            activation=draw(st.sampled_from(ACTIVATION_NAMES)), seed=seed, dtype=dtype,
        )
    return builders.cnn(
        (draw(st.integers(1, 2)), draw(st.integers(4, 9))),
        channels=channels,
        hidden=draw(st.lists(st.integers(1, 5), min_size=0, max_size=1)),
        num_classes=draw(st.integers(2, 4)),
        kernel_size=draw(st.sampled_from((1, 3, 5))),
        activation=draw(st.sampled_from(("relu", "tanh", "gelu"))),
        batchnorm=draw(st.booleans()),
        seed=seed,
        dtype=dtype,
    )


@st.composite
def rect_cnns(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Architecture:
    """conv2d with rectangular kernels, per-dimension strides and padding."""
    b = GraphBuilder((draw(st.integers(1, 2)), draw(st.integers(4, 6)), draw(st.integers(5, 8))))
    h = b.input
    for i in (1, 2):
        kernel = [draw(st.sampled_from((1, 2, 3))), draw(st.sampled_from((1, 3)))]
        h = b.add("conv2d", h, out_channels=draw(st.integers(1, 4)), kernel_size=kernel,
                  stride=[1, draw(st.integers(1, 2))], padding=[kernel[0] // 2, kernel[1] // 2],
                  name=f"conv{i}")
        if draw(st.booleans()):
            h = b.add("batchnorm", h, name=f"bn{i}")
        h = b.add(draw(st.sampled_from(("relu", "tanh"))), h, name=f"act{i}")
    h = b.add("flatten", h, name="flatten")
    out = b.add("linear", h, out_features=draw(st.integers(2, 3)), name="fc")
    return b.build(out, seed=draw(st.integers(0, 2**16)), dtype=dtype)


@st.composite
def resnets(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Architecture:
    return builders.resnet(
        (1, 4, 4),
        width=draw(st.integers(2, 4)),
        blocks=draw(st.integers(1, 2)),
        num_classes=draw(st.integers(2, 3)),
        seed=draw(st.integers(0, 2**16)),
        dtype=dtype,
    )


@st.composite
def branchy(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Architecture:
    """Two dense branches joined by concat (or add, with equal widths), then a head."""
    join = draw(st.sampled_from(("concat", "add")))
    wa = draw(st.integers(1, 5))
    wb = wa if join == "add" else draw(st.integers(1, 5))
    b = GraphBuilder((draw(st.integers(2, 5)),))
    a = b.add("relu", b.add("linear", b.input, out_features=wa, name="fa"), name="ra")
    c = b.add("tanh", b.add("linear", b.input, out_features=wb, name="fb"), name="tb")
    h = b.add(join, a, c, name="join")
    h = b.add("relu", b.add("linear", h, out_features=draw(st.integers(1, 4)), name="fc"),
              name="rc")
    out = b.add("linear", h, out_features=3, name="head")
    return b.build(out, seed=draw(st.integers(0, 2**16)), dtype=dtype)


@st.composite
def image_mlps(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Architecture:
    """An MLP seed on a (C, L) or (C, H, W) input that flattens it first (where
    ``conv.input`` applies)."""
    channels = draw(st.integers(1, 2))
    spatial = draw(st.lists(st.integers(2, 5), min_size=min(SPATIAL_RANKS), max_size=2))
    b = GraphBuilder((channels, *spatial))
    h = b.add("flatten", b.input, name="flat")
    for i, width in enumerate(draw(st.lists(st.integers(1, 5), min_size=1, max_size=2)), 1):
        h = b.add(draw(st.sampled_from(ACTIVATION_NAMES)),
                  b.add("linear", h, out_features=width, name=f"fc{i}"), name=f"act{i}")
    out = b.add("linear", h, out_features=draw(st.integers(2, 3)), name="head")
    return b.build(out, seed=draw(st.integers(0, 2**16)), dtype=dtype)


@st.composite
def conv_adds(draw: st.DrawFn, dtype: torch.dtype = torch.float64) -> Architecture:
    """A conv stem and a residual block joined by add (kernels 1 or 3, optional batch
    norm, a one-conv or two-conv branch), then a pooled or flattened dense head."""
    size, width = draw(st.integers(3, 5)), draw(st.integers(1, 3))
    bn, act = draw(st.booleans()), draw(st.sampled_from(("relu", "tanh")))
    b = GraphBuilder((draw(st.integers(1, 2)), size, size))

    def conv(h: str, name: str) -> str:
        k = draw(st.sampled_from((1, 3)))
        h = b.add("conv2d", h, out_channels=width, kernel_size=k, padding=k // 2, name=name)
        return b.add("batchnorm", h, name=f"{name}_bn") if bn else h

    stem = b.add(act, conv(b.input, "stem"), name="stem_act")
    h = stem
    for j in range(1, draw(st.integers(1, 2)) + 1):
        h = conv(b.add(act, h, name=f"act{j}") if j > 1 else h, f"conv{j}")
    h = b.add(act, b.add("add", h, stem, name="join"), name="join_act")
    if draw(st.booleans()):
        h = b.add("global_avgpool", h, name="gap")
    else:
        h = b.add("flatten", b.add("maxpool", h, kernel_size=2, name="pool"), name="flat")
    out = b.add("linear", h, out_features=draw(st.integers(2, 3)), name="head")
    arch = b.build(out, seed=draw(st.integers(0, 2**16)), dtype=dtype)
    return _batchnorms_moved(arch, draw(st.integers(0, 2**16))) if bn else arch


def _batchnorms_moved(arch: Architecture, seed: int) -> Architecture:
    """Batch norms away from their identity init (as after training), so a morphism that
    gives a channel fresh parameters where it should copy them is caught."""
    g = torch.Generator().manual_seed(seed)
    weights = arch.weights_copy()
    for node in arch.nodes:
        if arch.op(node) == "batchnorm":
            params = weights[node]
            for name in ("weight", "bias", "running_mean"):
                params[name] += 0.5 * torch.randn(params[name].shape, generator=g).to(arch.dtype)
            params["running_var"] += torch.rand(params["running_var"].shape,
                                                generator=g).to(arch.dtype)
    return arch.with_weights(weights)


def architectures(dtype: torch.dtype = torch.float64) -> st.SearchStrategy[Architecture]:
    """Any of the families above, in ``dtype``."""
    return st.one_of(mlps(dtype), cnns(dtype), cnn1ds(dtype), rect_cnns(dtype), resnets(dtype),
                     branchy(dtype), image_mlps(dtype), conv_adds(dtype))


def fixed_architectures(dtype: torch.dtype = torch.float64) -> dict[str, Architecture]:
    """One of each family with fixed sizes, for example-based tests."""
    return {
        "mlp": builders.mlp([6, 5, 4, 3], dtype=dtype),
        "mlp_gelu": builders.mlp([5, 4, 3], activation="gelu", dtype=dtype),
        "mlp_bn_tanh": builders.mlp([6, 5, 3], activation="tanh", batchnorm=True,
                                    dropout=0.25, dtype=dtype),
        "cnn": builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3,
                            batchnorm=True, dtype=dtype),
        "resnet": builders.resnet((1, 4, 4), width=3, blocks=1, num_classes=3, dtype=dtype),
        "cnn1d": builders.cnn((2, 9), channels=(3, 4), hidden=(), num_classes=3,
                              activation="tanh", batchnorm=True, dtype=dtype),
        "paper_cnn": builders.paper_cnn((1, 12), channels=(3, 2), kernel_sizes=(5, 3),
                                        num_classes=3, activation="gelu", dtype=dtype),
        "rect_cnn": _rect_cnn(dtype),
    }


def _rect_cnn(dtype: torch.dtype) -> Architecture:
    """conv2d with a 3x1 and a 1x3 kernel, stride [1, 2], per-dimension padding."""
    b = GraphBuilder((1, 5, 6))
    h = b.add("conv2d", b.input, out_channels=3, kernel_size=[3, 1], stride=[1, 2],
              padding=[1, 0], name="conv1")
    h = b.add("tanh", h, name="tanh1")
    h = b.add("conv2d", h, out_channels=2, kernel_size=[1, 3], padding=[0, 1], name="conv2")
    h = b.add("relu", h, name="relu2")
    h = b.add("flatten", h, name="flatten")
    return b.build(b.add("linear", h, out_features=3, name="fc"), dtype=dtype)


def batch_for(arch: Architecture, n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and integer class labels (one per output unit) for ``arch``."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn((n, *arch.input_shape), generator=g, dtype=arch.dtype)
    labels = torch.randint(0, arch.output_shape[0], (n,), generator=g)
    return inputs, labels


@contextmanager
def train_mode_without_dropout(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Train mode (batch norm uses batch statistics) with dropout off.

    Dropout masks are random draws, not part of the function, and a wider child draws a
    different mask, so comparisons of parent and child in train mode switch them off.
    """
    module.train()
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.eval()
    yield module
    module.eval()


def outputs(arch: Architecture, inputs: torch.Tensor, *, train: bool) -> torch.Tensor:
    """``arch``'s output on ``inputs`` in train mode (no dropout) or eval mode."""
    module = arch.to_module()
    with torch.no_grad():
        if not train:
            return module.eval()(inputs)  # type: ignore[no-any-return]
        with train_mode_without_dropout(module) as m:
            return m(inputs)  # type: ignore[no-any-return]
