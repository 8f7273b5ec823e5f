"""bench_torch.py's bookkeeping: medians, per-round ratios and the table (the measurements
themselves are not tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_torch", BENCHMARKS / "bench_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SAMPLES = {
    "jax": [1000.0, 500.0, 800.0],
    "torch eager, 1 thread": [900.0, 400.0, 400.0],
    "torch eager, 2 threads": [450.0, 600.0, 600.0],
}


def test_ratios_are_medians_of_the_rounds_ratios_not_ratios_of_medians():
    bench = _bench()
    rows = {r.setting: r for r in bench.summarize(SAMPLES)}
    assert list(rows) == list(SAMPLES)  # the order given
    assert rows["jax"].ratio == 1.0 and rows["jax"].median_sps == 800.0
    eager = rows["torch eager, 1 thread"]
    # Per round 0.9, 0.8, 0.5: median 0.8; the ratio of the medians would be 0.5.
    assert eager.ratio == pytest.approx(0.8)
    assert (eager.median_sps, eager.lowest_sps, eager.highest_sps) == (400.0, 400.0, 900.0)


def test_thread_ratios_compare_each_mode_with_itself_at_one_thread():
    bench = _bench()
    ratios = bench.thread_ratios({
        **SAMPLES, "torch compile, 1 thread": [1.0, 1.0, 1.0],
        "torch compile, 4 threads": [2.0, 3.0, 4.0],
    })
    # eager: 0.5, 1.5, 1.5 -> 1.5; compile: 3.0; JAX and one-thread settings have none.
    assert ratios == {"torch eager, 2 threads": pytest.approx(1.5),
                      "torch compile, 4 threads": pytest.approx(3.0)}
    assert bench.setting_name("eager", 1) == "torch eager, 1 thread"
    assert bench.setting_name("eager", 2) == "torch eager, 2 threads"


def test_the_table_has_a_row_per_setting_and_refuses_unequal_rounds():
    bench = _bench()
    table = bench.markdown(bench.summarize(SAMPLES), bench.thread_ratios(SAMPLES))
    lines = table.splitlines()
    assert lines[2] == "| jax | 800 | 500 - 1,000 | 1.00 |"
    assert lines[3] == "| torch eager, 1 thread | 400 | 400 - 900 | 0.80 |"
    assert "| torch eager, 2 threads | 1.50 |" in lines
    with pytest.raises(ValueError, match="rounds"):
        bench.summarize({"jax": [1.0, 2.0], "torch eager, 1 thread": [1.0]})
