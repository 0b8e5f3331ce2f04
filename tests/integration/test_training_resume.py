"""A training process killed with SIGKILL mid-run and retried resumes from its last checkpoint.

The real stage: `ml_tasks.training.trainer.train`, which runs `python -m ml_tasks.isolation
ml_tasks.training.trainer:train_in_process ...` with `ml_tasks.training.checkpointing` (Keras'
`BackupAndRestore`, made atomic) committing `<model_dir>/checkpoints/training_metadata.json`
({"epoch": N, ...}) after every epoch, beside the early stopping state of that epoch.
The test lets it checkpoint at least two epochs, SIGKILLs the child (no chance to
clean up, as when a worker node dies), calls `train` again with the same arguments
and checks that the retry started from the checkpoint, not from epoch 0.

Where the retry started: `TrainResult.initial_epoch` (read from BackupAndRestore's
metadata); Keras' own "Epoch k/N" progress lines in the child's stdout say the same
directly. The learning curve (`epochs_run`) still counts every epoch once.
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .helpers import checkpointed_epoch

pytestmark = pytest.mark.integration

MAX_EPOCHS = 8
KILL_AFTER_EPOCHS = 2
# Small batches make an epoch last ~0.5-1 s on 2 cores, long enough to catch it mid-run.
PARAMS = {"n_layers": 2, "units": 64, "dropout": 0.0, "l2": 1e-6, "learning_rate": 1e-3, "batch_size": 32}


def _training_child(parent_pid: int) -> Any:
    import psutil

    for child in psutil.Process(parent_pid).children(recursive=True):
        try:
            if "ml_tasks.training.trainer:train_in_process" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_sigkilled_training_resumes_from_its_last_checkpoint(ratchet_home: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import os
    import zipfile

    from ml_tasks import tracking
    from ml_tasks.config import RunContext, TrainConfig
    from ml_tasks.data.preparation import prepare
    from ml_tasks.datasets import synthetic
    from ml_tasks.errors import RatchetError
    from ml_tasks.training.trainer import train

    drop = ratchet_home / "drop"
    drop.mkdir(parents=True)
    synthetic.generate(12_000, seed=3).to_parquet(drop / "part-000.parquet", index=False)
    ctx = RunContext("synthetic", "resume")
    prepare(ctx, drop.as_uri())
    parent_run = tracking.ensure_parent_run(ctx)
    config = TrainConfig(max_epochs=MAX_EPOCHS, patience=MAX_EPOCHS, seed=0)
    backup_dir = ctx.model_dir / "checkpoints"

    outcome: dict[str, Any] = {}

    def first_attempt() -> None:
        try:
            outcome["result"] = train(ctx, config, PARAMS, parent_run)
        except RatchetError as exc:
            outcome["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=first_attempt, daemon=True)
    thread.start()
    killed_at = 0
    while thread.is_alive() and time.monotonic() - started < 60:
        killed_at = checkpointed_epoch(backup_dir)
        if killed_at >= KILL_AFTER_EPOCHS:
            child = _training_child(os.getpid())
            assert child is not None, "the training child process was not found"
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    thread.join(timeout=30)
    assert KILL_AFTER_EPOCHS <= killed_at < MAX_EPOCHS, f"killed after {killed_at} epochs"
    assert "result" not in outcome, "the first attempt finished before it could be killed"
    assert "SIGKILL" in str(outcome.get("error")), outcome
    assert not (ctx.model_dir / "train_result.json").exists()
    checkpointed = checkpointed_epoch(backup_dir)  # may be one more than seen: an epoch can end before the kill lands
    assert checkpointed >= killed_at
    # the early stopping state of the committed epoch is beside it (tests/model/test_resumable_early_stopping.py)
    assert (backup_dir / f"early_stopping.{checkpointed}.json").is_file(), sorted(p.name for p in backup_dir.iterdir())
    first_run_output = capfd.readouterr().out

    result = train(ctx, config, PARAMS, parent_run)
    retry_output = capfd.readouterr().out

    first_epoch = result.initial_epoch  # 0-based index of the retry's first epoch
    assert first_epoch == checkpointed > 0, (first_epoch, checkpointed)
    # the learning curve keeps the epochs before the kill: one entry per epoch, none twice
    assert result.epochs_run == MAX_EPOCHS
    progress = [int(m) for m in re.findall(rf"^Epoch (\d+)/{MAX_EPOCHS}$", retry_output, flags=re.M)]
    # Keras' own progress lines (1-based) from the child, which writes to this process's stdout.
    assert progress and progress[0] == checkpointed + 1 and progress[-1] == MAX_EPOCHS, progress
    epochs_before_kill = len(re.findall(rf"^Epoch \d+/{MAX_EPOCHS}$", first_run_output, flags=re.M))  # begun, some unfinished
    assert epochs_before_kill >= checkpointed
    total = epochs_before_kill + (MAX_EPOCHS - first_epoch)
    assert total < 2 * MAX_EPOCHS and total <= MAX_EPOCHS + 1, (epochs_before_kill, result.epochs_run)

    # One model results: the done record, the .keras file, one logged model, and the checkpoints cleaned up.
    assert not result.reused
    assert Path(result.model_path).is_file()
    done = json.loads((ctx.model_dir / "train_result.json").read_text())
    assert done["model_path"] == result.model_path and done["epochs_run"] == result.epochs_run
    assert not backup_dir.exists(), "BackupAndRestore removes its checkpoints when fit completes"
    with zipfile.ZipFile(result.model_path) as archive:  # a whole .keras file (loading it would import TF here)
        assert {"config.json", "model.weights.h5"} <= set(archive.namelist())
    logged = tracking.client().search_logged_models(experiment_ids=[tracking.configure()])
    assert len(logged) == 1, [m.model_id for m in logged]
    assert train(ctx, config, PARAMS, parent_run).reused
