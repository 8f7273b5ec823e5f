"""Brax PPO and SAC as baselines: their hyperparameters, schedule, run and JAX adapter."""
