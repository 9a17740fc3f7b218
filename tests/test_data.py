"""Datasets: shapes, dtypes, determinism, disjoint splits and the errors users see."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from morphsearch.data import load_dataset
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


def test_digits_flat_and_image_splits_are_stratified_and_standardised() -> None:
    d = load_dataset("digits", seed=0)
    assert (d.task, d.input_shape, d.num_outputs) == ("classification", (64,), 10)
    n = len(d.y_train) + len(d.y_val) + len(d.y_test)
    assert n == 1797 and d.y_train.dtype == torch.int64
    # Each class keeps its share (about 20% in test) in every split.
    counts = torch.bincount(d.y_test, minlength=10).float()
    assert counts.min() >= 33 and counts.max() <= 39
    # Standardised with training statistics: train features have mean 0, std 1 (or are 0).
    std = d.x_train.std(0, unbiased=False)
    assert torch.allclose(d.x_train.mean(0), torch.zeros(64), atol=1e-5)
    assert bool(((std - 1).abs() < 1e-4).logical_or(std == 0).all())
    img = load_dataset("digits", seed=0, image=True)
    assert img.input_shape == (1, 8, 8) and img.x_val.shape[1:] == (1, 8, 8)
    assert torch.equal(img.x_test.reshape(-1, 64), d.x_test)
    assert not torch.equal(load_dataset("digits", seed=1).y_test, d.y_test)


def test_mnist1d_is_generated_locally_and_leaves_numpy_state_alone() -> None:
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    d = load_dataset("mnist1d", seed=0, num_samples=1000)
    assert np.random.rand() == expected
    assert (d.input_shape, d.num_outputs, d.task) == ((40,), 10, "classification")
    assert len(d.y_train) + len(d.y_val) == 800 and len(d.y_test) == 200
    assert set(d.y_train.tolist()) == set(range(10))


def test_mnist1d_without_the_package_names_the_install_command(monkeypatch) -> None:
    from morphsearch import data

    data._mnist1d_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ConfigError, match=r'pip install "morphsearch\[mnist1d\]"'):
        load_dataset("mnist1d", seed=0, num_samples=100)
    data._mnist1d_arrays.cache_clear()


def test_npz_round_trip_with_and_without_validation_split(tmp_path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(50, 3)), "y_train": rng.integers(0, 4, 50),
        "x_test": rng.normal(size=(10, 3)), "y_test": rng.integers(0, 4, 10),
    }
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    d = load_dataset("npz", path=str(path), val_fraction=0.2)
    assert (d.task, d.input_shape, d.num_outputs) == ("classification", (3,), 4)
    assert (len(d.y_train), len(d.y_val)) == (40, 10)
    assert _rows(d.x_train) | _rows(d.x_val) == _rows(torch.tensor(arrays["x_train"]).float())
    reg = tmp_path / "reg.npz"
    np.savez(reg, **{**arrays, "y_train": rng.normal(size=50), "y_test": rng.normal(size=10),
                     "x_val": rng.normal(size=(5, 3)), "y_val": rng.normal(size=5)})
    r = load_dataset("npz", path=reg)
    assert r.task == "regression" and r.y_val.shape == (5, 1) and r.num_outputs == 1


def test_npz_errors_name_the_file_and_the_missing_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.npz.*does not exist"):
        load_dataset("npz", path=tmp_path / "nothere.npz")
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((4, 2)), y_train=np.zeros(4, dtype=int), x_test=np.zeros((2, 2)))
    with pytest.raises(ConfigError, match=r"partial\.npz.*no array 'y_test'"):
        load_dataset("npz", path=path)
    with pytest.raises(ConfigError, match="needs option path"):
        load_dataset("npz")


def test_unknown_dataset_and_option_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="valid datasets: digits, mnist1d, npz, teacher_student"):
        load_dataset("cifar")
    with pytest.raises(ConfigError, match="no option 'imgae'; valid options: image"):
        load_dataset("digits", imgae=True)
    with pytest.raises(ConfigError, match="dataset split 'dev' does not exist"):
        load_dataset("digits").split("dev")  # type: ignore[arg-type]
