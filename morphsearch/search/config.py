"""``SearchConfig``: a search described as data (YAML), validated and frozen.

Every field is checked by pydantic v2; unknown fields are refused, so a typo is an
error rather than a silently ignored option. Problems become one-line
:class:`~morphsearch.errors.ConfigError` messages naming the file, the field path
and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from morphsearch.errors import ConfigError

__all__ = [
    "BudgetConfig",
    "DatasetConfig",
    "GrowthConfig",
    "MorphismRange",
    "Objective",
    "ResourcesConfig",
    "SchedulerConfig",
    "SearchConfig",
    "SeedGraph",
    "SelectionConfig",
    "load_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedGraph(_Frozen):
    """Where the search starts: a graph file, or a builder fitted to the dataset.

    ``builder: mlp`` takes ``hidden: [16]`` (input and output widths come from the
    dataset); ``cnn`` and ``resnet`` take their builder keywords in ``args``.
    """

    path: str | None = None
    builder: Literal["mlp", "cnn", "resnet"] | None = None
    hidden: tuple[int, ...] = (16,)
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> SeedGraph:
        if (self.path is None) == (self.builder is None):
            raise ValueError("give exactly one of 'path' (a graph file) or 'builder'")
        return self


class DatasetConfig(_Frozen):
    """A dataset of :func:`morphsearch.data.load_dataset`; ``options`` are its keywords."""

    name: Literal["teacher_student", "digits", "mnist1d", "npz"]
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _npz_needs_path(self) -> DatasetConfig:
        if self.name == "npz" and not self.path:
            raise ValueError("dataset 'npz' needs 'path' (a .npz file with x and y)")
        return self


class Objective(_Frozen):
    """One metric and whether larger (``max``) or smaller (``min``) is better.

    Metrics the trainable reports: ``val_accuracy``, ``val_loss``, ``train_loss``,
    ``params``, ``flops``.
    """

    metric: str
    mode: Literal["min", "max"]


class BudgetConfig(_Frozen):
    """How much the search may spend, and how long each trial trains.

    ``epochs_per_trial`` trains the seed (and, with ``selection.inherit_weights:
    false``, every re-initialised child). A child that inherits its trained parent's
    weights only needs fine-tuning: it trains at most ``child_epochs`` (``None``: half of
    ``epochs_per_trial``, rounded up). Every trial stops early once its first objective
    (when that is a per-epoch validation metric, else ``val_loss``) has not improved for
    ``patience`` epochs (``None``: never); its last weights are its result.
    """

    trials: int = Field(default=8, ge=1)
    time_s: float | None = Field(default=None, gt=0)
    max_concurrent: int = Field(default=1, ge=1)
    epochs_per_trial: int = Field(default=3, ge=1)
    child_epochs: int | None = Field(default=None, ge=1)
    patience: int | None = Field(default=3, ge=1)
    max_params: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=64, ge=1)
    checkpoint_every_s: float = Field(default=10.0, ge=0)
    # report to Tune at most this often (seconds of training; 0: every epoch). Every
    # report is a round trip through the driver while the trial waits; epochs between
    # reports travel in the next one, so lineage still gets every epoch's metrics.
    report_every_s: float = Field(default=1.0, ge=0)
    # a compute budget: stop the whole search once its trials have spent this many
    # training FLOPs (the ``train_flops`` metric summed over trials); None: no limit
    max_train_flops: float | None = Field(default=None, gt=0)
    # learning rate within a trial: a cosine decay from the trial's lr towards 0 over its
    # planned epochs (epoch e of E trains at lr * (1 + cos(pi * (e-1) / E)) / 2), or
    # constant. Cosine is the default: in bench/search_efficiency.py it raised the best
    # test accuracy on MNIST-1D for every method (morphsearch the most, +2 points).
    lr_schedule: Literal["constant", "cosine"] = "cosine"

    @property
    def epochs_per_child(self) -> int:
        """Epochs of a child that inherits its parent's weights."""
        if self.child_epochs is not None:
            return self.child_epochs
        return max(1, -(-self.epochs_per_trial // 2))


class MorphismRange(_Frozen):
    """Ranges Optuna draws from for one morphism (``k``: units added, when it takes one).

    ``k_fraction: [low, high]`` makes the amount relative to the site's current width
    (units or channels): Optuna draws a fraction ``f`` (log scale) and the child gets
    ``k = max(1, round(f * width))`` units, so ``[0.25, 1.0]`` grows a layer by 25 % to
    100 % (a doubling) whatever its size, and a few generations reach widths that fixed
    small steps need many generations (each a training run) for. ``k`` is then unused.
    """

    k: tuple[int, int] = (1, 8)
    k_fraction: tuple[float, float] | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ordered(self) -> MorphismRange:
        if not 1 <= self.k[0] <= self.k[1]:
            raise ValueError("'k' must be [low, high] with 1 <= low <= high")
        if self.k_fraction is not None and not 0 < self.k_fraction[0] <= self.k_fraction[1]:
            raise ValueError("'k_fraction' must be [low, high] with 0 < low <= high")
        return self


class GrowthConfig(_Frozen):
    """In-training growth (``morphsearch.growth``) inside each trial."""

    enabled: bool = False
    trigger: Literal["schedule", "plateau", "score"] = "plateau"
    morphism: str = "widen.gradmax"
    k: int = Field(default=2, ge=1)
    max_events: int = Field(default=1, ge=0)


class SelectionConfig(_Frozen):
    """Parent selection: Optuna picks a rank among the ``pool_size`` best architectures.

    ``inherit_weights: false`` re-initialises every child (same graph, fresh weights):
    the search then explores the same architectures without weight inheritance, which
    isolates what inheritance is worth (bench/search_efficiency.py).

    ``max_children`` spreads the search over the pool: a parent that already has that
    many children (suggested or recorded) leaves the pool while other trained
    architectures can take its place, instead of re-growing close relatives of the same
    best parent (``None``: no limit). When every candidate is used up, all are eligible.

    ``inherit_optimizer: true`` (with ``inherit_weights``): a child continues its parent's
    optimizer state (Adam moments and step counts; every trial then saves its state
    beside its final weights, and moments of units a morphism adds start at zero, see
    :func:`morphsearch.morphisms.optim.transfer_optimizer`) instead of a fresh Adam. Off
    by default: in bench/search_efficiency.py it raised the best validation accuracy
    with a constant learning rate but not with the default cosine schedule, where each
    child restarts at its own lr anyway.
    """

    pool_size: int = Field(default=4, ge=1)
    lr: tuple[float, float] = (1e-3, 3e-2)
    inherit_weights: bool = True
    inherit_optimizer: bool = False
    max_children: int | None = Field(default=3, ge=1)
    # rank the parent pool by this metric and mode instead of the first objective (e.g.
    # val_loss/min: a smoother signal than accuracy on a small validation split)
    rank_by: Objective | None = None

    @model_validator(mode="after")
    def _lr_ordered(self) -> SelectionConfig:
        if not 0 < self.lr[0] <= self.lr[1]:
            raise ValueError("'lr' must be [low, high] with 0 < low <= high")
        return self


class SchedulerConfig(_Frozen):
    """ASHA early stopping of weak trials (by the first objective, per epoch)."""

    asha: bool = False
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=2, ge=2)


class ResourcesConfig(_Frozen):
    """Per trial; ``gpus`` may be fractional (0.25: four trials share a GPU)."""

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)


