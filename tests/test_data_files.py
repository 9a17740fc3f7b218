"""A user's own data: npz files, image folders, the CIFAR-10 binary release, a factory
function; and bad data refused with one line naming the array or file and the fix."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from morphsearch.data import load_dataset
from morphsearch.errors import ConfigError
from morphsearch.search.config import DatasetConfig


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def _arrays(n: int = 50, shape: tuple[int, ...] = (3,)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(n, *shape)), "y_train": np.arange(n) % 4,
        "x_test": rng.normal(size=(10, *shape)), "y_test": np.arange(10) % 4,
    }


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return path


# ----------------------------------------------------------------------------- npz


def test_npz_round_trip_with_and_without_validation_split(tmp_path: Path) -> None:
    arrays = _arrays()
    d = load_dataset("npz", path=str(_npz(tmp_path, **arrays)), val_fraction=0.2)
    assert (d.task, d.input_shape, d.num_outputs) == ("classification", (3,), 4)
    assert (len(d.y_train), len(d.y_val)) == (40, 10)
    assert _rows(d.x_train) | _rows(d.x_val) == _rows(torch.tensor(arrays["x_train"]).float())
    rng = np.random.default_rng(1)
    reg = _npz(tmp_path, **{**arrays, "y_train": rng.normal(size=50), "y_test": rng.normal(
        size=10), "x_val": rng.normal(size=(5, 3)), "y_val": rng.normal(size=5)})
    r = load_dataset("npz", path=reg)
    assert r.task == "regression" and r.y_val.shape == (5, 1) and r.num_outputs == 1


def test_npz_keeps_the_arrays_own_trailing_shape(tmp_path: Path) -> None:
    d = load_dataset("npz", path=_npz(tmp_path, **_arrays(shape=(1, 40))))
    assert d.input_shape == (1, 40) and d.x_val.shape[1:] == (1, 40)


@pytest.mark.parametrize(("change", "message"), [
    ({"y_train": np.arange(40) % 4},
     r"x_train has 50 rows but y_train has 40; give inputs and targets the same number"),
    ({"x_train": np.where(np.arange(50)[:, None] == 47, np.nan, np.ones((50, 3)))},
     r"x_train has NaN or inf in 1 row\(s\) \(first: row 47\); remove or impute"),
    ({"x_val": np.ones((5, 3)), "y_val": np.arange(5) % 4,
      "x_test": np.full((10, 3), np.inf)}, r"x_test has NaN or inf in 10 row"),
    ({"x_val": np.full((5, 3), np.nan), "y_val": np.arange(5) % 4}, r"x_val has NaN or inf"),
    ({"y_test": np.arange(10) - 1}, r"y_test has label -1, outside the classes 0\.\.3"),
    ({"y_test": np.full(10, 7)}, r"y_test has label 7, outside the classes 0\.\.3"),
    ({"y_train": np.arange(50) % 4 + 0.5, "y_test": np.zeros(10)},
     r"y_train has non-integer labels \(e\.g\. 0\.5\); classification needs integer"),
    ({"y_train": np.full(50, np.nan)}, r"y_train has NaN or inf"),
])
def test_npz_bad_data_is_refused_naming_the_array(tmp_path: Path, change: dict[str, np.ndarray],
                                                  message: str) -> None:
    path = _npz(tmp_path, **{**_arrays(), **change})
    task = "classification" if "non-integer" in message else "auto"
    with pytest.raises(ConfigError, match=r"^dataset 'npz:mine\.npz': " + message):
        load_dataset("npz", path=path, task=task)


def test_npz_errors_name_the_file_and_the_four_arrays_it_needs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.npz.*does not exist"):
        load_dataset("npz", path=tmp_path / "nothere.npz")
    partial = _npz(tmp_path, x_train=np.zeros((4, 2)), y_train=np.zeros(4, dtype=int),
                   x_test=np.zeros((2, 2)))
    with pytest.raises(ConfigError, match=r"mine\.npz.*no array 'y_test'; it needs x_train, "
                                          r"y_train, x_test, y_test \(x_val, y_val optional\)"):
        load_dataset("npz", path=partial)
    with pytest.raises(ConfigError, match="needs option path"):
        load_dataset("npz")
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ConfigError, match=r"text\.npz' is not a readable \.npz archive"):
        load_dataset("npz", path=text)


# ----------------------------------------------------------------------------- image folder

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}


def _images(folder: Path, per_class: int, size: tuple[int, int] = (6, 4)) -> None:
    from PIL import Image

    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            suffix = ".png" if i % 2 else ".jpg"
            Image.new("RGB", size, colour).save(folder / name / f"{i}{suffix}")


def test_image_folder_reads_class_folders_and_carves_stratified_splits(tmp_path: Path) -> None:
    _images(tmp_path, per_class=10)
    d = load_dataset("image_folder", root=tmp_path, size=[3, 5], seed=0)
    assert (d.task, d.input_shape, d.num_outputs) == ("classification", (3, 3, 5), 3)
    x, y = d.split("train")
    assert (len(y), len(d.y_val), len(d.y_test)) == (21, 3, 6)  # 7/1/2 per class
    # label i is the i-th class name (blue, green, red), and its pixels are that colour
    for label, colour in enumerate(COLOURS.values()):
        pixel = x[y == label][:, :, 1, 2]
        assert torch.allclose(pixel, torch.tensor(colour) / 255.0, atol=0.02)
    # served in mini-batches by worker processes, the same as in the main process
    batches = list(d.loader("train", 8, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), x)


def test_image_folder_uses_val_and_test_folders_when_present(tmp_path: Path) -> None:
    _images(tmp_path / "train", per_class=4)
    _images(tmp_path / "val", per_class=2)
    _images(tmp_path / "test", per_class=1)
    d = load_dataset("image_folder", root=tmp_path, mode="L")
    assert d.input_shape == (1, 4, 6)  # the first image's size, greyscale
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (12, 6, 3)
    assert d.y_test.tolist() == [0, 1, 2]


def test_image_folder_refuses_empty_class_folders_and_unreadable_files(tmp_path: Path) -> None:
    _images(tmp_path, per_class=2)
    (tmp_path / "yellow").mkdir()
    with pytest.raises(ConfigError, match=r"class folder '.*yellow' has no PNG or JPEG files; "
                                          r"add images or remove the folder"):
        load_dataset("image_folder", root=tmp_path)
    (tmp_path / "yellow" / "0.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"file '.*yellow/0\.png' is not a readable image"):
        load_dataset("image_folder", root=tmp_path)
    with pytest.raises(ConfigError, match=r"image_folder root '.*nowhere' is not a folder"):
        load_dataset("image_folder", root=tmp_path / "nowhere")


# ----------------------------------------------------------------------------- CIFAR-10


def _cifar(root: Path, per_batch: int = 4, test: int = 3) -> dict[str, np.ndarray]:
    """Files in the binary release's format: records of 1 label byte + 3072 pixel bytes."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written: dict[str, np.ndarray] = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = test if name == "test_batch" else per_batch
        records = rng.integers(0, 256, size=(n, 3073), dtype=np.uint8)
        records[:, 0] = (np.arange(n) + k * n) % 10
        records.tofile(folder / f"{name}.bin")
        written[name] = records
    return written


