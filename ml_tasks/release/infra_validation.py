"""Infra validation (TFX's InfraValidator): can the registered version serve, before anything promotes it?

The version is loaded exactly as serving will load it, `models:/<name>/<version>`
through the one checked loader (`ml_tasks.release.model_loading`), in a fresh process; it scores its logged input example and a
sample of held-out raw rows; the output must keep the prediction contract
(`expected_columns`: predictions among the declared classes with class
probabilities in [0, 1], or finite numbers for regression; versions without a
target record answer `probability` in [0, 1] and `prediction` in {0, 1}), one
row per input row, and a
single row must score within the latency budget.

The budget is judged on the process's CPU time per single-row call (median),
not its wall time: on a busy host the wall time measures the neighbours, and a
nightly run must not be refused because a backfill shared its machine. The
wall-time median is recorded beside it (`single_row_wall_p50_ms`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from ml_tasks.config import RunContext
from ml_tasks.constants import TEST_RAW_FILE
from ml_tasks.isolation import run_isolated

log = logging.getLogger(__name__)

SAMPLE_ROWS = 200
LATENCY_CALLS = 20
SINGLE_ROW_BUDGET_MS = 250.0
OUTPUT_COLUMNS = ["probability", "prediction"]


@dataclass(frozen=True)
class InfraValidation:
    passed: bool
    model_uri: str
    problems: list[str]
    rows_scored: int
    load_seconds: float
    single_row_p50_ms: float | None  # CPU time of the process, the budgeted figure
    batch_ms: float | None
    budget_ms: float
    single_row_wall_p50_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        if self.passed:
            return (f"passed: loads in {self.load_seconds:.1f}s, one row in {self.single_row_p50_ms:.1f} ms CPU "
                    f"({self.single_row_wall_p50_ms or 0:.1f} ms wall, p50)")
        return "failed: " + "; ".join(self.problems)


def validate_version(ctx: RunContext, name: str, version: str, budget_ms: float = SINGLE_ROW_BUDGET_MS) -> InfraValidation:
    result = run_isolated("ml_tasks.release.infra_validation:validate_in_process",
                          {"ctx": ctx.to_dict(), "name": name, "version": version, "budget_ms": budget_ms})
    return InfraValidation(**result)


def expected_columns(spec: Any) -> list[str]:
    """The prediction contract's columns for a data set (`ml_tasks.release.pyfunc.prediction_frame`)."""
    from ml_tasks.release.pyfunc import probability_column

    if not spec.is_classification:
        return ["prediction"]
    head = ["prediction", "probability"] if spec.task == "binary" else ["prediction"]
    return head + [probability_column(c) for c in spec.classes]


