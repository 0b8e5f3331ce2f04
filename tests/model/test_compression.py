"""Compression of a registered Keras champion: compressed models load through pyfunc and score raw rows.

The module trains one tiny MLP through the real training stage, registers it,
and compresses it once (TFLite dynamic-range/float16/int8, magnitude pruning,
distillation) in its own process; the tests then read that one result. Reruns
reuse the measurements and the registered versions, so they are quick.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from ml_tasks.compression.job import (
    DISTILLED,
    FLOAT16,
    INT8,
    METHODS,
    ORIGINAL,
    PRUNED,
    TFLITE_FLOAT32,
    TFLITE_METHODS,
    CompressedModel,
    CompressionConfig,
    _gate,
)
from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.errors import ConfigError

MODEL = SYNTHETIC.registered_model
PARAMS = {"n_layers": 2, "units": 64, "dropout": 0.0, "l2": 1e-6, "learning_rate": 3e-3, "batch_size": 64}
# A loose gate, so that every method registers and can be loaded; the tight default is exercised by `_gate` below.
CONFIG = CompressionConfig(max_accuracy_loss=0.1, finetune_epochs=1, distill_epochs=20, batch_size=64, representative_rows=100,
                           latency_runs=10, latency_batch_rows=256)


def test_config_refuses_unknown_methods_and_bad_sparsity() -> None:
    with pytest.raises(ConfigError, match="methods"):
        CompressionConfig(methods=("int4",))
    with pytest.raises(ConfigError, match="pruning_sparsity"):
        CompressionConfig(pruning_sparsity=1.0)
    config = CompressionConfig.from_dict(CompressionConfig(methods=(INT8,)).to_dict())
    assert config.methods == (INT8,)
    # the gate and the latency settings do not change the files, so they keep the key (and the reuse)
    assert replace(config, max_accuracy_loss=-1, latency_runs=3).artifact_key == config.artifact_key
    assert replace(config, pruning_sparsity=0.8).artifact_key != config.artifact_key


def test_gate_compares_accuracy_with_the_original() -> None:
    def measured(accuracy: float) -> CompressedModel:
        return CompressedModel("m", "tflite", "/x", 1, 1, 0.1, 1.0, 8, accuracy, 0.9)

    original = measured(0.90)
    assert _gate(measured(0.895), original, 0.01).passed
    assert not _gate(measured(0.88), original, 0.01).passed
    assert abs(_gate(measured(0.88), original, 0.01).accuracy_loss - 0.02) < 1e-12
    assert not _gate(measured(0.95), original, -1).passed  # a gate of -1 fails everything
    assert not _gate(measured(float("nan")), original, 0.5).passed


def test_the_persisted_loader_module_loads_tflite_pyfuncs_without_the_job() -> None:
    """Registered TFLite versions name `ml_tasks.compression` as their MLflow loader module, for as long as they
    exist: it must keep `_load_pyfunc`, and a server loading one must not import the job or TensorFlow for it."""
    import json
    import subprocess
    import sys

    probe = ("import json, sys, ml_tasks.compression as c; "
             "print(json.dumps([c.LOADER_MODULE, callable(c._load_pyfunc), "
             "sorted({'tensorflow', 'keras', 'mlflow', 'ml_tasks.compression.job'} & set(sys.modules))]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["ml_tasks.compression", True, []]


def _versions(name: str) -> list[int]:
    from ml_tasks import tracking

    return sorted(int(v.version) for v in tracking.client().search_model_versions(f"name = '{name}'"))


@pytest.fixture(scope="module")
def compressed(module_home: Any) -> dict[str, Any]:
    from ml_tasks import tracking
    from ml_tasks.compression.job import compress_model_version
    from ml_tasks.config import RunContext, TrainConfig
    from ml_tasks.data.preparation import prepare
    from ml_tasks.release import registry
    from ml_tasks.training.trainer import train

    drop = module_home / "drop"
    drop.mkdir(parents=True)
    synthetic.generate(3000, seed=3).to_parquet(drop / "part-000.parquet", index=False)
    ctx = RunContext("synthetic", "compress")
    prepare(ctx, drop.as_uri())
    parent_run = tracking.ensure_parent_run(ctx)
    trained = train(ctx, TrainConfig(max_epochs=6, patience=6, seed=0), PARAMS, parent_run)
    lineage = {"ratchet.data_fingerprint": "sha256:feedface", "ratchet.dataset": "synthetic",
               "ratchet.run_key": ctx.tracking_key}
    version = registry.register_candidate(MODEL, trained.model_uri, parent_run, lineage)
    prepared_uri = ctx.prepared_dir.as_uri()
    result = compress_model_version(MODEL, prepared_uri, version, CONFIG)
    return {"result": result, "version": version, "prepared_uri": prepared_uri}



@pytest.mark.integration
def test_every_method_registers_and_scores_raw_rows_like_the_original(compressed: dict[str, Any]) -> None:
    import mlflow
    import numpy as np

    from ml_tasks import tracking

    result = compressed["result"]
    assert set(result.results) == set(METHODS) and result.passed == list(METHODS) and not result.failed
    assert set(result.registered) == {f"{MODEL}_{m}" for m in METHODS}
    tracking.configure()
    rows = synthetic.generate(40, seed=99).drop(columns=[SYNTHETIC.target])
    original = mlflow.pyfunc.load_model(f"models:/{MODEL}/{compressed['version']}").predict(rows)
    for name, version in result.registered.items():
        scores = mlflow.pyfunc.load_model(f"models:/{name}/{version}").predict(rows)
        expected = ["prediction", "probability", "probability_0", "probability_1"]  # the one prediction contract
        assert list(scores.columns) == list(original.columns) == expected, name
        assert len(scores) == len(rows) and scores["probability"].between(0, 1).all(), name
        assert set(scores["prediction"].unique()) <= {0, 1}
        gap = float(np.abs(scores["probability"] - original["probability"]).mean())
        assert gap < (0.03 if name.endswith(TFLITE_METHODS) else 0.15), (name, gap)
        tags = tracking.client().get_model_version(name, version).tags
        assert tags["ratchet.compression.source_model"] == MODEL
        assert tags["ratchet.compression.source_version"] == compressed["version"]
        assert tags["ratchet.compression.gate"].startswith("passed")
        assert int(tags["ratchet.compression.size_bytes"]) > 0
        assert tags["ratchet.data_fingerprint"] == "sha256:feedface" and tags["ratchet.dataset"] == "synthetic"
        # Explained as its source (Keras runtimes, from the source's baseline), or said not to be (TFLite).
        explainer = json.loads(tags["ratchet.explainer"])
        if name.endswith(TFLITE_METHODS):
            assert "no network to differentiate" in explainer["skipped"]
        else:
            from ml_tasks.explain import model_explainer

            explained = model_explainer(mlflow.pyfunc.load_model(f"models:/{name}/{version}")).explain(rows)
            assert explained.method == "integrated_gradients" and explained.baseline_kind == "training_mean"
            assert explained.max_additivity_error() <= explained.tolerance


@pytest.mark.integration
def test_quantized_files_are_smaller_and_pruning_reaches_its_sparsity(compressed: dict[str, Any]) -> None:
    import json
    from pathlib import Path

    result = compressed["result"]
    record = json.loads(Path(result.record_path).read_text())
    references, results = record["references"], record["results"]
    float32 = references[TFLITE_FLOAT32]["size_bytes"]
    assert results[FLOAT16]["size_bytes"] < 0.7 * float32
    assert results[INT8]["size_bytes"] < min(0.6 * float32, results[FLOAT16]["size_bytes"])
    assert results["dynamic_range"]["size_bytes"] <= float32
    assert results[INT8]["details"]["input_dtype"] == "float32"  # full-integer inside, float at the edges
    assert abs(results[PRUNED]["sparsity"] - CONFIG.pruning_sparsity) < 0.01
    assert references[ORIGINAL]["sparsity"] < 0.01
    assert results[PRUNED]["gzip_bytes"] < references[ORIGINAL]["gzip_bytes"]
    assert results[DISTILLED]["details"]["parameters"] < 64 * 64
    for method in METHODS:
        entry = results[method]
        assert entry["latency_single_ms"] > 0 and entry["latency_batch_ms"] > 0
        assert entry["accuracy_loss"] == pytest.approx(references[ORIGINAL]["accuracy"] - entry["accuracy"])
    assert result.original["accuracy"] > 0.7 and result.test_rows == record["test_rows"] > 0


@pytest.mark.integration
def test_rerun_registers_nothing_new_and_a_strict_gate_fails_everything(compressed: dict[str, Any]) -> None:
    from ml_tasks.compression.job import compress_model_version

    first = compressed["result"]
    before = {name: _versions(name) for name in first.registered}
    again = compress_model_version(MODEL, compressed["prepared_uri"], compressed["version"], CONFIG)
    assert again.measurements_reused and again.newly_registered == []
    assert again.registered == first.registered
    strict = compress_model_version(MODEL, compressed["prepared_uri"], compressed["version"],
                                    replace(CONFIG, max_accuracy_loss=-1.0))
    assert strict.passed == [] and strict.failed == list(METHODS)
    assert strict.registered == {} and strict.newly_registered == []
    assert {name: _versions(name) for name in first.registered} == before
