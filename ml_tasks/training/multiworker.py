"""Multi-host data-parallel training of the Keras MLP with `tf.distribute.MultiWorkerMirroredStrategy`.

Why a custom loop: Keras 3's `model.fit` under MultiWorkerMirroredStrategy
fails converting `PerReplica` values (keras-team/keras#20585, open), while
`strategy.run` over a step we write ourselves works. The model is the same
`keras_mlp.build_mlp`, built inside `strategy.scope()`, and the chief's final
model is a normal `.keras` file that evaluation and serving load as usual.

Each worker is a fresh interpreter (TensorFlow reads `TF_CONFIG` when the
strategy is created, and nothing may run TF ops before that):

    python -m ml_tasks.training.multiworker WORKER_INDEX WORKERS ARGS_JSON RESULT_JSON

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

Validation and early stopping: after every epoch the chief scores a plain
(non-distributed) copy of the model on the validation split and on a sample of
the training rows, so the learning curve and the fit diagnosis are the single-
host path's; whether to stop is the chief's call, shared through an all-reduce
so every worker leaves the loop at the same epoch; the chief saves the best
epoch's weights.

The cluster is formed at run time by the file rendezvous (`ml_tasks.training.rendezvous`): each mapped
`train_worker` task (`run_worker`) registers, waits for the cluster, and runs its worker in a fresh interpreter
with the resulting `TF_CONFIG`, stopping it if another member is lost. After the cluster, `collect_in_process`
logs the chief's model as the single-host path logs one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ml_tasks.environment_variables import RATCHET_PARENT_PID
from ml_tasks.errors import RatchetError
from ml_tasks.isolation import exit_without_teardown
from ml_tasks.training.rendezvous import DONE_FILE, Rendezvous, tf_config, worker_address

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
MODEL_NAME = "model.keras"
HISTORY_NAME = "history.json"
# Rows of the training split the chief scores after each epoch for the training AUC of the learning curve.
TRAIN_SCORE_ROWS = 8192
RESULTS_DIR = "results"


class ClusterLost(RatchetError):
    """A member of the running cluster failed, restarted or went silent: this cluster attempt is over."""


BINARY_ONLY = ("multi-worker training (train_workers > 1) trains binary targets only: its custom loop "
               "(MultiWorkerMirroredStrategy) has a sigmoid head, binary cross-entropy and an AUC early stop")


def check_binary_labels(y: Any, where: str) -> None:
    """Refuse labels other than 0/1 (a multiclass or regression target) with a ConfigError saying why."""
    import numpy as np

    from ml_tasks.errors import ConfigError

    if not np.isin(np.unique(y), (0.0, 1.0)).all():
        raise ConfigError(f"{where}: labels other than 0/1: {BINARY_ONLY}; set train_workers to 1")


def check_binary_task(task: str, dataset: str) -> None:
    """Refuse a data set whose task kind is not binary (see BINARY_ONLY)."""
    from ml_tasks.errors import ConfigError

    if task != "binary":
        raise ConfigError(f"dataset {dataset!r} is {task}: {BINARY_ONLY}; set train_workers to 1")


def _is_chief(task_type: str | None, task_id: int | None) -> bool:
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0)


def train_multiworker(train_path: str, val_path: str | None, model_dir: str, params: dict[str, Any], epochs: int,
                      seed: int = 0, target: str | None = None, patience: int | None = None) -> dict[str, Any]:
    """Train under the cluster in `TF_CONFIG`; the chief saves `<model_dir>/model.keras`. Returns this worker's record.

    With `val_path`, the chief records train/validation loss and AUC per epoch; with `patience` as well, training
    stops once the validation AUC has not improved for that many epochs and the best epoch's weights are saved.
    """
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # first: before any other TF op
    import keras
    import numpy as np

    from ml_tasks.io import write_json
    from ml_tasks.training.input_pipeline import load_arrays
    from ml_tasks.training.keras_mlp import DEFAULT_MLP_PARAMS, build_mlp

    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id
    chief = _is_chief(task_type, task_id)
    replicas = strategy.num_replicas_in_sync
    hyper = {**DEFAULT_MLP_PARAMS, **params}
    global_batch = int(hyper["batch_size"]) * replicas
    x, y = load_arrays(train_path, target)
    check_binary_labels(y, train_path)
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
        stopped_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="stopped")
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var, stopped=stopped_var)

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

    @tf.function
    def agree(flag: Any) -> Any:
        """Every worker takes part; only the chief's flag is non-zero: the sum is the chief's decision."""
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(flag,)), axis=None)

    # The chief's view for validation: a plain model outside the strategy (its `predict` runs no collectives).
    history_path = root / HISTORY_NAME
    history: dict[str, list[float]] = {}
    scorer = val = sample = None
    if chief and val_path is not None:
        scorer = build_mlp(x.shape[1], hyper, seed=seed)
        val = load_arrays(val_path, target)
        pick = np.random.default_rng(seed).permutation(len(x))[:TRAIN_SCORE_ROWS]
        sample = (x[pick], y[pick])
        if history_path.is_file() and initial_epoch:
            saved = json.loads(history_path.read_text())
            history = {k: v[:initial_epoch] for k, v in saved.items()}
    best_auc, best_epoch, best_weights, waited = -1.0, -1, None, 0

    losses: list[float] = []
    stopped_early = bool(int(stopped_var.numpy()))
    started = time.perf_counter()
    epoch = initial_epoch
    while epoch < epochs and not stopped_early:
        total, steps = 0.0, 0
        for xb, yb in distributed:
            total += float(train_step(xb, yb))
            steps += 1
        losses.append(total / max(steps, 1))
        stop = 0.0
        if scorer is not None and val is not None and sample is not None:
            scorer.set_weights(model.get_weights())
            scores = {**_scores(scorer, *sample, ""), **_scores(scorer, *val, "val_")}
            scores["loss"] = losses[-1]  # the training objective, as `fit` reports it
            for key, value in scores.items():
                history.setdefault(key, []).append(value)
            write_json(history_path, history)
            if scores["val_auc"] > best_auc:
                best_auc, best_epoch, best_weights, waited = scores["val_auc"], epoch, scorer.get_weights(), 0
            else:
                waited += 1
            stop = 1.0 if patience is not None and waited >= patience else 0.0
        stopped_early = float(agree(tf.constant(stop, dtype=tf.float32))) > 0
        epoch_var.assign(epoch + 1)
        stopped_var.assign(int(stopped_early))
        manager.save(checkpoint_number=epoch + 1)
        log.info("epoch %s/%s: loss %.4f over %s steps%s", epoch + 1, epochs, losses[-1], steps,
                 f", val AUC {history['val_auc'][-1]:.4f}" if "val_auc" in history else "")
        epoch += 1
    if stopped_early:
        log.info("early stopping after epoch %s (best %s)", epoch, best_epoch + 1)
    seconds = time.perf_counter() - started
    if not chief:
        shutil.rmtree(write_dir, ignore_errors=True)

    record: dict[str, Any] = {
        "task_type": task_type, "task_id": task_id, "chief": chief, "replicas": replicas, "global_batch_size": global_batch,
        "initial_epoch": initial_epoch, "epochs_run": len(losses), "losses": losses, "seconds": seconds,
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")], "stopped_early": stopped_early,
    }
    if chief:
        from ml_tasks.io import atomic_path

        saved_model = model
        if scorer is not None and best_weights is not None:
            scorer.set_weights(best_weights)  # the best epoch's weights, as EarlyStopping(restore_best_weights) does
            saved_model = scorer
        model_path = root / MODEL_NAME
        with atomic_path(model_path) as tmp:
            keras_tmp = tmp.with_suffix(".keras")
            saved_model.save(keras_tmp)
            keras_tmp.replace(tmp)
        record["model_path"] = str(model_path)
        if history:
            record["history"] = history
            record["best_epoch"] = int(max(range(len(history["val_auc"])), key=history["val_auc"].__getitem__))
        if val_path is not None:
            # From the saved file, outside the strategy: the trained model's `predict` would run collectives,
            # and the other workers have finished.
            record["val"] = score_model(str(model_path), val_path, target)
    return record


def _scores(model: Any, x: Any, y: Any, prefix: str) -> dict[str, float]:
    """Log loss and ROC AUC of a plain Keras model on (x, y), keys prefixed ("" or "val_")."""
    from sklearn.metrics import log_loss, roc_auc_score

    probability = model.predict(x, batch_size=4096, verbose=0).reshape(-1).astype("float64")
    return {f"{prefix}loss": float(log_loss(y, probability.clip(1e-7, 1 - 1e-7), labels=[0, 1])),
            f"{prefix}auc": float(roc_auc_score(y, probability))}


def score_model(model_path: str, data_path: str, target: str | None = None) -> dict[str, float]:
    """ROC AUC and accuracy of a saved `.keras` model on a prepared split."""
    import keras
    from sklearn.metrics import accuracy_score, roc_auc_score

    from ml_tasks.training.input_pipeline import load_arrays

    x, y = load_arrays(data_path, target)
    model = keras.saving.load_model(model_path)
    scores = model.predict(x, batch_size=4096, verbose=0).reshape(-1)
    return {"roc_auc": float(roc_auc_score(y, scores)), "accuracy": float(accuracy_score(y, scores >= 0.5)), "rows": len(y)}


def run_worker(folder: Path, index: int, workers: int, train_kwargs: dict[str, Any], token: str | None = None,
               timeout_s: float | None = None) -> dict[str, Any]:
    """One `train_worker` task: register, wait for the cluster, run the worker in a fresh interpreter, watch the rest.

    TensorFlow never runs in this (the task's) process. A member lost while training ends this attempt (the
    child is stopped): MultiWorkerMirroredStrategy needs every worker, so the cluster fails as a whole and
    Airflow retries it; the chief's checkpoint lets the next cluster continue from the last epoch.
    """
    rendezvous = Rendezvous(folder / "rendezvous", index, workers, token)
    finished = rendezvous.done()
    if finished is not None:
        log.info("a cluster of this run already finished (%s): nothing to train", finished.get("generation"))
        return {"index": index, "reused": True, "generation": finished.get("generation")}
    rendezvous.register(worker_address())
    try:
        addresses = rendezvous.wait(timeout_s)
        if addresses is None:
            rendezvous.set_state("finished")
            return {"index": index, "reused": True, "generation": (rendezvous.done() or {}).get("generation")}
        rendezvous.set_state("running")
        record = _run_child(rendezvous, addresses, folder, train_kwargs)
        generation = (rendezvous.cluster or {}).get("generation")
        if record.get("chief"):
            from ml_tasks.io import write_json

            write_json(rendezvous.folder / DONE_FILE, {"generation": generation, "workers": workers, "record": record})
        rendezvous.set_state("finished")
    except BaseException:
        rendezvous.set_state("failed")
        raise
    return {"index": index, "reused": False, "generation": generation, "address": addresses[index] if
            index < len(addresses) else rendezvous.address, "seconds": record.get("seconds"),
            "epochs_run": record.get("epochs_run"), "replicas": record.get("replicas")}


def _run_child(rendezvous: Rendezvous, addresses: list[str], folder: Path, train_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run `python -m ml_tasks.training.multiworker` with this worker's TF_CONFIG; stop it if the cluster loses a member."""
    index = rendezvous.index if len(addresses) > 1 else 0
    results = folder / RESULTS_DIR
    results.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ratchet-worker-") as tmp:
        args_path, result_path = Path(tmp) / "args.json", Path(tmp) / "result.json"
        args_path.write_text(json.dumps(train_kwargs))
        env = {**os.environ, "TF_CONFIG": tf_config(addresses, index), RATCHET_PARENT_PID.name: str(os.getpid())}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        env.setdefault("KERAS_BACKEND", "tensorflow")
        command = [sys.executable, "-m", "ml_tasks.training.multiworker", str(index), ",".join(addresses), str(args_path),
                   str(result_path)]
        log.info("worker %s: TF_CONFIG %s", rendezvous.index, env["TF_CONFIG"])
        child = subprocess.Popen(command, env=env)
        try:
            while child.poll() is None:
                rendezvous.heartbeat()
                lost = rendezvous.lost_members()
                if lost:
                    raise ClusterLost(f"cluster {(rendezvous.cluster or {}).get('generation')} lost a member "
                                      f"({'; '.join(lost)}): this attempt stops and Airflow retries the cluster, "
                                      "which resumes from the chief's last checkpoint")
                time.sleep(rendezvous.poll_s)
        finally:
            if child.poll() is None:  # a member was lost: nothing of this attempt is worth a slow shutdown
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        if child.returncode != 0 or not result_path.is_file():
            code = child.returncode
            why = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
            raise RatchetError(f"worker {rendezvous.index} of {rendezvous.workers} {why}")
        record: dict[str, Any] = json.loads(result_path.read_text())
    from ml_tasks.io import write_json

    write_json(results / f"worker-{rendezvous.index}.json", record)
    return record


