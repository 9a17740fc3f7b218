"""Training-batch augmentation: each sample is its own input shifted (zero fill) and
perhaps mirrored, the draws repeat with the loader's seed, only training batches change,
and a config that cannot apply is refused before anything starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from morphsearch.cli import main
from morphsearch.data import load_dataset
from morphsearch.data.augment import RandomShift
from morphsearch.errors import ConfigError
from morphsearch.search.config import AugmentConfig, DatasetConfig
from tests.search.conftest import refuse_cluster, tiny_config_file


def _windows(x: torch.Tensor, s: int) -> list[torch.Tensor]:
    """Every shift of one sample ``(C, *spatial)`` by -s..s per axis, zero-filled."""
    padded = torch.nn.functional.pad(x, [s, s] * (x.dim() - 1))
    if x.dim() == 2:
        return [padded[:, o : o + x.shape[1]] for o in range(2 * s + 1)]
    h, w = x.shape[1:]
    return [padded[:, a : a + h, b : b + w] for a in range(2 * s + 1) for b in range(2 * s + 1)]


@pytest.mark.parametrize("shape", [(32, 2, 12), (32, 3, 7, 9)])
def test_each_sample_is_a_zero_filled_shift_of_itself(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape)
    out, y = RandomShift(2).apply(x, torch.arange(32), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(y, torch.arange(32))
    seen = set()
    for i in range(len(x)):
        matches = [k for k, w in enumerate(_windows(x[i], 2)) if torch.equal(out[i], w)]
        assert matches, f"sample {i} is no shift of its input"
        seen.add(matches[0])
    assert len(seen) > 3  # the offsets vary across the batch


def test_hflip_mirrors_the_last_axis_of_some_samples_only() -> None:
    x = torch.randn(64, 1, 5, 6)
    out, _ = RandomShift(0, hflip=True).apply(x, torch.zeros(64), torch.Generator().manual_seed(1))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48  # about half


def test_draws_repeat_with_the_loader_seed_and_only_training_batches_change() -> None:
    d = load_dataset("digits", seed=0)
    aug = d.with_augment(RandomShift(1))
    # unshuffled, so that only the augmentation can tell two seeds apart
    first = torch.cat([x for x, _ in aug.loader("train", 128, seed=5)])
    again = torch.cat([x for x, _ in aug.loader("train", 128, seed=5)])
    other = torch.cat([x for x, _ in aug.loader("train", 128, seed=6)])
    assert torch.equal(first, again)
    assert not torch.equal(first, d.x_train)  # augmented
    assert not torch.equal(first, other)
    val = next(iter(aug.loader("val", 64)))[0]
    assert torch.equal(val, d.x_val[:64])


def test_a_trainer_resumed_mid_epoch_sees_the_augmented_batches_it_would_have_seen() -> None:
    from morphsearch import builders
    from morphsearch.growth.trainer import GrowingTrainer, GrowthConfig

    data = load_dataset("digits", seed=0).with_augment(RandomShift(1))
    arch = builders.cnn(channels=[4], hidden=[], input_shape=(1, 8, 8), seed=0)
    trainer = GrowingTrainer(arch, data, GrowthConfig(steps=60, batch_size=64, seed=3,
                                                      morphisms=()))
    per_epoch = -(-len(data.y_train) // 64)
    whole = trainer._epoch_stream(0)
    expected = [next(whole)[0] for _ in range(per_epoch + 5)][per_epoch - 3:]
    resumed = trainer._epoch_stream(per_epoch - 3)  # 3 batches before an epoch's end
    assert all(torch.equal(next(resumed)[0], x) for x in expected)


def test_worker_processes_draw_repeatably() -> None:
    d = load_dataset("digits", seed=0).with_augment(RandomShift(1))
    runs = [[x for x, _ in d.loader("train", 256, shuffle=True, seed=2, num_workers=2)]
            for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_config_builds_the_augmentation_or_nothing() -> None:
    def built(augment: dict[str, object] | None) -> object:
        return DatasetConfig(name="digits", augment=augment).augmentation()

    assert built({"shift": 2, "hflip": True}) == RandomShift(2, hflip=True)
    assert built({}) is None and built(None) is None
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        AugmentConfig(shift=-1)
    with pytest.raises(ValueError, match="valid integer"):
        AugmentConfig.model_validate({"shift": True})


@pytest.mark.parametrize(("augment", "shape", "needle"), [
    (RandomShift(1), (64,), "(channels, *spatial)"),
    (RandomShift(8), (1, 8, 8), "use a shift below 8"),
])
def test_shapes_it_cannot_apply_to_are_refused(augment: RandomShift, shape: tuple[int, ...],
                                               needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        augment.check(shape)


def test_search_on_flat_inputs_with_augment_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_cluster(monkeypatch, "Ray was started before the inputs were checked")
    config = tiny_config_file(tmp_path, dataset={"name": "digits", "options": {"image": False},
                                                 "augment": {"shift": 1}})
    assert main(["search", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dataset.augment" in err and "image: true" in err, err
    assert {p.name for p in tmp_path.iterdir()} == {"tiny.yaml"}


def test_a_trial_trains_on_augmented_batches_and_probes_the_data_as_it_is(
    tmp_path: Path,
) -> None:
    # through run_trial: the same seed trains on other batches with augment set (its
    # loss differs) while the fixed probe batch is unaugmented (same first-batch loss)
    from morphsearch import artifacts, builders
    from morphsearch.search.protocol import TrialPlan
    from morphsearch.search.trial import TrialSetup
    from tests.search.conftest import run_trial_here

    seed = builders.cnn(channels=[4], hidden=[], input_shape=(1, 8, 8), seed=0)
    ref = artifacts.write_architecture(seed, str(tmp_path), "seed")
    plan = TrialPlan(parent_id="seed", parent_uri=ref.uri, parent_sha256=ref.sha256,
                     morphism=None, trial_seed=0, lr=0.01, lr_schedule="constant")
    reports = {}
    for augment in (None, RandomShift(1)):
        setup = TrialSetup(search="s", artifacts_uri=str(tmp_path / f"art{augment is None}"),
                           dataset="digits", dataset_options=(), data_seed=0, batch_size=64,
                           steps=20, eval_every=20, checkpoint_every_s=1e9, augment=augment)
        reports[augment] = run_trial_here(plan, setup)[-1]
    plain, shifted = reports[None], reports[RandomShift(1)]
    # the probe (data.split, never augmented) is the same batch either way
    assert plain["first_batch_loss"] == pytest.approx(shifted["first_batch_loss"], rel=1e-6)
    assert plain["train_loss"] != pytest.approx(shifted["train_loss"], rel=1e-3)