def output_problems(scores: Any, rows: int, spec: Any = None) -> list[str]:
    """What is wrong with a pyfunc's output for `rows` input rows (empty when it keeps the prediction contract).

    Without `spec`, or for a binary 0/1 data set answered in the legacy columns: `probability` in [0, 1] and
    `prediction` in {0, 1}. Otherwise: classification predictions among the declared classes and class
    probabilities in [0, 1]; regression predictions finite numbers.
    """
    import numpy as np
    import pandas as pd

    from ml_tasks.data.transform import category_text

    if not isinstance(scores, pd.DataFrame):
        return [f"output is a {type(scores).__name__}, not a DataFrame"]
    legacy = list(scores.columns) == OUTPUT_COLUMNS and (
        spec is None or (spec.task == "binary" and [category_text(c) for c in spec.classes] == ["0", "1"]))
    wanted = OUTPUT_COLUMNS if legacy else expected_columns(spec)
    problems = []
    if list(scores.columns) != wanted:
        problems.append(f"output columns {list(scores.columns)}, expected {wanted}")
        return problems
    if len(scores) != rows:
        problems.append(f"{len(scores)} output rows for {rows} input rows")
    if legacy:
        probability = scores["probability"].to_numpy(dtype="float64")
        if not np.isfinite(probability).all() or (probability < 0).any() or (probability > 1).any():
            problems.append("probability outside [0, 1] or not finite")
        if not set(np.unique(scores["prediction"].to_numpy()).tolist()) <= {0, 1}:
            problems.append("prediction not in {0, 1}")
        return problems
    if not spec.is_classification:
        values = pd.to_numeric(scores["prediction"], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if not np.isfinite(values).all():
            problems.append(f"{int((~np.isfinite(values)).sum())} predictions are not finite numbers")
        return problems
    probabilities = scores[wanted[1:]].to_numpy(dtype="float64")
    if not np.isfinite(probabilities).all() or (probabilities < 0).any() or (probabilities > 1).any():
        problems.append("class probabilities outside [0, 1] or not finite")
    declared = {category_text(c) for c in spec.classes}
    unknown = sorted({category_text(v) for v in scores["prediction"].tolist()} - declared)
    if unknown:
        problems.append(f"predictions {unknown[:5]} are not among the declared classes {list(spec.classes)!r}")
    return problems


def validate_in_process(ctx: dict[str, str], name: str, version: str, budget_ms: float) -> dict[str, Any]:
    import tempfile
    import time
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from ml_tasks import tracking
    from ml_tasks.datasets import get_dataset
    from ml_tasks.release.model_loading import load_checked

    run_ctx = RunContext.from_dict(ctx)
    spec = get_dataset(run_ctx.dataset)
    tracking.configure()
    uri = f"models:/{name}/{version}"
    problems: list[str] = []
    start = time.perf_counter()
    folder = tempfile.TemporaryDirectory(prefix="ratchet-infra-")  # held while the model scores: it reads its files
    try:
        model, local = load_checked(uri, Path(folder.name))  # the loader serving uses: what passes here, serves
    except Exception as exc:
        return InfraValidation(False, uri, [f"{uri} does not load: {type(exc).__name__}: {exc}"], 0,
                               time.perf_counter() - start, None, None, budget_ms).to_dict()
    load_seconds = time.perf_counter() - start
    sample = pd.read_parquet(run_ctx.prepared_dir / TEST_RAW_FILE).head(SAMPLE_ROWS)[list(spec.features)]
    inputs = [("held-out sample", sample)]
    try:
        example = model.metadata.load_input_example(str(local))
    except Exception as exc:
        example = None
        problems.append(f"the input example does not load: {type(exc).__name__}: {exc}")
    if example is not None:
        inputs.insert(0, ("input example", pd.DataFrame(example)))
    elif not problems:
        problems.append("the version logs no input example")
    rows_scored = 0
    batch_ms = None
    for label, frame in inputs:
        try:
            started = time.perf_counter()
            scores = model.predict(frame)
            batch_ms = (time.perf_counter() - started) * 1000
        except Exception as exc:
            problems.append(f"scoring the {label} failed: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        problems.extend(f"{label}: {p}" for p in output_problems(scores, len(frame), spec))
        rows_scored += len(frame)
    cpu_ms, wall_ms = [], []
    row = sample.head(1)
    for _ in range(LATENCY_CALLS):
        started, started_cpu = time.perf_counter(), time.process_time()
        try:
            model.predict(row)
        except Exception as exc:  # the budget cannot be judged on a model that does not answer one row
            problems.append(f"scoring one row failed: {type(exc).__name__}: {str(exc)[:300]}")
            break
        cpu_ms.append((time.process_time() - started_cpu) * 1000)
        wall_ms.append((time.perf_counter() - started) * 1000)
    p50 = float(np.median(cpu_ms)) if cpu_ms else None
    wall_p50 = float(np.median(wall_ms)) if wall_ms else None
    if p50 is not None and p50 > budget_ms:
        problems.append(f"one row takes {p50:.1f} ms of CPU (p50 of {len(cpu_ms)}; {wall_p50:.1f} ms wall), "
                        f"over the {budget_ms:g} ms budget")
    result = InfraValidation(not problems, uri, problems, rows_scored, round(load_seconds, 3),
                             round(p50, 3) if p50 is not None else None,
                             round(batch_ms, 3) if batch_ms is not None else None, budget_ms,
                             round(wall_p50, 3) if wall_p50 is not None else None)
    log.info("infra validation of %s: %s", uri, result.summary)
    return result.to_dict()
