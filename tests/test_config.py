"""The Config dataclass, its validation and CLI coercion, and the named presets (no JAX compile)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from reppo.config import Config, ConfigError, coerce_field, field_help, field_type
from reppo.presets import PAPER, PRESETS, get_preset

# ---- presets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["paper", "medium", "small", "cpu"])
def test_every_preset_validates(name):
    config = get_preset(name)
    assert config is PRESETS[name]
    assert config.validated() is config
    assert Config.from_dict(config.to_dict()) == config
    assert config.backend == "jax"
    assert config.steps_per_iteration % config.num_minibatches == 0


def test_paper_preset_matches_table_1():
    c = get_preset("paper")
    assert c == PAPER == Config()
    assert c.num_envs == 1024
    assert c.num_steps == 128
    assert c.steps_per_iteration == 131_072
    assert c.num_epochs == 8
    assert c.num_minibatches == 64
    assert c.minibatch_size == 2048
    assert c.actor_lr == c.critic_lr == 3e-4
    assert c.temperature_lr is None  # the actor's learning rate
    assert c.max_grad_norm == 0.5
    assert c.lam == 0.95
    assert c.gamma is None  # 1 - 10 / episode_length, 0.99 on DMC
    assert c.num_bins == 151
    assert c.kl_target == 0.1
    assert c.alpha_init == 0.01
    assert c.beta_init == 0.01
    assert c.target_entropy_per_dim == -0.5
    assert c.actor_hidden_dim == c.critic_hidden_dim == 512
    assert c.actor_num_layers == 3
    assert (c.critic_encoder_layers, c.critic_head_layers, c.critic_pred_layers) == (2, 2, 2)
    assert c.total_steps == 50_000_000
    assert c.norm == "rms"
    assert c.actor_objective == "clipped"
    assert c.use_hl_gauss and c.normalize_obs and c.reward_prediction
    assert c.aux_loss_mult == 1.0


@pytest.mark.parametrize(("name", "num_steps"), [("medium", 64), ("small", 32)])
def test_reduced_data_presets_keep_the_minibatch_size(name, num_steps):
    c = get_preset(name)
    assert c.num_steps == num_steps
    assert c.num_envs == 1024
    assert c.steps_per_iteration == 1024 * num_steps
    assert c.minibatch_size == 2048
    # Everything else is the paper's.
    paper, reduced = PAPER.to_dict(), c.to_dict()
    changed = {k for k in paper if paper[k] != reduced[k]}
    assert changed == {"num_steps", "num_minibatches"}


def test_cpu_preset_is_small_and_runs_the_default_task():
    c = get_preset("cpu")
    assert c.env == "CartpoleBalance"
    assert c.num_envs < PAPER.num_envs
    assert c.actor_hidden_dim < PAPER.actor_hidden_dim
    assert c.critic_hidden_dim < PAPER.critic_hidden_dim
    assert c.total_steps < PAPER.total_steps
    assert c.log_interval_steps % c.steps_per_iteration == 0


def test_the_shipped_presets_have_no_per_task_settings():
    # One cpu preset for every task: a per-task entry would be a setting chosen on that task.
    from reppo.presets import TASK_SETTINGS, task_settings

    assert TASK_SETTINGS == {}
    assert get_preset("cpu", env="ReacherEasy") == PRESETS["cpu"].replace(env="ReacherEasy")
    assert task_settings("cpu", "ReacherEasy") == {}


def test_per_task_settings_apply_to_their_task_only(reacher_setting):
    from reppo.presets import TASK_SETTINGS, task_settings

    reacher = get_preset("cpu", env="ReacherEasy")
    assert reacher.env == "ReacherEasy" and reacher.kl_target == 0.2
    # Nothing else differs from the preset.
    base, tuned = PRESETS["cpu"].to_dict(), reacher.to_dict()
    assert {k for k in base if base[k] != tuned[k]} == {
        "env", "kl_target", "action_noise_correlation"
    }
    assert reacher.action_noise_correlation == 0.0 < PRESETS["cpu"].action_noise_correlation
    assert get_preset("cpu", env="CartpoleBalance") == PRESETS["cpu"]
    assert get_preset("cpu", env="PendulumSwingup").kl_target == PRESETS["cpu"].kl_target
    # Ablations of a base inherit its per-task settings; other presets have none.
    assert get_preset("cpu-no-aux", env="ReacherEasy").kl_target == 0.2
    assert get_preset("paper", env="ReacherEasy").kl_target == PAPER.kl_target
    assert task_settings("auto", "ReacherEasy") == {}
    # Every entry names a real task and real, valid config fields.
    from reppo.envs.registry import list_envs

    for preset, tasks in TASK_SETTINGS.items():
        for task, fields in tasks.items():
            assert task in list_envs()
            get_preset(preset, env=task).validated()
            assert set(fields) <= {f.name for f in dataclasses.fields(Config)}


def test_cli_applies_per_task_settings_unless_a_flag_overrides_them(monkeypatch, tmp_path,
                                                                     capsys, reacher_setting):
    import reppo.loop.runner as training
    from reppo import cli

    seen = []

    def fake_train(config, run_dir, **kwargs):
        seen.append(config)
        return training.TrainResult(run_dir=run_dir, env_steps=0, iterations=0, wall_time=0.0)

    monkeypatch.setattr(training, "train", fake_train)
    base = ["train", "--preset", "cpu", "--env", "ReacherEasy"]
    assert cli.main([*base, "--run-dir", str(tmp_path / "a")]) == 0
    assert ("preset cpu with its ReacherEasy settings: kl_target=0.2, "
            "action_noise_correlation=0.0") in capsys.readouterr().out
    # A flag replaces its field's setting; the other setting still applies, and says so.
    assert cli.main([*base, "--kl-target", "0.05", "--run-dir", str(tmp_path / "b")]) == 0
    head = capsys.readouterr().out.split("REPPO")[0]
    assert "settings: action_noise_correlation=0.0" in head and "kl_target" not in head
    flags = ["--kl-target", "0.05", "--action-noise-correlation", "0.9"]
    assert cli.main([*base, *flags, "--run-dir", str(tmp_path / "c")]) == 0
    assert "settings" not in capsys.readouterr().out.split("REPPO")[0]
    assert [c.kl_target for c in seen] == [0.2, 0.05, 0.05]
    assert [c.action_noise_correlation for c in seen] == [0.0, 0.0, 0.9]


def test_auto_preset_is_cpu_without_a_gpu():
    import jax

    assert jax.default_backend() == "cpu", "these tests expect a CPU-only machine"
    assert get_preset("auto") is PRESETS["cpu"]


@pytest.mark.parametrize(("name", "suggestion"), [("cpux", "cpu"), ("papr", "paper")])
def test_unknown_preset_suggests_the_closest(name, suggestion):
    with pytest.raises(ConfigError) as info:
        get_preset(name)
    message = str(info.value)
    assert repr(name) in message
    assert f"did you mean {suggestion!r}" in message
    for valid in ("auto", "paper", "medium", "small", "cpu"):
        assert valid in message


def test_unknown_preset_without_a_close_match_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown preset 'zzzzzz'; valid presets: auto, paper"):
        get_preset("zzzzzz")


# ---- derived quantities -----------------------------------------------------------------------


def test_resolved_gamma():
    assert Config().resolved_gamma(1000) == 0.99  # DMC's 1000-step episodes
    assert Config().resolved_gamma(500) == pytest.approx(0.98)
    assert Config(gamma=0.9).resolved_gamma(1000) == 0.9
    assert Config(gamma=0.995).resolved_gamma(100) == 0.995


def test_value_support():
    c = Config()
    assert c.value_support(0.99, (0.0, 1.0)) == pytest.approx((0.0, 150.0))
    # Negative rewards get headroom at the bottom too.
    assert c.value_support(0.99, (-1.0, 1.0)) == pytest.approx((-200.0, 200.0))
    assert Config(v_min=-5.0, v_max=10.0).value_support(0.99, (0.0, 1.0)) == (-5.0, 10.0)
    assert Config(v_min=-5.0).value_support(0.99, (0.0, 1.0)) == pytest.approx((-5.0, 150.0))
    assert Config(v_max=20.0).value_support(0.99, (0.0, 1.0)) == pytest.approx((0.0, 20.0))
    lo, hi = c.value_support(0.99, (0.0, 1.0))
    assert isinstance(lo, float) and isinstance(hi, float)


def test_minibatch_and_iteration_counts():
    c = Config(num_envs=8, num_steps=16, num_minibatches=4, total_steps=300)
    assert c.steps_per_iteration == 128
    assert c.minibatch_size == 32
    assert c.num_iterations == 3  # rounded up
    assert Config(total_steps=1).num_iterations == 1


# ---- serialization ----------------------------------------------------------------------------

_UNUSUAL = PAPER.replace(
    env="WalkerRun", seed=7, num_seeds=3, gamma=0.97, v_min=-1.0, v_max=2.0,
    temperature_lr=1e-3, norm="layer", actor_objective="full", kl_estimator="analytic",
    use_hl_gauss=False, normalize_obs=False, impl="jax", wandb_project="x",
)


@pytest.mark.parametrize("config", [*PRESETS.values(), _UNUSUAL], ids=[*PRESETS, "unusual"])
def test_dict_round_trip(config):
    data = config.to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(Config)}
    assert Config.from_dict(data) == config


@pytest.mark.parametrize("config", [*PRESETS.values(), _UNUSUAL], ids=[*PRESETS, "unusual"])
def test_json_round_trip(config):
    text = config.to_json()
    data = json.loads(text)
    assert list(data) == sorted(data)
    again = Config.from_dict(data)
    assert again == config
    assert again.to_json() == text
    # Types survive JSON: ints stay ints, optional floats stay None or float.
    assert isinstance(again.num_envs, int) and not isinstance(again.num_envs, bool)
    assert isinstance(again.actor_lr, float)


def test_from_dict_accepts_a_partial_dict_and_fills_defaults():
    c = Config.from_dict({"num_envs": 16, "num_minibatches": 8})
    assert c == PAPER.replace(num_envs=16, num_minibatches=8)


def test_replace_validates_and_returns_a_new_config():
    c = PAPER.replace(num_envs=512)
    assert c.num_envs == 512 and PAPER.num_envs == 1024
    with pytest.raises(ConfigError, match="num_envs"):
        PAPER.replace(num_envs=0)


# ---- validation -------------------------------------------------------------------------------

_INVALID = [
    ("num_envs", 0),
    ("num_envs", -3),
    ("num_steps", 0),
    ("num_epochs", -1),
    ("num_minibatches", 0),
    ("total_steps", -5),
    ("num_seeds", 0),
    ("keep_checkpoints", 0),
    ("actor_hidden_dim", 0),
    ("num_bins", 1),
    ("seed", -1),
    ("num_envs", 2.5),  # not an integer
    ("num_envs", True),  # a bool is not an int
    ("gamma", 1.0),
    ("gamma", 0.0),
    ("gamma", -0.5),
    ("lam", 1.5),
    ("lam", -0.1),
    ("actor_lr", 0.0),
    ("temperature_lr", -1e-3),
    ("max_grad_norm", -0.5),
    ("min_std", -0.1),
    ("action_noise_correlation", 1.0),  # a chain that never forgets: no fresh noise at all
    ("action_noise_correlation", -0.5),
    ("aux_loss_mult", -1.0),
    ("eval_interval_steps", -1),
    ("norm", "batch"),
    ("actor_objective", "foo"),
    ("kl_estimator", "exact"),
    ("impl", "torch"),
    ("backend", "tensorflow"),
    ("actor_lr", math.nan),
    ("critic_lr", math.inf),
    ("kl_target", "inf"),
    ("v_min", -math.inf),
    ("normalize_obs", "maybe"),
    ("use_hl_gauss", 1),  # JSON 1 is not a bool
    ("num_envs", None),  # not optional
    ("env", None),
]


@pytest.mark.parametrize(("name", "value"), _INVALID)
def test_invalid_value_names_its_field(name, value):
    with pytest.raises(ConfigError, match=name):
        PAPER.replace(**{name: value})
    with pytest.raises(ConfigError, match=name):
        Config.from_dict({**PAPER.to_dict(), name: value})


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_unknown_field_is_named():
    with pytest.raises(ConfigError, match="unknown config field.*learning_rate"):
        Config.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="foo"):
        PAPER.replace(foo=1)


def test_num_minibatches_must_divide_the_batch():
    with pytest.raises(ConfigError, match="num_minibatches") as info:
        PAPER.replace(num_envs=10, num_steps=10, num_minibatches=3)
    assert "100" in str(info.value)
    assert PAPER.replace(num_envs=10, num_steps=10, num_minibatches=4).minibatch_size == 25


@pytest.mark.parametrize(("v_min", "v_max"), [(1.0, 1.0), (2.0, -2.0)])
def test_value_support_bounds_must_be_ordered(v_min, v_max):
    with pytest.raises(ConfigError, match="v_min") as info:
        PAPER.replace(v_min=v_min, v_max=v_max)
    assert "v_max" in str(info.value)


def test_validated_catches_a_directly_built_invalid_config():
    with pytest.raises(ConfigError, match="lam"):
        Config(lam=2.0).validated()
    with pytest.raises(ConfigError, match="norm"):
        Config(norm="batch").validated()  # type: ignore[arg-type]


# ---- coercion of command-line strings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("total_steps", "1e6", 1_000_000),
        ("total_steps", "2E7", 20_000_000),
        ("total_steps", "50000000", 50_000_000),
        ("num_envs", "64", 64),
        ("num_envs", 64.0, 64),  # JSON may hold integral floats
        ("gamma", "none", None),
        ("gamma", "None", None),
        ("gamma", "null", None),
        ("gamma", "auto", None),
        ("gamma", "0.97", 0.97),
        ("v_min", "-10", -10.0),
        ("temperature_lr", "AUTO", None),
        ("actor_lr", "3e-4", 3e-4),
        ("normalize_obs", "true", True),
        ("normalize_obs", "True", True),
        ("normalize_obs", "false", False),
        ("normalize_obs", "FALSE", False),
        ("normalize_obs", "yes", True),
        ("normalize_obs", "0", False),
        ("use_hl_gauss", False, False),
        ("norm", "layer", "layer"),
        ("actor_objective", "value", "value"),
        ("env", "WalkerRun", "WalkerRun"),
        ("wandb_project", "none", "none"),  # a plain string field keeps "none"
    ],
)
def test_coerce_field_parses_cli_strings(name, text, expected):
    value = coerce_field(name, text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("num_envs", "abc"),
        ("num_envs", "2.5"),
        ("num_envs", "none"),
        ("num_envs", "auto"),
        ("gamma", "abc"),
        ("actor_lr", "nan"),
        ("actor_lr", "inf"),
        ("normalize_obs", "maybe"),
        ("normalize_obs", ""),
        ("norm", "batch"),
        ("norm", "none-ish"),
    ],
)
def test_coerce_field_rejects_bad_strings(name, text):
    with pytest.raises(ConfigError, match=name):
        coerce_field(name, text)


def test_coerce_field_rejects_non_integral_exponent_for_int():
    with pytest.raises(ConfigError, match="num_envs"):
        coerce_field("num_envs", "15e-1")


def test_coerce_field_rejects_overflowing_int():
    with pytest.raises(ConfigError, match="total_steps"):
        coerce_field("total_steps", "1e400")


def test_none_keeps_the_norm_choice_none():
    # 'none' is a valid Literal value of `norm`, not "use the default".
    assert coerce_field("norm", "none") == "none"


def test_every_field_has_help_and_a_type():
    for f in dataclasses.fields(Config):
        assert field_help(f.name).strip(), f.name
        assert field_type(f.name) is not None


def test_value_support_rejects_an_empty_range():
    with pytest.raises(ConfigError, match="v-min"):
        Config(v_min=200.0).value_support(0.99, (0.0, 1.0))


@pytest.mark.parametrize("text, value", [
    ("100000", 100_000), ("100_000", 100_000), ("100,000", 100_000), ("1e6", 1_000_000),
    ("100k", 100_000), ("1.5M", 1_500_000), ("0.1k", 100), ("2G", 2_000_000_000), ("-3", -3),
])
def test_counts_are_parsed_one_way_everywhere(text, value):
    from reppo.config import coerce_field, parse_count

    assert parse_count(text) == value
    assert coerce_field("total_steps" if value > 0 else "seed", text) == value


@pytest.mark.parametrize("text", ["1.5", "1e-3", "abc", "inf", "nan", "", "k", "1.5.0"])
def test_counts_that_are_not_whole_numbers_are_refused(text):
    from reppo.config import ConfigError, coerce_field, parse_count

    with pytest.raises(ValueError):
        parse_count(text)
    with pytest.raises(ConfigError, match="total_steps must be a whole number .*100k"):
        coerce_field("total_steps", text)


# ---- the ManiSkill3 presets ----------------------------------------------------------------------
def test_maniskill_presets_hold_the_authors_maniskill_settings():
    from reppo.presets import PRESETS

    ms = PRESETS["maniskill"]
    # Table 1 with the authors' ManiSkill overrides: 4 epochs of 128 minibatches, support
    # [-15, 15], successes bootstrapped; gamma stays 1 - 10 / episode_length (0.8 at T = 50).
    assert (ms.num_envs, ms.num_steps, ms.num_epochs, ms.num_minibatches) == (1024, 128, 4, 128)
    assert (ms.v_min, ms.v_max, ms.gamma, ms.bootstrap_terminations) == (-15.0, 15.0, None, True)
    assert ms.backend == "torch" and ms.resolved_gamma(50) == pytest.approx(0.8)
    cpu = PRESETS["maniskill-cpu"]
    changed = {k for k, v in cpu.to_dict().items() if v != ms.to_dict()[k]}
    assert changed <= {
        "total_steps", "num_envs", "num_steps", "num_minibatches", "actor_hidden_dim",
        "critic_hidden_dim", "actor_lr", "critic_lr", "num_bootstrap_samples",
        "log_interval_steps", "eval_interval_steps", "checkpoint_interval_steps",
        "eval_episodes",
    }
    assert (cpu.v_min, cpu.v_max, cpu.num_epochs, cpu.bootstrap_terminations) == (
        -15.0, 15.0, 4, True
    )


@pytest.mark.parametrize("cuda, expected", [(False, "maniskill-cpu"), (True, "maniskill")])
def test_auto_picks_the_maniskill_preset_for_a_maniskill_task(monkeypatch, cuda, expected):
    from reppo import presets

    monkeypatch.setattr(presets, "_torch_sees_cuda", lambda: cuda)
    assert presets.resolve_preset_name("auto", backend="torch", env="PushCube-v1") == expected
    assert presets.resolve_preset_name("auto", backend="jax", env="PickCube-v1") == expected
    assert presets.get_preset("auto", backend="torch", env="PullCube-v1").env == "PullCube-v1"
    assert presets.resolve_preset_name("cpu", backend="torch", env="PushCube-v1") == "cpu"
    # Other tasks keep the backend's rule.
    assert presets.resolve_preset_name("auto", backend="torch", env="CheetahRun") == (
        "paper" if cuda else "cpu"
    )
