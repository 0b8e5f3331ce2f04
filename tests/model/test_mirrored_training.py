"""The multi-GPU path of the trainer, on a machine without GPUs: MirroredStrategy over two logical CPU devices.

On a GPU host `configure_accelerators` finds the GPUs, sets bfloat16 mixed precision and the trainer trains under
`MirroredStrategy` with the batch scaled by the replicas. Here the CPU is split into two logical devices and
`configure_accelerators` answers as it would on a two-GPU host (the one stand-in: there is no GPU to find); the
rest is the real trainer in a fresh interpreter (TensorFlow's devices are fixed when its runtime starts).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

SCRIPT = r"""
import json, sys
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
devices = [d.name for d in tf.config.list_logical_devices("CPU")]

import keras
from ml_tasks.config import RunContext, TrainConfig
from ml_tasks.training import input_pipeline, keras_mlp, trainer

seen = {}

def two_device_host():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # what configure_accelerators sets when it finds GPUs
    return {"backend": "tensorflow", "gpus": devices, "precision": "mixed_bfloat16"}

real_fit_source, real_build = input_pipeline.fit_source, keras_mlp.build_mlp

def fit_source(train, val, batch_size, **kwargs):
    seen["batch_size"] = batch_size
    return real_fit_source(train, val, batch_size, **kwargs)

def build_mlp(n_features, params, seed=0, **head):
    seen["replicas"] = tf.distribute.get_strategy().num_replicas_in_sync
    model = real_build(n_features, params, seed, **head)
    seen["compute_dtype"] = model.layers[1].dtype_policy.compute_dtype
    seen["variable_dtype"] = model.layers[1].dtype_policy.variable_dtype
    return model

keras_mlp.configure_accelerators, keras_mlp.build_mlp, input_pipeline.fit_source = two_device_host, build_mlp, fit_source
ctx = RunContext.from_dict(json.loads(sys.argv[1]))
params = {"n_layers": 1, "units": 16, "dropout": 0.0, "l2": 1e-6, "learning_rate": 1e-2, "batch_size": 128}
from ml_tasks.datasets import SYNTHETIC
fitted = trainer._fit_keras(ctx, TrainConfig(max_epochs=3, patience=3, seed=0), params, SYNTHETIC.target)
seen.update(devices=devices, epochs=fitted.epochs_run, val_auc=fitted.val_auc, accelerators=fitted.accelerators)
print("RESULT " + json.dumps(seen, default=str))
"""


def test_the_trainer_runs_mirrored_over_two_devices_in_bfloat16_with_the_batch_scaled(ratchet_home):
    from ml_tasks.config import RunContext
    from ml_tasks.data.preparation import prepare
    from ml_tasks.datasets import synthetic

    drop = ratchet_home / "drop"
    drop.mkdir(parents=True)
    synthetic.generate(3000, seed=4).to_parquet(drop / "part-000.parquet", index=False)
    ctx = RunContext("synthetic", "mirrored")
    prepare(ctx, drop.as_uri())
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(ctx.to_dict())], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[len("RESULT "):])
    assert len(seen["devices"]) == 2 and seen["replicas"] == 2
    assert seen["batch_size"] == 2 * 128  # the global batch: the tuned batch on each replica
    assert (seen["compute_dtype"], seen["variable_dtype"]) == ("bfloat16", "float32")
    assert seen["epochs"] >= 1 and seen["val_auc"] > 0.7, seen  # it trained, and learned the synthetic rule
    assert seen["accelerators"]["precision"] == "mixed_bfloat16"
