"""System metrics: a short monitored stretch logs CPU and memory series into its MLflow run."""

from __future__ import annotations

import time
from pathlib import Path

from ml_tasks.training.system_metrics import CPU_METRIC, MEMORY_METRIC, sampling_interval, system_metrics


def test_a_short_run_gets_cpu_and_memory_metrics(ratchet_home: Path) -> None:
    from ml_tasks import tracking
    from ml_tasks.config import RunContext

    run_id = tracking.ensure_parent_run(RunContext("synthetic", "sysmetrics"))
    with system_metrics(run_id, interval_s=0.2) as monitor:
        assert monitor is not None
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # keep a core busy
            sum(i * i for i in range(10_000))
    client = tracking.client()
    cpu = client.get_metric_history(run_id, CPU_METRIC)
    memory = client.get_metric_history(run_id, MEMORY_METRIC)
    assert len(cpu) >= 2 and len(memory) >= 2, (len(cpu), len(memory))
    assert max(m.value for m in cpu) > 0
    assert all(m.value > 0 for m in memory)
    assert [m.step for m in cpu] == sorted(m.step for m in cpu)
    keys = set(client.get_run(run_id).data.metrics)
    assert {"system/system_memory_usage_percentage", "system/disk_usage_megabytes"} <= keys

    assert client.get_run(run_id).info.status == "RUNNING"

    # A run an earlier stage ended is resumed for the block and ended again; a node id prefixes the names.
    client.set_terminated(run_id, status="FINISHED")
    with system_metrics(run_id, interval_s=5.0, node_id="worker0"):
        assert client.get_run(run_id).info.status == "RUNNING"
    assert client.get_metric_history(run_id, "system/worker0/cpu_utilization_percentage")
    assert client.get_run(run_id).info.status == "FINISHED"


def test_interval_comes_from_the_argument_then_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", raising=False)
    assert sampling_interval() == 5.0
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "2.5")
    assert sampling_interval() == 2.5
    assert sampling_interval(1) == 1.0


def test_the_nvml_binding_for_gpu_metrics_is_installed_and_harmless_without_a_gpu():
    """nvidia-ml-py is locked: on a GPU host MLflow logs GPU metrics through it; here NVML is absent and says so."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:  # no NVIDIA driver on this host: an error naming it, nothing logged
        assert "NVML" in str(exc) or "Library" in str(exc) or "Driver" in str(exc)
    else:  # a GPU host
        assert pynvml.nvmlDeviceGetCount() >= 0
        pynvml.nvmlShutdown()
