"""Where to grow: score candidate growth steps (a morphism at a site) on a data batch.

Scorers share one interface: ``scorer.score(arch, batch, candidates, seed=...)`` returns
one :class:`Score` per candidate it can judge, best first; larger is better. The trainer
applies the best candidate; a :class:`~morphsearch.growth.triggers.ScoreThreshold` trigger
compares the best value with its threshold.

* :class:`GradMaxScore`: the largest singular values of GradMax's eq. 11 matrix at the
  site (how much gradient norm new neurons there can get; Evci et al., "GradMax: Growing
  Neural Networks using Gradient Information", ICLR 2022).
* :class:`SplittingScore`: minus the smallest splitting eigenvalue at the site, or the best
  plain-or-signed prediction with ``signed`` (negative
  eigenvalues mean splitting a neuron there lowers the loss; splitting steepest descent).
* :class:`NaturalExpansionScore`: Mitchell et al., "Self-Expanding Neural Networks"
  (2023): the natural expansion score eta = g^T F^-1 g of the network, with a diagonal or
  Kronecker-factored empirical Fisher, compared between the current network and each
  candidate child; the value is the increase of eta per added parameter. Width and depth
  candidates are scored on the same scale, which makes the width-vs-depth decision
  (:func:`growth_kind`).
* :class:`RoundRobin`: no measurement; cycles through the candidates (a baseline).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch

from morphsearch import morphisms
from morphsearch.arch import Architecture
from morphsearch.errors import ConfigError, MorphismNotApplicable
from morphsearch.growth.fisher import natural_expansion_eta
from morphsearch.morphisms import Batch, MorphismResult
from morphsearch.morphisms.splitting import predicted_decrease, splitting_eigenpairs
from morphsearch.morphisms.widen import gradmax_singular_values

__all__ = [
    "Candidate",
    "GradMaxScore",
    "NaturalExpansionScore",
    "RoundRobin",
    "Score",
    "Scorer",
    "SplittingScore",
    "candidates",
    "growth_kind",
]


@dataclass(frozen=True)
class Candidate:
    """One possible growth step: morphism ``morphism`` at ``site`` with ``params``."""

    morphism: str
    site: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``morphism@site``: the key of this candidate in a growth event's scores."""
        return f"{self.morphism}@{self.site}"


@dataclass(frozen=True)
class Score:
    """A scored candidate; ``result`` holds the child when scoring had to build it."""

    candidate: Candidate
    value: float
    detail: Mapping[str, float] = field(default_factory=dict)
    result: MorphismResult | None = field(default=None, repr=False, compare=False)


