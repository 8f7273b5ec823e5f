"""Preset files (`reppo.preset_files`): a config in a JSON file, loaded wherever a preset name
is: `reppo train --preset FILE`, `reppo.preset(FILE)`, `reppo sweep --preset FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import reppo
from reppo.cli import main
from reppo.config import Config, ConfigError
from reppo.preset_files import is_preset_file, write_preset_file
from reppo.presets import PRESETS, get_preset, load_preset_file


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_names_and_files_are_told_apart():
    assert not any(is_preset_file(name) for name in PRESETS)
    assert is_preset_file("best.json") and is_preset_file("tune/best")
    assert is_preset_file(Path("some") / "file.json")


def test_fields_change_the_base_preset_and_the_rest_keep_its_values(tmp_path):
    path = _write(tmp_path / "p.json", {"base": "cpu", "actor_lr": 0.002,
                                        "description": "a test"})
    config = load_preset_file(path)
    assert config == PRESETS["cpu"].replace(actor_lr=0.002)
    # Without a base the fields change the config's defaults (the paper preset).
    path = _write(tmp_path / "q.json", {"num_envs": 64})
    assert load_preset_file(path) == Config().replace(num_envs=64)


def test_a_written_file_is_the_whole_config_and_loads_back(tmp_path, reacher_setting):
    config = PRESETS["cpu"].replace(actor_lr=0.0025, action_noise_correlation=0.5)
    path = tmp_path / "best.json"
    write_preset_file(path, config, "trial 3 of a search")
    data = json.loads(path.read_text())
    assert data["description"] == "trial 3 of a search" and data["actor_lr"] == 0.0025
    assert set(data) == {"description", *Config().to_dict()}  # every field: self-contained
    assert get_preset(str(path)) == config
    # A preset file has no per-task settings: the cpu preset's ReacherEasy entry is not applied.
    assert get_preset(str(path), env="ReacherEasy") == config.replace(env="ReacherEasy")
    with pytest.raises(FileExistsError):
        write_preset_file(path, config, "again")
    assert json.loads(path.read_text())["description"] == "trial 3 of a search"


def test_a_runs_config_json_is_a_preset_file(tmp_path):
    config = PRESETS["small"].replace(env="WalkerRun", seed=3)
    path = _write(tmp_path / "config.json", config.to_dict())
    assert load_preset_file(path) == config


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        (None, ["does not exist", "config.json"]),
        ("{not json", ["not valid JSON"]),
        ([1, 2], ["JSON object", "list"]),
        ({"actor_lrr": 1e-3}, ["unknown config field", "actor_lrr"]),
        ({"num_envs": "many"}, ["num_envs must be a whole number"]),
        ({"num_minibatches": 7}, ["not divisible by num_minibatches"]),
        ({"base": "cpuu"}, ["'base'", "did you mean 'cpu'"]),
        ({"base": "other.json"}, ["'base' must name a preset"]),
        ({"description": 3}, ["'description' must be a string"]),
    ],
)
def test_bad_files_are_refused_naming_the_problem(tmp_path, content, needles):
    path = tmp_path / "bad.json"
    if content is not None:
        _write(path, content)
    with pytest.raises(ConfigError) as info:
        get_preset(str(path))
    for needle in needles:
        assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_the_api_loads_a_preset_file(tmp_path):
    path = _write(tmp_path / "p.json", {"base": "cpu", "critic_lr": 5e-4})
    config = reppo.preset(str(path), env="PendulumSwingup", num_envs=64)
    assert config == PRESETS["cpu"].replace(critic_lr=5e-4, env="PendulumSwingup", num_envs=64)


def test_train_command_trains_the_files_config(tmp_path, capsys, monkeypatch):
    import reppo.api

    seen: list[Config] = []

    def fake_training(config, run_dir, **kwargs):
        seen.append(config)
        raise KeyboardInterrupt  # stop before anything would be trained

    monkeypatch.setattr(reppo.api, "run_training", fake_training)
    path = _write(tmp_path / "p.json", {"base": "cpu", "actor_lr": 0.002,
                                        "description": "from a search"})
    code = main(["train", "--preset", str(path), "--env", "ReacherEasy", "--seed", "4",
                 "--run-dir", str(tmp_path / "run")])
    assert code == 130
    assert seen == [PRESETS["cpu"].replace(actor_lr=0.002, env="ReacherEasy", seed=4)]
    assert f"preset file {path}: from a search" in capsys.readouterr().out


def test_train_command_refuses_a_bad_file_before_writing(tmp_path, capsys):
    path = _write(tmp_path / "p.json", {"actor_lrr": 1})
    code = main(["train", "--preset", str(path), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "actor_lrr" in err and err.startswith("reppo: error:")
    assert not (tmp_path / "run").exists()