def test_cifar10_reads_the_binary_release_channel_first(tmp_path: Path) -> None:
    written = _cifar(tmp_path)
    d = load_dataset("cifar10", root=tmp_path, val_fraction=0.0)
    assert (d.task, d.input_shape, d.num_outputs) == ("classification", (3, 32, 32), 10)
    x_test, y_test = d.split("test")
    assert y_test.tolist() == written["test_batch"][:, 0].tolist() == [5, 6, 7]
    # pixel bytes are 1024 red, 1024 green, 1024 blue, each row-major 32x32
    train = np.concatenate([written[f"data_batch_{i}"] for i in range(1, 6)])
    pixels = train[:, 1:].reshape(-1, 3, 32, 32).astype(np.float64)
    mean, std = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))
    red = (written["test_batch"][0, 1 + 32 * 5 + 7] - mean[0]) / std[0]
    assert abs(float(x_test[0, 0, 5, 7]) - red) < 1e-4
    x, y = d.split("train")
    assert torch.equal(y, torch.as_tensor(train[:, 0].astype(np.int64)))
    # standardised per channel with the training split's statistics
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert next(iter(d.loader("train", 5)))[0].dtype == torch.float32
    # worker processes get the uint8 pixels and standardise them the same way
    batches = list(d.loader("train", 8, num_workers=2))
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    carved = load_dataset("cifar10", root=tmp_path / "cifar-10-batches-bin", val_fraction=0.5)
    assert (len(carved.y_train), len(carved.y_val)) == (10, 10)


