"""The loss a batch implies by its targets' dtype (the :data:`morphisms.Batch` convention).

One definition for morphisms, growth and search trials: integer targets are class labels
(cross-entropy), float targets are regression targets (mean squared error).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = [
    "accuracy",
    "gradients_on",
    "per_sample_loss",
    "task_loss",
    "task_loss_grad",
    "usable_batch",
]


def per_sample_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Loss of each sample: cross-entropy for integer targets, mean squared error otherwise."""
    if not targets.is_floating_point():
        return F.cross_entropy(outputs, targets.long(), reduction="none")
    diff = (outputs - targets.to(outputs.dtype).reshape(outputs.shape)).pow(2)
    return diff.reshape(len(diff), -1).mean(dim=1)


def task_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of :func:`per_sample_loss` over the batch (computed by the fused losses: every
    sample has the same number of outputs, so the mean of per-sample means is the mean)."""
    if not targets.is_floating_point():
        return F.cross_entropy(outputs, targets.long())  # any integer labels (int32 from NumPy)
    return F.mse_loss(outputs, targets.to(outputs.dtype).reshape(outputs.shape))


def task_loss_grad(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The gradient of :func:`task_loss` with respect to ``outputs``, in closed form.

    Mean squared error: ``2 (outputs - targets) / outputs.numel()``; cross-entropy over
    ``[N, C]`` logits: ``(softmax(outputs) - onehot(targets)) / N``. No autograd graph
    is built or run (for one gradient at the network output it costs ~1/7 of autograd's
    for MSE on a 1000 x 10 batch); other output shapes go through autograd.
    """
    outputs = outputs.detach()
    if not targets.is_floating_point():
        if outputs.dim() != 2 or targets.shape != outputs.shape[:1]:
            # autograd, whatever the caller's grad mode; it also refuses label shapes
            # cross-entropy does not take, as task_loss does
            with gradients_on():
                z, labels = usable_batch((outputs, targets))
                z.requires_grad_()
                (grad,) = torch.autograd.grad(task_loss(z, labels), [z])
            return grad
        grad = torch.softmax(outputs, dim=1)
        grad[torch.arange(len(targets)), targets.long()] -= 1.0
        return grad.div_(len(targets))
    diff = outputs - targets.to(outputs.dtype).reshape(outputs.shape)
    return diff.mul_(2.0 / outputs.numel())


@contextlib.contextmanager
def gradients_on() -> Iterator[None]:
    """Autograd on for a gradient pass of our own (a morphism's, :func:`task_loss_grad`'s),
    even inside the caller's ``torch.no_grad()`` or ``torch.inference_mode()``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def usable_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch``, with tensors made under ``torch.inference_mode`` copied to ordinary ones
    (autograd cannot save inference tensors for backward). Call under :func:`gradients_on`."""
    inputs, targets = batch
    return (inputs.clone() if inputs.is_inference() else inputs,
            targets.clone() if targets.is_inference() else targets)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float | None:
    """Fraction of correct argmax predictions; None for regression targets."""
    if targets.is_floating_point():
        return None
    return float((outputs.argmax(dim=1) == targets).float().mean())
