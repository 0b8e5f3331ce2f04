"""nightly_retrain with `train_workers=2` through a real Airflow scheduler: two train_worker task instances form
one MultiWorkerMirroredStrategy cluster on 127.0.0.1 by rendezvous, and the chief's model goes through
evaluate, gate and register like any candidate.

Worker 1's trainer is SIGKILLed after the chief's first checkpoint: the strategy needs both workers, so the
cluster attempt fails as a whole (worker 0 sees worker 1's entry turn "failed" and stops its trainer), Airflow
retries both task instances, they register again (new attempt tokens) and the new cluster resumes from the
chief's checkpoint instead of starting over.

Airflow runs as separate processes (api-server, dag-processor, scheduler, triggerer; LocalExecutor on SQLite;
tests/integration/airflow_stack.py) with the `ratchet_gpu` pool at 2 slots, so both mapped workers run at once.
Both "hosts" are this machine (RATCHET_WORKER_HOST=127.0.0.1): what differs on real hosts is only the address.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml_tasks.constants import MULTIWORKER_DIR, RUN_REPORT_FILE, TAG_RUN_KEY
from ml_tasks.data.landing import land_frame
from ml_tasks.datasets import SYNTHETIC, synthetic

from .airflow_stack import AirflowStack
from .helpers import SMALL_BUDGET, registry_state

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_ID = "nightly_retrain"
MODEL = SYNTHETIC.registered_model
# The least tuning that still runs the stage: the test is about training and what follows it. Enough epochs
# that the kill lands mid-training (early stopping, patience 4, usually ends it sooner).
SHORT = {"tuning_trials": 1, "tuning_epochs": 1, "max_epochs": 30}


@pytest.fixture(scope="module")
def stack(module_home: Path) -> Iterator[AirflowStack]:
    saved = os.environ.get("RATCHET_GPU_SLOTS")
    os.environ["RATCHET_GPU_SLOTS"] = "2"  # init_airflow sizes the ratchet_gpu pool from it: two workers at once
    extra = {"RATCHET_WORKER_HOST": "127.0.0.1", "RATCHET_RENDEZVOUS_TIMEOUT_S": "300"}
    try:
        with AirflowStack(module_home, extra) as started:
            started.wait_for_dag(DAG_ID)
            started.unpause(DAG_ID)
            started.fail_scheduled_runs(DAG_ID)  # the 02:00 run unpausing creates would hold up ours
            yield started
    finally:
        if saved is None:
            os.environ.pop("RATCHET_GPU_SLOTS", None)
        else:
            os.environ["RATCHET_GPU_SLOTS"] = saved


@pytest.fixture(scope="module")
def two_host_run(stack: AirflowStack) -> dict[str, Any]:
    """One run with two workers, and worker 1's trainer SIGKILLed once the chief has checkpointed an epoch."""
    from ml_tasks.config import RunContext, run_key_for

    drop = land_frame(synthetic.generate(3000, seed=5), "synthetic", "multihost")
    started = time.monotonic()
    run_id = stack.trigger(DAG_ID, {**SMALL_BUDGET, **SHORT, "model_family": "keras_mlp", "train_workers": 2,
                                    "source_uri": drop.as_uri()})
    folder = RunContext("synthetic", run_key_for(None, run_id)).model_dir / MULTIWORKER_DIR
    killed = _kill_worker_after_first_checkpoint(stack, folder, index=1, deadline=time.monotonic() + 600)
    state, states = stack.wait_for_run(DAG_ID, run_id, timeout_s=900)
    return {"run_id": run_id, "state": state, "states": states, "seconds": time.monotonic() - started,
            "killed_at_epoch": killed, "tis": stack.task_instances(DAG_ID, run_id),
            "scheduler_log": stack.log_tail("scheduler")}


def _checkpointed_epoch(folder: Path) -> int:
    """The epoch of the chief's latest checkpoint (`checkpoints/checkpoint` names `ckpt-<epoch>`), 0 before one."""
    try:
        text = (folder / "checkpoints" / "checkpoint").read_text()
        return int(text.split('model_checkpoint_path: "ckpt-', 1)[1].split('"', 1)[0])
    except (OSError, IndexError, ValueError):
        return 0


