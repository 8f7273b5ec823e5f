"""ManiSkill's PPO through rsl-rl-lib: the published settings and how they reach rsl-rl's PPO,
ManiSkill's bootstrap at episode ends, bad input, the sweep, and a tiny run's directory."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="ManiSkill's PPO runs on the torch backend")
pytest.importorskip("rsl_rl", reason="ManiSkill's PPO runs rsl-rl-lib's PPO")

from reppo.cli import main  # noqa: E402
from reppo.envs.contract import EnvSpec, TorchStep  # noqa: E402
from reppo.errors import UserError  # noqa: E402
from reppo.experiments import baselines  # noqa: E402
from reppo.experiments.baselines.iterations import plan_iterations  # noqa: E402
from reppo.experiments.baselines.maniskill_ppo import agent as P  # noqa: E402
from reppo.experiments.baselines.maniskill_ppo.run import PPOLoop  # noqa: E402
from reppo.runs import read_metrics  # noqa: E402

# ---- the settings ------------------------------------------------------------------------------


def test_maniskill_preset_is_the_published_ppo():
    """ManiSkill's examples/baselines/ppo defaults for state observations."""
    hp = P.preset_hyperparameters("maniskill")
    assert (hp.num_envs, hp.num_steps, hp.update_epochs, hp.num_minibatches) == (512, 50, 4, 32)
    assert (hp.gamma, hp.gae_lambda, hp.learning_rate, hp.adam_eps) == (0.8, 0.9, 3e-4, 1e-5)
    assert (hp.clip_coef, hp.clip_value_loss, hp.ent_coef, hp.vf_coef) == (0.2, False, 0.0, 0.5)
    assert (hp.max_grad_norm, hp.normalize_advantage, hp.reward_scale) == (0.5, True, 1.0)
    assert (hp.hidden_dims, hp.init_log_std) == ((256, 256, 256), -0.5)


def test_cpu_preset_resizes_only_the_parallelism():
    full, cpu = P.preset_hyperparameters("maniskill"), P.preset_hyperparameters("cpu")
    changed = {f.name for f in dataclasses.fields(full)
               if getattr(full, f.name) != getattr(cpu, f.name)}
    assert changed == {"num_envs", "num_minibatches"}
    # the same minibatch (800 samples), hence the same samples per gradient step
    for hp in (full, cpu):
        assert hp.steps_per_update // hp.num_minibatches == 800


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_minibatch": 4}, "unknown maniskill-ppo hyperparameter"),
        ({"num_minibatches": 7}, "multiple of num_minibatches"),
        ({"gamma": 1.5}, "gamma must be a number in"),
        ({"num_envs": 0}, "num_envs must be an integer >= 1"),
        ({"learning_rate": -1.0}, "learning_rate must be a number > 0"),
        ({"hidden_dims": []}, "hidden_dims"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        baselines.run_baseline("maniskill-ppo", "PullCube-v1", 0, 1000, tmp_path / "run",
                               preset="cpu", echo=None, hyperparameters=overrides)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("algo", "env", "preset", "message"),
    [
        ("maniskill-ppo", "CartpoleBalance", None, "trains the ManiSkill3 tasks"),
        ("brax-ppo", "PullCube-v1", None, "ManiSkill3's baseline is maniskill-ppo"),
        ("fasttd3", "PullCube-v1", None, "ManiSkill3's baseline is maniskill-ppo"),
        ("maniskill-ppo", "PullCube-v1", "playground", "maniskill-ppo has the presets"),
        ("brax-ppo", "CartpoleBalance", "maniskill", "'maniskill' is maniskill-ppo's only"),
    ],
)
def test_each_baseline_trains_its_own_tasks_and_presets(tmp_path, algo, env, preset, message):
    with pytest.raises(UserError, match=message):
        baselines.run_baseline(algo, env, 0, 1000, tmp_path / "run", preset=preset, echo=None)
    assert not (tmp_path / "run").exists()


def test_default_presets():
    from reppo.experiments.baselines.hyperparameters import default_preset

    assert default_preset("maniskill-ppo") == "maniskill"
    assert default_preset("brax-ppo") == default_preset("fasttd3") == "playground"


def test_schedule_counts_whole_updates():
    hp = P.preset_hyperparameters("cpu")  # 1,600 env steps per update
    plan = plan_iterations(hp.steps_per_update, 100_000, 10_000)  # an iteration: an update
    assert (plan.iterations, plan.iterations_per_eval) == (63, 6)
    assert plan.eval_steps()[0] == 9_600 and plan.eval_steps()[-1] == 63 * 1600 == 100_800


# ---- rsl-rl's PPO with these settings ----------------------------------------------------------


