"""``SearchConfig``: a search described as data (YAML), validated and frozen.

Every field is checked by pydantic v2; unknown fields are refused, so a typo is an
error rather than a silently ignored option. Problems become one-line
:class:`~morphsearch.errors.ConfigError` messages naming the file, the field path
and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from morphsearch.errors import ConfigError

if TYPE_CHECKING:
    from morphsearch.data.augment import RandomShift

__all__ = [
    "AugmentConfig",
    "BudgetConfig",
    "DatasetConfig",
    "MorphismRange",
    "Objective",
    "ResourcesConfig",
    "SchedulerConfig",
    "SearchConfig",
    "SeedGraph",
    "SelectionConfig",
    "TrialGrowthConfig",
    "load_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedGraph(_Frozen):
    """Where the search starts: a graph file, a builder fitted to the dataset, or your
    own PyTorch model.

    ``builder: mlp`` takes ``hidden: [16]`` (input and output widths come from the
    dataset); ``cnn`` and ``resnet`` take their builder keywords in ``args``.
    ``module: "package.module:factory"`` imports the ``nn.Module`` the factory returns
    (called with ``args``), weights included, with :func:`morphsearch.from_module`.
    """

    path: str | None = None
    builder: Literal["mlp", "cnn", "resnet"] | None = None
    module: str | None = None
    hidden: tuple[int, ...] = (16,)
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> SeedGraph:
        if [self.path, self.builder, self.module].count(None) != 2:
            raise ValueError("give exactly one of 'path' (a graph file), 'builder', or "
                             "'module' (\"package.module:factory\" returning an nn.Module)")
        return self


class AugmentConfig(_Frozen):
    """Training-batch augmentation (:class:`morphsearch.data.augment.RandomShift`):
    translate each sample by up to ``shift`` positions along every spatial axis (zero
    fill) and, with ``hflip``, mirror half of them. Validation, test and growth scores
    see the data as it is."""

    shift: int = Field(0, ge=0, strict=True)
    hflip: bool = Field(False, strict=True)


class DatasetConfig(_Frozen):
    """A dataset of :func:`morphsearch.data.load_dataset`; ``options`` are its keywords.

    ``name`` is a registered dataset (``morphsearch.data.list_datasets()``), or give
    ``factory: "package.module:function"`` for a user function that returns the data
    (``name`` is then ``factory``). ``path`` is the ``npz`` file (same as
    ``options: {path: ...}``). ``augment`` transforms training batches
    (:class:`AugmentConfig`).
    """

    name: str = "factory"
    factory: str | None = None
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    augment: AugmentConfig | None = None

    def augmentation(self) -> RandomShift | None:
        """The training-batch augmentation ``augment`` asks for (a picklable
        :class:`~morphsearch.data.augment.RandomShift`), or None when it does nothing."""
        from morphsearch.data.augment import RandomShift  # deferred: torch

        a = self.augment
        return RandomShift(a.shift, a.hflip) if a is not None and (a.shift or a.hflip) else None

    @model_validator(mode="after")
    def _known(self) -> DatasetConfig:
        # the registry fills as the loaders import
        # deferred: torch (search.callback, on the driver, imports config without it)
        from morphsearch.data import DATASETS

        if self.name not in DATASETS:
            raise ValueError(DATASETS.unknown(self.name))
        if (self.name == "factory") != (self.factory is not None):
            raise ValueError(
                "give either 'name' (a registered dataset) or 'factory' "
                "('package.module:function'), not both"
                if self.factory else "'name' or 'factory' is required"
            )
        if self.factory is not None and ":" not in self.factory:
            raise ValueError("'factory' must be written 'package.module:function'")
        if self.name == "npz" and not (self.path or self.options.get("path")):
            raise ValueError(
                "dataset 'npz' needs 'path' (a .npz file with arrays x_train, y_train, "
                "x_test, y_test; x_val, y_val optional)"
            )
        return self

    def loader_options(self) -> dict[str, Any]:
        """Keywords for ``load_dataset(self.name, seed=..., **options)``; lists become
        tuples so the options can key a cache."""
        options = {k: _hashable(v) for k, v in self.options.items()}
        if self.path:
            options["path"] = self.path
        if self.factory is not None:
            options["factory"] = self.factory
        return options


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(v) for v in value)
    return value


class Objective(_Frozen):
    """One metric and whether larger (``max``) or smaller (``min``) is better.

    Metrics the trainable reports: ``val_accuracy``, ``val_loss``, ``train_loss``,
    ``params``, ``flops``.
    """

    metric: str
    mode: Literal["min", "max"]


class BudgetConfig(_Frozen):
    """How much the search may spend, and how long each trial trains.

    A trial's budget is given in epochs or in optimizer steps, not both:

    * epochs: ``epochs_per_trial`` trains the seed (and, with ``selection.inherit_weights:
      false``, every re-initialised child); a child that inherits its trained parent's
      weights only fine-tunes, ``child_epochs`` (``None``: half of ``epochs_per_trial``,
      rounded up);
    * steps: ``steps_per_trial`` and ``child_steps`` (``None``: half of
      ``steps_per_trial``), the recipe of a paper ("6000 steps at batch 100").

    A trial evaluates every epoch, or every ``eval_every_steps`` steps when given; it
    keeps the weights of its best evaluation by the first objective (when that is
    measured every evaluation, else ``val_loss``) and stops early once that has not
    improved for ``patience`` evaluations (``None``: never).
    """

    trials: int = Field(default=8, ge=1)
    time_s: float | None = Field(default=None, gt=0)
    max_concurrent: int = Field(default=1, ge=1)
    epochs_per_trial: int = Field(default=3, ge=1)
    child_epochs: int | None = Field(default=None, ge=1)
    steps_per_trial: int | None = Field(default=None, ge=1)
    child_steps: int | None = Field(default=None, ge=1)
    eval_every_steps: int | None = Field(default=None, ge=1)
    patience: int | None = Field(default=3, ge=1)
    max_params: int | None = Field(default=None, ge=1)
    # a child's forward FLOPs per sample at most this multiple of its parent's (its
    # structure's, judged before it trains); a larger candidate falls back as one over
    # max_params does: another site at the same amount, then a smaller amount, then
    # another morphism. None: no limit
    max_flops_growth: float | None = Field(default=None, gt=1)
    batch_size: int = Field(default=64, ge=1)
    checkpoint_every_s: float = Field(default=10.0, ge=0)
    # report to Tune at most this often (seconds of training; 0: every evaluation). Every
    # report is a round trip through the driver while the trial waits; evaluations between
    # reports travel in the next one, so lineage still gets every evaluation's metrics.
    report_every_s: float = Field(default=1.0, ge=0)
    # a compute budget: stop the whole search once its trials have spent this many
    # training FLOPs (the ``train_flops`` metric summed over trials); None: no limit
    max_train_flops: float | None = Field(default=None, gt=0)
    # learning rate within a trial, per optimizer step: a cosine decay from the trial's
    # lr towards 0 over its planned steps (step t of T trains at lr * (1 + cos(pi t / T))
    # / 2), or constant. Cosine is the default: in bench/search_efficiency.py it raised
    # the best test accuracy on MNIST-1D for every method (morphsearch the most).
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    # arithmetic of training: fp32, or mixed precision (torch.autocast) in bf16 or fp16
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"

    @model_validator(mode="after")
    def _one_unit(self) -> BudgetConfig:
        # a dumped and re-validated config carries the default epochs_per_trial: only a
        # value other than the default (or child_epochs) says "epochs"
        default = type(self).model_fields["epochs_per_trial"].default
        in_epochs = {"child_epochs"} if self.child_epochs is not None else set()
        if "epochs_per_trial" in self.model_fields_set and self.epochs_per_trial != default:
            in_epochs.add("epochs_per_trial")
        if self.steps_per_trial is not None and in_epochs:
            raise ValueError(
                f"give the trial budget in steps (steps_per_trial, child_steps) or in epochs "
                f"({', '.join(sorted(in_epochs))}), not both; remove one"
            )
        if self.child_steps is not None and self.steps_per_trial is None:
            raise ValueError("'child_steps' needs 'steps_per_trial' (budgets in steps)")
        return self

    @property
    def epochs_per_child(self) -> int:
        """Epochs of a child that inherits its parent's weights."""
        if self.child_epochs is not None:
            return self.child_epochs
        return max(1, -(-self.epochs_per_trial // 2))

    def in_steps(self, train_size: int) -> tuple[int, int, int]:
        """``(steps, child_steps, eval_every)`` for a training split of ``train_size``."""
        per_epoch = max(1, -(-train_size // self.batch_size))
        every = self.eval_every_steps or per_epoch
        if self.steps_per_trial is not None:
            child = self.child_steps or max(1, -(-self.steps_per_trial // 2))
            return self.steps_per_trial, child, every
        return self.epochs_per_trial * per_epoch, self.epochs_per_child * per_epoch, every

    def evaluations(self, train_size: int) -> int:
        """How many evaluations a full-budget trial makes (ASHA's ``max_t``)."""
        steps, _, every = self.in_steps(train_size)
        return -(-steps // every)


class MorphismRange(_Frozen):
    """Ranges Optuna draws from for one morphism (``k``: units added, when it takes one).

    ``k_fraction: [low, high]`` makes the amount relative to the site's current width
    (units or channels): Optuna draws a fraction ``f`` (log scale) and the child gets
    ``k = max(1, round(f * width))`` units, so ``[0.25, 1.0]`` grows a layer by 25 % to
    100 % (a doubling) whatever its size, and a few generations reach widths that fixed
    small steps need many generations (each a training run) for. ``k`` is then unused.

    ``sites: spatial`` offers the morphism only at sites whose output keeps spatial axes
    (convolution channels, an activation between convolutions), ``flat`` only at dense
    ones (``any``, the default: every site): e.g. an MLP growing into a CNN grows its
    convolutions rather than its dense layer.
    """

    k: tuple[int, int] = (1, 8)
    k_fraction: tuple[float, float] | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    sites: Literal["any", "spatial", "flat"] = "any"

    @model_validator(mode="after")
    def _ordered(self) -> MorphismRange:
        if not 1 <= self.k[0] <= self.k[1]:
            raise ValueError("'k' must be [low, high] with 1 <= low <= high")
        if self.k_fraction is not None and not 0 < self.k_fraction[0] <= self.k_fraction[1]:
            raise ValueError("'k_fraction' must be [low, high] with 0 < low <= high")
        return self


class TrialGrowthConfig(_Frozen):
    """In-training growth inside each trial: the step loop's growth hook.

    ``trigger`` says when (``schedule``: ``max_events`` growths evenly spaced over the
    trial; ``plateau``: the training loss stalls; ``score``: the best candidate's
    ``scorer`` value exceeds ``tau``, checked every ``check_every`` steps); ``scorer``
    says where (``round_robin``, ``gradmax``, ``splitting``, ``natural_expansion``);
    ``morphism`` how, with ``k`` units when the morphism takes a ``k``.
    """

    enabled: bool = False
    trigger: str = "plateau"
    scorer: str = "round_robin"
    morphism: str = "widen.gradmax"
    k: int = Field(default=2, ge=1)
    max_events: int = Field(default=1, ge=0)
    tau: float = 0.0
    check_every: int = Field(default=10, ge=1)


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
    # best: the pool_size best architectures; front: pool_size architectures spread over
    # the objective-vs-parameters front, so small networks keep growing too and the
    # search improves the whole accuracy-vs-size front, not only its top
    pool: Literal["best", "front"] = "best"
    lr: tuple[float, float] = (1e-3, 3e-2)
    inherit_weights: bool = True
    inherit_optimizer: bool = False
    max_children: int | None = Field(default=3, ge=1)
    # rank the parent pool by this metric and mode instead of the first objective (e.g.
    # val_loss/min: a smoother signal than accuracy on a small validation split)
    rank_by: Objective | None = None
    # parents whose ranking value is within this much of the best one's (in the ranking
    # metric's units) are tied: they rank cheapest first (forward FLOPs; with pool: best,
    # a front keeps its own order), so a search does not keep growing a costly
    # network that is no better than a cheap one within the validation split's noise
    # (the one-standard-error rule; one standard error of an accuracy near 0.9 on 1,000
    # validation samples is 0.0095). null: rank by the value alone. Measured
    # (bench/search_efficiency.py, MNIST-1D's strided seed, 10 development seeds, at
    # 0.01): more and cheaper trials, picks as good, slower to reach from-scratch
    # search's best (within half of its compute in 5 of 10 seeds, against 7 of 10)
    prefer_cheaper_within: float | None = Field(default=None, ge=0)
    # train the seed alone, to its full budget, before suggesting any child (children then
    # fine-tune a trained seed); false starts children at once from its initial weights
    # (more parallel at the start of a search on many workers, each child trains fully)
    seed_first: bool = True
    # [shrink, perturb]: an inheriting child starts from shrink * w + perturb * w0 (w0 a
    # fresh initialisation; Ash & Adams 2020, morphsearch.growth.warm_start) instead of
    # its parent's weights as they are, which train on worse than fresh ones (warm-start
    # gap); null: off. A child of a still untrained parent (seed_first: false) then starts
    # from a smaller initialisation; measured (bench/search_efficiency.py, MNIST-1D, 5
    # seeds) better on validation than leaving those children as they are: 0.980 vs 0.969
    shrink_perturb: tuple[float, float] | None = None
    # at the search's end, score this many best architectures (by the first objective)
    # once on the test split: lineage metrics test_accuracy / test_loss, never used to
    # select (0: none)
    test_top: int = Field(default=5, ge=0)

    @model_validator(mode="after")
    def _lr_ordered(self) -> SelectionConfig:
        if not 0 < self.lr[0] <= self.lr[1]:
            raise ValueError("'lr' must be [low, high] with 0 < low <= high")
        if self.shrink_perturb is not None and not (
                0 < self.shrink_perturb[0] <= 1 and self.shrink_perturb[1] >= 0):
            raise ValueError("'shrink_perturb' must be [shrink, perturb] with 0 < shrink <= 1 "
                             "and perturb >= 0")
        if self.shrink_perturb is not None and self.inherit_optimizer:
            raise ValueError("'shrink_perturb' rescales a child's weights, so its parent's "
                             "Adam moments no longer fit them: drop 'inherit_optimizer' or "
                             "'shrink_perturb'")
        return self


class SchedulerConfig(_Frozen):
    """ASHA early stopping of weak trials (by the first objective, per epoch)."""

    asha: bool = False
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=2, ge=2)
    # compare a trial at a rung with the last `window` trials recorded there only, not
    # every earlier one (morphsearch.search.asha): in a growing search the early, weaker
    # trials otherwise let almost every later child through. null: Ray's ASHA.
    # Measured (bench/search_efficiency.py, at 6): more children stopped at their first
    # rung; within half of from-scratch ASHA's compute in 14 of 20 MNIST-1D seed-runs from
    # the strided seed (the same as without it) and 11 of 15 digits seeds (10 without)
    window: int | None = Field(default=None, ge=2)

    @model_validator(mode="after")
    def _window_needs_asha(self) -> SchedulerConfig:
        if self.window is not None and not self.asha:
            raise ValueError("'window' windows ASHA's rungs: set 'asha: true' or drop it")
        return self


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
    growth: TrialGrowthConfig = Field(default_factory=TrialGrowthConfig)
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
        data = self.model_dump(exclude_unset=True)  # defaults stay defaults
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
