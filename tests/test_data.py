"""Built-in datasets: shapes in their natural layout, determinism, disjoint splits, the
DataLoader path, and the errors users see."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest
import torch

from morphsearch.data import TensorSplit, load_dataset
from morphsearch.errors import ConfigError


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_teacher_student_is_a_relu_teacher_with_gaussian_inputs() -> None:
    d = load_dataset("teacher_student", seed=3)
    assert (d.task, d.input_shape, d.num_outputs) == ("regression", (20,), 10)
    assert d.x_train.shape == (1000, 20) and d.y_train.shape == (1000, 10)
    assert d.y_train.dtype == torch.float32
    # Inputs are standard Gaussian (appendix D): mean ~0, std ~1 over 20k draws.
    assert abs(float(d.x_train.mean())) < 0.05
    assert abs(float(d.x_train.std()) - 1) < 0.05
    # The teacher is a function: a fresh load gives the same targets; another seed does not.
    again = load_dataset("teacher_student", seed=3)
    assert torch.equal(d.y_test, again.y_test)
    assert not torch.equal(d.y_train, load_dataset("teacher_student", seed=4).y_train)


def test_teacher_student_targets_lie_in_a_low_dimensional_relu_image() -> None:
    # targets = W2 relu(W1 x + b1) + b2: through a 4-unit hidden layer the centred targets
    # span at most 4 dimensions, yet they are not an affine function of x.
    d = load_dataset("teacher_student", seed=0, sizes=(20, 4, 10), n_train=300)
    y = d.y_train - d.y_train.mean(0)
    s = torch.linalg.svdvals(y.double())
    assert s[4:].max() < 1e-4 * s[0]  # rank <= 4 through a 4-unit hidden layer
    # Not affine in x: least squares on [x, 1] leaves a clear residual.
    a = torch.cat([d.x_train, torch.ones(300, 1)], 1).double()
    sol = torch.linalg.lstsq(a, d.y_train.double()).solution
    assert float((a @ sol - d.y_train).pow(2).mean()) > 1e-3


def test_digits_are_1x8x8_images_stratified_and_standardised() -> None:
    d = load_dataset("digits", seed=0)
    assert (d.task, d.input_shape, d.num_outputs) == ("classification", (1, 8, 8), 10)
    assert d.x_val.shape[1:] == (1, 8, 8)
    n = len(d.y_train) + len(d.y_val) + len(d.y_test)
    assert n == 1797 and d.y_train.dtype == torch.int64
    # Each class keeps its share (about 20% in test) in every split.
    counts = torch.bincount(d.y_test, minlength=10).float()
    assert counts.min() >= 33 and counts.max() <= 39
    # Standardised with training statistics: train pixels have mean 0, std 1 (or are 0).
    flat = d.x_train.reshape(len(d.x_train), 64)
    std = flat.std(0, unbiased=False)
    assert torch.allclose(flat.mean(0), torch.zeros(64), atol=1e-5)
    assert bool(((std - 1).abs() < 1e-4).logical_or(std == 0).all())
    # The former flat layout is the same numbers.
    vectors = load_dataset("digits", seed=0, image=False)
    assert vectors.input_shape == (64,)
    assert torch.equal(d.x_test.reshape(-1, 64), vectors.x_test)
    assert not torch.equal(load_dataset("digits", seed=1).y_test, d.y_test)


def test_loader_serves_each_sample_once_per_epoch_in_seeded_order() -> None:
    d = load_dataset("teacher_student", seed=0, n_train=100)
    x, y = d.split("train")
    loader = d.loader("train", 32, shuffle=True, seed=5)
    epoch1 = list(loader)
    epoch2 = list(loader)
    assert [len(b[0]) for b in epoch1] == [32, 32, 32, 4] and len(loader) == 4
    # every sample exactly once, each input still paired with its own target
    xs, ys = torch.cat([b[0] for b in epoch1]), torch.cat([b[1] for b in epoch1])
    order = [int(i) for i in torch.cdist(xs, x).argmin(1)]
    assert sorted(order) == list(range(100)) and torch.equal(ys, y[order])
    # the seed fixes the sequence of epochs; successive epochs differ
    again = list(d.loader("train", 32, shuffle=True, seed=5))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch1, again))
    assert not torch.equal(epoch1[0][0], epoch2[0][0])
    # unshuffled: the split in order; drop_last drops the short batch
    plain = list(d.loader("val", 64))
    assert torch.equal(torch.cat([b[0] for b in plain]), d.x_val)
    assert len(list(d.loader("train", 32, drop_last=True))) == 3


def test_in_memory_loader_fetches_a_batch_with_one_index(monkeypatch) -> None:
    # One batch is one tensor index (__getitems__), never per-sample __getitem__ + collate.
    def per_sample(self, index):
        raise AssertionError("per-sample fetch")

    monkeypatch.setattr(TensorSplit, "__getitem__", per_sample)
    d = load_dataset("digits", seed=0)
    x, y = next(iter(d.loader("train", 128, shuffle=True)))
    assert x.shape == (128, 1, 8, 8) and y.shape == (128,)


def test_loader_pins_memory_only_for_cuda_and_augments_only_training_batches() -> None:
    d = load_dataset("teacher_student", seed=0, n_train=10, n_val=10, n_test=10)
    assert d.loader("train", 4, device="cuda").pin_memory
    assert not d.loader("train", 4, device="cpu").pin_memory
    flipped = d.with_augment(_negate)
    x, _ = next(iter(flipped.loader("train", 10)))
    assert torch.equal(x, -d.x_train)
    x, _ = next(iter(flipped.loader("val", 10)))
    assert torch.equal(x, d.x_val)
    assert flipped.augment is _negate and d.augment is None  # frozen: a copy


def _negate(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return -x, y


def test_loader_with_worker_processes_gives_the_same_batches() -> None:
    d = load_dataset("teacher_student", seed=0, n_train=64).with_augment(_negate)
    main = list(d.loader("train", 16, shuffle=True, seed=2))
    workers = list(d.loader("train", 16, shuffle=True, seed=2, num_workers=2))
    assert len(main) == len(workers) == 4
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(main, workers))


def test_mnist1d_is_1x40_and_leaves_global_random_state_alone() -> None:
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(7)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(7)
    d = load_dataset("mnist1d", seed=0, num_samples=1000)
    assert (np.random.rand(), random.random()) == expected
    assert (d.input_shape, d.num_outputs, d.task) == ((1, 40), 10, "classification")
    assert len(d.y_train) + len(d.y_val) == 800 and len(d.y_test) == 200
    assert set(d.y_train.tolist()) == set(range(10))


def test_mnist1d_search_seed_moves_only_the_validation_split() -> None:
    pytest.importorskip("mnist1d")
    a = load_dataset("mnist1d", seed=0, num_samples=1000)
    b = load_dataset("mnist1d", seed=1, num_samples=1000)
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert _rows(a.x_train) | _rows(a.x_val) == _rows(b.x_train) | _rows(b.x_val)
    assert _rows(a.x_val) != _rows(b.x_val)
    # stratified: 10 % of each class's 80 training samples
    assert torch.bincount(a.y_val, minlength=10).tolist() == [8] * 10
    # another generation seed is other data
    other = load_dataset("mnist1d", seed=0, num_samples=1000, generation_seed=7)
    assert not torch.equal(other.x_test, a.x_test)


def test_mnist1d_val_size_draws_extra_samples_and_never_touches_train_or_test() -> None:
    pytest.importorskip("mnist1d")
    base = load_dataset("mnist1d", seed=0, num_samples=500)
    d = load_dataset("mnist1d", seed=0, num_samples=500, val_size=25)
    assert torch.equal(d.x_test, base.x_test)
    assert _rows(d.x_train) == _rows(base.x_train) | _rows(base.x_val)  # all 400 train
    assert len(d.y_train) == 400 and len(d.y_val) == 25
    assert not _rows(d.x_val) & (_rows(d.x_train) | _rows(d.x_test))
    assert torch.bincount(d.y_val, minlength=10).tolist() == [3] * 5 + [2] * 5
    # normalised like the default set (its mean 0 / std 1), not by their own statistics
    assert abs(float(d.x_val.mean())) < 0.2 and abs(float(d.x_val.std()) - 1) < 0.2
    moved = load_dataset("mnist1d", seed=1, num_samples=500, val_size=25)
    assert _rows(moved.x_val) != _rows(d.x_val)
    with pytest.raises(ConfigError, match="val_size 0 must be at least 1"):
        load_dataset("mnist1d", seed=0, num_samples=500, val_size=0)


@pytest.mark.slow
def test_mnist1d_default_is_the_packages_default_generation() -> None:
    pytest.importorskip("mnist1d")
    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())  # seed 42, 5000 samples
    d = load_dataset("mnist1d", seed=3)
    assert (len(d.y_train) + len(d.y_val), len(d.y_test)) == (4000, 1000)
    assert torch.equal(d.x_test[:, 0], torch.as_tensor(reference["x_test"], dtype=torch.float32))
    assert torch.equal(d.y_test, torch.as_tensor(reference["y_test"]))
    train = torch.as_tensor(reference["x"], dtype=torch.float32)
    assert _rows(d.x_train[:, 0]) | _rows(d.x_val[:, 0]) == _rows(train)


def test_mnist1d_without_the_package_names_the_install_command(monkeypatch) -> None:
    from morphsearch.data import _mnist1d

    _mnist1d._generate.cache_clear()
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ConfigError, match=r'pip install "morphsearch\[mnist1d\]"'):
        load_dataset("mnist1d", seed=0, num_samples=100)


def test_unknown_dataset_and_option_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid datasets: cifar10, digits, factory, "
                                          "image_folder, mnist1d, npz, teacher_student"):
        load_dataset("cifar")
    with pytest.raises(ConfigError, match="no option 'imgae'; valid options: image"):
        load_dataset("digits", imgae=True)
    with pytest.raises(ConfigError, match="dataset split 'dev' does not exist"):
        load_dataset("digits").split("dev")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="batch_size 0 must be at least 1"):
        load_dataset("digits").loader("train", 0)
