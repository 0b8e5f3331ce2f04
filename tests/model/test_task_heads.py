"""The MLP's heads per task kind: each trains and beats a trivial baseline, the regression head serves original
units from a saved file, the FGSM wrapper trains every head, and compression measures each task its own way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ml_tasks.training.scoring import Objective
from tests import task_problems

pytestmark = pytest.mark.slow

PARAMS = {"n_layers": 1, "units": 32, "dropout": 0.0, "l2": 1e-5, "learning_rate": 1e-2, "batch_size": 64}


def test_multiclass_head_is_a_softmax_over_the_classes_and_beats_the_majority_class():
    from ml_tasks.training.keras_mlp import build_mlp

    x, y = task_problems.multiclass()
    x_train, y_train, x_val, y_val = task_problems.split(x, y)
    model = build_mlp(x.shape[1], PARAMS, task="multiclass", n_classes=3)
    model.fit(x_train, y_train.astype("float32"), epochs=15, batch_size=64, verbose=0)
    probabilities = model.predict(x_val, verbose=0)
    assert probabilities.shape == (len(y_val), 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    objective = Objective("multiclass", "f1_macro", 3)
    majority = np.eye(3)[np.full(len(y_val), np.bincount(y_train).argmax())]
    assert objective.score(y_val, probabilities) > objective.score(y_val, majority) + 0.3


def test_regression_head_trains_standardised_and_its_saved_file_predicts_original_units(tmp_path: Path):
    import keras

    from ml_tasks.training.keras_mlp import build_mlp

    x, y = task_problems.regression()
    x_train, y_train, x_val, y_val = task_problems.split(x, y)
    model = build_mlp(x.shape[1], PARAMS, task="regression", target_mean=float(y_train.mean()),
                      target_std=float(y_train.std()))
    history = model.fit(x_train, y_train.astype("float32"), validation_data=(x_val, y_val.astype("float32")),
                        epochs=20, batch_size=64, verbose=0).history
    assert "val_rmse" in history
    model.save(tmp_path / "model.keras")
    served = keras.saving.load_model(tmp_path / "model.keras")  # built-in layers only: nothing to register
    predicted = served.predict(x_val, verbose=0)
    assert predicted.shape == (len(y_val), 1)
    rmse = Objective("regression", "rmse", 0).score(y_val, predicted)
    assert rmse < 0.6 * float(np.std(y_val))  # the mean predictor's RMSE is the std
    assert abs(float(predicted.mean()) - float(y_val.mean())) < 0.2 * float(y_val.std())  # original units


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_fgsm_wrapper_trains_every_head(task):
    from ml_tasks.training.keras_mlp import adversarial_trainer, build_mlp

    if task == "regression":
        x, y = task_problems.regression(rows=400)
    else:
        x, y = task_problems.multiclass(rows=400)
        if task == "binary":
            y = (y == 0).astype("int64")
    k = 3 if task == "multiclass" else 2
    stats = {"target_mean": float(y.mean()), "target_std": float(y.std())} if task == "regression" else {}
    base = build_mlp(x.shape[1], PARAMS, task=task, n_classes=k, **stats)
    trainer = adversarial_trainer(base, 0.05, [True] * x.shape[1], task=task, n_classes=k,
                                  target_std=stats.get("target_std", 1.0))
    history = trainer.fit(x, y.astype("float32"), epochs=3, batch_size=64, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert base.predict(x[:4], verbose=0).shape == (4, 3 if task == "multiclass" else 1)


def test_a_keras_trial_of_a_regression_target_reports_rmse():
    from ml_tasks.training.trials import run_trial

    x, y = task_problems.regression(rows=500)
    seen: list[float] = []
    best = run_trial("keras_mlp", PARAMS, task_problems.split(x, y), 4, 0, lambda s, v, last: seen.append(v),
                     objective=Objective("regression", "rmse", 0))
    assert len(seen) == 4 and best == min(seen) and best < float(np.std(y))


def test_compression_measures_quality_per_task(tmp_path: Path):
    import keras

    from ml_tasks.compression.job import (
        DYNAMIC_RANGE,
        CompressionConfig,
        _distil,
        _gate,
        _keras_predict,
        _measure,
        _tflite_predict,
        _write_tflite,
    )
    from ml_tasks.training.keras_mlp import build_mlp

    config = CompressionConfig(latency_runs=3, latency_batch_rows=64, distill_epochs=3)
    for task in ("multiclass", "regression"):
        x, y = task_problems.multiclass(rows=400) if task == "multiclass" else task_problems.regression(rows=400)
        stats = {"target_mean": float(y.mean()), "target_std": float(y.std())} if task == "regression" else {}
        model = build_mlp(x.shape[1], PARAMS, task=task, n_classes=3, **stats)
        model.fit(x, y.astype("float32"), epochs=5, batch_size=64, verbose=0)
        data = {"x_train": x, "y_train": y.astype("float32"), "x_test": x[:100], "y_test": y[:100], "task": task,
                "n_classes": 3, "rng": np.random.default_rng(0)}
        data["reference"] = _keras_predict(model)(x[:100])
        model.save(tmp_path / f"{task}.keras")
        original = _measure("original", "keras", tmp_path / f"{task}.keras", _keras_predict(model), data, config)
        path = _write_tflite(model, tmp_path / task / "model.tflite", DYNAMIC_RANGE, data)
        quantized = _gate(_measure(DYNAMIC_RANGE, "tflite", path, _tflite_predict(path, data), data, config),
                          original, 0.05)
        if task == "multiclass":
            assert quantized.agreement > 0.95 and quantized.quality_loss == pytest.approx(1 - quantized.agreement)
        else:
            assert quantized.rmse > 0 and quantized.quality_loss == pytest.approx(quantized.rmse / original.rmse - 1)
        assert quantized.passed
        student, _ = _distil(data, _keras_predict(model)(x), config)
        assert student.predict(x[:2], verbose=0).shape == (2, 3 if task == "multiclass" else 1)
        keras.backend.clear_session()
