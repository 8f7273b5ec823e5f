"""The PyTorch backend's own modules: parameter layout and load_flat, the losses against their
definitions, torch.compile, devices and normalization, plus the torch-only corners of the shared
math (boolean flags, generators). The math both backends share is checked on both in
tests/test_math.py; cross-backend equality on the same weights is in tests/test_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reppo.config import Config  # noqa: E402
from reppo.torch import distributions as TD  # noqa: E402
from reppo.torch import losses as TL  # noqa: E402
from reppo.torch import normalizer as TN  # noqa: E402
from reppo.torch.networks import Actor, Critic, FlatMismatchError, load_flat, to_flat  # noqa: E402


# ---- torch-only corners of the shared math ---------------------------------------------------
def test_torch_td_lambda_accepts_bool_flags():
    r, v = torch.ones(4, 2), torch.full((4, 2), 2.0)
    flags = torch.zeros(4, 2, dtype=torch.bool)
    as_bool = TL.soft_td_lambda(r, v, flags, flags, 0.9, 0.95)
    as_float = TL.soft_td_lambda(r, v, flags.float(), flags.float(), 0.9, 0.95)
    torch.testing.assert_close(as_bool, as_float)


def test_torch_sample_is_reproducible_with_a_generator():
    dist = TD.Gaussian(torch.zeros(4, 2), torch.ones(4, 2))
    first = TD.sample(dist, torch.Generator().manual_seed(5))
    second = TD.sample(dist, torch.Generator().manual_seed(5))
    for x, y in zip(first, second, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    torch.testing.assert_close(TD.deterministic_action(dist), torch.zeros(4, 2))


# ---- torch networks ------------------------------------------------------------------------------
def _config(**overrides) -> Config:
    return Config(actor_hidden_dim=16, critic_hidden_dim=16, num_bins=21, **overrides).validated()


@pytest.mark.parametrize("norm", ["rms", "layer", "none"])
def test_network_names_shapes_and_layer_counts(norm):
    torch.manual_seed(0)
    actor = Actor(_config(norm=norm), obs_size=5, action_size=3)
    names = set(to_flat(actor))
    norm_params = {"rms": ["scale"], "layer": ["bias", "scale"], "none": []}[norm]
    expected = {"output/kernel", "output/bias"}
    for i in range(2):  # 3 layers: 2 hidden blocks and the output
        expected |= {f"hidden_{i}/linear/kernel", f"hidden_{i}/linear/bias"}
        expected |= {f"hidden_{i}/norm/{p}" for p in norm_params}
    assert names == expected
    assert actor.hidden_0.linear.kernel.shape == (5, 16)
    assert actor.output.kernel.shape == (16, 6)

    critic = Critic(_config(norm=norm), obs_size=5, action_size=3)
    flat = to_flat(critic)
    assert {n.split("/")[1] for n in flat if n.startswith("encoder/")} == {"hidden_0", "output"}
    assert {n.split("/")[1] for n in flat if n.startswith("head/")} == {"hidden_0", "output"}
    assert flat["encoder/hidden_0/linear/kernel"].shape == (8, 16)
    assert flat["head/output/kernel"].shape == (16, 21)
    assert flat["value_prior"].shape == (21,)
    assert flat["predictor/output/kernel"].shape == (16, 17)  # latent + reward
    assert all(v.dtype == np.float32 for v in flat.values())

    dist = actor(torch.ones(4, 5))
    assert dist.mean.shape == dist.std.shape == (4, 3)
    assert bool(torch.all(dist.std >= 0.1))
    latent = critic.encode(torch.ones(4, 5), torch.zeros(4, 3))
    next_latent, reward = critic.predict(latent)
    assert latent.shape == next_latent.shape == (4, 16) and reward.shape == (4,)
    assert critic.value_head(latent).shape == (4, 21)


def test_scalar_critic_without_reward_prediction_shapes():
    critic = Critic(_config(use_hl_gauss=False, reward_prediction=False), 5, 3)
    latent = critic.encode(torch.ones(4, 5), torch.zeros(4, 3))
    assert critic.value_head(latent).shape == (4, 1)
    next_latent, reward = critic.predict(latent)
    assert next_latent.shape == (4, 16)
    torch.testing.assert_close(reward, torch.zeros(4))


def test_initialisation_is_orthogonal_with_zero_bias():
    torch.manual_seed(0)
    actor = Actor(Config(actor_hidden_dim=512).validated(), obs_size=400, action_size=2)
    first, second = actor.hidden_0.linear.kernel.detach(), actor.hidden_1.linear.kernel.detach()
    # (400, 512): orthonormal rows; (512, 512): an orthogonal matrix.
    torch.testing.assert_close(first @ first.T, torch.eye(400), atol=1e-4, rtol=0)
    torch.testing.assert_close(second.T @ second, torch.eye(512), atol=1e-4, rtol=0)
    assert not actor.hidden_0.linear.bias.any()
    assert torch.all(actor.hidden_0.norm.scale == 1)


def test_value_prior_starts_the_critic_at_the_chosen_value():
    support = TL.Support.create(-10.0, 10.0, 21, 0.75)
    critic = Critic(_config(), 5, 3, value_prior=TL.initial_value_prior(support, 2.0))
    q = TL.critic_value(critic, torch.randn(64, 5), torch.randn(64, 3), support)
    # The head's random output (order one) barely moves 40 x the prior's logits.
    assert float((q.detach() - 2.0).abs().max()) < 0.5
    assert critic.value_prior.requires_grad
    with pytest.raises(ValueError, match="value_prior"):
        Critic(_config(), 5, 3, value_prior=np.zeros(7, np.float32))


def test_load_flat_round_trip_and_prefixes():
    torch.manual_seed(0)
    source, target = Actor(_config(), 5, 3), Actor(_config(), 5, 3)
    checkpoint = {
        **to_flat(source, "actor/"),
        **to_flat(Critic(_config(), 5, 3), "critic/"),
        "actor_opt/0/count": np.zeros((), np.int32),  # shares a first word, not the prefix
        "iteration": np.zeros((), np.int32),
    }
    load_flat(target, checkpoint, "actor/")
    for name, value in to_flat(target).items():
        np.testing.assert_array_equal(value, checkpoint["actor/" + name])
    # A leading seed axis, as in a JAX checkpoint of several seeds.
    stacked = {k: np.stack([v, v + 1]) for k, v in to_flat(source).items()}
    load_flat(target, stacked, index=1)
    np.testing.assert_array_equal(to_flat(target)["output/bias"], stacked["output/bias"][1])


def test_load_flat_reports_the_offending_array():
    actor = Actor(_config(), 5, 3)
    flat = to_flat(actor)
    before = to_flat(actor)

    def fails(bad, match, prefix=""):
        with pytest.raises(FlatMismatchError, match=match):
            load_flat(actor, bad, prefix)

    fails({k: v for k, v in flat.items() if k != "hidden_1/norm/scale"}, "hidden_1/norm/scale")
    fails({**flat, "output/kernel": np.zeros((16, 7), np.float32)}, "output/kernel.*shape")
    fails({**flat, "output/bias": flat["output/bias"].astype(np.float64)}, "output/bias.*dtype")
    fails({**flat, "hidden_2/linear/kernel": np.zeros((16, 16), np.float32)}, "hidden_2")
    fails({"actor/" + k: v for k, v in flat.items()}, "missing array 'hidden_0")
    assert issubclass(FlatMismatchError, ValueError)
    # A failed load leaves the module untouched, even where the first arrays fitted.
    bad = {k: v + 1 for k, v in flat.items()}
    bad["output/bias"] = np.zeros(2, np.float32)
    fails(bad, "output/bias")
    for name, value in to_flat(actor).items():
        np.testing.assert_array_equal(value, before[name])


# ---- torch losses against their definitions ------------------------------------------------
def _actor_setup(objective, kl_estimator="sample"):
    torch.manual_seed(0)
    config = _config()
    actor, behaviour, critic = Actor(config, 5, 3), Actor(config, 5, 3), Critic(config, 5, 3)
    obs = torch.randn(64, 5)
    with torch.no_grad():
        for p, q in zip(behaviour.parameters(), actor.parameters(), strict=True):
            p.copy_(q + 0.3 * torch.randn_like(q))
        old = behaviour(obs)
    noise, kl_noise = torch.randn(64, 3), torch.randn(16, 64, 3)
    if kl_estimator == "analytic":
        kl_noise = None
    support = TL.Support.create(0.0, 10.0, 21, 0.75)
    with torch.no_grad():
        new = actor(obs)
        kl = TD.analytic_kl(old, new) if kl_noise is None else TD.sampled_forward_kl(
            old, new, kl_noise
        )
    kl_target = float(torch.median(kl))  # about half the states on each branch of "clipped"
    log_alpha = torch.tensor(np.log(0.2), dtype=torch.float32, requires_grad=True)
    log_beta = torch.tensor(np.log(3.0), dtype=torch.float32, requires_grad=True)
    return actor, (critic, old, obs, log_alpha, log_beta, noise, kl_noise, support, objective,
                   kl_target)


@pytest.mark.parametrize("kl_estimator", ["sample", "analytic"])
@pytest.mark.parametrize("objective", ["clipped", "full", "value"])
def test_actor_loss_matches_its_definition(objective, kl_estimator):
    actor, args = _actor_setup(objective, kl_estimator)
    critic, old, obs, _, _, noise, kl_noise, support, _, kl_target = args
    loss, metrics = TL.actor_loss(actor, *args)
    with torch.no_grad():
        dist = actor(obs)
        action, _, logp = TD.sample_from_noise(dist, noise)
        q = TL.critic_value(critic, obs, action, support)
        kl = TD.analytic_kl(old, dist) if kl_noise is None else TD.sampled_forward_kl(
            old, dist, kl_noise
        )
    alpha, beta = 0.2, 3.0
    ref = {
        "clipped": torch.where(kl < kl_target, alpha * logp - q, beta * kl),
        "full": alpha * logp - q + beta * kl,
        "value": alpha * logp - q,
    }[objective]
    assert float(loss.detach()) == pytest.approx(float(ref.mean()), rel=1e-5)
    assert float(metrics["entropy"]) == pytest.approx(float(-logp.mean()), rel=1e-5)
    assert float(metrics["kl"]) == pytest.approx(float(kl.mean()), rel=1e-5)
    assert float(metrics["actor/q_mean"]) == pytest.approx(float(q.mean()), rel=1e-5)
    assert all(m.ndim == 0 and not m.requires_grad for m in metrics.values())
    if objective == "clipped":
        assert 0.0 < float(metrics["actor/kl_clipped_fraction"]) < 1.0  # both branches


def test_actor_loss_rejects_unknown_objective():
    actor, args = _actor_setup("clipped")
    with pytest.raises(ValueError, match="objective"):
        TL.actor_loss(actor, *args[:8], "nope", args[9])


def test_actor_loss_gives_no_gradient_to_critic_behaviour_or_temperatures():
    actor, args = _actor_setup("full")
    critic, old, obs, log_alpha, log_beta = args[:5]
    old = TD.Gaussian(old.mean.requires_grad_(), old.std.requires_grad_())
    loss, _ = TL.actor_loss(actor, critic, old, obs, log_alpha, log_beta, *args[5:])
    loss.backward()
    assert all(p.grad is None for p in critic.parameters())
    assert old.mean.grad is None and old.std.grad is None
    assert log_alpha.grad is None and log_beta.grad is None
    assert max(float(p.grad.abs().max()) for p in actor.parameters()) > 0
    assert all(p.requires_grad for p in critic.parameters())  # no requires_grad toggling


def _critic_batch(n=32, terminated=None):
    gen = torch.Generator().manual_seed(7)
    return TL.CriticBatch(
        obs=torch.randn(n, 5, generator=gen),
        action=torch.tanh(torch.randn(n, 3, generator=gen)),
        reward=torch.rand(n, generator=gen),
        target=torch.rand(n, generator=gen) * 10,
        next_latent=torch.randn(n, 16, generator=gen),
        terminated=torch.zeros(n) if terminated is None else terminated,
    )


def test_critic_loss_hl_gauss_is_cross_entropy_plus_aux():
    torch.manual_seed(0)
    critic = Critic(_config(), 5, 3)
    support = TL.Support.create(0.0, 10.0, 21, 0.75)
    batch = _critic_batch()
    loss, m = TL.critic_loss(critic, batch, support, aux_loss_mult=0.5, reward_prediction=True)
    with torch.no_grad():
        latent = critic.encode(batch.obs, batch.action)
        logits = critic.value_head(latent)
        ce = -torch.mean(
            torch.sum(TL.hl_gauss_target(batch.target, support) * logits.log_softmax(-1), -1)
        )
        pred, rew = critic.predict(latent)
        # One squared error per predictor output (16 latent entries and the reward), averaged.
        sq = torch.sum((pred - batch.next_latent) ** 2, -1) + (rew - batch.reward) ** 2
        aux = torch.mean(sq / 17.0)
    assert float(loss.detach()) == pytest.approx(float(ce + 0.5 * aux), rel=1e-5)
    assert float(m["loss/critic"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(m["loss/aux"]) == pytest.approx(float(aux), rel=1e-5)
    assert sorted(m) == sorted([
        "loss/critic", "loss/aux", "critic/value_error", "critic/value_mean", "critic/target_mean"
    ])


def test_critic_loss_masks_latent_prediction_of_terminated_transitions():
    critic = Critic(_config(reward_prediction=False), 5, 3)
    term = torch.zeros(32)
    term[:8] = 1.0
    batch = _critic_batch(terminated=term)
    # Changing the targets of terminated transitions must not change the aux loss.
    shifted = batch.next_latent.clone()
    shifted[:8] += 100.0
    _, m1 = TL.critic_loss(critic, batch, None, 1.0, reward_prediction=False)
    _, m2 = TL.critic_loss(critic, batch._replace(next_latent=shifted), None, 1.0, False)
    assert float(m1["loss/aux"]) == pytest.approx(float(m2["loss/aux"]), rel=1e-6)
    # Boolean termination flags mean the same.
    _, m3 = TL.critic_loss(critic, batch._replace(terminated=term.bool()), None, 1.0, False)
    assert float(m3["loss/aux"]) == pytest.approx(float(m1["loss/aux"]), rel=1e-6)


def test_scalar_critic_ablation_uses_squared_error():
    critic = Critic(_config(use_hl_gauss=False), 5, 3)
    batch = _critic_batch()
    _, m = TL.critic_loss(critic, batch, None, 0.0, reward_prediction=True)
    with torch.no_grad():
        q = critic.value_head(critic.encode(batch.obs, batch.action))[..., 0]
    assert float(m["loss/critic"]) == pytest.approx(
        float(0.5 * torch.mean((q - batch.target) ** 2)), rel=1e-5
    )


# ---- torch.compile and devices -------------------------------------------------------------
def test_losses_trace_as_one_graph_under_torch_compile():
    # fullgraph=True fails on any graph break (data-dependent Python control flow); the
    # aot_eager backend traces forward and backward without compiling C++, so the test is cheap.
    torch._dynamo.reset()
    actor, args = _actor_setup("clipped")
    critic, old, obs, log_alpha, log_beta, noise, kl_noise, support, objective, kl_target = args
    batch = _critic_batch(n=64)

    def step(obs, noise, kl_noise, batch):
        a_loss, a_metrics = TL.actor_loss(
            actor, critic, old, obs, log_alpha, log_beta, noise, kl_noise, support, objective,
            kl_target,
        )
        c_loss, c_metrics = TL.critic_loss(critic, batch, support, 1.0, True)
        return a_loss + c_loss, {**a_metrics, **c_metrics}

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss, metrics = compiled(obs, noise, kl_noise, batch)
    loss.backward()
    grads = [p.grad.clone() for p in (*actor.parameters(), *critic.parameters())]
    actor.zero_grad(set_to_none=True)
    critic.zero_grad(set_to_none=True)
    eager_loss, eager_metrics = step(obs, noise, kl_noise, batch)
    eager_loss.backward()
    torch.testing.assert_close(loss, eager_loss)
    torch.testing.assert_close(metrics, eager_metrics)
    eager_grads = [p.grad for p in (*actor.parameters(), *critic.parameters())]
    torch.testing.assert_close(grads, eager_grads)
    torch._dynamo.reset()


def test_everything_runs_on_another_device():
    # The meta device has no data: any tensor made on the CPU by mistake mixes devices and fails.
    device = torch.device("meta")
    config = _config()
    support = TL.Support.create(0.0, 10.0, 21, 0.75, device=device)
    value_prior = TL.initial_value_prior(support)
    actor = Actor(config, 5, 3, device=device)
    critic = Critic(config, 5, 3, value_prior=value_prior, device=device)
    obs = torch.empty(8, 5, device=device)
    dist = actor(obs)
    assert dist.mean.device == device
    log_alpha = torch.zeros((), device=device, requires_grad=True)
    log_beta = torch.zeros((), device=device, requires_grad=True)
    noise = torch.empty(8, 3, device=device)
    loss, metrics = TL.actor_loss(
        actor, critic, dist, obs, log_alpha, log_beta, noise, None, support, "clipped", 0.1
    )
    assert loss.device == device and all(m.device == device for m in metrics.values())
    batch = TL.CriticBatch(
        obs, noise, torch.empty(8, device=device), torch.empty(8, device=device),
        torch.empty(8, 16, device=device), torch.empty(8, device=device),
    )
    loss, _ = TL.critic_loss(critic, batch, support, 1.0, True)
    assert loss.device == device
    flags = torch.empty(4, 8, device=device)
    assert TL.soft_td_lambda(flags, flags, flags, flags, 0.9, 0.9).device == device
    stats = TN.update_stats(TN.init_stats(5, device), obs)
    assert TN.normalize(stats, obs).device == device
    temp = TL.temperature_loss(log_alpha, log_beta, metrics["entropy"], metrics["kl"], -1.5, 0.1)
    assert temp.device == device


# ---- normalization -------------------------------------------------------------------------------
def test_running_stats_match_numpy():
    rng = np.random.default_rng(0)
    data = [rng.normal(3.0, 2.0, size=(50, 4)).astype(np.float32) for _ in range(3)]
    stats = TN.init_stats(4)
    for batch in data:
        stats = TN.update_stats(stats, torch.from_numpy(batch))
    everything = np.concatenate(data)
    np.testing.assert_allclose(stats.mean.numpy(), everything.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.var.numpy(), everything.var(0), rtol=1e-4)
    assert float(stats.count) == 150
    z = TN.normalize(stats, torch.from_numpy(everything)).numpy()
    np.testing.assert_allclose(np.mean(z, 0), 0.0, atol=1e-4)
    far = TN.normalize(stats, torch.full((1, 4), 1e6))
    torch.testing.assert_close(far, torch.full((1, 4), TN.CLIP))


# ---- the update's optimizer, clipping and compiled step ------------------------------------------
def _tensors(seed: int, shapes=((4, 3), (3,), ())) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) for shape in shapes]


def test_adam_steps_like_torch_optim_adam():
    from reppo.torch.optim import Adam

    ours = [p.clone() for p in _tensors(0)]
    theirs = [torch.nn.Parameter(p.clone()) for p in _tensors(0)]
    adam = Adam(ours, lr=1e-2)
    reference = torch.optim.Adam(theirs, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    for step in range(6):
        if step == 3:  # a new learning rate (the linear schedule) takes effect at once
            adam.set_lr(3e-3)
            reference.param_groups[0]["lr"] = 3e-3
        grads = _tensors(10 + step)
        adam.apply_(grads)
        for p, g in zip(theirs, grads, strict=True):
            p.grad = g.clone()
        reference.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q.detach(), rtol=1e-6, atol=1e-7)
    assert float(adam.step) == 6.0


def test_adam_state_goes_through_checkpoint_arrays_in_place():
    from reppo.torch.optim import Adam

    names = ["a", "b", "c"]
    first = Adam([p.clone() for p in _tensors(0)], lr=1e-2)
    for step in range(3):
        first.apply_(_tensors(10 + step))
    arrays = {k: v.numpy().copy() for k, v in first.state_arrays(names).items()}
    assert sorted(arrays) == sorted(f"{n}/{k}" for n in names
                                    for k in ("step", "exp_avg", "exp_avg_sq"))
    second = Adam([p.clone() for p in first.params], lr=1e-2)
    storage = [t.data_ptr() for t in second.state_tensors()]
    second.load_arrays(names, arrays)
    assert [t.data_ptr() for t in second.state_tensors()] == storage  # copied, not replaced
    grads = _tensors(20)
    first.apply_(grads)
    second.apply_(grads)
    for p, q in zip(first.params, second.params, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    # A checkpoint written before the first step has no moments: they stay at zero.
    fresh = Adam(_tensors(0), lr=1e-2)
    fresh.load_arrays(names, {})
    assert float(fresh.step) == 0 and all(float(m.abs().sum()) == 0 for m in fresh.exp_avg)


@pytest.mark.parametrize("scale", [0.1, 10.0])
def test_clip_grads_scales_by_the_global_norm_only_above_the_limit(scale):
    from reppo.torch.optim import clip_grads_

    grads = [scale * g for g in _tensors(3)]
    before = [g.clone() for g in grads]
    norm = float(torch.sqrt(sum((g**2).sum() for g in before)))
    returned = clip_grads_(grads, max_norm=0.5)
    assert float(returned) == pytest.approx(norm, rel=1e-6)
    factor = min(1.0, 0.5 / norm)
    assert (factor < 1.0) == (scale == 10.0)
    for g, b in zip(grads, before, strict=True):
        torch.testing.assert_close(g, b * factor)


def _agent_and_data(seed: int = 0, **overrides):
    from reppo.envs.contract import EnvSpec
    from reppo.torch.agent import TorchAgent

    spec = EnvSpec("fake", 5, 2, 100, (0.0, 1.0), "dm_control")
    config = _config(num_envs=4, num_steps=8, num_minibatches=2, num_epochs=1, **overrides)
    agent = TorchAgent(config, spec, torch.device("cpu"), seed=seed)
    gen = torch.Generator().manual_seed(1)
    n = 16
    batch = TL.CriticBatch(
        torch.randn(n, 5, generator=gen), torch.tanh(torch.randn(n, 2, generator=gen)),
        torch.rand(n, generator=gen), 5 * torch.rand(n, generator=gen),
        torch.randn(n, 16, generator=gen), (torch.rand(n, generator=gen) < 0.2).float(),
    )
    noise = torch.randn(n, 2, generator=gen)
    kl_noise = torch.randn(config.kl_num_samples, n, 2, generator=gen)
    return agent, batch, noise, kl_noise


def _agent_state(agent) -> dict:
    return {**to_flat(agent.actor, "actor/"), **to_flat(agent.critic, "critic/"),
            "log_alpha": agent.log_alpha.detach().numpy().copy(),
            "log_beta": agent.log_beta.detach().numpy().copy()}


@pytest.mark.parametrize("kl_estimator", ["sample", "analytic"])
def test_the_minibatch_step_compiles_as_one_graph_and_matches_eager(kl_estimator):
    # fullgraph=True fails on any graph break; under compilation the step takes its gradients
    # with torch.func instead of autograd, so this checks that path against the eager one.
    # aot_eager traces forward, backward and optimizer without generating C++ (cheap).
    torch._dynamo.reset()
    eager, batch, noise, kl_noise = _agent_and_data(kl_estimator=kl_estimator)
    compiled, *_ = _agent_and_data(kl_estimator=kl_estimator)
    if kl_estimator == "analytic":
        kl_noise = None
    step = torch.compile(compiled.minibatch_step, fullgraph=True, backend="aot_eager")
    initial = _agent_state(eager)
    for _ in range(2):  # the second step starts from Adam moments and moved weights
        eager_metrics = eager.minibatch_step(batch, noise, kl_noise)
        compiled_metrics = step(batch, noise, kl_noise)
        torch.testing.assert_close(compiled_metrics, eager_metrics, rtol=1e-5, atol=1e-6)
    ours, theirs = _agent_state(compiled), _agent_state(eager)
    for name, value in theirs.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        assert not np.array_equal(value, initial[name]), name  # every parameter trained
    assert all(p.grad is None for p in (*eager.actor.parameters(), *eager.critic.parameters()))
    torch._dynamo.reset()
