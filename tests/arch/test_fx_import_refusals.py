"""What the IR cannot express is refused: one line naming the node, the call, the code
location and the supported calls (or the fix)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import morphsearch
from morphsearch.arch.fx_import import module_from_factory
from morphsearch.errors import ModuleImportError
from tests.arch import fx_models as models


def _refusal(module: nn.Module, *shape: int) -> str:
    with pytest.raises(ModuleImportError) as info:
        morphsearch.from_module(module, torch.randn(2, *shape))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_lstm_is_refused_naming_the_node_and_the_supported_calls() -> None:
    message = _refusal(models.LSTMNet(), 40)
    assert message.startswith("cannot import node 'lstm' (nn.LSTM 'lstm' at fx_models.py:")
    assert "not supported by the IR; supported: nn.Linear, nn.Conv1d" in message
    assert "F.relu" in message and ".view()" in message


class Sorted(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x, dim=1).values


def test_torch_sort_is_refused_with_its_code_location() -> None:
    message = _refusal(Sorted(), 5)
    line = Sorted.forward.__code__.co_firstlineno + 1
    assert message.startswith(f"cannot import node 'sort' (torch.sort at "
                              f"test_fx_import_refusals.py:{line}): not supported by the IR")


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def test_data_dependent_branch_is_refused_at_its_line() -> None:
    message = _refusal(Branchy(), 4)
    line = Branchy.forward.__code__.co_firstlineno + 1
    assert message.startswith(
        f"cannot trace Branchy at test_fx_import_refusals.py:{line} `if x.sum() > 0:`: "
        "symbolically traced variables cannot be used as inputs to control flow")
    assert "no data-dependent control flow" in message


class SharedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU()  # a stateless module may be called twice

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(self.act(self.fc(x))))


def test_a_module_with_weights_called_twice_is_refused() -> None:
    message = _refusal(SharedLayer(), 4)
    assert message.startswith("cannot import node 'fc_1' (nn.Linear 'fc'")
    assert "module 'fc' is called again (first as node 'fc'); the IR has no shared " \
           "weights: give each call its own module" in message


class Unflattened(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.conv(self.pool(x)), 1)


class InPlaceReuse(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        # every output negative, whatever the probe: the in-place relu then changes y
        # (the module returns 0, the graph y + relu(y) = -1). With random weights, drawn
        # here at collection time (outside the per-test seeding, so they changed with the
        # tests collected), outputs all positive on the probe left the two equal, rarely
        nn.init.zeros_(self.fc.weight)
        nn.init.constant_(self.fc.bias, -1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y + F.relu(y, inplace=True)  # y itself is changed: not what the graph says


class FixedBatchView(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(2, -1)


class Pair(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class Scaled(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1.0


@pytest.mark.parametrize(("module", "shape", "expected"), [
    (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), (4, 5, 5),
     "(nn.Conv2d '0'): groups=2 is not supported (the IR's convolutions are dense)"),
    (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), (1, 7, 7),
     "dilation=(2, 2) is not supported; use dilation=1"),
    (nn.Sequential(nn.MaxPool2d(2, ceil_mode=True)), (1, 5, 5), "ceil_mode=True"),
    (nn.Sequential(nn.BatchNorm1d(3, affine=False)), (3,), "affine=False is not supported"),
    (nn.Sequential(nn.GELU(approximate="tanh")), (3,), "approximate='tanh' is not supported"),
    (nn.Sequential(nn.AdaptiveAvgPool2d(2)), (1, 4, 4), "output_size=2 is not supported"),
    (nn.Sequential(nn.Flatten(0)), (3,), "flatten(start_dim=0, end_dim=-1) is not supported"),
    (nn.Sequential(nn.Softmax(dim=1)), (3,), "(nn.Softmax '0'): not supported by the IR"),
    (Unflattened(), (3, 4, 4), "node 'conv' (nn.Conv2d 'conv' at test_fx_import_refusals.py"),
    (InPlaceReuse(), (4,), "the imported graph differs from the module by"),
    (FixedBatchView(), (6,), "view/reshape to (2, -1) is not supported: keep the batch dim"),
    (Pair(), (3,), "returns tuple; the IR's network returns one tensor"),
    (Scaled(), (3,), "adding a constant is not supported"),
])
def test_unsupported_arguments_and_forms_are_refused(module: nn.Module, shape: tuple[int, ...],
                                                     expected: str) -> None:
    assert expected in _refusal(module, *shape)


def test_adaptive_pool_must_be_flattened_next() -> None:
    message = _refusal(Unflattened(), 3, 4, 4)
    assert "the output of an adaptive average pool to 1 must be flattened next" in message


def test_a_module_failing_on_the_example_names_its_shape() -> None:
    message = _refusal(nn.Sequential(nn.Linear(5, 2)), 4)
    assert message.startswith("Sequential fails on an example input of shape [2, 4] at node "
                              "'_0': mat1 and mat2 shapes cannot be multiplied")


def test_bad_arguments() -> None:
    with pytest.raises(ModuleImportError, match=r"needs a torch\.nn\.Module, got str"):
        morphsearch.from_module("resnet", torch.randn(2, 3))  # type: ignore[arg-type]
    with pytest.raises(ModuleImportError, match="example_input must be a batch tensor"):
        morphsearch.from_module(nn.Linear(3, 2), torch.randn(3))


@pytest.mark.parametrize(("spec", "expected"), [
    ("tests.arch.fx_models", "write the factory as 'package.module:function'"),
    ("tests.arch.no_such_models:net", "cannot import 'tests.arch.no_such_models'"),
    ("tests.arch.fx_models:nothing", "tests.arch.fx_models has no function 'nothing'"),
    ("tests.arch.fx_models:not_a_module", "returned object, not a torch.nn.Module"),
])
def test_factory_specs_are_checked(spec: str, expected: str) -> None:
    with pytest.raises(ModuleImportError) as info:
        module_from_factory(spec)
    assert expected in str(info.value)


def test_a_failing_factory_is_one_line() -> None:
    with pytest.raises(ModuleImportError) as info:
        module_from_factory("tests.arch.fx_models:LSTMNet", width=3)  # no such keyword
    assert str(info.value).startswith("'tests.arch.fx_models:LSTMNet' raised TypeError: ")


def test_factory_returns_its_module() -> None:
    module = module_from_factory("tests.arch.fx_models:small_mlp")
    assert isinstance(module, nn.Sequential) and module[0].in_features == 40
