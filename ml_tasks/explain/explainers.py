"""One explainer per model family, chosen from what a version holds, each checked by additivity.

Every family sees the fitted transform's features, so every explainer works
on them and `ml_tasks.explain.attribution` folds a one-hot group back into its
source column. Each explains one number per row, in the space where its
method is exact (`output_space`):

* tree families (random forest, gradient boosting): exact path-dependent
  TreeSHAP (the `shap` library's compiled algorithm); gradient boosting in
  log-odds (binary), class logits (multiclass) or target units, a forest in
  class probability or target units;
* linear families (logistic regression, ridge): exact linear SHAP with
  independent features, `w * (x - baseline)`, in log-odds, logits or units;
* the Keras MLP: integrated gradients from the baseline to the row, written
  with Keras 3 ops; only the gradient itself is backend-specific (TensorFlow,
  JAX or PyTorch), in `compiled_gradient`. It explains the output layer's
  pre-activation (log-odds, logits) or the prediction in target units.

Attributions add up to the explained output minus the base value: to float
rounding for the exact methods, within the declared `tolerance` for
integrated gradients, whose step count doubles for the rows not yet within it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml_tasks.errors import RatchetError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

TREE_SHAP = "tree_shap"
LINEAR_SHAP = "linear_shap"
INTEGRATED_GRADIENTS = "integrated_gradients"
EXPLAINER_METHODS = (TREE_SHAP, LINEAR_SHAP, INTEGRATED_GRADIENTS)

# Output spaces: where each method's attributions add up exactly.
LOG_ODDS = "log_odds"  # binary: log(p / (1 - p)) of the positive class
LOGIT = "logit"  # multiclass: the class's unnormalised score before softmax
PROBABILITY = "probability"  # a forest's averaged class probability
PREDICTION = "prediction"  # regression: the prediction in the target's units

# Exact methods must add up to float64 rounding of float32 features; integrated gradients within this many output
# units (log-odds, logits or target std for regression; see IntegratedGradients.tolerance).
EXACT_TOLERANCE = 1e-6
INTEGRATED_GRADIENTS_TOLERANCE = 1e-2
IG_FIRST_STEPS = 32
IG_MAX_STEPS = 512
# Points (rows x steps) per gradient call: bounded memory whatever the batch.
IG_POINTS_PER_CALL = 16384


class ExplainerError(RatchetError):
    """A version that cannot be explained (a compressed runtime, or a model of no known family)."""


@dataclass
class Attributions:
    """Per-row attributions over the model's features for one output per row (transformed space).

    `values` is (rows, features); `base_values` and `outputs` are (rows,), and
    `outputs - base_values` is what `values` adds up to. `classes` holds the
    class code explained on each row (classification), else None.
    """

    values: np.ndarray
    base_values: np.ndarray
    outputs: np.ndarray
    classes: np.ndarray | None
    method: str
    output_space: str
    tolerance: float
    steps: int = 0

    def additivity_errors(self) -> np.ndarray:
        return additivity_errors(self.values, self.base_values, self.outputs)


def additivity_errors(values: np.ndarray, base_values: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per row |sum of attributions + base value - explained output| (folding columns leaves it unchanged)."""
    import numpy as np

    return np.abs(values.sum(axis=1) + base_values - outputs)


