"""Per-run resource use (CPU, memory, disk, network; GPU where present) logged as MLflow system metrics.

MLflow 3 samples them itself (`mlflow.system_metrics`, psutil; NVIDIA GPUs
through `pynvml`/`nvidia-ml-py`, AMD through `pyrsmi`, when installed) as
`system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`,
`system/system_memory_usage_percentage`, `system/gpu_0_utilization_percentage`,
`system/gpu_0_memory_usage_megabytes`, ... But `start_run(log_system_metrics=True)`
ties sampling to a fluent run that the block then ends, and a run shorter than
one interval logs nothing. Training logs into the nightly parent run, which
another stage ends, and trains before it logs, so this wraps the monitor
around any stretch of code instead:

    from ml_tasks.training.system_metrics import system_metrics

    with system_metrics(parent_run_id, node_id="train"):
        model.fit(...)

Sampling every `interval_s` seconds (default: `MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`,
else 5 s); steps continue after the run's earlier system metrics; the samples
since the last interval are logged on exit, so a short stretch gets one point.
MLflow's monitor stops at the first sample that finds the run not RUNNING, so
a run that an earlier stage's `with mlflow.start_run(run_id=...)` block ended
is resumed for the block and given its previous status back afterwards, as
`start_run(run_id=...)` itself would do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

CPU_METRIC = "system/cpu_utilization_percentage"
MEMORY_METRIC = "system/system_memory_usage_megabytes"


def sampling_interval(interval_s: float | None = None) -> float:
    """The argument, else MLflow's environment variable, else its declared default."""
    from ml_tasks.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL

    if interval_s is not None:
        return float(interval_s)
    return MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get()


@contextmanager
def system_metrics(run_id: str, interval_s: float | None = None, node_id: str | None = None,
                   tracking_uri: str | None = None) -> Iterator[Any]:
    """Sample system metrics into `run_id` while the block runs; yields MLflow's monitor.

    `node_id` prefixes the names (`system/<node_id>/...`), for several processes or hosts in one run.
    Monitoring never fails the block: a monitor that cannot start is logged and skipped.
    """
    from mlflow import MlflowClient
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from ml_tasks import tracking

    if tracking_uri is None:
        tracking.configure()
    client = MlflowClient(tracking_uri)
    interval = sampling_interval(interval_s)
    previous = client.get_run(run_id).info.status
    if previous != "RUNNING":
        client.update_run(run_id, status="RUNNING")
    try:
        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval, resume_logging=True, node_id=node_id,
                                       tracking_uri=tracking_uri)
        monitor.sampling_interval = interval  # MLflow lets its environment variable win over the argument
        monitor.start()
    except Exception as exc:  # monitoring is best effort
        log.warning("system metrics for run %s not monitored: %s", run_id, exc)
        _restore(client, run_id, previous)
        yield None
        return
    log.info("sampling system metrics into run %s every %s s (%s)", run_id, interval,
             ", ".join(type(m).__name__ for m in monitor.monitors))
    try:
        yield monitor
    finally:
        monitor.finish()
        try:
            if not any(m._metrics for m in monitor.monitors):
                monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as exc:
            log.warning("last system metrics sample for run %s not logged: %s", run_id, exc)
        _restore(client, run_id, previous)


def _restore(client: Any, run_id: str, status: str) -> None:
    if status != "RUNNING":
        client.set_terminated(run_id, status=status)
