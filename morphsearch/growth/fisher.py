"""The natural expansion score eta = g^T F^-1 g (Mitchell et al., "Self-Expanding Neural
Networks", 2023).

``g`` is the mean loss gradient on a batch and ``F`` the empirical Fisher
``E_n[g_n g_n^T]`` of the per-sample gradients ``g_n``, approximated either

* diagonally: ``eta = sum_i g_i^2 / (F_ii + damping)``, or
* Kronecker-factored (K-FAC) for ``linear`` nodes: with layer inputs ``a_n`` (a 1 appended
  for the bias) and pre-activation gradients ``d_n``, ``F_W ~ A (x) G`` with
  ``A = E[a a^T]``, ``G = E[d d^T]``, so ``eta_W = tr(dW^T (G + s I)^-1 dW (A + s I)^-1)``
  with ``dW = E[d a^T]`` and ``s = sqrt(damping)``; other parameters use the diagonal.

eta is the loss decrease per unit of natural-gradient step that the parameters can
deliver; a growth step that adds useful directions raises it. The empirical Fisher keeps
each diagonal term below 1 (``F_ii >= g_i^2``), so eta stays well scaled.

Scores are computed in eval mode (batch-norm uses its running statistics, dropout is off)
so per-sample gradients are independent of the rest of the batch.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch.func import functional_call, grad, vmap

from morphsearch.arch import Architecture
from morphsearch.errors import ConfigError
from morphsearch.losses import per_sample_loss
from morphsearch.morphisms import Batch

__all__ = ["natural_expansion_eta"]


def natural_expansion_eta(
    arch: Architecture,
    batch: Batch,
    *,
    fisher: Literal["diagonal", "kfac"] = "kfac",
    damping: float = 1e-3,
) -> float:
    """eta = g^T F^-1 g of ``arch`` on ``batch`` (see the module docstring).

    Args:
        arch: the network with its current weights.
        batch: ``(inputs, targets)``; integer targets mean cross-entropy, float targets MSE.
        fisher: ``"diagonal"`` or ``"kfac"`` (K-FAC on linear nodes, diagonal elsewhere).
        damping: added to the Fisher (split as its square root between the K-FAC factors).

    Returns:
        eta as a float (>= 0).

    Raises:
        ConfigError: unknown ``fisher`` or a non-positive ``damping``.
    """
    if fisher not in ("diagonal", "kfac"):
        raise ConfigError(f"fisher {fisher!r} must be 'diagonal' or 'kfac'")
    if damping <= 0:
        raise ConfigError(f"damping {damping} must be > 0")
    module = arch.to_module().eval()
    x, y = batch[0].to(arch.dtype), batch[1]
    if y.is_floating_point():
        y = y.to(arch.dtype)
    kfac_nodes = _kfac_nodes(arch) if fisher == "kfac" else []
    skip = {f"layers.{n}.{p}" for n in kfac_nodes for p in ("weight", "bias")}
    eta = _diagonal_eta(module, x, y, damping, skip)
    if kfac_nodes:
        eta += _kfac_eta(module, kfac_nodes, x, y, damping)
    return eta


def _kfac_nodes(arch: Architecture) -> list[str]:
    # K-FAC's A factor needs 2-D layer inputs; other linear inputs fall back to diagonal.
    return [
        n for n in arch.nodes if arch.op(n) == "linear" and len(arch.shape(arch.inputs(n)[0])) == 1
    ]


def _diagonal_eta(
    module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, damping: float, skip: set[str]
) -> float:
    params = {
        k: v.detach() for k, v in module.named_parameters() if v.requires_grad and k not in skip
    }
    if not params:
        return 0.0
    frozen = {k: v.detach() for k, v in module.named_parameters() if k not in params}
    buffers = dict(module.named_buffers())

    def loss_one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(module, {**p, **frozen, **buffers}, (xi.unsqueeze(0),))
        return per_sample_loss(out, yi.unsqueeze(0)).sum()

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    eta = 0.0
    for g_n in per_sample.values():
        g_n = g_n.reshape(len(g_n), -1)
        mean = g_n.mean(dim=0)
        second = g_n.pow(2).mean(dim=0)
        eta += float((mean.pow(2) / (second + damping)).sum())
    return eta


def _kfac_eta(
    module: torch.nn.Module, nodes: list[str], x: torch.Tensor, y: torch.Tensor, damping: float
) -> float:
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def capture(node: str) -> Any:
        def hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            inputs[node] = args[0].detach()
            out.retain_grad()
            outputs[node] = out

        return hook

    layers = module.get_submodule("layers")
    handles = [layers.get_submodule(n).register_forward_hook(capture(n)) for n in nodes]
    try:
        module.zero_grad(set_to_none=True)
        # Summing per-sample losses makes each output's .grad that sample's own gradient.
        per_sample_loss(module(x), y).sum().backward()
    finally:
        for h in handles:
            h.remove()
    eta = 0.0
    s = damping**0.5
    for node in nodes:
        lin = layers.get_submodule(node)
        a = inputs[node]
        if getattr(lin, "bias", None) is not None:
            a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
        d = outputs[node].grad
        assert d is not None  # every linear node feeds the loss in a valid architecture
        n = len(a)
        dw = d.T @ a / n
        big_a = a.T @ a / n + s * torch.eye(a.shape[1], dtype=a.dtype)
        big_g = d.T @ d / n + s * torch.eye(d.shape[1], dtype=d.dtype)
        left = torch.linalg.solve(big_g, dw)  # G^-1 dW
        right = torch.linalg.solve(big_a, dw.T)  # A^-1 dW^T
        eta += float((left * right.T).sum())  # tr(dW^T G^-1 dW A^-1)
    module.zero_grad(set_to_none=True)
    return eta
