"""The batch loss convention: integer targets are classes, float targets regression."""

from __future__ import annotations

import pytest
import torch

from morphsearch.losses import accuracy, per_sample_loss, task_loss, task_loss_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_task_loss_is_the_mean_of_the_per_sample_losses(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(37, 10, generator=g, dtype=dtype)
    labels = torch.randint(0, 10, (37,), generator=g)
    targets = torch.randn(37, 10, generator=g, dtype=torch.float64)  # cast to outputs' dtype
    for t in (labels, targets):
        assert torch.allclose(task_loss(outputs, t), per_sample_loss(outputs, t).mean(),
                              rtol=1e-6, atol=0)
    manual = ((outputs - targets.to(dtype)) ** 2).mean(dim=1)
    assert torch.allclose(per_sample_loss(outputs, targets), manual, rtol=1e-6)
    # a flat regression target against [N, 1] outputs is reshaped, not broadcast to [N, N]
    flat = torch.randn(37, generator=g, dtype=dtype)
    expected = ((outputs[:, :1].squeeze(1) - flat) ** 2).mean()
    assert torch.allclose(task_loss(outputs[:, :1], flat), expected, rtol=1e-6)


def test_accuracy() -> None:
    outputs = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])
    assert accuracy(outputs, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(outputs, torch.zeros(3, 2)) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_task_loss_grad_is_autograds_gradient(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    outputs = torch.randn(29, 7, generator=g, dtype=dtype)
    cases = [
        (outputs, torch.randint(0, 7, (29,), generator=g)),  # classes
        (outputs, torch.randn(29, 7, generator=g, dtype=torch.float64)),  # regression
        (outputs[:, :1], torch.randn(29, generator=g, dtype=dtype)),  # flat target
        (torch.randn(29, 7, 3, generator=g, dtype=dtype),  # per-position classes
         torch.randint(0, 7, (29, 3), generator=g)),
    ]
    for out, targets in cases:
        z = out.detach().clone().requires_grad_()
        (expected,) = torch.autograd.grad(task_loss(z, targets), [z])
        if not targets.is_floating_point():  # and the textbook form, for every shape:
            # (softmax over the class axis - onehot) / the number of labels
            onehot = torch.nn.functional.one_hot(targets, out.shape[1]).movedim(-1, 1)
            textbook = (torch.softmax(out, dim=1) - onehot) / targets.numel()
            torch.testing.assert_close(expected, textbook)
        got = task_loss_grad(out, targets)
        for mode in (torch.no_grad, torch.inference_mode):  # whatever the caller's grad mode
            with mode():
                inside = task_loss_grad(out.clone(), targets.clone())
            torch.testing.assert_close(inside, got, rtol=0, atol=0)
        assert got.shape == out.shape and got.dtype == out.dtype
        torch.testing.assert_close(got, expected, rtol=1e-6 if dtype == torch.float32 else 1e-12,
                                   atol=1e-7 if dtype == torch.float32 else 1e-15)
        assert not out.requires_grad  # the caller's tensor is left alone


def test_integer_labels_of_any_width_are_classes() -> None:
    g = torch.Generator().manual_seed(2)
    outputs = torch.randn(11, 4, generator=g)
    labels = torch.randint(0, 4, (11,), generator=g)
    for narrow in (labels.int(), labels.short(), labels.to(torch.uint8)):
        assert torch.equal(task_loss(outputs, narrow), task_loss(outputs, labels))
        assert torch.equal(per_sample_loss(outputs, narrow), per_sample_loss(outputs, labels))
        assert torch.equal(task_loss_grad(outputs, narrow), task_loss_grad(outputs, labels))
