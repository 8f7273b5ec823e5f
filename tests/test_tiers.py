"""The test tiers themselves: the README's test command leaves out the tests marked extended,
and `--extended` runs them too (tests/conftest.py)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _collected(*args: str, status: int = 0) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/test_learning.py", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert out.returncode == status, out.stdout[-2000:] + out.stderr[-2000:]
    return {line.split("::")[1] for line in out.stdout.splitlines() if "::" in line}


def test_extended_tests_run_only_when_asked():
    extended = "test_reppo_learns_cartpole_balance_with_torch"  # marked extended
    default = _collected()
    assert extended not in default and "test_reppo_learns_cartpole_balance" in default
    everything = _collected("--extended")
    assert everything == default | {extended}
    # Without the option nothing is left: pytest's "no tests collected" (exit status 5).
    assert _collected("-m", "extended", status=5) == set()
