"""Shrink and perturb: a warm start that trains like a fresh one (Ash & Adams, 2020).

A network trained on from another's weights ends up generalising worse than the same
network trained from scratch, even at the same training loss ("On Warm-Starting Neural
Network Training", NeurIPS 2020). Their remedy, before training on: every trainable
weight becomes ``shrink * w + perturb * w0``, with ``w0`` a fresh initialisation of the
same network (they use ``shrink`` 0.3-0.6 and a small ``perturb``). The network keeps
the direction of what it learned at a smaller scale, and the fresh noise restores the
gradient signal that a converged network has lost.

It changes the function, so a morphism's child stays exact as made and this is a
training choice: ``selection.shrink_perturb`` in a search (off by default). Batch norm
running statistics and counters are left as they are.
"""

from __future__ import annotations

from morphsearch.arch import Architecture

__all__ = ["shrink_perturb"]


def shrink_perturb(arch: Architecture, shrink: float, perturb: float, *, seed: int) -> Architecture:
    """``arch`` with every trainable weight ``w`` replaced by ``shrink * w + perturb * w0``,
    ``w0`` from a fresh initialisation of the same graph seeded by ``seed``.

    Raises:
        ValueError: ``shrink`` outside (0, 1] or a negative ``perturb``.
    """
    if not 0 < shrink <= 1 or perturb < 0:
        raise ValueError(f"shrink and perturb need 0 < shrink <= 1 and perturb >= 0, not "
                         f"{shrink} and {perturb}")
    fresh = Architecture(arch.editable_graph(), seed=seed, dtype=arch.dtype).weights
    weights = {}
    for node, params in arch.weights.items():
        specs = arch.param_specs(node)
        weights[node] = {
            name: shrink * t + perturb * fresh[node][name] if specs[name].trainable else t
            for name, t in params.items()
        }
    return arch.with_weights(weights)
