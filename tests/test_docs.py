"""The repository stands alone: code, help texts and docs cite no document outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A citation of an outside design document ("SPEC 1.1", "SPEC.md", "(SPEC)"); names such as
# `EnvSpec` or `_SPECS` are code, not citations.
CITATION = re.compile(r"(?<![A-Za-z_])SPEC(?![A-Za-z_])")


def _texts():
    for folder in ("src", "docs", "benchmarks", "examples"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".md", ".txt", ".toml"):
                yield path
    yield ROOT / "README.md"


def test_no_text_cites_an_outside_design_document():
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _texts()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if CITATION.search(line)
    ]
    assert not offenders, "\n".join(offenders)


def test_config_help_cites_no_outside_document():
    from reppo.config import Config, field_help

    for name in Config.__dataclass_fields__:
        assert not CITATION.search(field_help(name)), name