def candidates(
    arch: Architecture,
    allowed: Sequence[str],
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[Candidate]:
    """Every (morphism, site) pair among ``allowed`` morphisms that applies to ``arch``.

    Raises:
        UnknownMorphism: a name in ``allowed`` is not registered.
    """
    params = params or {}
    return [
        Candidate(name, site, dict(params.get(name, {})))
        for name in allowed
        for site in morphisms.sites(name, arch)
    ]


def growth_kind(morphism: str) -> Literal["width", "depth"]:
    """Whether a morphism adds depth (``deepen.*``) or width (everything else)."""
    return "depth" if morphism.startswith("deepen.") else "width"


class Scorer(abc.ABC):
    """Scores candidate growth steps; larger is better (see the module docstring)."""

    @abc.abstractmethod
    def score(
        self, arch: Architecture, batch: Batch, candidates: Sequence[Candidate], *, seed: int = 0
    ) -> list[Score]:
        """Score ``candidates`` of ``arch`` on ``batch``.

        Args:
            arch: the current network, with its current weights.
            batch: ``(inputs, targets)`` the scores are measured on.
            candidates: what may be grown (see :func:`candidates`).
            seed: seeds any morphism applied while scoring.

        Returns:
            Scores of the candidates this scorer can judge, best first.
        """

    @property
    def name(self) -> str:
        return type(self).__name__


T = TypeVar("T")


def _ranked(scores: list[Score]) -> list[Score]:
    return sorted(scores, key=lambda s: -s.value)


def _per_width_site(
    candidates: Sequence[Candidate], compute: Callable[[str], T]
) -> list[tuple[Candidate, T]]:
    """``compute(site)`` once per site of the width candidates; sites it refuses are skipped."""
    by_site: dict[str, T | None] = {}
    out = []
    for cand in candidates:
        if growth_kind(cand.morphism) != "width":
            continue
        if cand.site not in by_site:
            try:
                by_site[cand.site] = compute(cand.site)
            except MorphismNotApplicable:
                by_site[cand.site] = None
        value = by_site[cand.site]
        if value is not None:
            out.append((cand, value))
    return out


@dataclass
class GradMaxScore(Scorer):
    """Sum of the ``k`` largest GradMax singular values at each candidate's site."""

    k: int = 1

    def score(
        self, arch: Architecture, batch: Batch, candidates: Sequence[Candidate], *, seed: int = 0
    ) -> list[Score]:
        def top(site: str) -> torch.Tensor:
            values = torch.as_tensor(gradmax_singular_values(arch, site, batch))
            return values.flatten().sort(descending=True).values[: self.k]

        return _ranked([
            Score(cand, float(values.sum()), {"sigma_1": float(values[0])})
            for cand, values in _per_width_site(candidates, top)
        ])


@dataclass
class SplittingScore(Scorer):
    """Minus the lowest predicted loss change (over ``eps^2/2``) of any neuron's split at
    each candidate's site: ``-lambda_min``, or with ``signed`` the best of a plain and a
    signed split (``min(lambda_min, -c/(1+c) lambda_max)``, see
    :mod:`morphsearch.morphisms.splitting`). > 0: a split there lowers the loss. ReLU
    sites use the softplus surrogate of temperature ``beta``. The detail holds
    ``lambda_min``, and with ``signed`` (which solves for it) ``lambda_max``."""

    signed: bool = False
    signed_weight: float = 1.0
    beta: float = 3.0
    mode: Literal["train", "eval"] = "train"

    def score(
        self, arch: Architecture, batch: Batch, candidates: Sequence[Candidate], *, seed: int = 0
    ) -> list[Score]:
        def best(site: str) -> dict[str, float]:
            pairs = splitting_eigenpairs(arch, site, batch, seed=seed, beta=self.beta,
                                         mode=self.mode, ends="both" if self.signed else "min")
            value, _ = predicted_decrease(pairs, signed=self.signed,
                                          signed_weight=self.signed_weight)
            detail = {"predicted": float(value.min()),
                      "min_eigenvalue": float(pairs.min_values.min())}
            if pairs.max_values is not None and self.signed:
                detail["max_eigenvalue"] = float(pairs.max_values.max())
            return detail

        return _ranked([Score(cand, -detail["predicted"], dict(detail))
                        for cand, detail in _per_width_site(candidates, best)])


@dataclass
class NaturalExpansionScore(Scorer):
    """SENN's natural expansion score: eta increase per added parameter.

    For each candidate the child is built (``morphisms.apply``) and
    ``value = (eta(child) - eta(arch)) / (child.num_params - arch.num_params)``, where
    ``eta = g^T F^-1 g`` on the batch (:func:`~morphsearch.growth.fisher.natural_expansion_eta`).
    """

    fisher: Literal["diagonal", "kfac"] = "kfac"
    damping: float = 1e-3

    def __post_init__(self) -> None:
        if self.fisher not in ("diagonal", "kfac"):
            raise ConfigError(f"fisher {self.fisher!r} must be 'diagonal' or 'kfac'")

    def score(
        self, arch: Architecture, batch: Batch, candidates: Sequence[Candidate], *, seed: int = 0
    ) -> list[Score]:
        eta = natural_expansion_eta(arch, batch, fisher=self.fisher, damping=self.damping)
        out = []
        for cand in candidates:
            try:
                result = morphisms.apply(
                    cand.morphism, arch, cand.site, batch=batch, seed=seed, check=False,
                    **cand.params,
                )
            except MorphismNotApplicable:
                continue  # like the other scorers: a refused candidate is not scored
            added = max(result.child.num_params - arch.num_params, 1)
            child_eta = natural_expansion_eta(
                result.child, batch, fisher=self.fisher, damping=self.damping
            )
            detail = {"eta": eta, "eta_child": child_eta, "added_params": float(added)}
            out.append(Score(cand, (child_eta - eta) / added, detail, result))
        return _ranked(out)


@dataclass
class RoundRobin(Scorer):
    """Cycles through the candidates in order: 1 for the next one, 0 for the others."""

    _turn: int = field(default=0, init=False, repr=False)

    def score(
        self, arch: Architecture, batch: Batch, candidates: Sequence[Candidate], *, seed: int = 0
    ) -> list[Score]:
        if not candidates:
            return []
        chosen = self._turn % len(candidates)
        self._turn += 1
        return _ranked([Score(c, float(i == chosen)) for i, c in enumerate(candidates)])
