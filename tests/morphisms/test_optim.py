"""transfer_optimizer: growth mid-training continues the optimizer where it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from morphsearch import builders, morphisms
from morphsearch.arch import Architecture
from morphsearch.errors import WeightsError
from morphsearch.morphisms import transfer_optimizer, unit_positions
from tests.morphisms.strategies import batch_for

Batch = tuple[torch.Tensor, torch.Tensor]


def _step(module: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    optimizer.zero_grad()
    nn.functional.cross_entropy(module(batch[0]), batch[1]).backward()
    optimizer.step()


def _trained(arch: Architecture, make_opt, batch: Batch, steps: int = 4):  # type: ignore[no-untyped-def]
    module = arch.to_module().train()
    optimizer = make_opt(module.parameters())
    for _ in range(steps):
        _step(module, optimizer, batch)
    return arch.with_weights_from(module), module, optimizer


def _grow(parent: Architecture, name: str, site: str, batch: Batch, **params):  # type: ignore[no-untyped-def]
    return morphisms.apply(name, parent, site, batch=batch, seed=1, **params).child


def _old_slice(param: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return param[tuple(slice(0, n) for n in old.shape)]


@pytest.mark.parametrize(
    ("family", "name", "site"),
    [("mlp", "widen.random", "fc1"), ("mlp", "widen.gradmax", "fc1"), ("cnn", "widen.random", "conv2")],
)
def test_adam_old_units_update_as_in_the_parent_and_new_units_start_at_zero(
    family: str, name: str, site: str
) -> None:
    arch = (builders.mlp([6, 5, 4, 3], dtype=torch.float64) if family == "mlp" else
            builders.cnn((1, 6, 6), channels=(3, 4), hidden=(5,), num_classes=3,
                         dtype=torch.float64))
    batch = batch_for(arch, n=32)
    parent, module, optimizer = _trained(arch, lambda p: torch.optim.Adam(p, lr=0.01), batch)
    child = _grow(parent, name, site, batch, k=2)
    child_module = child.to_module().train()
    child_opt = transfer_optimizer(optimizer, module, child_module, parent, child)
    assert type(child_opt) is torch.optim.Adam and child_opt.defaults["lr"] == 0.01
    grown = child_module.layers[site].weight
    exp_avg = child_opt.state[grown]["exp_avg"]
    assert not exp_avg[-2:].any() and exp_avg[:-2].abs().sum() > 0  # new rows zero, old kept
    assert int(child_opt.state[grown]["step"]) == 4
    _step(module, optimizer, batch)
    _step(child_module, child_opt, batch)
    parents = dict(module.named_parameters())
    for pname, param in child_module.named_parameters():
        old = parents[pname].detach()
        torch.testing.assert_close(_old_slice(param.detach(), old), old, rtol=0, atol=1e-12,
                                   msg=f"{name}: old units of {pname} moved differently")


def test_sgd_momentum_survives_deepening_and_new_nodes_get_fresh_state() -> None:
    arch = builders.mlp([6, 5, 3], dtype=torch.float64)
    batch = batch_for(arch, n=16)
    parent, module, optimizer = _trained(
        arch, lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), batch)
    child = _grow(parent, "deepen.identity", "relu1", batch)
    child_module = child.to_module().train()
    child_opt = transfer_optimizer(optimizer, module, child_module, parent, child)
    new = child_module.layers["deep1_fc"].weight
    assert new not in child_opt.state
    assert any(new is p for p in child_opt.param_groups[0]["params"])
    old = optimizer.state[module.layers["fc2"].weight]["momentum_buffer"]
    moved = child_opt.state[child_module.layers["fc2"].weight]["momentum_buffer"]
    assert torch.equal(moved, old) and moved is not old


def test_param_groups_and_their_hyperparameters_are_kept() -> None:
    arch = builders.mlp([6, 5, 3])
    batch = batch_for(arch, n=16)
    module = arch.to_module()
    fc1 = list(module.layers["fc1"].parameters())
    fc2 = list(module.layers["fc2"].parameters())
    optimizer = torch.optim.AdamW([{"params": fc1, "lr": 0.1}, {"params": fc2, "lr": 0.2}],
                                  lr=0.3, weight_decay=0.05)
    _step(module, optimizer, batch)
    parent = arch.with_weights_from(module)
    child = _grow(parent, "widen.random", "fc1", batch, k=3)
    child_module = child.to_module()
    child_opt = transfer_optimizer(optimizer, module, child_module, parent, child)
    assert type(child_opt) is torch.optim.AdamW
    assert [g["lr"] for g in child_opt.param_groups] == [0.1, 0.2]
    assert child_opt.param_groups[1]["weight_decay"] == 0.05
    assert child_opt.param_groups[1]["params"][0] is child_module.layers["fc2"].weight
    assert child_opt.state[child_module.layers["fc2"].weight]["exp_avg"].shape == (3, 8)


def test_positions_follow_concat_offsets_and_flatten_blocks() -> None:
    b = builders.GraphBuilder((1, 2, 2))
    conv = b.add("relu", b.add("conv2d", b.input, out_channels=2, kernel_size=1, name="c"))
    flat = b.add("flatten", conv, name="flat")
    parent = b.build(b.add("linear", flat, out_features=2, name="head"))
    b2 = builders.GraphBuilder((1, 2, 2))
    conv2 = b2.add("relu", b2.add("conv2d", b2.input, out_channels=3, kernel_size=1, name="c"))
    child = b2.build(b2.add("linear", b2.add("flatten", conv2, name="flat"), out_features=2,
                            name="head"))
    pos = unit_positions(parent, child)
    assert pos["flat"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]  # channel-major: old block first

    def joined(width: int) -> Architecture:
        g = builders.GraphBuilder((3,))
        a = g.add("linear", g.input, out_features=width, name="a")
        c = g.add("linear", g.input, out_features=2, name="b")
        return g.build(g.add("linear", g.add("concat", a, c, name="cat"), out_features=1))

    assert unit_positions(joined(2), joined(4))["cat"].tolist() == [0, 1, 4, 5]


def test_optimizer_over_other_parameters_is_refused() -> None:
    arch = builders.mlp([4, 3, 2])
    module = arch.to_module()
    stray = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([*module.parameters(), stray], lr=0.1)
    with pytest.raises(WeightsError, match="parent_module does not have"):
        transfer_optimizer(optimizer, module, arch.to_module(), arch, arch)