def _ppo(**changes):
    hp = dataclasses.replace(P.preset_hyperparameters("cpu"), **changes)
    torch.manual_seed(0)
    return hp, P.build_ppo(hp, obs_size=5, action_size=3, device=torch.device("cpu"))


def test_settings_reach_rsl_rl():
    hp, ppo = _ppo()
    assert (ppo.num_learning_epochs, ppo.num_mini_batches) == (4, 2)
    assert (ppo.gamma, ppo.lam, ppo.clip_param, ppo.entropy_coef) == (0.8, 0.9, 0.2, 0.0)
    # ManiSkill: vf_coef * 0.5 * mse; rsl-rl: value_loss_coef * mse
    assert ppo.value_loss_coef == 0.25
    assert ppo.max_grad_norm == 0.5 and not ppo.use_clipped_value_loss
    assert ppo.schedule == "fixed" and ppo.desired_kl is None
    assert ppo.normalize_advantage_per_mini_batch
    (group,) = ppo.optimizer.param_groups
    assert isinstance(ppo.optimizer, torch.optim.Adam)
    assert (group["lr"], group["eps"]) == (3e-4, 1e-5)
    assert ppo.storage.num_envs == 32 and ppo.storage.num_transitions_per_env == 50


def _linears(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_networks_are_tanh_mlps_with_orthogonal_init():
    _, ppo = _ppo()
    for model, out_dim, out_gain in ((ppo.actor, 3, 0.01 * math.sqrt(2)),
                                     (ppo.critic, 1, math.sqrt(2))):
        layers = _linears(model.mlp)
        assert [(lay.in_features, lay.out_features) for lay in layers] == [
            (5, 256), (256, 256), (256, 256), (256, out_dim)]
        assert sum(isinstance(m, torch.nn.Tanh) for m in model.mlp) == 3  # one shared instance
        for i, layer in enumerate(layers):
            gain = out_gain if i == len(layers) - 1 else math.sqrt(2)
            w = layer.weight.detach().double()
            # orthogonal with `gain`: the rows (or columns) are orthogonal, of norm `gain`
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            np.testing.assert_allclose(gram.numpy(), gain**2 * np.eye(gram.shape[0]),
                                       atol=1e-5)
            assert not layer.bias.detach().any()
    obs = P.observations(torch.randn(4, 5))
    ppo.actor(obs, stochastic_output=True)
    np.testing.assert_allclose(ppo.actor.output_std.detach().numpy(), math.exp(-0.5), rtol=1e-6)


def test_bootstrapped_reward_by_hand():
    hp = dataclasses.replace(P.preset_hyperparameters("cpu"), reward_scale=2.0)
    reward = torch.tensor([0.5, 1.0, 0.25])
    ended = torch.tensor([False, True, True])
    value = torch.tensor([9.0, 3.0, -1.0])
    out = P.bootstrapped_reward(reward, ended, value, hp)
    # scaled rewards 1, 2, 0.5; gamma 0.8 times V(final) where ended
    np.testing.assert_allclose(out.numpy(), [1.0, 2.0 + 0.8 * 3.0, 0.5 - 0.8])
    np.testing.assert_allclose(P.bootstrapped_reward(reward, ended, None, hp).numpy(),
                               [1.0, 2.0, 0.5])


class _ChainEnv:
    """Two envs; observation (t, env index); reward 1 per step; env 0 terminates (success) after
    its 2nd step, env 1 reaches its time limit after its 3rd (the contract's auto-reset)."""

    def __init__(self) -> None:
        self.num_envs, self.device = 2, torch.device("cpu")
        self.spec = EnvSpec("chain", 2, 1, 3, (0.0, 1.0), "test")
        self.t = torch.zeros(2)

    def reset(self, seed: int) -> torch.Tensor:
        self.t = torch.zeros(2)
        return self._obs(self.t)

    def _obs(self, t):
        return torch.stack([t, torch.tensor([0.0, 1.0])], -1)

    def step(self, action):
        self.t = self.t + 1
        final = self._obs(self.t)
        terminated = torch.tensor([self.t[0] == 2, False]).float()
        truncated = torch.tensor([False, self.t[1] == 3]).float()
        ended = (terminated + truncated) > 0
        self.t = torch.where(ended, torch.zeros(2), self.t)
        return TorchStep(obs=self._obs(self.t), reward=torch.ones(2), terminated=terminated,
                         truncated=truncated, final_obs=final, success=terminated.bool())


def test_every_episode_end_bootstraps_from_its_final_observation():
    """After the rollout rsl-rl holds r + gamma V(final obs) at each end (a success too, as
    ManiSkill's script) and a done flag there, so that its GAE cuts the trace."""
    hp = dataclasses.replace(P.preset_hyperparameters("cpu"), num_envs=2, num_steps=4,
                             num_minibatches=2)
    torch.manual_seed(0)
    ppo = P.build_ppo(hp, obs_size=2, action_size=1, device=torch.device("cpu"))
    env = _ChainEnv()
    loop = PPOLoop(ppo, env, hp, seed=0)
    returns: list = []
    with torch.inference_mode():
        for _ in range(4):
            loop._step(returns, [])

        def value(t, i):
            obs = P.observations(torch.tensor([[float(t), float(i)]]))
            return float(ppo.critic(obs).reshape(()))

        rewards = ppo.storage.rewards[..., 0]
        dones = ppo.storage.dones[..., 0].bool()
        # env 0 ends at steps 1 and 3 (t = 2), env 1 at step 2 (t = 3)
        assert dones[:, 0].tolist() == [False, True, False, True]
        assert dones[:, 1].tolist() == [False, False, True, False]
        np.testing.assert_allclose(rewards[:, 0].numpy(), [1.0, 1 + 0.8 * value(2, 0), 1.0,
                                                           1 + 0.8 * value(2, 0)], rtol=1e-5)
        np.testing.assert_allclose(rewards[:, 1].numpy(), [1.0, 1.0, 1 + 0.8 * value(3, 1), 1.0],
                                   rtol=1e-5)
    # the training episodes' undiscounted returns: env 0 twice (2 each), env 1 once (3)
    assert sorted(float(x) for r in returns for x in r) == [2.0, 2.0, 3.0]


# ---- the sweep -----------------------------------------------------------------------------------


def test_sweep_runs_maniskill_ppo_on_the_maniskill_suite(tmp_path, capsys):
    code = main(["sweep", "--suite", "maniskill", "--seeds", "1", "--algo", "maniskill-ppo",
                 "--tasks", "PullCube-v1", "--out", str(tmp_path / "s"), "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0, out
    line = next(x for x in out.splitlines() if "reppo.cli baseline" in x)
    assert "--algo maniskill-ppo --env PullCube-v1 --seed 0 --steps 50000000" in line
    assert "--preset maniskill" in line
    assert not (tmp_path / "s").exists()


# ---- a tiny run ----------------------------------------------------------------------------------


def _maniskill_or_skip():
    from reppo.envs import maniskill as ms

    try:
        ms.check_maniskill()
    except ms.ManiSkillError as e:
        if os.environ.get("CI"):  # CI installs ManiSkill and its Vulkan driver
            raise
        pytest.skip(str(e))


TINY = {"num_envs": 2, "num_steps": 10, "num_minibatches": 2, "hidden_dims": [16, 16]}


@pytest.mark.e2e
@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")
def test_tiny_run_writes_a_valid_run_dir(tmp_path):
    _maniskill_or_skip()
    lines: list[str] = []
    result = baselines.train_baseline(
        "maniskill-ppo", "PullCube-v1", 0, 40, tmp_path / "run", preset="cpu",
        eval_interval_steps=20, eval_episodes=2, echo=lines.append, hyperparameters=TINY,
        device="cpu")
    run_dir = result.run_dir
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["algo"], config["env"], config["seed"], config["num_seeds"]) == (
        "maniskill-ppo", "PullCube-v1", 0, 1)
    assert (config["preset"], config["device"]) == ("cpu", "cpu")
    assert config["hyperparameters"]["hidden_dims"] == [16, 16]
    records = read_metrics(run_dir)
    assert [r["env_steps"] for r in records] == config["schedule"]["eval_steps"] == [20, 40]
    assert records[-1]["final"] and "final" not in records[0]
    for r in records:
        assert r["eval/episodes"] == 2
        assert 0.0 <= r["eval/return_mean"] <= 50.0  # normalized dense rewards, 50 steps
        assert r["eval/success_once"] in (0.0, 0.5, 1.0)
        assert r["eval/success_at_end"] <= r["eval/success_once"]
        assert np.isfinite(r["maniskill_ppo/value_loss"])
        assert np.isfinite(r["maniskill_ppo/surrogate_loss"])
    assert len(lines) == 1 + len(records) and "ManiSkill PPO" in lines[0]
    assert (run_dir / "learning_curve.png").is_file()
    versions = json.loads((run_dir / "versions.json").read_text())
    assert "rsl-rl-lib" in json.dumps(versions)

    # The logged evaluation is the project's protocol: the final actor's mean action on the
    # episodes of eval_seed(0, 40), rerun here.
    from reppo.envs.eval_seed import eval_seed
    from reppo.envs.maniskill import make_maniskill_env
    from reppo.envs.torch_registry import evaluate_torch

    with make_maniskill_env("PullCube-v1", 2, evaluation=True, device="cpu") as env:
        again = evaluate_torch(env, result.policy_factory(result.params),
                               seed=eval_seed(0, 40))
    assert float(again["returns"].double().mean()) == pytest.approx(
        records[-1]["eval/return_mean"], rel=1e-5)
