"""Export a grown architecture: graph, weights, ONNX and torch.export files, model card.

An export folder holds ``graph.json`` (the graph file), ``weights.safetensors`` (structure
hash, search and architecture id in the metadata), ``model.onnx`` and ``model.pt2``
(both with a dynamic batch axis) and ``MODEL_CARD.md``. Every file is written into a
temporary folder beside the destination, which is renamed into place only after the
ONNX and torch.export programs agree with PyTorch on probe batches of several sizes:
a failed export leaves nothing half-written.

Nothing here unpickles anything: :func:`load` reads ``graph.json`` and safetensors
only (``model.pt2`` is for deployment and is never read back by morphsearch), both
through :mod:`morphsearch.arch.io`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from morphsearch.arch import load as load_graph
from morphsearch.arch.io import graph_to_bytes, save_weights, weights_metadata
from morphsearch.artifacts import read_architecture
from morphsearch.errors import ConfigError, ExportError, NotFound, WeightsError, first_line

if TYPE_CHECKING:
    from morphsearch.arch import Architecture

__all__ = [
    "FORMATS",
    "GRAPH_FILE",
    "TOLERANCE",
    "WEIGHTS_FILE",
    "ExportResult",
    "export_architecture",
    "export_from_store",
    "load_module",
    "load_architecture",
    "parse_formats",
]

FORMATS = ("onnx", "pt2", "safetensors")
GRAPH_FILE, WEIGHTS_FILE = "graph.json", "weights.safetensors"
ONNX_FILE, PT2_FILE, CARD_FILE = "model.onnx", "model.pt2", "MODEL_CARD.md"
TOLERANCE = 1e-5  # |exported - torch| <= TOLERANCE * (1 + |torch|), elementwise
PROBE_SIZES = (1, 3, 17)  # batch sizes: 1 and odd sizes catch a batch axis baked in


@dataclass(frozen=True)
class ExportResult:
    """A finished export: its folder, the files written and the parity errors measured.

    ``parity`` maps ``"onnx"``/``"pt2"`` to the largest absolute difference from PyTorch
    over every probe batch.
    """

    out: Path
    files: tuple[str, ...]
    parity: dict[str, float] = field(default_factory=dict)


def parse_formats(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"onnx,pt2"`` -> ``("onnx", "pt2")``; ``None`` means every format.

    Raises:
        ExportError: an unknown or empty format list (names the valid ones).
    """
    if text is None:
        return FORMATS
    items = text.split(",") if isinstance(text, str) else list(text)
    chosen = tuple(dict.fromkeys(item.strip().lower() for item in items if item.strip()))
    unknown = [item for item in chosen if item not in FORMATS]
    if unknown or not chosen:
        raise ExportError(
            f"unknown export format {', '.join(unknown) or '(none)'}; "
            f"choose from {','.join(FORMATS)} (comma-separated)"
        )
    return chosen


# ------------------------------------------------------------------ writing


def export_architecture(
    arch: Architecture,
    out: str | os.PathLike[str],
    *,
    formats: Sequence[str] = FORMATS,
    metadata: Mapping[str, str] | None = None,
    card: str | None = None,
    probe_sizes: Sequence[int] = PROBE_SIZES,
) -> ExportResult:
    """Write ``arch`` into the folder ``out`` in ``formats``, checking parity first.

    Args:
        arch: the architecture with its trained weights.
        out: destination folder; an earlier export there is replaced, any other
            non-empty folder is refused.
        formats: any of ``onnx``, ``pt2``, ``safetensors``; ``graph.json`` always.
        metadata: extra string metadata for the weights file (search, arch id).
        card: the model card (Markdown) to write as ``MODEL_CARD.md``.
        probe_sizes: batch sizes of the random probe inputs of the parity checks.

    Returns:
        The folder, the files written and the measured parity errors.

    Raises:
        ExportError: the destination is not usable, an exporter failed, or an exported
            program differs from PyTorch beyond :data:`TOLERANCE` (nothing is written).
    """
    formats = parse_formats(list(formats))
    dest = _checked_destination(Path(out))
    # the weights hash lets load_module() detect bytes changed inside a still-valid file
    meta = {**dict(metadata or {}), "weights_hash": arch.weights_hash}
    module = arch.to_module().eval()
    probes = _probes(arch, probe_sizes)
    parity: dict[str, float] = {}
    with _staging(dest) as stage:
        (stage / GRAPH_FILE).write_bytes(graph_to_bytes(arch))
        if "safetensors" in formats:
            save_weights(arch, stage / WEIGHTS_FILE, metadata=meta)
        if "pt2" in formats or "onnx" in formats:
            program = _torch_export(module, probes[0])
            parity["pt2"] = _check_parity("torch.export", module, program.module(), probes)
            if "pt2" in formats:
                torch.export.save(program, str(stage / PT2_FILE))
            if "onnx" in formats:
                parity["onnx"] = _write_onnx(program, module, probes, stage / ONNX_FILE)
        if card is not None:
            (stage / CARD_FILE).write_text(card, encoding="utf-8")
        files = tuple(sorted(p.name for p in stage.iterdir()))
    return ExportResult(dest, files, parity)


