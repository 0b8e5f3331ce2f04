"""Per-epoch Keras checkpoints that a SIGKILLed training process resumes from as if it had never stopped.

Imported only inside the training process (it imports Keras). Keras'
`BackupAndRestore` alone leaves three gaps, closed here:

* It writes `latest.weights.h5` and `training_metadata.json` in place: a kill
  mid-write leaves a truncated file that every retry then fails to load.
  `AtomicBackupAndRestore` writes each epoch's weights to their own file and
  the metadata by temp name + rename, after the weights: the metadata's rename
  is the one commit point, and it names the weights it goes with.
* It does not save the dropout layers' seed generators (they are not weights):
  a resumed run would draw the dropout masks of epoch 0 again. Their states
  travel in the metadata.
* `EarlyStopping` keeps its counters and best weights in memory: after a
  resume it counts patience afresh and `restore_best_weights` can only pick
  among the epochs after the resume. `ResumableEarlyStopping` writes its state
  (wait, best, best_epoch, stopped_epoch) to `early_stopping.<n>.json` after
  epoch n-1 (n epochs done, the number the metadata records) and the best
  weights to `early_stopping.best.<epoch>.weights.h5`, and restores the
  snapshot of the epoch the metadata committed.

Order: the early stopping callback comes before the backup in the callback list
(`callbacks(...)` builds it), so its snapshot for epoch n is on disk before the
backup commits epoch n. A kill between the two leaves a snapshot one epoch
ahead of the commit; it is ignored (the epoch is run again) and replaced. Each
side keeps the files of the last two epochs, so the committed epoch's are
always there. A run that early stopping had already ended when it was killed
resumes with nothing left to train (`finished_early`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import keras
import numpy as np

log = logging.getLogger(__name__)

METADATA_FILE = "training_metadata.json"  # the name Keras' BackupAndRestore uses
STATE_PATTERN = "early_stopping.{epoch}.json"
BEST_PATTERN = "early_stopping.best.{epoch}.weights.h5"
WEIGHTS_PATTERN = "epoch-{epoch}.weights.h5"


def committed_epoch(backup_dir: str | Path) -> int:
    """Epochs done according to the last committed checkpoint in `backup_dir` (0: none)."""
    path = Path(backup_dir) / METADATA_FILE
    return int(json.loads(path.read_text())["epoch"]) if path.is_file() else 0


def _early_stopping_state(backup_dir: Path, epoch: int) -> dict[str, Any] | None:
    path = backup_dir / STATE_PATTERN.format(epoch=epoch)
    return json.loads(path.read_text()) if path.is_file() else None


def finished_early(backup_dir: str | Path) -> bool:
    """True when the committed checkpoint is of a run early stopping had already ended."""
    epoch = committed_epoch(backup_dir)
    state = _early_stopping_state(Path(backup_dir), epoch) if epoch else None
    return bool(state and state["stopped_epoch"] > 0)


def _replace_durably(tmp: Path, target: Path) -> None:
    """fsync `tmp`, then rename it onto `target`: a file is either whole or absent, even after a host crash."""
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def _write_json(target: Path, payload: dict[str, Any]) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload))
    _replace_durably(tmp, target)


def _tmp_weights(target: Path) -> Path:
    # Keras insists on the .weights.h5 ending
    return target.with_name(f".{target.name.removesuffix('.weights.h5')}.{os.getpid()}.tmp.weights.h5")


def _prune(folder: Path, pattern: str, keep: set[int]) -> None:
    regex = re.compile(re.escape(pattern).replace(re.escape("{epoch}"), r"(\d+)") + "$")
    for path in folder.iterdir():
        match = regex.match(path.name)
        if match and int(match.group(1)) not in keep:
            path.unlink(missing_ok=True)


def _seed_variables(model: Any) -> list[Any]:
    return [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` (per epoch) with whole-file writes, one commit point, and the dropout seeds saved."""

    def __init__(self, backup_dir: str | Path) -> None:
        super().__init__(backup_dir=str(backup_dir), save_freq="epoch", delete_checkpoint=True)
        self.folder = Path(backup_dir)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        path = self.folder / METADATA_FILE
        metadata = json.loads(path.read_text()) if path.is_file() else {}
        if "weights" in metadata:  # written by this class: the weights file that goes with the commit
            self._weights_path = str(self.folder / metadata["weights"])
        super().on_train_begin(logs)
        seeds = metadata.get("seed_states")
        variables = _seed_variables(self.model)
        if seeds is not None and len(seeds) == len(variables):
            for variable, value in zip(variables, seeds, strict=True):
                variable.assign(np.asarray(value, dtype=variable.dtype))
        elif seeds is not None:
            log.warning("checkpoint has %s seed generator states, the model %s: not restored", len(seeds), len(variables))
        if metadata:
            log.info("resuming from the checkpoint after epoch %s in %s", metadata["epoch"], self.folder)

    def _save_model(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        epoch = self._current_epoch
        weights = self.folder / WEIGHTS_PATTERN.format(epoch=epoch)
        tmp = _tmp_weights(weights)
        self.model.save_weights(str(tmp), overwrite=True)
        _replace_durably(tmp, weights)
        _write_json(self.folder / METADATA_FILE, {
            "epoch": epoch, "batch": 0, "weights": weights.name,
            "seed_states": [np.asarray(v).tolist() for v in _seed_variables(self.model)],
        })
        self._weights_path = str(weights)
        _prune(self.folder, WEIGHTS_PATTERN, {epoch, epoch - 1})


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose state and best weights survive a kill: saved each epoch, restored at the committed epoch.

    Put it before the `AtomicBackupAndRestore` of the same `backup_dir` in the callback list.
    """

    def __init__(self, backup_dir: str | Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = Path(backup_dir)
        self.resumed_from = 0
        self._saved_best: int | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._saved_best = None
        self.resumed_from = committed_epoch(self.folder)
        if not self.resumed_from:
            return
        state = _early_stopping_state(self.folder, self.resumed_from)
        if state is None:
            log.warning("no early stopping state for epoch %s in %s: patience counts afresh", self.resumed_from,
                        self.folder)
            return
        self.wait, self.best, self.best_epoch = int(state["wait"]), state["best"], int(state["best_epoch"])
        self.stopped_epoch = int(state["stopped_epoch"])
        if state["best_weights"]:
            import h5py

            with h5py.File(self.folder / state["best_weights"], "r") as handle:
                self.best_weights = [handle[name][()] for name in sorted(handle)]
            self._saved_best = self.best_epoch
        log.info("early stopping resumed after epoch %s: best %s at epoch %s, %s epochs without improvement",
                 self.resumed_from, self.best, self.best_epoch + 1, self.wait)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        self.folder.mkdir(parents=True, exist_ok=True)
        best_file = None
        if self.best_weights is not None:
            best_file = self.folder / BEST_PATTERN.format(epoch=self.best_epoch)
            if self._saved_best != self.best_epoch or not best_file.is_file():
                import h5py

                tmp = best_file.with_name(f".{best_file.name}.{os.getpid()}.tmp")
                with h5py.File(tmp, "w") as handle:
                    for i, array in enumerate(self.best_weights):
                        handle.create_dataset(f"{i:05d}", data=array)
                _replace_durably(tmp, best_file)
                self._saved_best = self.best_epoch
        done = epoch + 1
        _write_json(self.folder / STATE_PATTERN.format(epoch=done), {
            "epoch": done, "wait": int(self.wait), "best": None if self.best is None else float(self.best),
            "best_epoch": int(self.best_epoch), "stopped_epoch": int(self.stopped_epoch),
            "best_weights": best_file.name if best_file else None,
        })
        # the backup commits `done` next; until it does, the snapshot of `epoch` is the committed one
        kept = [_early_stopping_state(self.folder, n) for n in (epoch, done)]
        _prune(self.folder, STATE_PATTERN, {epoch, done})
        _prune(self.folder, BEST_PATTERN, {s["best_epoch"] for s in kept if s and s["best_weights"]})


def callbacks(backup_dir: str | Path, patience: int, monitor: str = "val_auc", mode: str = "max",
              extra: list[Any] | None = None) -> list[Any]:
    """The trainer's callbacks, in the order the commit protocol needs: early stopping, then the backup, then `extra`."""
    return [
        ResumableEarlyStopping(backup_dir, monitor=monitor, mode=mode, patience=patience, restore_best_weights=True),
        AtomicBackupAndRestore(backup_dir),
        *(extra or []),
    ]
