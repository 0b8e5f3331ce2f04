"""`make bench`: run every benchmark topic in its own process and collect the BENCH lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOPICS = ("sync", "validation", "preparation", "training", "tuning", "serving", "overhead")


def main() -> int:
    lines: list[str] = []
    failed: list[str] = []
    for topic in TOPICS:
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
    print(f"\n{len(lines)} figures; {sum(' met=yes ' in line for line in lines)} met their target")
    if failed:
        print(f"benchmarks that failed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
