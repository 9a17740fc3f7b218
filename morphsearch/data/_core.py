"""The :class:`Dataset` value type, its in-memory splits, its loaders and the registry."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data.dataloader import default_collate

from morphsearch.data.augment import SeededAugment
from morphsearch.errors import ConfigError
from morphsearch.registry import Registry

__all__ = [
    "DATASETS",
    "Augment",
    "Dataset",
    "Split",
    "Task",
    "TensorSplit",
    "list_datasets",
    "load_dataset",
]

Task = Literal["classification", "regression"]
Split = Literal["train", "val", "test"]
Batch = tuple[torch.Tensor, torch.Tensor]
# A training-batch transform: (inputs, targets) -> (inputs, targets). It runs in the
# DataLoader (in its worker processes when num_workers > 0), so it must be picklable.
Augment = Callable[[torch.Tensor, torch.Tensor], Batch]
Loader = Callable[..., "Dataset"]
_AUGMENT_SEED = 0x5EED_A06  # keeps the augmentation's draws apart from the shuffle's

DATASETS: Registry[Loader] = Registry("dataset")


class TensorSplit(TorchDataset[Batch]):
    """One split held in memory as two tensors.

    ``__getitems__`` makes a DataLoader fetch a whole batch with one tensor index
    instead of indexing and collating sample by sample (torch's map-style fetcher
    calls it when the dataset defines it). ``transform``, when given, maps a batch of
    stored inputs to model inputs (CIFAR-10 keeps uint8 pixels and scales per batch).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(x) != len(y):  # loaders check user data first, with a better message
            raise ValueError(f"{len(x)} inputs but {len(y)} targets")
        self.x, self.y, self.transform = x, y, transform
        self._transformed: torch.Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:
        # worker processes get the stored inputs, not the whole transformed copy
        return {**self.__dict__, "_transformed": None}

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> Batch:
        x = self.x[index]
        return (self.transform(x[None])[0] if self.transform else x), self.y[index]

    def __getitems__(self, indices: Sequence[int] | torch.Tensor) -> Batch:
        # the loader's batch sampler gives index tensors; other samplers give int lists
        idx = indices if isinstance(indices, torch.Tensor) else torch.tensor(
            indices, dtype=torch.long)
        x = self.x[idx]
        return (self.transform(x) if self.transform else x), self.y[idx]

    def tensors(self) -> Batch:
        """The whole split as ``(inputs, targets)`` (transformed once, then kept: callers
        such as ``data.x_train[:32]`` would otherwise transform every sample per call)."""
        if self.transform is None:
            return self.x, self.y
        if self._transformed is None:
            self._transformed = self.transform(self.x)
        return self._transformed, self.y