class Explainer:
    """Explains a fitted model on transformed features; `margins` is the model's own output in `output_space`."""

    method: str = ""
    exact: bool = True
    output_space: str = PREDICTION
    tolerance: float = EXACT_TOLERANCE
    # Integration steps the last explanation took (integrated gradients; 0 for the exact methods).
    last_steps: int = 0

    def margins(self, features: np.ndarray) -> np.ndarray:
        """The explained output of every row: (rows,) for binary and regression, (rows, classes) for multiclass."""
        raise NotImplementedError

    def attribute(self, features: np.ndarray, classes: np.ndarray | None,
                  outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values (rows, features), base values (rows,)) for each row's class (None: the single output);
        `outputs` is what the rows' values must add up to, less the base value."""
        raise NotImplementedError

    def explain(self, features: Any, classes: Any = None) -> Attributions:
        """Attributions of each row's predicted class (or the given class codes), with the outputs they must add up
        to (`Attributions.additivity_errors` measures how well they do)."""
        import numpy as np

        x = np.ascontiguousarray(np.asarray(features, dtype="float32"))
        margins = np.asarray(self.margins(x), dtype="float64")
        picked: np.ndarray | None = None
        if margins.ndim == 2:
            picked = (margins.argmax(axis=1) if classes is None else np.asarray(classes, dtype="int64").reshape(-1))
            outputs = margins[np.arange(len(x)), picked]
        else:
            outputs = margins.reshape(-1)
        values, base = self.attribute(x, picked, outputs)
        return Attributions(values=np.asarray(values, dtype="float64"), base_values=np.asarray(base, dtype="float64"),
                            outputs=outputs, classes=picked, method=self.method, output_space=self.output_space,
                            tolerance=self.tolerance, steps=self.last_steps)


def _scale_tolerance(task: str, target_std: float | None) -> float:
    """Integrated gradients' tolerance in output units: regression's scales with the target's std."""
    if task == "regression" and target_std:
        return INTEGRATED_GRADIENTS_TOLERANCE * float(target_std)
    return INTEGRATED_GRADIENTS_TOLERANCE


