"""Search configs: examples load, bad ones fail with one line naming the field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from morphsearch.cli import main
from morphsearch.errors import ConfigError
from morphsearch.search.config import SearchConfig, load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"


def test_the_examples_are_there() -> None:
    names = {p.name for p in CONFIGS}
    assert {
        "quickstart.yaml",
        "teacher_student.yaml",
        "digits.yaml",
        "mnist1d.yaml",
        "cluster_gpu.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.stem
    assert config.objectives and config.morphisms


def test_pareto_and_gpu_example() -> None:
    config = load_config(QUICKSTART.with_name("cluster_gpu.yaml"))
    assert [o.metric for o in config.objectives] == ["val_accuracy", "params"]
    assert config.resources.gpus == 0.25
    assert config.storage.startswith("s3://")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(QUICKSTART.read_text() + text)
    return path


def _one_line(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_unknown_field_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "budget_typo: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = _one_line(exc)
    assert str(path) in message and "budget_typo" in message and "remove it" in message


def test_nested_unknown_field_has_its_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(QUICKSTART.read_text().replace("  trials: 8", "  trails: 8"))
    with pytest.raises(ConfigError, match=r"budget\.trails"):
        load_config(path)


def test_wrong_type_names_field_and_value(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(QUICKSTART.read_text().replace("epochs_per_trial: 3", "epochs_per_trial: lots"))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = _one_line(exc)
    assert "budget.epochs_per_trial" in message and "'lots'" in message and "fix" in message


def test_missing_required_field(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed_graph: {builder: mlp}\n")
    with pytest.raises(ConfigError, match="'dataset' is required"):
        load_config(path)


def test_seed_graph_needs_one_source(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed_graph: {builder: mlp, path: g.json}\ndataset: {name: digits}\n")
    with pytest.raises(ConfigError, match=r"seed_graph.*exactly one"):
        load_config(path)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_config_is_frozen() -> None:
    config = load_config(QUICKSTART)
    with pytest.raises(Exception, match="frozen"):
        config.seed = 3  # type: ignore[misc]
    changed = config.with_overrides(database="sqlite:///x.db", storage=None)
    assert changed.database == "sqlite:///x.db" and changed.storage == config.storage
    assert isinstance(changed, SearchConfig)


@pytest.mark.parametrize("command", ["search", "submit"])
def test_cli_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    path = _write(tmp_path, "unknown_thing: 1\n")
    argv = [command, str(path)] + (
        ["--address", "http://127.0.0.1:1"] if command == "submit" else []
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("morphsearch: error:") and "unknown_thing" in err
    assert len(err.splitlines()) == 1


def test_cli_unknown_morphism_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(QUICKSTART.read_text().replace("deepen.identity: {}", "deepen.magic: {}"))
    assert main(["search", str(path), "--db", f"sqlite:///{tmp_path}/l.db"]) == 2
    err = capsys.readouterr().err
    assert "morphisms.deepen.magic" in err and "valid morphisms" in err


def test_unknown_growth_morphism_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(QUICKSTART.read_text() + "growth: {enabled: true, morphism: widen.magic}\n")
    assert main(["search", str(path), "--db", f"sqlite:///{tmp_path}/l.db"]) == 2
    assert "growth.morphism" in capsys.readouterr().err


def test_unknown_growth_trigger_or_scorer_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    for field, bad, valid in (("trigger", "sometimes", "plateau, schedule, score"),
                              ("scorer", "vibes", "gradmax, natural_expansion")):
        path.write_text(QUICKSTART.read_text() + f"growth: {{enabled: true, {field}: {bad}}}\n")
        assert main(["search", str(path), "--db", f"sqlite:///{tmp_path}/l.db"]) == 2
        err = capsys.readouterr().err
        assert f"growth.{field}" in err and repr(bad) in err and valid in err
        assert len(err.strip().splitlines()) == 1
        assert not (tmp_path / "l.db").exists()  # refused before anything was written


def test_budget_in_steps_or_epochs_not_both(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    head = "seed_graph: {builder: mlp}\ndataset: {name: digits}\n"
    path.write_text(head + "budget: {steps_per_trial: 600, child_steps: 200, eval_every_steps: 50}\n")
    budget = load_config(path).budget
    assert budget.in_steps(1169) == (600, 200, 50) and budget.evaluations(1169) == 12
    path.write_text(head + "budget: {steps_per_trial: 601}\n")
    assert load_config(path).budget.in_steps(1169) == (601, 301, 19)  # eval every epoch
    path.write_text(head + "budget: {epochs_per_trial: 4, child_epochs: 1, batch_size: 100}\n")
    assert load_config(path).budget.in_steps(1169) == (48, 12, 12)
    for bad, says in (("{steps_per_trial: 600, epochs_per_trial: 4}", "not both"),
                      ("{child_steps: 100}", "needs 'steps_per_trial'"),
                      ("{precision: fp8}", "precision")):
        path.write_text(head + f"budget: {bad}\n")
        with pytest.raises(ConfigError, match=says) as caught:
            load_config(path)
        assert "budget" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [
        bytes(range(256)),  # not UTF-8: a .npz or .safetensors given as the config
        b"name: x\x00\x01 seed: 3\n",  # UTF-8 but control characters YAML refuses
        b"!!python/object:os.system {}\n",  # a tag safe_load will not construct
    ],
    ids=["binary", "control-chars", "unsafe-tag"],
)
def test_unreadable_config_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(path) in _one_line(exc)
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("morphsearch: error:") and len(err.splitlines()) == 1


def test_folder_as_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_a_budget_in_steps_survives_overrides_and_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("seed_graph: {builder: mlp}\ndataset: {name: digits}\n"
                    "budget: {steps_per_trial: 600, child_steps: 200}\n")
    config = load_config(path)
    again = config.with_overrides(database="sqlite:///x.db", storage=str(tmp_path))
    assert again.budget.in_steps(1169) == (600, 200, 19) and again.database == "sqlite:///x.db"
    assert SearchConfig.model_validate(config.model_dump()).budget == config.budget
