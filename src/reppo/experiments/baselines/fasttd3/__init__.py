"""FastTD3 (Seo et al. 2025) in JAX on the Playground envs: `losses` (the pure math) and `buffer`
(the replay buffer on the device) <- `agent` (hyperparameters, presets, networks, one training
iteration) <- `run` (a run into a REPPO-format run directory)."""
