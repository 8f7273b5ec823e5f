"""Experiments on top of the training CLI: sweeps, baselines, memory, the toy study."""