class TreeShap(Explainer):
    """Exact path-dependent TreeSHAP (`shap.TreeExplainer`): no background rows needed, the trees' covers are."""

    method = TREE_SHAP

    def __init__(self, estimator: Any, task: str) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import shap

        self.estimator, self.task = estimator, task
        self.forest = type(estimator).__name__.startswith("RandomForest")
        self.explainer = shap.TreeExplainer(estimator, feature_perturbation="tree_path_dependent", model_output="raw")
        if task == "regression":
            self.output_space = PREDICTION
        elif self.forest:
            self.output_space = PROBABILITY
        else:
            self.output_space = LOG_ODDS if task == "binary" else LOGIT

    def margins(self, features: np.ndarray) -> np.ndarray:
        import numpy as np

        if self.task == "regression":
            return np.asarray(self.estimator.predict(features), dtype="float64")
        if self.forest:
            probabilities = np.asarray(self.estimator.predict_proba(features), dtype="float64")
            return probabilities[:, 1] if self.task == "binary" else probabilities
        return np.asarray(self.estimator.decision_function(features), dtype="float64")

    def attribute(self, features: np.ndarray, classes: np.ndarray | None,
                  outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        values = np.asarray(self.explainer.shap_values(features, check_additivity=False), dtype="float64")
        expected = np.atleast_1d(np.asarray(self.explainer.expected_value, dtype="float64"))
        if values.ndim == 3:  # (rows, features, outputs): a classifier with one output per class
            column = classes if classes is not None else np.full(len(features), values.shape[2] - 1)
            rows = np.arange(len(features))
            return values[rows, :, column], expected[column]
        return values, np.full(len(features), expected[-1])


class LinearShap(Explainer):
    """Exact linear SHAP with independent features: each feature's weight times its distance from the baseline."""

    method = LINEAR_SHAP

    def __init__(self, estimator: Any, task: str, baseline: np.ndarray) -> None:
        import numpy as np

        self.estimator, self.task = estimator, task
        self.coef = np.atleast_2d(np.asarray(estimator.coef_, dtype="float64"))  # (outputs, features)
        self.intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype="float64"))
        self.baseline = np.asarray(baseline, dtype="float64").reshape(-1)
        self.output_space = PREDICTION if task == "regression" else (LOG_ODDS if task == "binary" else LOGIT)

    def margins(self, features: np.ndarray) -> np.ndarray:
        import numpy as np

        scores = np.asarray(features, dtype="float64") @ self.coef.T + self.intercept
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def attribute(self, features: np.ndarray, classes: np.ndarray | None,
                  outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        rows = self.coef[classes] if classes is not None else np.broadcast_to(self.coef[0], features.shape)
        intercept = self.intercept[classes] if classes is not None else np.full(len(features), self.intercept[0])
        values = rows * (np.asarray(features, dtype="float64") - self.baseline)
        return values, rows @ self.baseline + intercept


class IntegratedGradients(Explainer):
    """Integrated gradients of a Keras network's pre-activation output, from the baseline row to each row.

    The path integral uses the midpoint rule; its error is measured on every
    row (completeness: the attributions must add up to f(x) - f(baseline)) and
    the step count doubles until the worst row is within `tolerance`.
    """

    method = INTEGRATED_GRADIENTS
    exact = False

    def __init__(self, network: Any, task: str, baseline: np.ndarray, target_std: float | None = None) -> None:
        import keras
        import numpy as np

        self.task = task
        self.baseline = np.asarray(baseline, dtype="float32").reshape(1, -1)
        self.tolerance = _scale_tolerance(task, target_std)
        self._gradient: Any = None
        self._base_row: np.ndarray | None = None
        self._compiled_scores: Any = None
        if task == "regression":
            self.head = None
            self.body = network
            self.output_space = PREDICTION
        else:
            # The output layer is Dense(activation=sigmoid|softmax): explain what goes into that activation.
            self.head = network.layers[-1]
            self.body = keras.Model(network.inputs, self.head.input, name="ratchet_explained_body")
            self.output_space = LOG_ODDS if task == "binary" else LOGIT

    def _scores(self, x: Any) -> Any:
        """Keras ops: the explained outputs (rows, outputs) for a batch of feature rows."""
        from keras import ops

        hidden = self.body(x, training=False)
        if self.head is None:
            return ops.reshape(ops.cast(hidden, "float32"), (-1, 1))
        hidden = ops.cast(hidden, "float32")
        return ops.matmul(hidden, ops.cast(self.head.kernel, "float32")) + ops.cast(self.head.bias, "float32")

    def margins(self, features: np.ndarray) -> np.ndarray:
        import numpy as np
        from keras import ops

        if self._compiled_scores is None:
            self._compiled_scores = compiled_scores(self._scores)
        out = np.concatenate([ops.convert_to_numpy(self._compiled_scores(ops.convert_to_tensor(features[i:i + 8192])))
                              for i in range(0, max(len(features), 1), 8192)]).astype("float64")
        return out[:, 0] if out.shape[1] == 1 else out

    def attribute(self, features: np.ndarray, classes: np.ndarray | None,
                  outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integrate every row with IG_FIRST_STEPS; only rows still outside the tolerance are integrated again
        with twice the steps (a batch costs what its hardest rows need, not every row that much)."""
        import numpy as np

        if self._base_row is None:
            self._base_row = np.atleast_1d(self.margins(self.baseline).reshape(-1))
        base = self._base_row[classes] if classes is not None else np.full(len(features), self._base_row[0])
        column = classes if classes is not None else np.zeros(len(features), dtype="int64")
        target = outputs
        values = np.zeros(features.shape, dtype="float64")
        todo = np.arange(len(features))
        steps = IG_FIRST_STEPS
        while todo.size:
            values[todo] = self._integrate(features[todo], column[todo], steps)
            errors = np.abs(values[todo].sum(axis=1) + base[todo] - target[todo])
            todo = todo[errors > self.tolerance]
            if not todo.size or steps >= IG_MAX_STEPS:
                break
            steps *= 2
        if todo.size:
            worst = float(np.max(np.abs(values.sum(axis=1) + base - target)))
            log.warning("integrated gradients: %s rows outside the tolerance %.3g after %s steps (worst %.3g)",
                        todo.size, self.tolerance, steps, worst)
        self.last_steps = steps
        return values, base

    def _integrate(self, features: np.ndarray, column: np.ndarray, steps: int) -> np.ndarray:
        import numpy as np

        if self._gradient is None:
            outputs = 1 if self.head is None else int(self.head.kernel.shape[-1])
            self._gradient = compiled_gradient(self._scores, outputs)
        alphas = ((np.arange(steps) + 0.5) / steps).astype("float32")
        delta = features - self.baseline
        mean_grads = np.zeros(features.shape, dtype="float64")
        rows_per_call = max(1, IG_POINTS_PER_CALL // steps)
        for start in range(0, len(features), rows_per_call):
            chunk = slice(start, start + rows_per_call)
            n = len(features[chunk])
            points = self.baseline[None, :, :] + alphas[None, :, None] * delta[chunk][:, None, :]
            picked = np.repeat(column[chunk], steps)
            grads = self._gradient(points.reshape(n * steps, -1).astype("float32"), picked)
            mean_grads[chunk] = grads.reshape(n, steps, -1).mean(axis=1)
        return delta * mean_grads


def compiled_scores(scores: Any) -> Any:
    """`scores` traced once (TensorFlow) or jitted (JAX); PyTorch runs it eagerly."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(scores, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(scores)
    return scores


def compiled_gradient(scores: Any, outputs: int) -> Any:
    """(points, picked) -> d scores(points)[i, picked[i]] / d points[i]: the one backend-specific step, compiled
    once per explainer (a traced TensorFlow function, a jitted JAX gradient; PyTorch runs eagerly). `outputs` is
    the width of `scores`: a batch whose rows pick only some classes still selects from every output."""
    import keras
    import numpy as np
    from keras import ops

    backend = keras.backend.backend()

    def selected(x: Any, weights: Any) -> Any:
        return ops.sum(scores(x) * weights)

    def weights_for(picked: np.ndarray, rows: int) -> np.ndarray:
        onehot = np.zeros((rows, outputs), dtype="float32")
        onehot[np.arange(rows), picked] = 1.0
        return onehot

    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(reduce_retracing=True)
        def tf_gradient(x: Any, weights: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = selected(x, weights)
            return tape.gradient(total, x)

        def run_tf(points: np.ndarray, picked: np.ndarray) -> np.ndarray:
            return np.asarray(tf_gradient(tf.constant(points), tf.constant(weights_for(picked, len(points)))),
                              dtype="float64")

        return run_tf
    if backend == "jax":
        import jax

        jax_gradient = jax.jit(jax.grad(selected))

        def run_jax(points: np.ndarray, picked: np.ndarray) -> np.ndarray:
            return np.asarray(jax_gradient(points, weights_for(picked, len(points))), dtype="float64")

        return run_jax
    if backend == "torch":
        import torch

        def run_torch(points: np.ndarray, picked: np.ndarray) -> np.ndarray:
            x = torch.tensor(points, requires_grad=True)
            selected(x, torch.tensor(weights_for(picked, len(points)))).backward()
            return x.grad.detach().cpu().numpy().astype("float64")

        return run_torch
    raise ExplainerError(f"integrated gradients has no gradient for the Keras backend {backend!r}")


def explainer_for(python_model: Any, baseline: np.ndarray) -> Explainer:
    """The explainer of a loaded version's pyfunc (`RatchetClassifier`): chosen by what it holds."""
    network = getattr(python_model, "network", None)
    estimator = getattr(python_model, "estimator", None)
    task = python_model.task
    if network is not None:
        target_std = None
        if task == "regression":
            rescale = network.layers[-1]
            target_std = float(getattr(rescale, "scale", 1.0) or 1.0)
        return IntegratedGradients(network, task, baseline, target_std=target_std)
    if estimator is None:
        raise ExplainerError("this version holds neither a Keras network nor a scikit-learn estimator")
    kind = type(estimator).__name__
    if kind.startswith(("RandomForest", "HistGradientBoosting")):
        return TreeShap(estimator, task)
    if hasattr(estimator, "coef_") and hasattr(estimator, "intercept_"):
        return LinearShap(estimator, task, baseline)
    raise ExplainerError(f"no explainer for a {kind}")
