"""The install contract: pyproject.toml states ranges, constraints.txt pins the tested newest
versions (what CI installs), constraints-lowest.txt the tested lower bounds, and CI runs exactly
the README's test command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts += extra
    return [Requirement(t) for t in texts if not t.startswith("reppo")]


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", package).lower()] = version
    return pins


def _canonical(req: Requirement) -> str:
    return re.sub(r"[-_.]+", "-", req.name).lower()


def test_no_dependency_is_pinned_exactly_in_pyproject():
    # Exact pins make reppo uninstallable beside anything that needs another patch release.
    exact = [str(r) for r in _requirements() if any(s.operator == "==" for s in r.specifier)]
    assert exact == []


def test_the_frameworks_have_a_lower_and_an_upper_bound():
    bounded = {"jax", "jaxlib", "playground", "mujoco", "mujoco-mjx", "brax", "torch",
               "mani-skill", "sapien", "gymnasium"}
    for req in _requirements():
        if _canonical(req) in bounded:
            operators = {s.operator for s in req.specifier}
            assert ">=" in operators and "<" in operators, str(req)


def test_constraints_pin_every_requirement_inside_its_range():
    pins = _pins("constraints.txt")
    for req in _requirements():
        if _canonical(req) in {"tensorboardx", "wandb"}:
            continue  # the opt-in loggers are not part of the tested install
        assert _canonical(req) in pins, f"{req.name} is missing from constraints.txt"
        assert req.specifier.contains(pins[_canonical(req)], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[_canonical(req)]} outside {req}")


def test_lowest_constraints_are_the_lower_bounds_of_the_runtime_ranges():
    lowest = _pins("constraints-lowest.txt")
    dev_tools = {"pytest", "pytest-timeout", "pytest-xdist", "scipy", "rliable", "pandas", "ruff",
                 "tensorboardx", "wandb"}
    runtime = [r for r in _requirements() if _canonical(r) not in dev_tools]
    assert sorted(lowest) == sorted({_canonical(r) for r in runtime})
    for req in runtime:
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert lower, f"{req} has no lower bound"
        assert Version(lowest[_canonical(req)]) == lower[0], (
            f"constraints-lowest.txt pins {req.name}=={lowest[_canonical(req)]}, not the lower "
            f"bound of {req}")


def _readme_test_command() -> str:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines()
             if "python -m pytest" in line and line.startswith("pip install")]
    assert len(lines) == 1, lines
    return lines[0]


def test_ci_runs_exactly_the_readme_test_command_with_the_constraints():
    command = _readme_test_command()
    assert command.count("-c constraints.txt") == command.count("pip install") == 2
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [command]


@pytest.mark.skipif(os.environ.get("REPPO_LOWEST_VERSIONS") == "1",
                    reason="scripts/test-lowest.sh installs the lower bounds, not the lock")
def test_this_environment_is_the_locked_one():
    # CI installs with -c constraints.txt, so a dependency added to pyproject.toml without
    # regenerating the lock (python scripts/lock.py) shows up here.
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _extra(name: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_canonical(Requirement(t)) for t in project["optional-dependencies"][name]
            if not t.startswith("reppo")}


def test_onnx_export_is_its_own_extra_with_what_the_export_checks(monkeypatch, tmp_path):
    # Only users who export need onnx, onnxscript and onnxruntime: the torch extra leaves them
    # out, and a missing one is named with the extra that installs it.
    import importlib.util

    pytest.importorskip("torch")
    from reppo.runs import CheckpointError
    from reppo.torch import export

    assert _extra("export") == {"onnx", "onnxscript", "onnxruntime"}
    assert not _extra("torch") & _extra("export")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else find_spec(name, *a))
    with pytest.raises(CheckpointError, match=r'needs the onnxscript package: pip install -e '
                                              r'"\.\[export\]"'):
        export.export_onnx(tmp_path, tmp_path / "policy.onnx")
    assert not (tmp_path / "policy.onnx").exists()
