"""Onboarding: `ratchet datasets add` on a 5M x 30 Parquet drop, against a budget and against pandas.

The drop is `ml_tasks.datasets.synthetic.generate_wide` (22 numeric, 7 categorical, a binary label) written to
Parquet in a temporary folder under RATCHET_HOME/bench. Each side runs in a fresh process with the same imports
done before its clock starts (pandas, pyarrow, ml_tasks), so neither pays the other's warm-up:

- ours: `ml_tasks.datasets.inference.add` called in-process (declaration, suite and checkpoint written to
  temporary folders), its wall time and peak RSS;
- the reference: the hand-written first look a person would take, `pd.read_parquet` + `describe(include="all")`
  + `nunique()` of the same drop.

Lines (`ratio` is higher-is-better, as in every bench: budget or reference seconds over ours):
- `onboarding.datasets_add_<rows>x30_budget`: the 2-minute budget over our seconds (met: within budget);
- `onboarding.datasets_add_<rows>x30_vs_pandas_describe`: pandas' seconds over ours;
- `onboarding.memory_<rows>x30_peak_rss_vs_3x_data_budget`: our peak RSS against the validation memory budget
  (bench/validation.py: three times the drop's in-memory pandas size); ratio = budget / peak.

`uv run python bench/onboarding.py [--rows N]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import bench_line

BUDGET_S = 120.0
# Peak RSS as VmHWM, the process's own: its ru_maxrss would start at this process's peak (the frame) at the spawn.
WARM = """import sys, time
import pandas as pd, pyarrow, pyarrow.compute, pyarrow.dataset
def peak_rss():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]) * 1024
"""
OURS = WARM + """
from ml_tasks.datasets.inference import add
start = time.perf_counter()
proposal, written = add("bench_onboarding", sys.argv[1], "label")
seconds = time.perf_counter() - start
assert written.declaration.is_file() and proposal.spec.task == "binary", proposal.spec
print(seconds, peak_rss(), len(proposal.suite["expectations"]))
"""
PANDAS = WARM + """
from ml_tasks.io import data_files
from ml_tasks.storage import local_path
files = data_files(local_path(sys.argv[1]))
start = time.perf_counter()
frame = pd.read_parquet(files[0]) if len(files) == 1 else pd.concat([pd.read_parquet(f) for f in files])
summary = frame.describe(include="all")
distinct = frame.nunique()
seconds = time.perf_counter() - start
print(seconds, peak_rss(), len(summary.columns) + len(distinct))
"""


def probe(script: str, drop_uri: str, env: dict[str, str]) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", script, drop_uri], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"probe failed:\n{out.stderr[-4000:]}")
    seconds, peak, _ = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()

    from ml_tasks.datasets.synthetic import generate_wide
    from ml_tasks.settings import get_settings

    bench_home = get_settings().home / "bench"
    bench_home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onboarding-", dir=bench_home) as tmp:
        root = Path(tmp)
        frame = generate_wide(args.rows, seed=3)
        columns = frame.shape[1]
        data_bytes = int(frame.memory_usage(deep=True).sum())
        drop = root / "drop"
        drop.mkdir()
        frame.to_parquet(drop / "part-000.parquet", index=False)
        del frame
        env = {**os.environ, "RATCHET_DATASETS_DIR": str(root / "datasets"),
               "RATCHET_EXPECTATIONS_DIR": str(root / "expectations")}
        ours_s, ours_peak = probe(OURS, drop.as_uri(), env)
        pandas_s, pandas_peak = probe(PANDAS, drop.as_uri(), env)
        print(f"# {args.rows} rows x {columns} columns ({data_bytes / 2**30:.2f} GiB in pandas), "
              f"Parquet {sum(p.stat().st_size for p in drop.iterdir()) / 2**20:.0f} MiB")
        print(f"# datasets add: {ours_s:.1f}s, peak RSS {ours_peak / 2**30:.2f} GiB; "
              f"pandas read + describe + nunique: {pandas_s:.1f}s, peak RSS {pandas_peak / 2**30:.2f} GiB")
        size = f"{args.rows // 1_000_000}M" if args.rows % 1_000_000 == 0 else str(args.rows)
        bench_line(f"onboarding.datasets_add_{size}x{columns}_budget", ours_s, BUDGET_S, target=1.0)
        bench_line(f"onboarding.datasets_add_{size}x{columns}_vs_pandas_describe", ours_s, pandas_s, target=1.0)
        bench_line(f"onboarding.memory_{size}x{columns}_peak_rss_vs_3x_data_budget", ours_peak / 2**20,
                   3 * data_bytes / 2**20, target=1.0, unit="MiB")


if __name__ == "__main__":
    main()
