"""Scores: analytic values of eta, and the sign/ordering each score promises."""

from __future__ import annotations

import math

import pytest
import torch

from morphsearch import builders, morphisms
from morphsearch.errors import ConfigError
from morphsearch.growth import (
    GradMaxScore,
    NaturalExpansionScore,
    RoundRobin,
    SplittingScore,
    candidates,
    growth_kind,
    natural_expansion_eta,
)
from tests.growth._nets import dominant_directions, linear_net


def _identical_batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 5, generator=g, dtype=torch.float64).repeat(n, 1)
    return x, torch.randn(1, 3, generator=g, dtype=torch.float64).repeat(n, 1)


def test_eta_of_identical_samples_is_one_per_parameter_or_per_layer() -> None:
    # Every per-sample gradient equals the mean g, so F = g g^T: each diagonal term is
    # g_i^2 / (g_i^2 + damping) ~ 1, and K-FAC gives (|d|^2/(|d|^2+s)) (|a|^2/(|a|^2+s)) ~ 1
    # per linear layer.
    arch = linear_net(5, [4], 3, seed=0).to(torch.float64)
    batch = _identical_batch()
    diag = natural_expansion_eta(arch, batch, fisher="diagonal", damping=1e-12)
    assert math.isclose(diag, arch.num_params, rel_tol=1e-6)
    kfac = natural_expansion_eta(arch, batch, fisher="kfac", damping=1e-12)
    assert math.isclose(kfac, 2.0, rel_tol=1e-5)


def test_eta_is_zero_at_a_perfect_fit_and_errors_name_the_option() -> None:
    arch = linear_net(4, [4], 4, seed=0).to(torch.float64)
    x = torch.randn(32, 4, dtype=torch.float64)
    with torch.no_grad():
        y = arch.to_module()(x)
    assert natural_expansion_eta(arch, (x, y)) < 1e-20
    with pytest.raises(ConfigError, match="fisher 'full'"):
        natural_expansion_eta(arch, (x, y), fisher="full")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="damping"):
        natural_expansion_eta(arch, (x, y), damping=0)


def _rank1_autoencoder() -> tuple:
    # A 1-unit linear autoencoder fitted to its top principal direction: a minimum of the
    # narrow network, but a saddle once another unit is available.
    x = dominant_directions(256, [3.0, 2.0, 0.1, 0.1], seed=0).double()
    arch = linear_net(4, [1], 4, seed=0).to(torch.float64)
    u = torch.linalg.svd(x, full_matrices=False).Vh[0:1]
    weights = arch.weights_copy()
    weights["fc1"]["weight"], weights["fc2"]["weight"] = u.clone(), u.T.clone()
    return arch.with_weights(weights), (x, x)


def test_natural_expansion_score_rewards_widening_at_a_saddle() -> None:
    arch, batch = _rank1_autoencoder()
    cands = candidates(arch, ["widen.random"])
    scores = NaturalExpansionScore(fisher="diagonal", damping=1e-6).score(arch, batch, cands)
    assert [s.candidate.site for s in scores] == ["fc1"]
    best = scores[0]
    assert best.detail["eta"] < 1e-6  # converged: no direction left for the narrow net
    assert best.detail["eta_child"] > 0.5  # the new unit opens one
    assert best.value > 0 and best.result is not None
    assert best.result.child.num_params == arch.num_params + 8


def test_width_and_depth_candidates_are_scored_on_one_scale() -> None:
    d = 6
    x = torch.randn(128, d, dtype=torch.float64)
    y = torch.randint(0, 3, (128,))
    arch = builders.mlp([d, 4, 3], seed=0).to(torch.float64)
    cands = candidates(arch, ["widen.random", "deepen.identity"])
    scores = NaturalExpansionScore().score(arch, (x, y), cands)
    kinds = {growth_kind(s.candidate.morphism) for s in scores}
    assert kinds == {"width", "depth"}
    assert all(math.isfinite(s.value) for s in scores)
    assert scores == sorted(scores, key=lambda s: -s.value)


def test_gradmax_and_splitting_scores_vanish_at_a_perfect_fit() -> None:
    arch = builders.mlp([5, 4, 3], seed=0).to(torch.float64)
    x = torch.randn(64, 5, dtype=torch.float64)
    with torch.no_grad():
        fit = arch.to_module()(x)
    noisy = fit + torch.randn_like(fit)
    cands = candidates(arch, ["widen.gradmax"])
    assert GradMaxScore().score(arch, (x, fit), cands)[0].value < 1e-10
    assert GradMaxScore().score(arch, (x, noisy), cands)[0].value > 1e-3
    # Splitting (tanh, and ReLU through its softplus surrogate): the splitting matrices
    # are weighted by dL/dh, which vanishes at a perfect fit.
    for activation in ("tanh", "relu"):
        arch = builders.mlp([5, 4, 3], activation=activation, seed=0).to(torch.float64)
        with torch.no_grad():
            fit = arch.to_module()(x)
        cands = candidates(arch, ["split.steepest"])
        for scorer in (SplittingScore(), SplittingScore(signed=True)):
            assert abs(scorer.score(arch, (x, fit), cands)[0].value) < 1e-10
            noisy = fit + torch.randn_like(fit)
            assert scorer.score(arch, (x, noisy), cands)[0].value > 1e-4


def test_splitting_score_ranks_relu_sites_by_the_best_predicted_split() -> None:
    # A ReLU MLP with batchnorm: each site's value is minus its best neuron's predicted
    # change; signed splits can only predict more (c/(1+c) lambda_max >= 0 candidates).
    arch = builders.mlp([6, 5, 4, 3], batchnorm=True, seed=1).to(torch.float64)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(64, 6, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (64,), generator=g))
    cands = candidates(arch, ["split.steepest", "widen.random"])
    plain = SplittingScore().score(arch, batch, cands)
    assert {s.candidate.site for s in plain} == {"fc1", "fc2"}
    assert [s.value for s in plain] == sorted((s.value for s in plain), reverse=True)
    signed = {s.candidate.key: s for s in SplittingScore(signed=True).score(arch, batch,
                                                                           cands)}
    for s in plain:
        assert s.value == pytest.approx(-s.detail["min_eigenvalue"])
        assert "max_eigenvalue" not in s.detail  # a plain split never reads it
        other = signed[s.candidate.key]
        assert other.value >= s.value - 1e-12
        assert other.value >= 0.5 * other.detail["max_eigenvalue"] - 1e-12


def test_round_robin_cycles_through_the_sites() -> None:
    arch = builders.mlp([5, 4, 4, 3])
    cands = candidates(arch, ["widen.random"])
    rr = RoundRobin()
    picked = [rr.score(arch, (torch.zeros(1, 5), torch.zeros(1, 3)), cands)[0].candidate.site
              for _ in range(3)]
    assert picked == ["fc1", "fc2", "fc1"]
    assert morphisms.sites("widen.random", arch) == ["fc1", "fc2"]
