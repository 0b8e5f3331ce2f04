"""A data stage as a Spark application of its own, for a scheduler that submits it (`spark-submit`) instead of
running its driver inside the task.

On the production profile (RATCHET_SPARK_SUBMIT) the Airflow glue hands validate, drift and prepare of a data set on
the spark engine to the Apache Spark provider's `SparkSubmitHook`, which runs `spark-submit` with the master,
deploy mode, queue and credentials of the Connection `spark_default`. What it submits is written here: a launcher
file (spark-submit takes a Python file, not a module) that runs `ml_tasks.isolation` as its main module, as a
stage's fresh process does, and the stage's arguments as JSON. The application calls the same `ml_tasks.pipeline`
function the task would (`run_stage`), so the records, the prepared files and the returned JSON are the same; its
session is built on spark-submit's JVM with the same settings and name (`session_settings`, `application_name`).
The driver runs where spark-submit runs (client mode): it reads the run's staging folder and writes the prepared
sets there, as the task's driver does, so a cluster deploy mode, whose driver runs on a cluster node without that
folder, is refused.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_tasks.errors import ConfigError

log = logging.getLogger(__name__)

SUBMITTED_STAGES = ("validate", "drift", "prepare")
TARGET = "ml_tasks.ops.spark_submitted:run_stage"
LAUNCHER = 'import runpy\n\nrunpy.run_module("ml_tasks.isolation", run_name="__main__", alter_sys=True)\n'


@dataclass(frozen=True)
class SubmittedStage:
    """What to hand spark-submit: the application file and its arguments; `result` is where it answers."""

    name: str
    application: Path
    arguments: list[str]
    result: Path


def write_stage(folder: Path, stage: str, ctx: dict[str, str], params: dict[str, Any], synced: dict[str, Any],
                spark: dict[str, Any]) -> SubmittedStage:
    """The launcher and the arguments of `stage` for this run, written under `folder` (a temporary folder)."""
    from ml_tasks.data.spark.session import application_name

    _check_stage(stage)
    application, arguments, result = folder / "ratchet_stage.py", folder / "arguments.json", folder / "result.json"
    application.write_text(LAUNCHER)
    arguments.write_text(json.dumps({"stage": stage, "ctx": ctx, "params": params, "synced": synced,
                                     "spark": spark}))
    return SubmittedStage(application_name(stage, ctx["dataset"]), application,
                          [TARGET, str(arguments), str(result)], result)


def read_result(submitted: SubmittedStage, returncode: int) -> dict[str, Any]:
    """The stage's JSON result, or the error it raised in the application, raised again with its type."""
    from ml_tasks.isolation import read_outcome

    result: dict[str, Any] = read_outcome(submitted.name, submitted.result, returncode)
    return result


def _check_stage(stage: str) -> None:
    if stage not in SUBMITTED_STAGES:
        raise ConfigError(f"only {', '.join(SUBMITTED_STAGES)} run as Spark applications, not {stage!r}")


def refuse_cluster_deploy_mode(deploy_mode: str | None) -> None:
    if deploy_mode not in (None, "", "client"):
        raise ConfigError(f"the Connection's deploy-mode {deploy_mode!r} would run a stage's driver on a cluster node, "
                          f"which cannot read the run's staging folder: use deploy-mode client (or leave it out)")


def run_stage(stage: str, ctx: dict[str, str], params: dict[str, Any], synced: dict[str, Any],
              spark: dict[str, Any]) -> dict[str, Any]:
    """In the application: `ml_tasks.pipeline.<stage>`, as the task would call it, on spark-submit's session."""
    from ml_tasks import pipeline
    from ml_tasks.config import RunConfig, RunContext
    from ml_tasks.data.spark.session import SparkOptions

    _check_stage(stage)
    log.info("%s of %s as a submitted Spark application", stage, ctx["dataset"])
    function = getattr(pipeline, stage)
    result: dict[str, Any] = function(RunContext.from_dict(ctx), RunConfig.from_params(params), synced,
                                      SparkOptions(master=spark.get("master"), conf=dict(spark.get("conf") or {})))
    return result