def test_cifar10_errors_name_the_file_and_the_fix(tmp_path: Path) -> None:
    _cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-bin"
    (folder / "data_batch_3.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(ConfigError, match=r"data_batch_3\.bin' has 3000 bytes, not a whole "
                                          r"number of 3073-byte records"):
        load_dataset("cifar10", root=tmp_path)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(ConfigError, match=r"data_batch_3\.bin' does not exist; set root"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(ConfigError, match="needs option root"):
        load_dataset("cifar10")


# ----------------------------------------------------------------------------- factory

FACTORY = '''
import numpy as np
import torch
from torch.utils.data import TensorDataset

def tensors(n=30, seed=0):
    g = np.random.default_rng(seed)
    def pair(m):
        return torch.tensor(g.normal(size=(m, 2, 3)), dtype=torch.float32), torch.arange(m) % 3
    return pair(n), pair(6), pair(6)

def datasets(n=12):
    x = torch.randn(n, 5)
    return {"train": TensorDataset(x, torch.arange(n) % 2), "val": TensorDataset(x, torch.arange(n) % 2),
            "test": TensorDataset(x[:4], torch.arange(4) % 2)}

def broken():
    raise RuntimeError("disk on fire")

def nothing():
    return None

def nan_rows():
    x = torch.zeros(4, 2)
    x[2, 1] = float("nan")
    return (x, torch.arange(4) % 2), (x[:1] * 0, torch.zeros(1, dtype=torch.long)), (torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "my_data.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_data", raising=False)
    return "my_data"


def test_factory_returns_tensor_pairs_or_torch_datasets(user_module: str) -> None:
    d = load_dataset("factory", factory=f"{user_module}:tensors", n=24, seed=5)
    assert (d.name, d.task, d.input_shape, d.num_outputs) == (
        "factory:tensors", "classification", (2, 3), 3)
    assert len(d.y_train) == 24
    again = load_dataset("factory", factory=f"{user_module}:tensors", n=24, seed=5)
    assert torch.equal(again.x_train, d.x_train)  # the seed reaches the function
    t = load_dataset("factory", factory=f"{user_module}:datasets")
    assert (t.input_shape, t.num_outputs, len(t.test)) == ((5,), 2, 4)
    x, y = next(iter(t.loader("train", 5, shuffle=True)))
    assert x.shape == (5, 5) and y.shape == (5,)


def test_factory_errors_name_the_factory_and_the_fix(user_module: str) -> None:
    cases = {
        "my_data": "must be written 'package.module:function'",
        "not_a_module_xyz:make": r"cannot import 'not_a_module_xyz' .*make the module "
                                 "importable on every worker",
        "my_data:missing": "module 'my_data' has no 'missing'; check the function's name",
        "my_data:broken": "raised RuntimeError: disk on fire; fix the function",
        "my_data:nothing": r"returned NoneType; return a Dataset, or \(train, val, test\)",
        "my_data:nan_rows": r"x_train has NaN or inf in 1 row\(s\) \(first: row 2\)",
    }
    for target, message in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_dataset("factory", factory=target)


# ----------------------------------------------------------------------------- config


def test_dataset_config_validates_names_against_the_registry() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; valid datasets: cifar10, "
                                         "digits, factory, image_folder"):
        DatasetConfig(name="cifar")
    with pytest.raises(ValueError, match="'name' or 'factory' is required"):
        DatasetConfig()
    with pytest.raises(ValueError, match="not both"):
        DatasetConfig(name="digits", factory="a.b:c")
    with pytest.raises(ValueError, match="arrays x_train, y_train, x_test, y_test"):
        DatasetConfig(name="npz")
    config = DatasetConfig(factory="my_data:tensors", options={"n": 24, "sizes": [1, 2]})
    assert config.name == "factory"
    assert config.loader_options() == {"n": 24, "sizes": (1, 2), "factory": "my_data:tensors"}
    folder = DatasetConfig(name="image_folder", options={"root": "imgs", "size": [28, 28]})
    assert hash(tuple(sorted(folder.loader_options().items())))  # keys a worker's cache


def test_a_config_naming_an_unknown_dataset_gets_one_line_with_the_valid_names(
        tmp_path: Path) -> None:
    from morphsearch.search.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("seed_graph: {builder: mlp}\ndataset: {name: mnist}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: field 'dataset': ")
    assert "unknown dataset 'mnist'; valid datasets: cifar10, digits, factory" in message
    path.write_text("seed_graph: {builder: mlp}\n"
                    "dataset: {factory: 'my_data:tensors', options: {n: 24}}\n")
    config = load_config(path)
    assert (config.dataset.name, config.dataset.factory) == ("factory", "my_data:tensors")
