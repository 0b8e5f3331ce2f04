"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train one model with a custom loop; the chief saves it.

Each worker is a fresh interpreter (`python -m ml_tasks.training.multiworker INDEX WORKERS ...`)
with its own TF_CONFIG; gradients are all-reduced over gRPC between them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.training.rendezvous import tf_config

pytestmark = pytest.mark.integration

N_FEATURES = 8
EPOCHS = 4


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _write_split(path: Path, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, N_FEATURES)).astype("float32")
    y = (x[:, 0] - 0.7 * x[:, 1] + 0.5 * x[:, 2] + 0.3 * rng.standard_normal(rows) > 0).astype("int64")
    pq.write_table(pa.Table.from_arrays([*(pa.array(x[:, j]) for j in range(N_FEATURES)), pa.array(y)],
                                        names=[*(f"f{j}" for j in range(N_FEATURES)), "label"]), path)


def test_tf_config_names_the_cluster_and_the_task() -> None:
    config = json.loads(tf_config(["10.0.0.1:2222", "10.0.0.2:2222"], 1))
    assert config == {"cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}
    with pytest.raises(ValueError):
        tf_config(["a:1"], 1)


def test_two_workers_train_one_model(tmp_path: Path) -> None:
    train, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    _write_split(train, 8192, seed=0)
    _write_split(val, 2048, seed=1)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    args = tmp_path / "args.json"
    args.write_text(json.dumps({
        "train_path": str(train), "val_path": str(val), "model_dir": str(model_dir), "epochs": EPOCHS,
        "params": {"n_layers": 2, "units": 32, "dropout": 0.0, "l2": 1e-5, "learning_rate": 3e-3, "batch_size": 128},
    }))
    workers = ",".join(f"127.0.0.1:{port}" for port in _free_ports(2))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    results = [tmp_path / f"result{i}.json" for i in range(2)]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    processes = []
    for i in range(2):
        with logs[i].open("w") as out:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "ml_tasks.training.multiworker", str(i), workers, str(args), str(results[i])],
                env=env, stdout=out, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 80
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = "\n".join(f"--- worker {i}\n{log.read_text()[-3000:]}" for i, log in enumerate(logs))
    assert [p.returncode for p in processes] == [0, 0], output

    chief, worker = (json.loads(r.read_text()) for r in results)
    assert chief["chief"] and not worker["chief"]
    assert chief["replicas"] == worker["replicas"] == 2 and chief["global_batch_size"] == 256
    assert chief["epochs_run"] == worker["epochs_run"] == EPOCHS and chief["initial_epoch"] == 0
    # The loss is all-reduced: both workers see the same value, and it falls.
    np.testing.assert_allclose(chief["losses"], worker["losses"], rtol=1e-5)
    assert chief["losses"][-1] < chief["losses"][0] * 0.8, chief["losses"]
    assert "model_path" not in worker and Path(chief["model_path"]).is_file()
    assert chief["val"]["roc_auc"] > 0.9, chief["val"]
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoints", "history.json", "model.keras"], \
        "worker temp dirs removed"
    # The chief's per-epoch view for the learning curve: the training objective, train and validation AUC.
    history = chief["history"]
    assert set(history) == {"loss", "auc", "val_loss", "val_auc"} and all(len(v) == EPOCHS for v in history.values())
    assert history["loss"] == chief["losses"] and history["val_auc"][-1] > 0.9
    assert chief["best_epoch"] == max(range(EPOCHS), key=history["val_auc"].__getitem__)
    assert "history" not in worker and not chief["stopped_early"]

    # The saved model loads in a fresh process and scores as the chief reported.
    from ml_tasks.isolation import run_isolated

    scored = run_isolated("ml_tasks.training.multiworker:score_model", {"model_path": chief["model_path"], "data_path": str(val)})
    assert scored["roc_auc"] == pytest.approx(chief["val"]["roc_auc"], abs=1e-6) and scored["roc_auc"] > 0.5
