"""The Keras MLP family: the model (a head per task kind), its FGSM adversarial-training wrapper, and the accelerators it trains on.

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


def head_config(task: str = "binary", n_classes: int = 2, target_std: float = 1.0) -> dict[str, Any]:
    """The loss, loss weight and metrics of a task kind's head (also what the FGSM wrapper compiles with).

    Regression's loss is the MSE of the standardised target: the model outputs original units (see
    `build_mlp`), so its MSE is weighted by 1/std**2, which is exactly the MSE in standardised units.
    """
    import keras

    if task == "binary":
        return {"loss": "binary_crossentropy", "loss_weights": None,
                "metrics": [keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")]}
    if task == "multiclass":
        if n_classes < 3:
            raise ValueError(f"a multiclass head needs at least 3 classes; got {n_classes}")
        return {"loss": "sparse_categorical_crossentropy", "loss_weights": None,
                "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}
    if task == "regression":
        std = float(target_std) if target_std and target_std > 0 else 1.0
        return {"loss": "mean_squared_error", "loss_weights": 1.0 / std**2,
                "metrics": [keras.metrics.RootMeanSquaredError(name="rmse"), keras.metrics.MeanAbsoluteError(name="mae")]}
    raise ValueError(f"unknown task kind {task!r}")


def build_mlp(n_features: int, params: dict[str, Any], seed: int = 0, *, task: str = "binary", n_classes: int = 2,
              target_mean: float = 0.0, target_std: float = 1.0) -> Any:
    """An MLP with dropout and L2 and the head of its task kind; the output layers stay float32.

    * binary: Dense(1, sigmoid), the positive-class probability, binary cross-entropy;
    * multiclass: Dense(k, softmax), the class probabilities in code order, sparse categorical cross-entropy on
      the codes 0..k-1;
    * regression: Dense(1, linear) predicts the standardised target and a fixed `Rescaling(std, mean)` layer
      (no trainable weights, a built-in layer) turns it into original units, so the saved model serves
      predictions in the target's units with nothing extra; the loss is the standardised MSE (`head_config`).
    """
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
    if task == "binary":
        outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    elif task == "multiclass":
        outputs = keras.layers.Dense(int(n_classes), activation="softmax", dtype="float32", name="probabilities")(x)
    elif task == "regression":
        std = float(target_std) if target_std and target_std > 0 else 1.0
        standardised = keras.layers.Dense(1, dtype="float32", name="standardised")(x)
        outputs = keras.layers.Rescaling(scale=std, offset=float(target_mean), dtype="float32", name="prediction")(
            standardised)
    else:
        raise ValueError(f"unknown task kind {task!r}")
    model = keras.Model(inputs, outputs, name="mlp")
    head = head_config(task, n_classes, target_std)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=float(params["learning_rate"])),
        loss=head["loss"], loss_weights=head["loss_weights"], metrics=head["metrics"],
    )
    return model


def validation_score_callback(objective: Any, x_val: Any, y_val: Any, x_train: Any = None, y_train: Any = None,
                              batch_size: int = 4096) -> Any:
    """A callback that adds the primary metric to each epoch's logs: `val_<metric>` (and `<metric>` on `x_train`).

    Placed before early stopping, checkpointing and CSV logging in the callback list, those see the keys
    (Keras passes one logs dict along the list). Backend-portable: it predicts and scores with numpy.
    """
    import keras

    metric = objective.metric

    class ValidationScore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if logs is None:
                return
            network: Any = getattr(self.model, "base", self.model)
            logs[f"val_{metric}"] = objective.score(y_val, network.predict(x_val, batch_size=batch_size, verbose=0))
            if x_train is not None:
                logs[metric] = objective.score(y_train, network.predict(x_train, batch_size=batch_size, verbose=0))

    return ValidationScore()


def adversarial_trainer(base: Any, epsilon: float, perturbable: list[bool], *, task: str = "binary",
                        n_classes: int = 2, target_std: float = 1.0) -> Any:
    """`base` wrapped for FGSM adversarial training (Goodfellow et al., 2015), TensorFlow backend.

    Each batch trains on its clean rows and on the same rows moved by
    `epsilon` in the sign of the loss gradient, on the columns `perturbable`
    marks (the standardised numerics: a fractional one-hot is no real input).
    Validation, checkpoints and early stopping see the wrapper; what is saved
    and served is `base`, an ordinary Keras model. Every head works: labels
    go in as a float column (n, 1), which the binary, sparse categorical and
    regression losses and metrics all take; `task`, `n_classes` and
    `target_std` must be those `base` was built with (the same loss and metrics).
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
    head = head_config(task, n_classes, target_std)
    trainer.compile(optimizer=base.optimizer, loss=head["loss"], loss_weights=head["loss_weights"],
                    metrics=head["metrics"])
    return trainer
