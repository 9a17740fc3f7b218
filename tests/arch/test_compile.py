"""The compiled module matches hand-written PyTorch, and weights round-trip exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from morphsearch import builders
from morphsearch.arch import relu


def _sequential_mlp(arch) -> nn.Sequential:
    w = arch.weights
    fc1, fc2 = nn.Linear(64, 16), nn.Linear(16, 10)
    with torch.no_grad():
        for layer, name in ((fc1, "fc1"), (fc2, "fc2")):
            layer.weight.copy_(w[name]["weight"])
            layer.bias.copy_(w[name]["bias"])
    return nn.Sequential(fc1, nn.ReLU(), fc2)


def test_mlp_forward_matches_hand_written_sequential() -> None:
    arch = builders.mlp([64, 16, 10])
    x = torch.randn(32, 64)
    torch.testing.assert_close(arch.to_module()(x), _sequential_mlp(arch)(x), rtol=0, atol=0)


def test_cnn_forward_matches_functional_reference() -> None:
    arch = builders.cnn()
    w = arch.weights
    x = torch.randn(5, 1, 8, 8)
    h = torch.relu(torch.nn.functional.conv2d(x, w["conv1"]["weight"], w["conv1"]["bias"], padding=1))
    h = torch.relu(torch.nn.functional.conv2d(h, w["conv2"]["weight"], w["conv2"]["bias"], padding=1))
    h = torch.nn.functional.max_pool2d(h, 2).flatten(1)
    h = torch.relu(h @ w["fc1"]["weight"].T + w["fc1"]["bias"])
    expected = h @ w["fc2"]["weight"].T + w["fc2"]["bias"]
    torch.testing.assert_close(arch.to_module()(x), expected)


def test_ir_relu_has_derivative_one_at_zero() -> None:
    # PyTorch's relu has derivative 0 at 0, which would freeze neurons grown with zero
    # incoming weights (GradMax). The IR's relu must give 1 there and match relu elsewhere.
    x = torch.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    relu(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0]
    assert torch.equal(relu(x.detach()), torch.relu(x.detach()))


def test_new_zero_unit_gets_gradient_through_compiled_relu() -> None:
    arch = builders.mlp([3, 2, 1])
    weights = arch.weights_copy()
    weights["fc1"]["weight"][1].zero_()
    weights["fc1"]["bias"][1] = 0.0
    weights["fc2"]["weight"][0, 1] = 1.0
    module = arch.with_weights(weights).to_module()
    module(torch.randn(4, 3)).sum().backward()
    assert module.layers.fc1.weight.grad[1].abs().sum() > 0


@pytest.mark.parametrize("build", [builders.mlp, builders.cnn, builders.resnet], ids=["mlp", "cnn", "resnet"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_trained_weights_round_trip_exactly(build, dtype) -> None:
    arch = build([64, 8, 10]) if build is builders.mlp else build()
    arch = arch.to(dtype)
    module = arch.to_module()
    assert next(module.parameters()).dtype == dtype
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    x = torch.randn(8, *arch.input_shape, dtype=dtype)
    module(x).square().mean().backward()
    opt.step()
    trained = arch.with_weights_from(module)
    assert trained.weights_hash != arch.weights_hash
    again = trained.to_module()
    for (k, a), (k2, b) in zip(module.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    module.eval()
    again.eval()
    assert torch.equal(module(x), again(x))


def test_batchnorm_running_stats_come_back_out() -> None:
    arch = builders.resnet()
    module = arch.to_module().train()
    module(torch.randn(16, 1, 8, 8))
    trained = arch.with_weights_from(module)
    assert trained.weights["stem_bn"]["num_batches_tracked"].item() == 1
    assert not torch.equal(trained.weights["stem_bn"]["running_mean"], arch.weights["stem_bn"]["running_mean"])


def test_dropout_is_active_in_train_and_off_in_eval() -> None:
    arch = builders.mlp([8, 16, 4], dropout=0.5)
    module = arch.to_module()
    x = torch.randn(64, 8)
    module.eval()
    assert torch.equal(module(x), module(x))
    module.train()
    assert not torch.equal(module(x), module(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_module_matches_cpu() -> None:
    arch = builders.resnet()
    x = torch.randn(4, 1, 8, 8)
    cpu = arch.to_module().eval()(x)
    gpu = arch.to_module(device="cuda").eval()(x.cuda()).cpu()
    torch.testing.assert_close(cpu, gpu, rtol=1e-4, atol=1e-5)
