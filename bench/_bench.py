"""The one format every benchmark prints, and a timer.

`BENCH <name> ratio=<r> target=<t> met=<yes|no> <ours> vs <reference>`

`ratio` is always "higher is better": the reference's time over ours for
durations (2.0 means twice as fast as the reference), ours over the
reference's for throughputs. `met` is `ratio >= target`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """The fastest of `repeat` runs, in seconds (the least disturbed by the machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_line(name: str, ours: float, reference: float, target: float, unit: str = "s",
               higher_is_better: bool = False) -> str:
    ratio = (ours / reference) if higher_is_better else (reference / ours)
    met = "yes" if ratio >= target else "no"
    line = f"BENCH {name} ratio={ratio:.2f} target={target:g} met={met} {ours:.4g}{unit} vs {reference:.4g}{unit}"
    print(line, flush=True)
    return line
