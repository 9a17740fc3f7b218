"""Datasets: built-in (teacher-student, digits, MNIST-1D), files (npz, CIFAR-10 binary,
image folders) and a user's own factory function, all as one :class:`Dataset` type.

Every loader returns a frozen :class:`Dataset` whose train/validation/test splits are
``torch.utils.data.Dataset`` objects fixed by the name, the options and ``seed``, so a
search and its replays see the same data; :meth:`Dataset.loader` serves batches.
Inputs keep their natural layout: an MLP seed flattens its own input.

>>> data = load_dataset("digits", seed=0)
>>> data.input_shape, data.num_outputs, data.task
((1, 8, 8), 10, 'classification')
>>> x, y = next(iter(data.loader("train", 32, shuffle=True)))
>>> tuple(x.shape), tuple(y.shape)
((32, 1, 8, 8), (32,))
"""

from morphsearch.data import _builtin, _factory, _files, _images, _mnist1d  # noqa: F401
from morphsearch.data._arrays import from_arrays
from morphsearch.data._core import (
    DATASETS,
    Augment,
    Dataset,
    Split,
    Task,
    TensorSplit,
    list_datasets,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "Augment",
    "Dataset",
    "Split",
    "Task",
    "TensorSplit",
    "from_arrays",
    "list_datasets",
    "load_dataset",
]
