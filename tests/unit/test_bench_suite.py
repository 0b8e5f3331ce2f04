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
    assert {"sync", "validation", "preparation", "training", "tuning", "serving", "overhead", "scale"} <= set(run_all.TOPICS)
    for topic in run_all.TOPICS:
        text = (BENCH / f"{topic}.py").read_text()
        assert "bench_line" in text and '__name__ == "__main__"' in text, topic


def test_the_table_has_one_row_per_bench_line():
    run_all = _run_all()
    rendered = run_all.table([
        "BENCH sync.nochange ratio=4.30 target=2.5 met=yes 0.4418s vs 1.9s",
        "BENCH tuning_tpe_vs_grid_epochs_to_level ratio=<0.21 target=3 met=no >96epochs vs 20epochs",
    ]).splitlines()
    assert rendered[0].split() == ["figure", "ours", "reference", "ratio", "target", "met"]
    assert rendered[2].split() == ["sync.nochange", "0.4418s", "1.9s", "4.30", "2.5", "yes"]
    assert rendered[3].split() == ["tuning_tpe_vs_grid_epochs_to_level", ">96epochs", "20epochs", "<0.21", "3", "no"]
    assert len(rendered) == 4


def test_a_side_that_never_got_there_is_printed_as_censored_and_never_met(capsys):
    spec = importlib.util.spec_from_file_location("bench_common", BENCH / "_bench.py")
    assert spec and spec.loader
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.bench_line("a", 96, 20, 0.1, "epochs", ours_censored=True).split()[2:4] == ["ratio=<0.21", "target=0.1"]
    assert " met=no >96epochs vs 20epochs" in capsys.readouterr().out
    assert " ratio=>9.60 target=3 met=yes 10epochs vs >96epochs" in bench.bench_line(
        "b", 10, 96, 3, "epochs", reference_censored=True)
    assert " ratio=nan target=3 met=no >96epochs vs >96epochs" in bench.bench_line(
        "c", 96, 96, 3, "epochs", ours_censored=True, reference_censored=True)
