"""The package's version: a ground module, so code below the face can name it without
importing `reppo` itself (pyproject.toml reads it too)."""

__version__ = "0.1.0"
