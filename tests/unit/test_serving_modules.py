"""The serving package's seams: what importing the inference log costs, the string targets that must resolve,
and the inference log's writer and reader agreeing on one format."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("fastapi", "starlette", "uvicorn", "mlflow", "pandas", "numpy", "sklearn", "tensorflow", "keras")
# "package.module:function", as uvicorn's factory string (and run_isolated targets) name a function.
STRING_TARGET = re.compile(r"""["'](ml_tasks(?:\.\w+)+):(\w+)["']""")


@pytest.mark.parametrize("module", ["ml_tasks.serving.inference_log", "ml_tasks.monitoring"])
def test_the_inference_log_imports_nothing_heavy(module: str) -> None:
    """DAG files import ml_tasks.monitoring at parse time, and it imports the inference log."""
    probe = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"importing {module} loads {done.stdout.strip()}"


def test_every_string_target_in_serving_resolves() -> None:
    targets = {match.groups() for path in (ROOT / "ml_tasks" / "serving").glob("*.py")
               for match in STRING_TARGET.finditer(path.read_text())}
    assert ("ml_tasks.serving.app", "app_from_environment") in targets
    for module, function in sorted(targets):
        assert callable(getattr(importlib.import_module(module), function, None)), f"{module}:{function}"


def test_what_the_writer_logs_the_reader_reads(ratchet_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    from ml_tasks.datasets import SYNTHETIC, synthetic
    from ml_tasks.serving.inference_log import (
        FEEDBACK_LABEL,
        FEEDBACK_REQUEST_ID,
        InferenceLog,
        read_feedback,
        read_log_window,
    )
    from ml_tasks.settings import get_settings

    for name in ("RATCHET_INFERENCE_LOG_DIR", "RATCHET_FEEDBACK_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    model = SYNTHETIC.registered_model
    frame = synthetic.generate(30, seed=5)
    features = list(SYNTHETIC.features)
    probability = [round(i / 30, 4) for i in range(30)]
    prediction = [int(p >= 0.5) for p in probability]
    start = datetime.now(UTC) - timedelta(minutes=1)
    writer = InferenceLog(get_settings().inference_logs, model, 1.0)
    writer.submit("single", "7", {name: frame[name].tolist()[:1] for name in features}, 1, probability[:1],
                  prediction[:1])
    writer.submit("batch", "7", {name: frame[name].tolist()[1:] for name in features}, 29, probability[1:],
                  prediction[1:])
    writer.close()
    end = datetime.now(UTC) + timedelta(minutes=1)

    window = read_log_window(model, SYNTHETIC, start, end, max_rows=100)
    assert (window.rows, window.malformed, window.files, window.versions) == (30, 0, 1, {"7": 30})
    read = window.frame
    pd.testing.assert_frame_equal(read[features], frame[features], check_dtype=False)
    assert read["probability"].tolist() == probability and read["prediction"].tolist() == prediction
    assert read["request_id"].tolist() == ["single"] + ["batch"] * 29
    assert read["shared"].tolist() == [False] + [True] * 29  # one label per request id cannot name a row of a batch

    folder = get_settings().feedback / model
    folder.mkdir(parents=True)
    pd.DataFrame({FEEDBACK_REQUEST_ID: ["single", "other"], FEEDBACK_LABEL: [1, 0]}).to_csv(folder / "labels.csv",
                                                                                             index=False)
    assert read_feedback(model, {"single", "batch"}) == ({"single": 1}, [])