class _TensorBatches(torch.utils.data.Sampler[torch.Tensor]):
    """Batches of indices as tensors: a shuffled epoch is one ``randperm`` split in chunks.

    Each ``__iter__`` draws the next permutation from ``generator``, so successive epochs
    differ and the whole sequence is fixed by the seed.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, drop_last: bool,
                 generator: torch.Generator) -> None:
        self.n, self.batch_size, self.shuffle, self.drop_last = n, batch_size, shuffle, drop_last
        self.generator = generator

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = torch.randperm(self.n, generator=self.generator) if self.shuffle else (
            torch.arange(self.n))
        for chunk in order.split(self.batch_size):
            if self.drop_last and len(chunk) < self.batch_size:
                return
            yield chunk

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)


class _InMemoryLoader(DataLoader[Batch]):
    """A DataLoader over a :class:`TensorSplit` that, in the main process, fetches each
    batch directly: torch's single-process iterator wraps every batch in a profiler
    record_function and fetcher calls, which cost several times the tensor index itself
    (bench/data_loader.py). With workers it is the plain DataLoader."""

    def __iter__(self) -> Iterator[Batch]:  # type: ignore[override]
        if self.num_workers > 0:
            yield from super().__iter__()
            return
        split: TensorSplit = self.dataset  # type: ignore[assignment]
        for idx in self.batch_sampler:  # type: ignore[union-attr]
            x, y = self.collate_fn(split.__getitems__(idx))  # type: ignore[arg-type]
            yield (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)


def _batch_as_is(batch: Batch) -> Batch:
    return batch


@dataclass
class _Augmented:
    """Collate, then augment (a class, not a closure, so worker processes can pickle it).

    A :class:`~morphsearch.data.augment.SeededAugment` draws from a generator seeded
    with the loader's ``seed``, or in a worker process with that worker's seed (which
    torch derives from the loader's generator), so augmented batches repeat with it.
    """

    collate: Callable[[Any], Batch]
    augment: Augment
    seed: int = 0
    _generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_generator": None}  # each process seeds its own

    def __call__(self, samples: Any) -> Batch:
        x, y = self.collate(samples)
        if not isinstance(self.augment, SeededAugment):
            return self.augment(x, y)
        if self._generator is None:
            worker = torch.utils.data.get_worker_info()
            seed = worker.seed if worker is not None else self.seed
            self._generator = torch.Generator().manual_seed(_AUGMENT_SEED ^ seed)
        return self.augment.apply(x, y, self._generator)


@dataclass(frozen=True)
class Dataset:
    """A dataset with fixed train/validation/test splits.

    Inputs are float32 of shape ``(n, *input_shape)`` in the data's natural layout
    (``(1, 40)`` for MNIST-1D, ``(1, 8, 8)`` for digits, ``(20,)`` for teacher-student).
    Targets are int64 labels of shape ``(n,)`` for classification, float32 of shape
    ``(n, num_outputs)`` for regression. ``augment``, when set, transforms every
    training batch that :meth:`loader` serves (never validation or test batches).
    """

    name: str
    task: Task
    input_shape: tuple[int, ...]
    num_outputs: int
    train: TorchDataset[Batch]
    val: TorchDataset[Batch]
    test: TorchDataset[Batch]
    augment: Augment | None = None

    def split(self, which: Split) -> Batch:
        """``(inputs, targets)`` of a whole split (for probes, tests and small sets).

        Raises:
            ConfigError: ``which`` is not train, val or test.
        """
        part = self._part(which)
        if isinstance(part, TensorSplit):
            return part.tensors()
        return _materialised(part)

    def loader(
        self,
        which: Split,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
        num_workers: int = 0,
    ) -> DataLoader[Batch]:
        """A DataLoader of ``(inputs, targets)`` batches of one split.

        Batches stay on the CPU (pinned when ``device`` is CUDA, so the consumer's
        ``.to(device, non_blocking=True)`` overlaps the copy). Shuffled epochs follow
        ``seed``: iterating the loader again gives the next permutation.

        Raises:
            ConfigError: unknown split or a batch size below 1.
        """
        part = self._part(which)
        if batch_size < 1:
            raise ConfigError(f"batch_size {batch_size} must be at least 1")
        pin = device is not None and torch.device(device).type == "cuda"
        generator = torch.Generator().manual_seed(seed)
        augment = self.augment if which == "train" else None
        if isinstance(part, TensorSplit):
            sampler = _TensorBatches(len(part), batch_size, shuffle, drop_last, generator)
            collate: Callable[[Any], Batch] = _batch_as_is
            # tensor index batches: torch's fetcher passes them to __getitems__ as they are
            # the loader's own generator seeds its worker processes (their augment draws)
            workers_seed = torch.Generator().manual_seed(_AUGMENT_SEED ^ seed)
            return _InMemoryLoader(part, batch_sampler=sampler,  # type: ignore[arg-type]
                              num_workers=num_workers, generator=workers_seed,
                              pin_memory=pin, collate_fn=_with(collate, augment, seed))
        return DataLoader(part, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                          generator=generator, num_workers=num_workers, pin_memory=pin,
                          collate_fn=_with(default_collate, augment, seed))

    def with_augment(self, augment: Augment | None) -> Dataset:
        """A copy whose training batches pass through ``augment``."""
        return replace(self, augment=augment)

    def _part(self, which: str) -> TorchDataset[Batch]:
        if which not in ("train", "val", "test"):
            raise ConfigError(f"dataset split {which!r} does not exist; use train, val or test")
        part: TorchDataset[Batch] = getattr(self, which)
        return part

    # The whole-tensor attributes of the former API, kept for probes, tests and benches.
    @property
    def x_train(self) -> torch.Tensor:
        return self.split("train")[0]

    @property
    def y_train(self) -> torch.Tensor:
        return self.split("train")[1]

    @property
    def x_val(self) -> torch.Tensor:
        return self.split("val")[0]

    @property
    def y_val(self) -> torch.Tensor:
        return self.split("val")[1]

    @property
    def x_test(self) -> torch.Tensor:
        return self.split("test")[0]

    @property
    def y_test(self) -> torch.Tensor:
        return self.split("test")[1]


def _with(
    collate: Callable[[Any], Batch], augment: Augment | None, seed: int
) -> Callable[[Any], Batch]:
    return collate if augment is None else _Augmented(collate, augment, seed)


def _materialised(part: TorchDataset[Batch]) -> Batch:
    """Stack a map-style dataset's samples (cached per object: splits are immutable)."""
    return _stacked(part)


@functools.lru_cache(maxsize=8)
def _stacked(part: TorchDataset[Batch]) -> Batch:
    batch: Batch = default_collate([part[i] for i in range(len(part))])  # type: ignore[arg-type]
    return batch


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return DATASETS.names()


def load_dataset(name: str, *, seed: int = 0, **options: Any) -> Dataset:
    """Load (or generate) a dataset with splits fixed by ``seed``.

    Args:
        name: a registered dataset (:func:`list_datasets`): ``teacher_student``,
            ``digits``, ``mnist1d``, ``npz``, ``cifar10``, ``image_folder``, ``factory``.
        seed: seeds the validation split (and generation, where the data is generated
            and the dataset has no fixed generation seed of its own).
        **options: the dataset's keyword options (see each loader's docstring).

    Returns:
        The :class:`Dataset`.

    Raises:
        ConfigError: unknown name or option, missing file or key, bad data (one line
            naming the array or file and the fix).
    """
    loader = DATASETS.get(name)
    params = inspect.signature(loader).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = [p for p, v in params.items() if v.kind is v.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        valid = ", ".join(p for p in accepted if p != "seed")
        raise ConfigError(
            f"dataset {name!r} has no option {unknown[0]!r}; valid options: {valid or 'none'}"
        )
    return loader(seed=seed, **options)
