"""Multi-host data-parallel training of the Keras MLP with `tf.distribute.MultiWorkerMirroredStrategy`.

Why a custom loop: Keras 3's `model.fit` under MultiWorkerMirroredStrategy
fails converting `PerReplica` values (keras-team/keras#20585, open), while
`strategy.run` over a step we write ourselves works. The model is the same
`models.build_mlp`, built inside `strategy.scope()`, and the chief's final
model is a normal `.keras` file that evaluation and serving load as usual.

Each worker is a fresh interpreter (TensorFlow reads `TF_CONFIG` when the
strategy is created, and nothing may run TF ops before that):

    python -m ml_tasks.distributed WORKER_INDEX WORKERS ARGS_JSON RESULT_JSON

with WORKERS comma-separated `host:port`; the DAG starts one per host with
`tf_config(workers, index)` (or the command above, which sets it). Worker 0
is the chief. Every worker reads the whole prepared split; the distributed
dataset shards it by batch (`AutoShardPolicy.DATA`), each global batch
(`per-replica batch x replicas in sync`) split across all replicas, and the
loss is averaged over the global batch (`tf.nn.compute_average_loss`) plus the
L2 penalty scaled by replicas (`tf.nn.scale_regularization_loss`).

Checkpoints: every epoch every worker saves (saving may run collectives, so
all must take part): the chief into `<model_dir>/checkpoints`, the others into
temporary directories removed afterwards, as the TF multi-worker guide does.
A restarted cluster restores the chief's latest checkpoint, epoch counter
included, and continues.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
MODEL_NAME = "model.keras"


def tf_config(workers: list[str], index: int) -> str:
    """The `TF_CONFIG` JSON of worker `index` in a cluster of `workers` ("host:port"); worker 0 is the chief."""
    if not workers:
        raise ValueError("a cluster needs at least one worker")
    if not 0 <= index < len(workers):
        raise ValueError(f"worker index {index} out of range for {len(workers)} workers")
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": index}})


def _is_chief(task_type: str | None, task_id: int | None) -> bool:
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0)


def train_multiworker(train_path: str, val_path: str | None, model_dir: str, params: dict[str, Any], epochs: int,
                      seed: int = 0, target: str | None = None) -> dict[str, Any]:
    """Train under the cluster in `TF_CONFIG`; the chief saves `<model_dir>/model.keras`. Returns this worker's record."""
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first: before any other TF op
    import keras

    from ml_tasks.input_pipeline import load_arrays
    from ml_tasks.models import DEFAULT_MLP_PARAMS, build_mlp

    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    chief = _is_chief(task_type, task_id)
    replicas = strategy.num_replicas_in_sync
    hyper = {**DEFAULT_MLP_PARAMS, **params}
    global_batch = int(hyper["batch_size"]) * replicas
    x, y = load_arrays(train_path, target)
    log.info("worker %s/%s (%s): %s replicas in sync, global batch %s, %s rows", task_type, task_id,
             "chief" if chief else "worker", replicas, global_batch, len(x))

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(min(len(x), 65_536), seed=seed)
               .batch(global_batch, drop_remainder=True).with_options(options).prefetch(tf.data.AUTOTUNE))
    distributed = strategy.experimental_distribute_dataset(dataset)

    with strategy.scope():
        model = build_mlp(x.shape[1], hyper, seed=seed)
        optimizer = model.optimizer
        loss_fn = keras.losses.BinaryCrossentropy(reduction=None)
        epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)

    root = Path(model_dir)
    chief_dir = root / CHECKPOINT_DIR
    write_dir = chief_dir if chief else Path(tempfile.mkdtemp(prefix=f"worker{task_id}-", dir=root))
    manager = tf.train.CheckpointManager(checkpoint, directory=str(write_dir), max_to_keep=2)
    latest = tf.train.latest_checkpoint(str(chief_dir))
    if latest:
        checkpoint.restore(latest)
        log.info("restored %s: resuming at epoch %s", latest, int(epoch_var.numpy()))
    initial_epoch = int(epoch_var.numpy())

    def step_fn(xb: Any, yb: Any) -> Any:
        with tf.GradientTape() as tape:
            predictions = model(xb, training=True)
            per_example = loss_fn(tf.reshape(yb, (-1, 1)), predictions)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(xb: Any, yb: Any) -> Any:
        per_replica = strategy.run(step_fn, args=(xb, yb))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    losses: list[float] = []
    started = time.perf_counter()
    for epoch in range(initial_epoch, epochs):
        total, steps = 0.0, 0
        for xb, yb in distributed:
            total += float(train_step(xb, yb))
            steps += 1
        losses.append(total / max(steps, 1))
        epoch_var.assign(epoch + 1)
        manager.save(checkpoint_number=epoch + 1)
        log.info("epoch %s/%s: loss %.4f over %s steps", epoch + 1, epochs, losses[-1], steps)
    seconds = time.perf_counter() - started
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)

    record: dict[str, Any] = {
        "task_type": task_type, "task_id": task_id, "chief": chief, "replicas": replicas, "global_batch_size": global_batch,
        "initial_epoch": initial_epoch, "epochs_run": len(losses), "losses": losses, "seconds": seconds,
    }
    if chief:
        from ml_tasks.io import atomic_path

        model_path = root / MODEL_NAME
        with atomic_path(model_path) as tmp:
            keras_tmp = tmp.with_suffix(".keras")
            model.save(keras_tmp)
            keras_tmp.replace(tmp)
        record["model_path"] = str(model_path)
        if val_path is not None:
            # From the saved file, outside the strategy: the trained model's `predict` would run collectives,
            # and the other workers have finished.
            record["val"] = score_model(str(model_path), val_path, target)
    return record


def score_model(model_path: str, data_path: str, target: str | None = None) -> dict[str, float]:
    """ROC AUC and accuracy of a saved `.keras` model on a prepared split."""
    import keras
    from sklearn.metrics import accuracy_score, roc_auc_score

    from ml_tasks.input_pipeline import load_arrays

    x, y = load_arrays(data_path, target)
    model = keras.saving.load_model(model_path)
    scores = model.predict(x, batch_size=4096, verbose=0).reshape(-1)
    return {"roc_auc": float(roc_auc_score(y, scores)), "accuracy": float(accuracy_score(y, scores >= 0.5)), "rows": len(y)}


def _main(argv: list[str]) -> int:
    """`python -m ml_tasks.distributed WORKER_INDEX WORKERS ARGS_JSON RESULT_JSON`."""
    index, workers, args_path, result_path = int(argv[0]), argv[1].split(","), Path(argv[2]), Path(argv[3])
    os.environ["TF_CONFIG"] = tf_config(workers, index)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{index} %(levelname)s %(name)s: %(message)s")
    record = train_multiworker(**json.loads(args_path.read_text()))
    tmp = Path(f"{result_path}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
