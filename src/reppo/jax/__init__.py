"""The JAX backend: REPPO's math (distributions, networks, losses) and its training loop."""
