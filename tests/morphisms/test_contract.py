"""The shared contract suite: every registered morphism, every site, random architectures.

Parametrised over ``morphisms.list_morphisms()``, so registering a morphism puts it under
test. For each architecture drawn (MLPs, CNNs, residual and branchy nets) and each site
the operator offers, the child must validate, survive a graph-file round trip, compile,
run forward, backward and one SGD step; preserve the parent's function in train and eval
mode (float64: 1e-10, float32: 1e-5) when the operator claims to; leave the parent's
hashes unchanged; be identical under the same seed; and be reproduced exactly by
replaying its JSON record.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings

from morphsearch import morphisms
from morphsearch.arch import Architecture, load
from morphsearch.arch.compile import _compiled, forward_function, generate_code
from morphsearch.builders import GraphBuilder
from morphsearch.errors import MorphismNotApplicable, UnknownMorphism
from morphsearch.morphisms import MorphismResult
from tests.morphisms.strategies import architectures, batch_for, fixed_architectures, outputs

MORPHISMS = morphisms.list_morphisms()
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
SETTINGS = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _apply(name: str, arch: Architecture, site: str | None, seed: int = 0) -> MorphismResult:
    batch = batch_for(arch, seed=seed) if morphisms.get(name).needs_batch else None
    return morphisms.apply(name, arch, site, batch=batch, seed=seed)


def _check_preserved(name: str, parent: Architecture, child: Architecture, site: str) -> None:
    inputs, _ = batch_for(parent, n=6, seed=123)  # several samples: batch norm in train mode
    tol = TOLERANCE[parent.dtype]
    for train in (False, True):
        expected = outputs(parent, inputs, train=train)
        got = outputs(child, inputs, train=train)
        assert got.shape == expected.shape
        err = float((got - expected).abs().max())
        mode = "train" if train else "eval"
        assert err <= tol, f"{name} at {site}: {mode}-mode error {err:.3g} > {tol:g}"


def _check_trains(child: Architecture) -> None:
    module = child.to_module().train()
    inputs, labels = batch_for(child, seed=7)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(module(inputs), labels)
    loss.backward()
    assert torch.isfinite(loss)
    for pname, param in module.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in module.parameters())


def _check_fully_valid(child: Architecture) -> None:
    """The child passes the full constructor's validation (morphisms may build children
    through internal shortcuts that skip what cannot change) with the same result."""
    again = Architecture(child.editable_graph(), child.weights_copy())
    assert again.nodes == child.nodes
    assert all(again.inputs(n) == child.inputs(n) for n in child.nodes)
    assert all(again.spec(n) == child.spec(n) for n in child.nodes)
    assert all(again.shape(n) == child.shape(n) for n in child.nodes)
    assert all(dict(again.param_specs(n)) == dict(child.param_specs(n)) for n in child.nodes)
    assert (again.structure_hash, again.weights_hash) == (child.structure_hash,
                                                          child.weights_hash)
    assert (again.num_params, again.flops) == (child.num_params, child.flops)
    # a forward handed down from the parent is the one the child's own code compiles to
    assert forward_function(child) is _compiled(generate_code(again))


def _check_site(name: str, parent: Architecture, site: str, *, full: bool) -> None:
    hashes = (parent.structure_hash, parent.weights_hash)
    result = _apply(name, parent, site, seed=3)
    child = result.child
    assert isinstance(child, Architecture)
    assert (parent.structure_hash, parent.weights_hash) == hashes, f"{name} changed its parent"
    _check_fully_valid(child)
    if morphisms.get(name).preserves(result.record.params):
        _check_preserved(name, parent, child, site)
    if not full:
        return
    reloaded = load(child.to_json(), weights=child.weights_copy())
    assert reloaded.weights_hash == child.weights_hash
    _check_trains(child)
    again = _apply(name, parent, site, seed=3).child
    assert (again.structure_hash, again.weights_hash) == (child.structure_hash, child.weights_hash)
    record = json.loads(json.dumps(result.record.to_json()))
    assert record["name"] == name and record["site"] == site and record["seed"] == 3
    batch = batch_for(parent, seed=3) if morphisms.get(name).needs_batch else None
    replayed = morphisms.replay(record, parent, batch=batch).child
    assert replayed.weights_hash == child.weights_hash
    assert replayed.structure_hash == child.structure_hash


def _check_all_sites(name: str, arch: Architecture, *, full: bool = True) -> None:
    sites = morphisms.sites(name, arch)
    morphism = morphisms.get(name)
    assert [n for n in arch.nodes if morphism.accepts(arch, n)] == sorted(
        sites, key=arch.nodes.index), f"{name}.accepts disagrees with its sites()"
    for site in sites:
        _check_site(name, arch, site, full=full)


@pytest.mark.parametrize("name", MORPHISMS)
@SETTINGS
@given(arch=architectures(torch.float64))
def test_contract_float64_random_architectures(name: str, arch: Architecture) -> None:
    _check_all_sites(name, arch)


@pytest.mark.parametrize("name", MORPHISMS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arch=architectures(torch.float32))
def test_contract_float32_preserves_function(name: str, arch: Architecture) -> None:
    _check_all_sites(name, arch, full=False)


@pytest.mark.parametrize("family", sorted(fixed_architectures()))
@pytest.mark.parametrize("name", MORPHISMS)
def test_contract_fixed_architectures(name: str, family: str) -> None:
    arch = fixed_architectures()[family]
    _check_all_sites(name, arch)
    _check_all_sites(name, arch.to(torch.float32), full=False)


def _arch_with_sites(name: str) -> Architecture:
    """The first fixed architecture where ``name`` applies somewhere."""
    for arch in fixed_architectures().values():
        if morphisms.sites(name, arch):
            return arch
    raise AssertionError(f"{name} applies to none of the fixed architectures; add one")


def test_unknown_morphism_lists_the_valid_ones() -> None:
    arch = fixed_architectures()["mlp"]
    with pytest.raises(UnknownMorphism) as info:
        morphisms.apply("deepen.sideways", arch)
    message = str(info.value)
    assert "deepen.sideways" in message
    assert all(name in message for name in MORPHISMS)


@pytest.mark.parametrize("name", MORPHISMS)
def test_bad_site_lists_the_valid_sites(name: str) -> None:
    arch = _arch_with_sites(name)
    with pytest.raises(MorphismNotApplicable) as info:
        _apply(name, arch, "no_such_node")
    message = str(info.value)
    assert "no_such_node" in message
    assert all(site in message for site in morphisms.sites(name, arch))


@pytest.mark.parametrize("name", MORPHISMS)
def test_unknown_parameter_is_refused(name: str) -> None:
    arch = _arch_with_sites(name)
    with pytest.raises(MorphismNotApplicable, match="learning_rat"):
        morphisms.apply(name, arch, batch=batch_for(arch), learning_rat=0.1)


@pytest.mark.parametrize("name", MORPHISMS)
def test_gradient_morphisms_refuse_a_missing_batch(name: str) -> None:
    if not morphisms.get(name).needs_batch:
        pytest.skip(f"{name} needs no batch")
    with pytest.raises(MorphismNotApplicable, match="batch"):
        morphisms.apply(name, _arch_with_sites(name))


def _segmentation_head() -> Architecture:
    # conv -> relu -> conv head: [N, 3, 5, 5] outputs, per-position labels [N, 5, 5]
    b = GraphBuilder((2, 5, 5))
    h = b.add("relu", b.add("conv2d", b.input, out_channels=4, kernel_size=3, padding=1,
                            name="c1"))
    return b.build(b.add("conv2d", h, out_channels=3, kernel_size=3, padding=1, name="head"),
                   dtype=torch.float64, seed=1)


def _labels_for(arch: Architecture, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, labels = batch_for(arch, seed=seed)
    if len(arch.output_shape) > 1:  # one label per output position
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(0, arch.output_shape[0], (len(inputs), *arch.output_shape[1:]),
                               generator=g)
    return inputs, labels


@pytest.mark.parametrize("grad_mode", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("name", MORPHISMS)
def test_apply_inside_no_grad_or_inference_mode_gives_the_same_child(name: str,
                                                                     grad_mode: str) -> None:
    # A caller's no_grad/inference_mode must not break a morphism's own gradient pass,
    # nor leave the child with tensors autograd cannot train or grow further.
    archs = [*fixed_architectures().values(), _segmentation_head()]
    needs_batch = morphisms.get(name).needs_batch
    for arch in archs:
        for site in morphisms.sites(name, arch)[:2]:
            batch = _labels_for(arch, seed=1) if needs_batch else None
            expected = morphisms.apply(name, arch, site, batch=batch, seed=1).child
            with getattr(torch, grad_mode)():
                inside = _labels_for(arch, seed=1)  # made inside: inference tensors there
                child = morphisms.apply(name, arch, site, seed=1,
                                        batch=inside if needs_batch else None).child
            assert child.weights_hash == expected.weights_hash, (name, site)
            assert not any(t.is_inference() for p in child.weights.values()
                           for t in p.values())
            if len(arch.output_shape) == 1:
                _check_trains(child)
            for grow in ("widen.gradmax", "split.steepest"):  # and it grows again, with grads
                for again in morphisms.sites(grow, child)[:1]:
                    morphisms.apply(grow, child, again, batch=_labels_for(child, seed=2))
