"""REPPO: Relative Entropy Pathwise Policy Optimization."""

__version__ = "0.1.0"
