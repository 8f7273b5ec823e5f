"""PyTorch backend: REPPO's networks, distributions, losses and normalizer, mirroring reppo.jax."""