def _checked_destination(dest: Path) -> Path:
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"--out {dest} is a file; name a folder for the export")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / GRAPH_FILE).exists():
        raise ExportError(
            f"--out {dest} is a non-empty folder that holds no export; choose a new folder"
        )
    if not dest.parent.is_dir():
        raise ExportError(f"--out {dest}: folder {dest.parent} does not exist; create it first")
    return dest


# every file name an export may write: an earlier export's files that a new one does
# not write are stale (a model.onnx of another graph) and go; any other file stays
EXPORT_FILES = (GRAPH_FILE, WEIGHTS_FILE, ONNX_FILE, PT2_FILE, CARD_FILE)


@contextlib.contextmanager
def _staging(dest: Path) -> Iterator[Path]:
    """A temporary folder beside ``dest`` whose files reach ``dest`` only if the block
    succeeds.

    A new destination is the staged folder renamed into place (given the mode a plain
    ``mkdir`` would, not mkdtemp's 0700). An earlier export folder is kept: each new
    file replaces its namesake atomically and stale export files are removed, so files
    the user put there survive.
    """
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield stage
        if dest.exists():
            _replace_files(stage, dest)
        else:
            stage.chmod(0o777 & ~_umask())
            os.replace(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _replace_files(stage: Path, dest: Path) -> None:
    written = {p.name for p in stage.iterdir()}
    for name in sorted(written):
        os.replace(stage / name, dest / name)
    for name in EXPORT_FILES:
        if name not in written:
            (dest / name).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set it straight back
    os.umask(mask)
    return mask


def _probes(arch: Architecture, sizes: Sequence[int]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn((int(n), *arch.input_shape), generator=generator, dtype=arch.dtype)
        for n in sizes
    ]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, warnings and registry log lines."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(exc, '')}"[:300]


def _torch_export(module: torch.nn.Module, probe: torch.Tensor) -> Any:
    # tracing with a batch of 1 would specialise the batch axis to 1: trace with 2
    example = probe.new_zeros((2, *probe.shape[1:]))
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet():
            return torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch raises many kinds; the message says which
        raise ExportError(
            f"torch.export failed ({_first_line(exc)}); export with --format safetensors only"
        ) from None


def _write_onnx(
    program: Any, module: torch.nn.Module, probes: list[torch.Tensor], path: Path
) -> float:
    """Convert the exported program to ONNX, save it, and check it under onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError(
            "ONNX export needs onnx, onnxruntime and onnxscript: pip install 'morphsearch[export]', "
            "or pass --format pt2,safetensors"
        ) from None
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program, dynamo=True, input_names=["x"], output_names=["y"], verbose=False
            )
            if onnx_program is None:  # only the legacy exporter returns None
                raise RuntimeError("the exporter returned no program")
            onnx_program.save(str(path))
    except Exception as exc:  # the exporter raises many kinds; keep its first line
        raise ExportError(
            f"ONNX export failed ({_first_line(exc)}); pass --format pt2,safetensors to skip ONNX"
        ) from None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"x": x.numpy()})[0])

    return _check_parity("ONNX (onnxruntime)", module, run, probes)


def _check_parity(
    what: str, module: torch.nn.Module, exported: Any, probes: list[torch.Tensor]
) -> float:
    """The largest |exported - module| over the probes.

    Raises:
        ExportError: a probe differs beyond the tolerance, or changes shape.
    """
    worst = 0.0
    with torch.no_grad():
        for x in probes:
            want, got = module(x), exported(x)
            if tuple(got.shape) != tuple(want.shape):
                raise ExportError(
                    f"{what} output has shape {tuple(got.shape)} for batch {len(x)}, PyTorch "
                    f"{tuple(want.shape)}; the batch axis is not dynamic, nothing was written"
                )
            err = (got.to(want.dtype) - want).abs()
            worst = max(worst, float(err.max()))
            if bool((err > TOLERANCE * (1 + want.abs())).any()):
                raise ExportError(
                    f"{what} differs from PyTorch by {float(err.max()):.3g} on a batch of "
                    f"{len(x)} (tolerance {TOLERANCE:g}); nothing was written"
                )
    return worst


# ------------------------------------------------------------------ from the store


def export_from_store(
    out: str | os.PathLike[str],
    *,
    db: str | None = None,
    search: str | None = None,
    arch_id: str | None = None,
    metric: str | None = None,
    mode: str | None = None,
    formats: Sequence[str] = FORMATS,
    refit: bool = False,
    refit_steps: int | None = None,
) -> ExportResult:
    """Export ``arch_id``, or the best architecture of ``search``, from the lineage store.

    Args:
        out: the destination folder.
        db: lineage database URL (default: ``$MORPHSEARCH_DB`` or ``sqlite:///morphsearch.db``).
        search: the search (default: the architecture's, or the only one).
        arch_id: the architecture; ``None`` exports the best one by ``metric``/``mode``
            (default: the search config's first objective).
        formats: see :func:`export_architecture`.
        refit: export the architecture trained again from a fresh initialisation on
            the training and validation splits (:func:`morphsearch.refit.refit`, at
            its trial's learning rate) instead of the search's weights.
        refit_steps: the refit's optimizer steps (default: the search's trial budget;
            only with ``refit``).

    Raises:
        NotFound: no such search or architecture, or no metric recorded yet.
        ConfigError: refit without a validation split or a recorded learning rate.
        ExportError: ``refit_steps`` without ``refit``, or below 1.
        WeightsError: the weights file is missing, corrupted or not this architecture's.
        ExportError: see :func:`export_architecture`.
    """
    # deferred: sqlalchemy (loading an export folder never opens the store)
    from morphsearch.lineage import open_store
    from morphsearch.lineage.objective import best_arch_id  # deferred: sqlalchemy
    from morphsearch.model_card import model_card  # deferred: sqlalchemy

    formats = parse_formats(list(formats))
    if refit_steps is not None and not refit:
        raise ExportError("--refit-steps sets the refit's length: add --refit")
    if refit_steps is not None and refit_steps < 1:
        raise ExportError(f"--refit-steps {refit_steps} must be at least 1")
    with open_store(db) as store:
        if arch_id is None:
            arch_id = best_arch_id(store, search, metric, mode)
        else:
            arch_id = store.resolve_arch_id(arch_id)  # a bare or shortened id
        record = store.architecture(arch_id)
        if search is not None and record.search != search:
            raise NotFound(
                f"architecture {arch_id!r} belongs to search {record.search!r}, not "
                f"{search!r}; drop --search or pass an architecture of {search!r}"
            )
        arch = _stored_architecture(record)
        done = None
        if refit:
            from morphsearch.refit import refit as refit_architecture  # deferred: training

            config = store.search(record.search).config
            done = refit_architecture(arch, config, lr=_trial_lr(store, record, config),
                                      steps=refit_steps, seed=int(config.get("seed") or 0))
            arch = done.arch
        card = model_card(store, record, metric=metric, mode=mode, refit=done)
    meta = {"search": record.search, "arch_id": record.arch_id}
    if done is not None:
        meta["refit"] = f"train+val, {done.steps} steps"
    return export_architecture(arch, out, formats=formats, metadata=meta, card=card)


def _trial_lr(store: Any, record: Any, config: dict[str, Any]) -> float:
    """The learning rate of the trial that trained ``record`` (its best-scored one)."""
    from morphsearch.lineage.objective import metric_values, objective  # deferred: sqlalchemy

    metric, mode = objective(config, search=record.search)
    for result in metric_values(store, record.search, metric, mode):
        if result.arch_id == record.arch_id and result.trial_id is not None:
            lr = store.trial(result.trial_id).config.get("lr")
            if isinstance(lr, (int, float)) and lr > 0:
                return float(lr)
    raise ConfigError(f"architecture {record.arch_id} has no trial with a recorded learning "
                      f"rate and a {metric} value to refit at; export it without --refit")


def _stored_architecture(record: Any) -> Architecture:
    """The architecture a lineage record points to, with its verified weights."""
    if not record.weights_uri:
        raise WeightsError(
            f"architecture {record.arch_id} has no weights file recorded; re-run its trial"
        )
    arch = read_architecture(record.weights_uri, record.weights_sha256)
    if arch.structure_hash != record.structure_hash:
        raise WeightsError(
            f"{record.weights_uri}: holds structure {arch.structure_hash[:12]}, but lineage "
            f"records {record.structure_hash[:12]} for {record.arch_id}; re-run its trial"
        )
    return arch


# ------------------------------------------------------------------ loading back


def load_architecture(
    path_or_dir: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    arch_id: str | None = None,
) -> Architecture:
    """The :class:`~morphsearch.arch.Architecture` of an export folder, a graph file, or
    a stored architecture (``arch_id`` in the lineage database ``db``).

    Raises:
        ExportError: neither a path nor an ``arch_id`` given, or an unsupported file.
        WeightsError: a weights file is corrupted or belongs to another structure.
        GraphFileError / NotFound: a missing graph file or unknown architecture.
    """
    if arch_id is not None:
        from morphsearch.lineage import open_store  # deferred: sqlalchemy (only for arch_id)

        with open_store(db) as store:
            return _stored_architecture(store.architecture(arch_id))
    if path_or_dir is None:
        raise ExportError("morphsearch.load_module needs an export folder, a graph file, or arch_id=...")
    path = Path(path_or_dir)
    if path.is_dir():
        graph, weights = path / GRAPH_FILE, path / WEIGHTS_FILE
    elif path.suffix == ".json":
        graph, weights = path, path.with_suffix(".safetensors")
        if not weights.exists() and (path.parent / WEIGHTS_FILE).exists():
            weights = path.parent / WEIGHTS_FILE
    elif path.suffix == ".safetensors":
        graph, weights = path.with_suffix(".json"), path
        if not graph.exists():
            graph = path.parent / GRAPH_FILE
    else:
        raise ExportError(
            f"{path}: morphsearch.load_module reads an export folder, a graph .json or a "
            ".safetensors file; load model.onnx/model.pt2 with onnxruntime/torch.export"
        )
    if not weights.exists():
        raise WeightsError(f"{weights}: no such weights file; export with --format safetensors")
    arch = load_graph(graph, weights)
    _verify_weights_hash(arch, weights)
    return arch


def _verify_weights_hash(arch: Architecture, path: Path) -> None:
    """Refuse weights whose bytes changed after export (the file still parses)."""
    recorded = weights_metadata(path).get("weights_hash")
    if recorded and recorded != arch.weights_hash:
        raise WeightsError(
            f"{path}: weights hash {arch.weights_hash[:12]} does not match the "
            f"{recorded[:12]} recorded at export; the file was changed, export it again"
        )


def load_module(
    path_or_dir: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    arch_id: str | None = None,
) -> torch.nn.Module:
    """Load an exported folder, a graph file, or a stored architecture as an ``nn.Module``.

    Args:
        path_or_dir: an export folder (``graph.json`` + ``weights.safetensors``), a graph
            ``.json`` with its weights beside it, or a ``.safetensors`` file.
        db: lineage database URL, with ``arch_id`` (default as for the CLI).
        arch_id: load this architecture from the lineage store instead of a path.

    Returns:
        The compiled module (a :class:`~morphsearch.arch.compile.CompiledArchitecture`) in eval mode.

    Raises:
        ExportError, WeightsError, GraphFileError, NotFound: see :func:`load_architecture`.
    """
    return load_architecture(path_or_dir, db=db, arch_id=arch_id).to_module().eval()
