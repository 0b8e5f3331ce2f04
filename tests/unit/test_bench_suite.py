"""`make bench` covers every topic the house rules name, and its table reads every BENCH line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _run_all():
    spec = importlib.util.spec_from_file_location("bench_run_all", BENCH / "run_all.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_topic_has_a_benchmark_file():
    run_all = _run_all()
    assert {"sync", "validation", "preparation", "training", "tuning", "serving", "overhead"} <= set(run_all.TOPICS)
    for topic in run_all.TOPICS:
        text = (BENCH / f"{topic}.py").read_text()
        assert "bench_line" in text and '__name__ == "__main__"' in text, topic


def test_the_table_has_one_row_per_bench_line():
    run_all = _run_all()
    rendered = run_all.table([
        "BENCH sync.nochange ratio=4.30 target=2.5 met=yes 0.4418s vs 1.9s",
        "BENCH overhead.time_vs_rows_exponent_10k_to_1000k ratio=1.40 target=1 met=yes 0.7857 vs 1.1",
    ]).splitlines()
    assert rendered[0].split() == ["figure", "ours", "reference", "ratio", "target", "met"]
    assert rendered[2].split() == ["sync.nochange", "0.4418s", "1.9s", "4.30", "2.5", "yes"]
    assert rendered[3].split()[-1] == "yes" and len(rendered) == 4
