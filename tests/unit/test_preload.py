"""The scheduler's preload (`plugins/airflow_local_settings.py`): every module it names imports, and importing
them starts no thread, so the LocalExecutor's fork after it is safe; our own code is left to load from disk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = f"""
import json, sys, threading
sys.path.insert(0, {str(ROOT / "plugins")!r})
sys.argv = ["airflow", "scheduler"]  # only the forking commands preload
import airflow_local_settings as settings
print(json.dumps({{"missing": [m for m in settings.PRELOADED if m not in sys.modules],
                   "threads": [t.name for t in threading.enumerate()],
                   # the RATCHET_PRELOAD switch is read from ml_tasks.environment_variables; nothing else of ours
                   "ours": sorted(m for m in sys.modules
                                  if m.startswith("ml_tasks.") and m != "ml_tasks.environment_variables")}}))
"""


def test_the_scheduler_preloads_every_named_module_and_starts_no_thread(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg", "HOME": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow")}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["missing"] == [], out.stderr[-2000:]
    assert probe["threads"] == ["MainThread"]
    assert probe["ours"] == []  # a task runs the ml_tasks code on disk
