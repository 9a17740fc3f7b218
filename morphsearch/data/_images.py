"""``image_folder``: a folder of PNG/JPEG files, one sub-folder per class.

Layout (class names are the sub-folder names, sorted; label i is the i-th name)::

    root/cat/*.png  root/dog/*.jpg          # train; val and test carved (stratified)
    root/val/cat/…  root/test/cat/…         # optional: used as given when present
    root/train/cat/…                        # optional: train under its own folder

Images are read lazily (in the DataLoader's workers when ``num_workers > 0``),
converted to ``mode`` (RGB or L), resized to ``size`` and scaled to [0, 1]. Every file's
header is read at load time so that an unreadable file is refused before a search starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from morphsearch.data._arrays import stratified_split
from morphsearch.data._core import DATASETS, Dataset
from morphsearch.errors import ConfigError

SUFFIXES = (".png", ".jpg", ".jpeg")
MODES = {"RGB": 3, "L": 1}
Files = tuple[tuple[str, ...], tuple[int, ...]]  # paths and their labels


class ImageFiles(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """Image files and labels; ``[i]`` reads file i as a ``(C, H, W)`` float32 tensor."""

    def __init__(self, files: Files, size: tuple[int, int], mode: str) -> None:
        self.paths, self.labels = files
        self.size, self.mode = size, mode

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        height, width = self.size
        with Image.open(self.paths[index]) as image:
            pixels = np.asarray(image.convert(self.mode).resize((width, height)), np.float32)
        x = torch.from_numpy(pixels / 255.0).reshape(height, width, -1).permute(2, 0, 1)
        return x.contiguous(), torch.tensor(self.labels[index], dtype=torch.int64)


@DATASETS.register("image_folder")
def image_folder(
    *,
    seed: int,
    root: str | Path | None = None,
    size: Sequence[int] | None = None,
    mode: str = "RGB",
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> Dataset:
    """Images in class sub-folders of ``root`` (see the module docstring).

    Options: ``root`` (required), ``size`` ([H, W]; default: the first training image's),
    ``mode`` (RGB or L), ``val_fraction`` (0.1) and ``test_fraction`` (0.2) for the
    splits ``root`` has no folder for, stratified by ``seed``.
    """
    try:
        import PIL  # noqa: F401  (read in ImageFiles; checked here for a clear error)
    except ImportError:
        raise ConfigError('dataset "image_folder" needs Pillow: pip install pillow') from None
    if root is None:
        raise ConfigError('dataset "image_folder" needs option root=<folder of class folders>')
    if mode not in MODES:
        raise ConfigError(f"image_folder mode {mode!r} is not one of {', '.join(MODES)}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise ConfigError(f"image_folder root {str(base)!r} is not a folder; check the path")
    train_dir = base / "train" if (base / "train").is_dir() else base
    classes = _class_names(train_dir, skip=("val", "test") if train_dir == base else ())
    parts = {"train": _files(train_dir, classes, required=True)}
    for split in ("val", "test"):
        if (base / split).is_dir():
            parts[split] = _files(base / split, classes, required=False)
    parts = _carve(parts, val_fraction, test_fraction, seed)
    for paths, _ in parts.values():
        _check_readable(paths)
    shape = _size(size, parts["train"][0][0])
    splits = {s: ImageFiles(files, shape, mode) for s, files in parts.items()}
    return Dataset(f"image_folder:{base.name}", "classification", (MODES[mode], *shape),
                   len(classes), splits["train"], splits["val"], splits["test"])


def _class_names(folder: Path, skip: tuple[str, ...]) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in skip)
    if not names:
        raise ConfigError(
            f"image_folder {str(folder)!r} has no class sub-folders; put each class's images "
            "in a folder named after the class"
        )
    return names


def _files(folder: Path, classes: list[str], *, required: bool) -> Files:
    known = set(classes)
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in known)
    if extra:
        raise ConfigError(
            f"image_folder {str(folder / extra[0])!r} is a class the training folder lacks; "
            f"use the training classes ({', '.join(classes)})"
        )
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        images = sorted(str(p) for p in (folder / name).glob("*")
                        if p.suffix.lower() in SUFFIXES and p.is_file())
        if required and not images:
            raise ConfigError(
                f"image_folder class folder {str(folder / name)!r} has no PNG or JPEG files; "
                "add images or remove the folder"
            )
        paths += images
        labels += [label] * len(images)
    return tuple(paths), tuple(labels)


def _carve(parts: dict[str, Files], val_fraction: float, test_fraction: float,
           seed: int) -> dict[str, Files]:
    """Stratified val/test splits of the training files for splits without a folder."""
    missing = [s for s in ("val", "test") if s not in parts]
    if not missing:
        return parts
    paths, labels = parts["train"]
    fractions = (val_fraction if "val" in missing else 0.0,
                 test_fraction if "test" in missing else 0.0)
    idx = dict(zip(("train", "val", "test"),
                   stratified_split(np.asarray(labels), fractions, seed)))
    for split in ["train", *missing]:
        parts[split] = (tuple(paths[i] for i in idx[split]),
                        tuple(labels[i] for i in idx[split]))
    return parts


def _size(size: Sequence[int] | None, first: str) -> tuple[int, int]:
    from PIL import Image

    if size is None:
        with Image.open(first) as image:
            width, height = image.size
        return int(height), int(width)
    if len(size) != 2 or min(int(s) for s in size) < 1:
        raise ConfigError(f"image_folder size {list(size)} must be [height, width], both >= 1")
    return int(size[0]), int(size[1])


def _check_readable(paths: Sequence[str]) -> None:
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path):
                pass  # the header only: cheap, and catches non-images and truncated headers
        except Exception as exc:  # PIL raises several unrelated types for a bad file
            raise ConfigError(
                f"image_folder file {path!r} is not a readable image ({type(exc).__name__}); "
                "replace or remove it"
            ) from None
