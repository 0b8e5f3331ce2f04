"""`make bench`: run every benchmark topic in its own process, then print one table of every figure.

Each topic also runs alone (`uv run python bench/<topic>.py`). The table has a
row per BENCH line: figure, ours, reference, ratio (higher is better), target,
met. `make bench TOPICS="sync tuning"` runs a subset.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOPICS = ("sync", "validation", "preparation", "onboarding", "training", "tuning", "quality", "serving", "monitoring", "overhead",
          "scale")
BENCH_LINE = re.compile(r"^BENCH (?P<name>\S+) ratio=(?P<ratio>\S+) target=(?P<target>\S+) met=(?P<met>yes|no) "
                        r"(?P<ours>.+?) vs (?P<reference>.+)$")


def table(lines: list[str]) -> str:
    """One aligned table of every BENCH line (lines that don't parse are listed as they are)."""
    header = ("figure", "ours", "reference", "ratio", "target", "met")
    rows = [header]
    for line in lines:
        match = BENCH_LINE.match(line)
        if match is None:
            rows.append((line, "", "", "", "", ""))
            continue
        rows.append(tuple(match.group(k) for k in ("name", "ours", "reference", "ratio", "target", "met")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def main() -> int:
    lines: list[str] = []
    failed: list[str] = []
    chosen = os.environ.get("TOPICS", "").split() or list(TOPICS)
    for topic in chosen:
        script = HERE / f"{topic}.py"
        if not script.is_file():
            print(f"-- {topic}: no benchmark yet", flush=True)
            continue
        print(f"-- {topic}", flush=True)
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        topic_lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
        for line in topic_lines:
            print(line, flush=True)
        lines.extend(topic_lines)
        if done.returncode != 0:
            failed.append(topic)
            print(done.stderr[-2000:], file=sys.stderr)
    print("\n" + table(lines))
    print(f"\n{len(lines)} figures; {sum(' met=yes ' in line for line in lines)} met their target")
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
