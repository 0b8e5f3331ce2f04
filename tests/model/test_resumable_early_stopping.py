"""A fit killed mid-run and resumed stops at the same epoch, with the same best weights, as one never killed.

The trainer's own callbacks (`ml_tasks.training.checkpointing.callbacks`: resumable
early stopping, then the atomic backup) on the project's MLP with dropout, fed
as the trainer streams Parquet (`fit_source(stream=True)`: shuffled windows,
tf.data; the order of an epoch is drawn from (seed, epoch), and a resumed fit
starts at its epoch). The run that is SIGKILLed runs in a fresh process
(`run_isolated`, as the trainer runs); the others run here, each in a fresh
Keras session. Two interruptions:

* SIGKILL at the worst moment: after early stopping wrote its state for epoch
  k+1 but before the backup committed epoch k+1 (a callback placed between the
  two kills its own process). The retry must rerun epoch k+1 from the state of
  epoch k, not count it twice.
* A crash after the epoch at which early stopping ended the run was committed
  (a callback raises; `fit` never reaches `on_train_end`). The retry must train
  no further and still end with the best epoch's weights.

Both resumed runs are compared with an uninterrupted run: same stopping epoch,
same best epoch, bit-identical final (best) weights. (Fitting in-memory arrays
with Keras' own shuffle would differ after a resume: that shuffle draws from a
TensorFlow RNG that no checkpoint holds.) About 20 s on 2 idle cores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ml_tasks.errors import RatchetError
from ml_tasks.isolation import run_isolated

MAX_EPOCHS = 40
PATIENCE = 3
PARAMS = {"n_layers": 2, "units": 32, "dropout": 0.1, "l2": 1e-4, "learning_rate": 3e-3, "batch_size": 64}
TARGET = "tests.model.test_resumable_early_stopping:fit_case"


def _data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 12)).astype("float32")
    logits = x[:, :4] @ np.array([1.5, -1.0, 0.8, 0.5], dtype="float32") + 0.5 * x[:, 4] * x[:, 5]
    y = (rng.random(3000) < 1 / (1 + np.exp(-logits))).astype("float32")
    return x[:2000], y[:2000], x[2000:], y[2000:]


def fit_case(backup_dir: str, result: str, parquet: str, kill_between_writes_at: int | None = None,
             crash_after_commit_at: int | None = None) -> dict[str, Any]:
    """Child: fit streamed from `parquet`/{train,val}.parquet with the trainer's callbacks, optionally interrupted
    after epoch index k; saves the final weights."""
    import os
    import signal

    import keras

    from ml_tasks.training import checkpointing
    from ml_tasks.training.input_pipeline import fit_source
    from ml_tasks.training.keras_mlp import build_mlp

    class Interrupt(keras.callbacks.Callback):
        def __init__(self, at: int | None, how: str) -> None:
            super().__init__()
            self.at, self.how = at, how

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if epoch == self.at and self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if epoch == self.at:
                raise RuntimeError(f"crash after epoch {epoch}")

    class Epochs(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[int] = []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.seen.append(epoch)

    initial = checkpointing.committed_epoch(backup_dir)
    source = fit_source(f"{parquet}/train.parquet", f"{parquet}/val.parquet", PARAMS["batch_size"], seed=0,
                        stream=True, shuffle_buffer=512, first_epoch=initial)
    model = build_mlp(source.n_features, PARAMS, seed=0)
    epochs = Epochs()
    callbacks = checkpointing.callbacks(backup_dir, PATIENCE, extra=[epochs, Interrupt(crash_after_commit_at, "raise")])
    callbacks.insert(1, Interrupt(kill_between_writes_at, "kill"))  # between the early stopping state and the commit
    last = initial if checkpointing.finished_early(backup_dir) else MAX_EPOCHS
    try:
        model.fit(**source.fit_kwargs(), epochs=last, callbacks=callbacks, verbose=0)
    except RuntimeError:
        return {"crashed": True, "epochs_seen": epochs.seen}
    stopping = callbacks[0]
    np.savez(result, *model.get_weights())
    return {"initial_epoch": initial, "epochs_seen": epochs.seen, "stopped_epoch": stopping.stopped_epoch,
            "best_epoch": stopping.best_epoch, "best": stopping.best, "crashed": False}


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as saved:
        return [saved[f"arr_{i}"] for i in range(len(saved.files))]


def _assert_same_weights(resumed: Path, reference: Path) -> None:
    ours, theirs = _weights(resumed), _weights(reference)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a, b)


def _fit_here(backup_dir: Path, result: Path, **options: Any) -> dict[str, Any]:
    """The same fit in this process (a fresh Keras session), for the runs that are not killed."""
    import keras

    keras.backend.clear_session()
    return fit_case(str(backup_dir), str(result), **options)


def test_killed_and_resumed_fit_stops_like_an_uninterrupted_one(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y, x_val, y_val = _data()
    for name, (features, labels) in {"train": (x, y), "val": (x_val, y_val)}.items():
        columns = {f"f{j}": features[:, j] for j in range(features.shape[1])} | {"label": labels.astype("int64")}
        pq.write_table(pa.table(columns), tmp_path / f"{name}.parquet", row_group_size=500)
    parquet = {"parquet": str(tmp_path)}
    reference = _fit_here(tmp_path / "reference", tmp_path / "reference.npz", **parquet)
    stopped, best = reference["stopped_epoch"], reference["best_epoch"]
    assert 0 < best < stopped < MAX_EPOCHS - 1, reference  # early stopping ended it, patience after a best epoch
    assert not (tmp_path / "reference").exists()  # checkpoints are removed when fit completes

    # 1. SIGKILL after the state of epoch index k (patience partly used, best earlier) is written, before its commit
    k = stopped - 1
    backup = tmp_path / "killed"
    with pytest.raises(RatchetError, match="SIGKILL"):
        run_isolated(TARGET, {"backup_dir": str(backup), "result": str(tmp_path / "unused.npz"),
                              "kill_between_writes_at": k, **parquet})
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == k  # epochs 0..k-1 committed
    assert (backup / f"early_stopping.{k + 1}.json").is_file()  # the state written ahead of the commit
    resumed = _fit_here(backup, tmp_path / "resumed.npz", **parquet)
    assert resumed["initial_epoch"] == k and resumed["epochs_seen"][0] == k
    assert (resumed["stopped_epoch"], resumed["best_epoch"], resumed["best"]) == (stopped, best, reference["best"])
    _assert_same_weights(tmp_path / "resumed.npz", tmp_path / "reference.npz")

    # 2. a crash after the stopping epoch was committed: the retry trains nothing and restores the best weights
    backup = tmp_path / "crashed"
    crashed = _fit_here(backup, tmp_path / "unused.npz", crash_after_commit_at=stopped, **parquet)
    assert crashed["crashed"] and crashed["epochs_seen"][-1] == stopped
    retried = _fit_here(backup, tmp_path / "retried.npz", **parquet)
    assert retried["initial_epoch"] == stopped + 1 and retried["epochs_seen"] == []
    assert (retried["stopped_epoch"], retried["best_epoch"]) == (stopped, best)
    _assert_same_weights(tmp_path / "retried.npz", tmp_path / "reference.npz")
