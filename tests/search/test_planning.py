"""Structure without data: every morphism's plan is its child's graph, and the search's
driver decides with plans (no batch, no GradMax pass) while the worker checks them."""

from __future__ import annotations

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.errors import MorphismNotApplicable

ARCHS = {
    "mlp": builders.mlp([6, 5, 4, 3], seed=0),
    "cnn": builders.cnn((1, 8, 8), num_classes=3, seed=0),
}


def _batch(arch: morphisms.Architecture) -> morphisms.Batch:  # type: ignore[name-defined]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, *arch.input_shape, generator=g)
    return x, torch.randint(0, 3, (8,), generator=g)


@pytest.mark.parametrize("name", morphisms.list_morphisms())
@pytest.mark.parametrize("arch_name", sorted(ARCHS))
def test_plan_gives_the_applied_childs_structure(name: str, arch_name: str) -> None:
    arch = ARCHS[arch_name]
    sites = morphisms.sites(name, arch)
    if not sites:
        pytest.skip(f"{name} does not apply to the {arch_name}")
    params = {"k": 2} if "k" in morphisms.get(name).param_defaults() else {}
    for site in sites:
        try:
            planned = morphisms.plan(name, arch, site, **params)
        except NotImplementedError:
            assert morphisms.get(name).needs_batch  # only those may need data to plan
            return
        applied = morphisms.apply(name, arch, site, batch=_batch(arch), seed=5, **params)
        assert planned.structure_hash == applied.child.structure_hash
        assert planned.num_params == applied.child.num_params


def test_plan_refuses_what_apply_refuses() -> None:
    arch = ARCHS["mlp"]
    with pytest.raises(MorphismNotApplicable, match="valid sites"):
        morphisms.plan("widen.gradmax", arch, "relu1", k=1)
    with pytest.raises(MorphismNotApplicable, match="k=0"):
        morphisms.plan("widen.gradmax", arch, "fc1", k=0)
    with pytest.raises(MorphismNotApplicable, match="no parameter 'width'"):
        morphisms.plan("widen.random", arch, "fc1", width=3)
