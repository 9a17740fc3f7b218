"""The Optuna define-by-run space of a search: which parent, which morphism, where, how much.

:class:`MorphismSpace` is called by Ray Tune's ``OptunaSearch`` on the driver each time
a trial is suggested. It reads the parent pool (the best trained architectures so far)
from lineage, lets Optuna choose a parent rank, a morphism, a site position, an amount
``k`` and a learning rate, and resolves them into a concrete, novel child: if the chosen
child has the same structure as one already grown from the same parent (or exceeds
``max_params``, or multiplies its parent's FLOPs by more than ``max_flops_growth``), it
walks to the next site, then a smaller amount, then the next morphism instead. Children
are judged by structure alone (:func:`morphisms.plan`: no data, no weights computed); the
worker applies the morphism once and checks the planned structure hash. The resolved
:class:`~morphsearch.search.protocol.TrialPlan` is returned as constants, which Ray merges
into the trial's config.

The object is pickled with the searcher's state (Tune experiment checkpoints), so it
holds only plain values; the lineage store is reopened lazily after unpickling.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from morphsearch import morphisms
from morphsearch.arch import Architecture, load
from morphsearch.errors import MorphSearchError, NotFound, SearchError
from morphsearch.lineage import LineageStore
from morphsearch.search.config import SearchConfig
from morphsearch.search.protocol import PlannedMorphism, TrialPlan

__all__ = ["MorphismSpace", "ParentInfo", "PoolExhausted", "seed_arch_id"]


class PoolExhausted(SearchError):
    """No new child can be grown from the parent pool as it is now. The searcher waits
    while trials are running (they may add parents); with none running, the search ends
    there, before its budget, as a finished search, with this message as a warning.
    Parents outside the pool (ranked lower, or with ``selection.max_children`` children
    while others have room) may still have novel children then."""

log = logging.getLogger(__name__)


def seed_arch_id(search: str) -> str:
    return f"{search}/seed"


@dataclass(frozen=True)
class ParentInfo:
    arch_id: str
    weights_uri: str
    weights_sha256: str | None
    graph: dict[str, Any]


class MorphismSpace:
    """Define-by-run space for ``OptunaSearch(space=MorphismSpace(...))``.

    Args:
        config: the search config (morphisms, ranges, pool size, budget).
        search: the search name in lineage.
        db_url: the lineage database URL (read only here).
        probe: a small ``(inputs, targets)`` batch, to build candidate children on the
            driver and compare their structure hashes.
        seed_info: the recorded seed architecture.
    """

    def __init__(
        self,
        config: SearchConfig,
        search: str,
        db_url: str,
        probe: tuple[torch.Tensor, torch.Tensor],
        seed_info: ParentInfo,
    ) -> None:
        self.config = config
        self.search = search
        self.db_url = db_url
        self.probe = probe
        self.seed_info = seed_info
        # (parent id, child structure hash) of every child suggested so far
        self.suggested: set[tuple[str, str]] = set()
        self._store: LineageStore | None = None
        self._parents: dict[str, ParentInfo] = {}
        self._archs: dict[str, Architecture] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_store"] = None  # engines do not pickle; reopened on first use
        state["_archs"] = {}  # rebuilt from the graphs on demand
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("_parents", {})  # a searcher pickled before these caches
        state.setdefault("_archs", {})
        self.__dict__.update(state)

    @property
    def store(self) -> LineageStore:
        if self._store is None:
            self._store = LineageStore(self.db_url)
        return self._store

    def __call__(self, trial: Any) -> dict[str, Any]:
        """Suggest one trial; returns its plan as the constants Ray adds to its config."""
        return self.suggest(trial).to_config()

    def suggest(self, trial: Any) -> TrialPlan:
        """Suggest one trial's :class:`~morphsearch.search.protocol.TrialPlan`."""
        selection = self.config.selection
        base = TrialPlan(
            parent_id=self.seed_info.arch_id,
            parent_uri=self.seed_info.weights_uri,
            lr=trial.suggest_float("lr", *selection.lr, log=True),
            lr_schedule=self.config.budget.lr_schedule,
            trial_seed=self.config.seed * 100_003 + int(trial.number),
            inherit_optimizer=selection.inherit_weights and selection.inherit_optimizer,
        )
        pool = self.pool()
        seed_key = (self.seed_info.arch_id, "train")
        if not pool and seed_key not in self.suggested:
            # First trial: train the seed as it is, so children have a trained parent
            # and the search has a baseline to beat.
            self.suggested.add(seed_key)
            return replace(base, **self._parent_fields(self.seed_info))
        # the seed may still be training (when the searcher does not wait for it): its
        # children then start from untrained weights and train the full budget
        base = replace(base, fine_tune=bool(pool))
        pool = pool or [self.seed_info]
        rank = trial.suggest_int("parent_rank", 0, selection.pool_size - 1)
        name = trial.suggest_categorical("morphism", sorted(self.config.morphisms))
        position = trial.suggest_float("site_position", 0.0, 1.0)
        spec = self.config.morphisms[name]
        k: float
        if spec.k_fraction is not None:  # relative to the site's width, resolved per site
            k = trial.suggest_float(f"k_fraction.{name}", *spec.k_fraction, log=True)
        else:
            k = trial.suggest_int(f"k.{name}", *spec.k)
        start = min(rank, len(pool) - 1)
        for parent in pool[start:] + pool[:start]:
            choice = self._resolve(parent, name, position, k, base.trial_seed)
            if choice is not None:
                morphism, child_hash = choice
                return replace(base, **self._parent_fields(parent), morphism=morphism,
                               child_structure_hash=child_hash)  # fmt: skip
        raise PoolExhausted(
            f"search {self.search!r}: every enabled morphism at every site of the parent pool "
            f"(the {self.config.selection.pool_size} best trained parents with room for "
            "children) gives a duplicate or too large child; enable more morphisms, widen "
            "their 'k' ranges or raise selection.pool_size or budget.max_params (or "
            "budget.max_flops_growth)"
        )

    def pool(self) -> list[ParentInfo]:
        """The parents Optuna's rank indexes, best first.

        ``selection.pool: best``: the best trained architectures by the objective.
        ``front``: architectures spread evenly over the objective-vs-parameters front
        (the best at its size; the best overall first), then the best others.
        Parents that already have ``selection.max_children`` children are left out
        while enough others are available, so the search spreads over the pool.
        """
        k = self.config.selection.pool_size
        limit = self.config.selection.max_children
        rank = self.config.selection.rank_by
        metric, mode = (rank.metric, rank.mode) if rank else (self.config.metric, self.config.mode)
        ranked = self._ranked(metric, mode, 4 * k)
        front = self._front(metric, mode) if self.config.selection.pool == "front" else []
        fresh: list[ParentInfo] = []
        on_front: list[ParentInfo] = []
        used: list[ParentInfo] = []
        on_front_ids = set(front)
        for arch_id in front + [a for a in ranked if a not in on_front_ids]:
            info = self._parent(arch_id)
            if info is None:  # stopped early: nothing to inherit
                continue
            if limit is not None and self.children(info.arch_id) >= limit:
                used.append(info)
            elif arch_id in on_front_ids:
                on_front.append(info)
            else:
                fresh.append(info)
            if len(fresh) == k:
                break
        # the front's fresh parents, spread from its best to its smallest, then the best
        # fresh others; all exhausted (or too few fresh ones): the best used-up ones
        chosen = _spread(on_front, k)
        chosen += fresh[: k - len(chosen)]
        return chosen + used[: k - len(chosen)]

    def _ranked(self, metric: str, mode: Literal["min", "max"], k: int) -> list[str]:
        """The ``k`` best architectures by ``metric``, best first; with
        ``selection.prefer_cheaper_within``, those within it of the best come first,
        cheapest (forward FLOPs) first."""
        within = self.config.selection.prefer_cheaper_within
        if within is None:
            return [r.arch_id for r in self.store.best(self.search, metric, mode, k=k)]
        scored = self.store.best(self.search, metric, mode, k=None)
        top = scored[0].value if scored else 0.0

        def key(r: Any) -> tuple[bool, int]:  # tied first, by FLOPs; the rest keep their rank
            tied = abs(r.value - top) <= within
            return (not tied, r.flops if tied else 0)

        return [r.arch_id for r in sorted(scored, key=key)][:k]

    def _front(self, metric: str, mode: str) -> list[str]:
        """The objective-vs-parameters front, best (largest) first."""
        try:
            points = self.store.pareto(self.search, metric, mode, cost="params")  # type: ignore[arg-type]
        except NotFound:
            return []
        return [p.arch_id for p in reversed(points)]

    def _parent(self, arch_id: str) -> ParentInfo | None:
        """A scored architecture as a parent; recorded architectures never change, so
        each is read from lineage once (the pool is re-ranked every suggestion)."""
        if arch_id not in self._parents:
            record = self.store.architecture(arch_id)
            if record.weights_uri is None:
                return None
            self._parents[arch_id] = ParentInfo(
                record.arch_id, record.weights_uri, record.weights_sha256, record.graph
            )
        return self._parents[arch_id]

    def _arch(self, parent: ParentInfo) -> Architecture:
        """The parent's graph as an architecture (built once per process)."""
        if parent.arch_id not in self._archs:
            self._archs[parent.arch_id] = load(parent.graph)
        return self._archs[parent.arch_id]

    def children(self, parent_id: str) -> int:
        """How many distinct children ``parent_id`` has: suggested here or in lineage."""
        mine = {key for key in self.suggested if key[0] == parent_id}
        return len(mine | self._grown_from(parent_id))

    @staticmethod
    def _parent_fields(parent: ParentInfo) -> dict[str, Any]:
        return {  # the TrialPlan fields that name the parent
            "parent_id": parent.arch_id,
            "parent_uri": parent.weights_uri,
            "parent_sha256": parent.weights_sha256,
        }

    def _resolve(
        self, parent: ParentInfo, name: str, position: float, k: float, seed: int
    ) -> tuple[PlannedMorphism, str] | None:
        """The first candidate whose child is novel and small enough, with its hash."""
        arch = self._arch(parent)
        grown = self._grown_from(parent.arch_id)
        for morphism, site, params in self._candidates(arch, name, position, k):
            try:
                child = self._plan(morphism, arch, site, params)
            except MorphSearchError as exc:
                log.debug("skipping %s at %s: %s", morphism, site, exc)
                continue
            budget = self.config.budget
            if budget.max_params is not None and child.num_params > budget.max_params:
                continue
            growth = budget.max_flops_growth
            if growth is not None and child.flops > growth * arch.flops:
                continue
            key = (parent.arch_id, child.structure_hash)
            if key in self.suggested or key in grown:
                continue
            self.suggested.add(key)
            return PlannedMorphism(morphism, site, params, seed), key[1]
        return None

    def _candidates(
        self, arch: Architecture, name: str, position: float, k: float
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """The chosen (morphism, site, k) first, then its other sites, then other morphisms.

        ``k`` is a unit count, or a fraction of the site's width for a morphism with
        ``k_fraction``; smaller amounts are the fallbacks (a child over ``max_params`` or
        ``max_flops_growth``).
        """
        names = [name] + [n for n in sorted(self.config.morphisms) if n != name]
        for morphism in names:
            spec = self.config.morphisms[morphism]
            takes_k = "k" in morphisms.get(morphism).param_defaults()
            amounts: list[float]
            if spec.k_fraction is not None:
                top = k if morphism == name else spec.k_fraction[0]
                amounts = [top / 2**i for i in range(6)]
            else:
                amounts = [k] if morphism == name else [spec.k[0]]
                amounts += [a for a in range(spec.k[0], spec.k[1] + 1) if a not in amounts]
            places = morphisms.sites(morphism, arch)
            if spec.sites != "any":
                places = [site for site in places if _site_kind(arch, site) == spec.sites]
            if not places:
                continue
            first = min(int(position * len(places)), len(places) - 1)
            seen: set[tuple[str, int | None]] = set()  # halved fractions round alike
            for amount in amounts if takes_k else [None]:
                for i in range(len(places)):
                    site = places[(first + i) % len(places)]
                    params = dict(spec.params)
                    if amount is not None:
                        params["k"] = _units(arch, site, amount, spec.k_fraction is not None)
                    if (site, params.get("k")) not in seen:
                        seen.add((site, params.get("k")))
                        yield morphism, site, params

    def _plan(
        self, morphism: str, arch: Architecture, site: str, params: dict[str, Any]
    ) -> Architecture:
        """The candidate child's structure, without data (no GradMax pass, no SVD); a
        morphism that can plan only with a batch is applied on the probe instead."""
        try:
            return morphisms.plan(morphism, arch, site, **params)
        except NotImplementedError:
            return morphisms.apply(morphism, arch, site, batch=self.probe, seed=0,
                                   check=False, **params).child  # fmt: skip

    def _grown_from(self, parent_id: str) -> set[tuple[str, str]]:
        """(parent, structure hash) of the children lineage already holds for ``parent_id``
        (one query)."""
        return {(parent_id, h) for h in self.store.child_hashes(parent_id)}


def _units(arch: Architecture, site: str, amount: float, relative: bool) -> int:
    """Units to add at ``site``: ``amount`` itself, or that fraction of the site's width."""
    if not relative:
        return int(amount)
    width = int(arch.shape(site)[0]) if arch.shape(site) else 1
    return max(1, round(amount * width))


def _spread(items: list[Any], k: int) -> list[Any]:
    """``k`` of ``items`` evenly spaced from the first to the last (all when fewer)."""
    if len(items) <= k:
        return list(items)
    if k == 1:
        return items[:1]
    picks = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in picks]


def _site_kind(arch: Architecture, site: str) -> str:
    """``spatial`` when the site's output keeps spatial axes (a signal or an image), else ``flat``."""
    return "spatial" if len(arch.shape(site)) >= 2 else "flat"
