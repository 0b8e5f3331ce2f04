"""The one format every benchmark prints, and a timer.

`BENCH <name> ratio=<r> target=<t> met=<yes|no> <ours> vs <reference>`

`ratio` is always "higher is better": the reference's time over ours for
durations (2.0 means twice as fast as the reference), ours over the
reference's for throughputs. `met` is `ratio >= target`. A figure held against a constant, not against
a reference measured in the same run, is a budget, and its name says `budget`.
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
               higher_is_better: bool = False, ours_censored: bool = False, reference_censored: bool = False) -> str:
    """Print and return one BENCH line.

    A figure held against a constant rather than a reference measured in the same run is a budget: its name says
    `budget`. `ours_censored` / `reference_censored` (lower-is-better figures such as compute to reach a level): that
    side never got there within its budget, and its value is that budget. It prints as `>budget`, and the ratio as
    the bound it then is (`ratio=<r` or `ratio=>r`, `ratio=nan` when neither got there). A censored `ours` is never
    met; a censored reference is met when the bound is.
    """
    if (ours_censored or reference_censored) and higher_is_better:
        raise ValueError("censoring is for lower-is-better figures (time or compute to reach something)")
    ratio = (ours / reference) if higher_is_better else (reference / ours)
    met = "yes" if ratio >= target and not ours_censored else "no"
    if ours_censored and reference_censored:
        shown = "nan"
    else:
        shown = ("<" if ours_censored else ">" if reference_censored else "") + f"{ratio:.2f}"
    line = (f"BENCH {name} ratio={shown} target={target:g} met={met} "
            f"{'>' if ours_censored else ''}{ours:.4g}{unit} vs {'>' if reference_censored else ''}{reference:.4g}{unit}")
    print(line, flush=True)
    return line
