"""A data stage as a submitted application (`ml_tasks.ops.spark_submitted`): what spark-submit is handed runs the
same `ml_tasks.pipeline` function in a fresh interpreter and answers with its result or its error.

Here the launcher runs under plain `python` on a pandas-engine drop (what spark-submit adds, a JVM and a cluster,
is exercised by `integration/test_spark_cluster.py`, whose nightly run submits its stages through the Apache Spark
provider's hook to a real standalone master).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ml_tasks import pipeline
from ml_tasks.config import RunConfig, RunContext
from ml_tasks.data.landing import land_frame
from ml_tasks.data.spark.session import SparkOptions
from ml_tasks.datasets import synthetic
from ml_tasks.errors import PERMANENT_ERRORS, ConfigError, DataError
from ml_tasks.ops import spark_submitted as submitted


def _submit_with_plain_python(job: submitted.SubmittedStage) -> int:
    """What spark-submit does with a Python application, less the JVM: run the file with its arguments."""
    return subprocess.run([sys.executable, str(job.application), *job.arguments], check=False).returncode


def _synced(day: str, frame) -> tuple[RunContext, dict]:
    land_frame(frame, "synthetic", day)
    ctx = RunContext("synthetic", f"submitted-{day}")
    return ctx, pipeline.sync(ctx, RunConfig("synthetic"), day)


def test_the_submitted_application_runs_the_pipelines_stage_and_answers_its_result(ratchet_home: Path,
                                                                                   tmp_path: Path) -> None:
    ctx, synced = _synced("2026-04-01", synthetic.generate(600, seed=3))
    job = submitted.write_stage(tmp_path, "validate", ctx.to_dict(), {"dataset": "synthetic"}, synced,
                                SparkOptions().to_dict())
    assert job.name == "ratchet-validate-synthetic" and job.arguments[0] == submitted.TARGET
    returncode = _submit_with_plain_python(job)
    result = submitted.read_result(job, returncode)
    assert returncode == 0 and result["success"] and result["engine"] == "pandas"
    # the stage recorded itself as the task's call would
    from ml_tasks import records

    assert records.read_stage(ctx, "validate")["ok"]


def test_a_data_error_in_the_application_is_raised_again_with_its_type(ratchet_home: Path, tmp_path: Path) -> None:
    frame = synthetic.generate(600, seed=4)
    frame["x0"] = 50.0  # outside the suite's range (-8, 8) on every row
    ctx, synced = _synced("2026-04-02", frame)
    job = submitted.write_stage(tmp_path, "validate", ctx.to_dict(), {"dataset": "synthetic"}, synced,
                                SparkOptions().to_dict())
    returncode = _submit_with_plain_python(job)
    assert returncode != 0
    with pytest.raises(DataError, match="x0") as raised:
        submitted.read_result(job, returncode)
    assert isinstance(raised.value, PERMANENT_ERRORS)  # the task fails without a retry, as in-task


def test_only_the_data_stages_are_submitted_and_only_in_client_mode(tmp_path: Path) -> None:
    ctx = RunContext("synthetic", "k")
    with pytest.raises(ConfigError, match="not 'train'"):
        submitted.write_stage(tmp_path, "train", ctx.to_dict(), {"dataset": "synthetic"}, {}, {})
    with pytest.raises(ConfigError, match="deploy-mode 'cluster'"):
        submitted.refuse_cluster_deploy_mode("cluster")
    submitted.refuse_cluster_deploy_mode("client")
    submitted.refuse_cluster_deploy_mode(None)


def test_a_killed_application_is_no_result(tmp_path: Path) -> None:
    job = submitted.SubmittedStage("ratchet-prepare-x", tmp_path / "app.py", [], tmp_path / "missing.json")
    with pytest.raises(Exception, match="killed by SIGKILL"):
        submitted.read_result(job, -9)