def _kill_worker_after_first_checkpoint(stack: AirflowStack, folder: Path, index: int, deadline: float) -> int:
    """SIGKILL worker `index`'s trainer (`python -m ml_tasks.training.multiworker INDEX ...`) mid-training, as an OOM kill would."""
    trainer = None
    while time.monotonic() < deadline:
        if trainer is None:
            for proc in stack.stray_processes():
                try:
                    command = proc.cmdline()
                except Exception:  # it ended meanwhile
                    continue
                module = "ml_tasks.training.multiworker"
                if module in command and command[command.index(module) + 1] == str(index):
                    trainer = proc
        if trainer is not None and _checkpointed_epoch(folder) >= 1:
            assert not (folder / "rendezvous" / "done.json").exists(), "killed too late: training had finished"
            trainer.kill()
            return _checkpointed_epoch(folder)
        time.sleep(0.05)
    raise AssertionError(f"worker {index}'s trainer never reached a checkpoint: {stack.log_tail('scheduler')}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_train_workers_form_one_cluster_and_the_chief_model_is_gated(two_host_run: dict[str, Any]) -> None:
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.config import RunContext
    from ml_tasks.io import read_json

    states, tis = two_host_run["states"], two_host_run["tis"]
    print(f"two-host nightly run: {two_host_run['seconds']:.0f}s trigger to end")
    assert two_host_run["state"] == "success", (states, two_host_run["scheduler_log"])
    assert states["train_worker[0]"] == states["train_worker[1]"] == "success", states
    # Both failed with the kill (worker 0 because its cluster lost a member) and both succeeded on the retry.
    assert tis["train_worker[0]"]["try_number"] == tis["train_worker[1]"]["try_number"] == 2, tis
    assert tis["train"]["try_number"] == 1
    assert "train_worker[2]" not in states
    for worker in ("train_worker[0]", "train_worker[1]"):
        assert (tis[worker]["queue"], tis[worker]["pool"], tis[worker]["pool_slots"]) == ("gpu", "ratchet_gpu", 1)
    # MultiWorkerMirroredStrategy needs both at once: each started before the other ended.
    first, second = tis["train_worker[0]"], tis["train_worker[1]"]
    assert first["start_date"] < second["end_date"] and second["start_date"] < first["end_date"]
    assert all(states[t] == "success" for t in ("train", "evaluate", "gate", "register", "promote", "report")), states

    version = tracking.client().get_model_version(MODEL, "1")
    dataset, run_key = version.tags[TAG_RUN_KEY].split("/", 1)
    ctx = RunContext(dataset, run_key)
    folder = ctx.model_dir / MULTIWORKER_DIR
    cluster, done = read_json(folder / "rendezvous" / "cluster.json"), read_json(folder / "rendezvous" / "done.json")
    assert len(cluster["addresses"]) == 2 and all(a.startswith("127.0.0.1:") for a in cluster["addresses"])
    # The cluster that finished is the retry's (new tokens); it resumed from the chief's checkpoint.
    assert all(token.startswith("try2-") for token in cluster["tokens"]) and done["generation"] == cluster["generation"]
    chief = done["record"]
    assert chief["chief"] and chief["replicas"] == 2 and chief["epochs_run"] >= 1
    assert chief["initial_epoch"] >= two_host_run["killed_at_epoch"] >= 1, chief
    assert len(chief["history"]["val_auc"]) == chief["initial_epoch"] + chief["epochs_run"]
    worker = read_json(folder / "results" / "worker-1.json")
    assert not worker["chief"] and worker["losses"] == pytest.approx(chief["losses"], rel=1e-5)

    report = read_json(ctx.report_dir / RUN_REPORT_FILE)
    assert report["completed"], report["error"]
    accelerators = report["training"]["accelerators"]
    assert (accelerators["strategy"], accelerators["workers"], accelerators["replicas"]) == \
        ("MultiWorkerMirroredStrategy", 2, 2)
    assert report["training"]["epochs_run"] == len(chief["history"]["val_auc"])
    assert report["training"]["fit_diagnosis"]
    # Evaluated and gated like any candidate: the first champion of this registry.
    assert report["gate"]["decision"] == "promote" and report["candidate_metrics"]["roc_auc"] > 0.7
    assert report["versions"]["promoted"] and registry_state(MODEL) == {"champion": "1", "challenger": "1",
                                                                        "versions": [1]}
    # The registered version serves the chief's very file.
    tracking.configure()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/1"))
    (served,) = list(local.rglob("model.keras"))
    assert _sha256(served) == _sha256(Path(chief["model_path"]))
    # The learning curve and per-epoch metrics are logged as for a single-host run.
    run = tracking.client().get_run(version.run_id)
    assert run.data.params["train.workers"] == "2" and "train.val_auc" in run.data.metrics
    assert "plots/learning_curve.png" in {a.path for a in tracking.client().list_artifacts(version.run_id, "plots")}

