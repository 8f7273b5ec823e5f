"""The benchmark scripts' bookkeeping (the measurements themselves are not tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_new_row_joins_the_table_under_the_header_not_a_later_table(tmp_path):
    bench = _load("bench_train")
    results = tmp_path / "results.md"
    results.write_text(
        "# Benchmark results\n\n" + bench.HEADER + "| old row |\n\n## Notes\n\n"
        "| another | table |\n|---|---|\n| a | b |\n"
    )
    bench._insert_row(results, "| new row |")
    lines = results.read_text().splitlines()
    assert lines.index("| new row |") == lines.index("| old row |") + 1
    assert lines[-1] == "| a | b |"


def test_a_results_file_without_the_table_is_refused_untouched(tmp_path):
    bench = _load("bench_train")
    results = tmp_path / "results.md"
    results.write_text("# Someone's notes\n\n| a | b |\n")
    with pytest.raises(SystemExit, match="no table headed"):
        bench._insert_row(results, "| new row |")
    assert results.read_text() == "# Someone's notes\n\n| a | b |\n"