def collect_in_process(ctx: dict[str, str], config: dict[str, Any], params: dict[str, Any],
                       parent_run_id: str) -> dict[str, Any]:
    """The `train` stage after a multi-worker cluster: log the chief's model as the single-host path logs a Keras model.

    The same pyfunc (`RatchetClassifier` over the `.keras` file and the fitted transform), signature, input
    example, pip requirements, per-epoch `train.*` metrics and learning curve, and the same `TrainResult`, so
    evaluate, gate and register cannot tell the two paths apart. Runs in a fresh process (it loads Keras).
    """

    from ml_tasks.config import RunContext, TrainConfig
    from ml_tasks.constants import MULTIWORKER_DIR
    from ml_tasks.datasets import get_dataset
    from ml_tasks.io import write_json
    from ml_tasks.release.pyfunc import KERAS_ARTIFACT
    from ml_tasks.training.families import DEFAULT_PARAMS, KERAS_MLP
    from ml_tasks.training.trainer import TrainResult, diagnose_fit, log_trained_model

    run_ctx = RunContext.from_dict(ctx)
    check_binary_task(get_dataset(run_ctx.dataset).task, run_ctx.dataset)
    train_config = TrainConfig(**config)
    done_record = run_ctx.model_dir / "train_result.json"
    if done_record.is_file():
        log.info("model for %s already trained; reusing %s", run_ctx.tracking_key, done_record)
        return {**json.loads(done_record.read_text()), "reused": True}
    folder = run_ctx.model_dir / MULTIWORKER_DIR
    done_path = folder / "rendezvous" / DONE_FILE
    if not done_path.is_file():
        raise RatchetError(f"no finished cluster in {done_path.parent}: the train_worker tasks did not complete")
    done = json.loads(done_path.read_text())
    record = done["record"]
    history: dict[str, list[float]] = record["history"]
    best_epoch = int(record["best_epoch"])
    train_auc, val_auc = history["auc"][best_epoch], history["val_auc"][best_epoch]
    hyper = {**DEFAULT_PARAMS[KERAS_MLP], **params}
    accelerators = {"backend": "tensorflow", "gpus": record.get("gpus", []), "precision": "float32",
                    "input": "arrays", "strategy": "MultiWorkerMirroredStrategy", "workers": int(done["workers"]),
                    "replicas": int(record["replicas"]), "global_batch_size": int(record["global_batch_size"]),
                    "generation": done.get("generation")}

    model_uri = log_trained_model(
        run_ctx, parent_run_id, KERAS_MLP, {KERAS_ARTIFACT: str(record["model_path"])}, history,
        {f"train.{k}": v for k, v in hyper.items()} | {"train.max_epochs": train_config.max_epochs,
                                                      "train.family": train_config.family,
                                                      "train.workers": train_config.workers},
        train_auc, val_auc)
    result = TrainResult(
        model_uri=model_uri, model_path=str(record["model_path"]), epochs_run=len(history["val_auc"]),
        best_epoch=best_epoch, train_auc=train_auc, val_auc=val_auc, fit_diagnosis=diagnose_fit(train_auc, val_auc),
        accelerators=accelerators, reused=False, family=KERAS_MLP, initial_epoch=int(record["initial_epoch"]),
    )
    write_json(done_record, result.to_dict())
    log.info("collected %s from %s workers: %s epochs, best %s, val AUC %.4f; %s", run_ctx.tracking_key,
             done["workers"], result.epochs_run, best_epoch, val_auc, result.fit_diagnosis)
    return result.to_dict()


def _main(argv: list[str]) -> int:
    """`python -m ml_tasks.training.multiworker WORKER_INDEX WORKERS ARGS_JSON RESULT_JSON`."""
    index, workers, args_path, result_path = int(argv[0]), argv[1].split(","), Path(argv[2]), Path(argv[3])
    os.environ["TF_CONFIG"] = tf_config(workers, index)  # env: pass-through (read by TensorFlow)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker{index} %(levelname)s %(name)s: %(message)s")
    parent_pid = RATCHET_PARENT_PID.get()  # set by `_run_child`: the worker exits when that task process is gone
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    record = train_multiworker(**json.loads(args_path.read_text()))
    tmp = Path(f"{result_path}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, result_path)
    return 0


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose task process died (SIGKILL, lost host) must not train on, holding its port and GPU."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        log.error("the task process %s is gone: this worker stops", parent_pid)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


if __name__ == "__main__":
    exit_without_teardown(_main(sys.argv[1:]))