class SearchConfig(_Frozen):
    """A whole search. See ``configs/*.yaml`` for annotated examples."""

    name: str | None = None
    seed: int = 0
    seed_graph: SeedGraph
    dataset: DatasetConfig
    objectives: tuple[Objective, ...] = (Objective(metric="val_accuracy", mode="max"),)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    morphisms: dict[str, MorphismRange] = Field(
        default_factory=lambda: {
            "widen.random": MorphismRange(),
            "deepen.identity": MorphismRange(),
        }
    )
    growth: GrowthConfig = Field(default_factory=GrowthConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    storage: str = "./morphsearch-runs"
    database: str = "sqlite:///morphsearch.db"
    optuna_storage: str | None = None
    retries: int = Field(default=1, ge=0)
    reuse_actors: bool = True
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _check(self) -> SearchConfig:
        if not self.objectives:
            raise ValueError("'objectives' needs at least one {metric, mode}")
        if not self.morphisms:
            raise ValueError("'morphisms' needs at least one enabled morphism")
        return self

    @property
    def metric(self) -> str:
        """The first objective's metric (what ASHA and the parent pool rank by)."""
        return self.objectives[0].metric

    @property
    def mode(self) -> Literal["min", "max"]:
        return self.objectives[0].mode

    def with_overrides(self, **changes: Any) -> SearchConfig:
        """A copy with top-level fields replaced (``None`` values are ignored)."""
        data = self.model_dump()
        data.update({k: v for k, v in changes.items() if v is not None})
        data["source"] = self.source
        return _validated(data, self.source or "<overrides>")


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _validated(data: Any, where: str) -> SearchConfig:
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where)) from None


def _describe(exc: ValidationError, where: str) -> str:
    error = exc.errors()[0]
    path = _field_path(tuple(p for p in error["loc"] if p not in ("function-after",)))
    kind = error["type"]
    if kind == "extra_forbidden":
        fix = "remove it or fix its spelling (see configs/quickstart.yaml for valid fields)"
        return f"{where}: unknown field '{path}'; {fix}"
    if kind == "missing":
        return f"{where}: field '{path}' is required; add it (see configs/quickstart.yaml)"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: field '{path}': {message} (got {error.get('input')!r}); fix its value"


def load_config(path: str | Path) -> SearchConfig:
    """Read and validate a YAML search config.

    Returns:
        The frozen config; ``name`` defaults to the file's stem.

    Raises:
        ConfigError: missing or unreadable file, invalid YAML, or an invalid field
            (one line naming the file, the field path and the fix).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; pass a YAML file such as configs/quickstart.yaml"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; pass a YAML config file inside it") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror})") from None
    except UnicodeDecodeError:
        # a binary file (a .npz, a .safetensors) passed where the config goes
        raise ConfigError(
            f"{path}: is not a text file; pass a YAML config such as configs/quickstart.yaml"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} is not valid YAML; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a config must be a YAML mapping of fields, not {type(data).__name__}"
        )
    data.setdefault("name", path.stem)
    data["source"] = str(path)
    return _validated(data, str(path))
