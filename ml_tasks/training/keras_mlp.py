"""The Keras MLP family: the model, its FGSM adversarial-training wrapper, and the accelerators it trains on.

Written backend-portably (TensorFlow by default, JAX works too). Keras is imported inside the functions, which
run only in isolated processes: importing Keras loads its backend.
"""

from __future__ import annotations

import logging
from typing import Any

from ml_tasks.training.families import DEFAULT_PARAMS, KERAS_MLP

log = logging.getLogger(__name__)

# The MLP's search space is declared with the other families' in `ml_tasks.training.families.SEARCH_SPACES`.
DEFAULT_MLP_PARAMS: dict[str, Any] = DEFAULT_PARAMS[KERAS_MLP]


def configure_accelerators() -> dict[str, Any]:
    """Find GPUs for the active backend; use bfloat16 mixed precision when there are some."""
    import keras

    backend = keras.backend.backend()
    gpus: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        for device in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(device, True)  # before the runtime starts, which the next line does
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]  # the names MirroredStrategy takes
    elif backend == "jax":
        import jax

        gpus = [str(d) for d in jax.devices() if d.platform == "gpu"]
    elif backend == "torch":
        import torch

        gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    precision = "mixed_bfloat16" if gpus else "float32"
    keras.mixed_precision.set_global_policy(precision)
    info = {"backend": backend, "gpus": gpus, "precision": precision}
    log.info("accelerators: %s", info)
    return info


def distribution_scope(devices: list[str]) -> Any:
    """MirroredStrategy over `devices` (the local GPUs' logical names) under TensorFlow; otherwise a no-op scope.

    The trainer scales the global batch by the number of devices, so each replica keeps the tuned batch size.
    """
    import contextlib

    import keras

    if keras.backend.backend() == "tensorflow" and len(devices) > 1:
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(devices=devices).scope()
    return contextlib.nullcontext()


def build_mlp(n_features: int, params: dict[str, Any], seed: int = 0) -> Any:
    """A binary classifier MLP with dropout and L2; the output layer stays float32."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(n_features,), name="features")
    x = inputs
    for i in range(int(params["n_layers"])):
        x = keras.layers.Dense(
            int(params["units"]), activation="relu",
            kernel_regularizer=keras.regularizers.L2(float(params["l2"])), name=f"dense_{i}",
        )(x)
        if float(params["dropout"]) > 0:
            x = keras.layers.Dropout(float(params["dropout"]), name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    model = keras.Model(inputs, outputs, name="mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(params["learning_rate"])),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model


def adversarial_trainer(base: Any, epsilon: float, perturbable: list[bool]) -> Any:
    """`base` wrapped for FGSM adversarial training (Goodfellow et al., 2015), TensorFlow backend.

    Each batch trains on its clean rows and on the same rows moved by
    `epsilon` in the sign of the loss gradient, on the columns `perturbable`
    marks (the standardised numerics: a fractional one-hot is no real input).
    Validation, checkpoints and early stopping see the wrapper; what is saved
    and served is `base`, an ordinary Keras model.
    """
    import keras
    import tensorflow as tf

    class FGSMTrainer(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="fgsm_trainer")
            self.base = base
            self.mask = tf.constant([1.0 if p else 0.0 for p in perturbable], dtype="float32")

        def call(self, inputs: Any, training: bool = False) -> Any:
            return self.base(inputs, training=training)

        def train_step(self, data: Any) -> dict[str, Any]:
            x, y = data[0], tf.reshape(tf.cast(data[1], "float32"), (-1, 1))
            x = tf.cast(x, "float32")
            with tf.GradientTape() as tape:
                tape.watch(x)
                probe = self.compute_loss(x=x, y=y, y_pred=tf.cast(self.base(x, training=False), "float32"))
            adversarial = tf.stop_gradient(x + epsilon * tf.sign(tape.gradient(probe, x)) * self.mask)
            both_x, both_y = tf.concat([x, adversarial], axis=0), tf.concat([y, y], axis=0)
            with tf.GradientTape() as tape:
                predicted = self(both_x, training=True)
                loss = self.compute_loss(x=both_x, y=both_y, y_pred=predicted)
            self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(both_y, predicted)
            return {m.name: m.result() for m in self.metrics}

    trainer = FGSMTrainer()
    trainer(tf.zeros((1, len(perturbable))))  # built before fit: BackupAndRestore needs the weights to exist
    trainer.compile(optimizer=base.optimizer, loss=base.loss,
                    metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")])
    return trainer
