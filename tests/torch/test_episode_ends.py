"""How the torch agent trains on an episode that ends in a termination (a ManiSkill success).

ManiSkill3 tasks terminate on success (or failure) while their dense reward would go on; the
authors' partial-reset training bootstraps such an end from the observation it reached, as a
time-limit truncation. Elsewhere a termination has no future (G = r).
"""

import math

import pytest
import torch

from reppo.envs.contract import EnvSpec, TorchStep
from reppo.torch import losses as L
from reppo.torch.agent import TorchAgent

OBS, ACT, ENVS, STEPS = 3, 2, 4, 5
SUCCESS_STEP = 2  # env 0 succeeds (terminates) at this step of the rollout


class _SucceedingEnv:
    """Env 0 terminates with reward 1 at SUCCESS_STEP and is reset; every other step earns 0.5.
    Observations move, so the reached observation differs from the reset one."""

    def __init__(self, family):
        self.spec = EnvSpec("Succeeding", OBS, ACT, 50, (0.0, 1.0), family)
        self.num_envs = ENVS
        self.t = 0
        self.obs = torch.zeros(ENVS, OBS)

    def step(self, action):
        self.t += 1
        reached = self.obs + 0.1 * torch.arange(1, OBS + 1) + action.sum(-1, keepdim=True)
        reward = torch.full((ENVS,), 0.5)
        terminated = torch.zeros(ENVS)
        success = torch.zeros(ENVS, dtype=torch.bool)
        if self.t == SUCCESS_STEP + 1:
            reward[0], terminated[0], success[0] = 1.0, 1.0, True
        self.obs = torch.where(terminated[:, None] > 0, torch.zeros_like(reached), reached)
        return TorchStep(self.obs, reward, terminated, torch.zeros(ENVS), reached, success)


def _rollout(tiny_config, family, **changes):
    config = tiny_config.replace(
        backend="torch", num_envs=ENVS, num_steps=STEPS, num_minibatches=1,
        stagger_episodes=False, **changes,
    )
    agent = TorchAgent(config, _SucceedingEnv(family).spec, torch.device("cpu"), seed=0)
    with torch.no_grad():  # a critic whose values differ from its initial prior's 0
        for p in agent.critic.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    env = _SucceedingEnv(family)
    data, *_ = agent.rollout(env, env.obs, torch.zeros(ENVS))
    targets = L.soft_td_lambda(
        data.soft_reward, data.next_value, data.terminated, data.truncated, agent.gamma,
        config.lam,
    )
    return agent, data, targets


def test_a_maniskill_success_bootstraps_from_the_observation_it_reached(tiny_config):
    agent, data, targets = _rollout(tiny_config, "maniskill")
    t = SUCCESS_STEP
    assert agent.bootstrap_terminations
    assert data.terminated.sum() == 0  # no transition is terminal
    assert data.truncated[t, 0] == 1 and data.truncated.sum() == 1
    # The soft reward keeps the entropy bonus of a next action, and the target bootstraps
    # fully from V(reached observation): G = r - gamma alpha log pi(a'|x') + gamma V(x').
    bonus = data.soft_reward[t, 0] - data.reward[t, 0]
    assert data.reward[t, 0] == 1.0 and bonus != 0
    expected = data.reward[t, 0] + bonus + agent.gamma * data.next_value[t, 0]
    torch.testing.assert_close(targets[t, 0], expected)
    assert abs(float(targets[t, 0] - data.reward[t, 0])) > 1e-3  # not G = r


@pytest.mark.parametrize("family, setting", [("dm_control", None), ("maniskill", False)])
def test_a_termination_without_bootstrap_is_worth_its_reward(tiny_config, family, setting):
    agent, data, targets = _rollout(tiny_config, family, bootstrap_terminations=setting)
    t = SUCCESS_STEP
    assert not agent.bootstrap_terminations
    assert data.terminated[t, 0] == 1 and data.truncated.sum() == 0
    assert data.soft_reward[t, 0] == data.reward[t, 0] == 1.0  # no bonus after the end
    assert float(targets[t, 0]) == 1.0


def test_the_setting_can_bootstrap_terminations_of_any_family(tiny_config):
    agent, data, _ = _rollout(tiny_config, "dm_control", bootstrap_terminations=True)
    assert agent.bootstrap_terminations
    assert data.terminated.sum() == 0 and data.truncated[SUCCESS_STEP, 0] == 1
    assert math.isfinite(float(data.next_value[SUCCESS_STEP, 0]))
