"""The one format every benchmark prints, a timer, and a peak-memory probe.

`BENCH <name> ratio=<r> target=<t> met=<yes|no> <ours> vs <reference>`

`ratio` is always "higher is better": the reference's time over ours for
durations (2.0 means twice as fast as the reference), ours over the
reference's for throughputs. `met` is `ratio >= target`. A figure held against a constant, not against
a reference measured in the same run, is a budget, and its name says `budget`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
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


class PeakRss:
    """Peak RSS, in bytes, of this process (`own`) and of its child processes named `child_name` (`children`).

    A thread polls psutil while the block runs, so a child that lives only inside it (Spark's JVM) is seen; each
    process's high-water mark (VmHWM), read at the end, adds the spikes between two polls. That mark spans the
    process's whole life, so measure in a fresh process whose earlier work is smaller than the block's.
    """

    def __init__(self, child_name: str = "java", interval_s: float = 0.1) -> None:
        self.child_name, self.interval_s = child_name, interval_s
        self.own = self.children = 0
        self._pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.own = max(self.own, _high_water_mark(os.getpid()))
        self.children = max(self.children, sum(_high_water_mark(pid) for pid in self._pids))

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        self.own = max(self.own, me.memory_info().rss)
        total = 0
        for child in me.children(recursive=True):
            try:
                if child.name() == self.child_name:
                    total += child.memory_info().rss
                    self._pids.add(child.pid)
            except psutil.Error:  # it ended between the listing and the read
                continue
        self.children = max(self.children, total)


def _high_water_mark(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:  # the process has ended
        pass
    return 0
