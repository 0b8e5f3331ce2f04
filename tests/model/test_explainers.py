"""Every family's explainer on every task kind: attributions add up, and agree with independent computations.

Exact methods (TreeSHAP, linear SHAP) must add up to the explained output within 1e-6; integrated gradients
within its declared tolerance. TreeSHAP is checked against Shapley values enumerated by brute force over every
feature subset (Lundberg et al.'s EXPVALUE, written here from sklearn's tree arrays, not from shap), linear SHAP
against `shap.LinearExplainer`, and integrated gradients against the closed form on a network with no hidden layer.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ml_tasks.data.transform import FittedTransform
from ml_tasks.explain import LINEAR_SHAP, TREE_SHAP, ModelExplainer, column_groups, training_baseline
from ml_tasks.explain.explainers import EXACT_TOLERANCE, INTEGRATED_GRADIENTS, LinearShap, TreeShap
from ml_tasks.training.sklearn_models import build_sklearn

TASKS = {"binary": [0, 1], "multiclass": ["a", "b", "c"], "regression": []}


def _frame(rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x1": rng.normal(size=rows), "x2": rng.normal(size=rows), "x3": rng.uniform(-1, 1, size=rows),
        "colour": rng.choice(["red", "green", "blue"], size=rows),
    })
    signal = 1.5 * frame["x1"] - frame["x2"] + (frame["colour"] == "red") * 1.0
    labels = {
        "binary": (signal + rng.normal(scale=0.5, size=rows) > 0).to_numpy().astype("int64"),
        "multiclass": np.digitize(signal + rng.normal(scale=0.3, size=rows), [-0.7, 0.7]).astype("int64"),
        "regression": (3.0 * signal + rng.normal(scale=0.2, size=rows)).to_numpy().astype("float64"),
    }
    return frame, labels


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, dict[str, np.ndarray], FittedTransform, np.ndarray]:
    frame, labels = _frame()
    transform = FittedTransform.fit(frame, ["x1", "x2", "x3"], ["colour"])
    return frame, labels, transform, transform.apply(frame)


def _python_model(transform: FittedTransform, task: str, *, estimator=None, network=None, baseline_path=None):
    return SimpleNamespace(transform=transform, estimator=estimator, network=network, task=task,
                           target={"task": task, "classes": TASKS[task]}, explanation_path=baseline_path)


def _baseline(tmp_path, transform: FittedTransform, features: np.ndarray) -> str:
    path = tmp_path / "train.parquet"
    pd.DataFrame(features, columns=transform.feature_names).to_parquet(path)
    record = training_baseline(path, transform.feature_names)
    out = tmp_path / "explanation.json"
    out.write_text(__import__("json").dumps(record.to_dict()))
    return str(out)


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize("family", ["hist_gradient_boosting", "random_forest", "linear"])
def test_exact_explainers_add_up_on_raw_columns(data, tmp_path, family: str, task: str) -> None:
    frame, labels, transform, features = data
    name = family if family != "linear" else ("ridge" if task == "regression" else "logistic_regression")
    params = {"max_iter": 30} if family == "hist_gradient_boosting" else (
        {"n_estimators": 20} if family == "random_forest" else {})
    estimator = build_sklearn(name, params, 0, task).fit(features, labels[task])
    explainer = ModelExplainer(_python_model(transform, task, estimator=estimator,
                                             baseline_path=_baseline(tmp_path, transform, features)))
    assert explainer.method == (LINEAR_SHAP if family == "linear" else TREE_SHAP)
    explained = explainer.explain(frame.head(100))
    assert explained.columns == ["x1", "x2", "x3", "colour"]  # the one-hot group folded into its column
    assert explained.values.shape == (100, 4)
    assert explained.max_additivity_error() <= EXACT_TOLERANCE
    # The explained output is the model's own, computed independently of the explainer.
    if task == "regression":
        np.testing.assert_allclose(explained.outputs, estimator.predict(features[:100]), rtol=1e-6)  # float32 in
    elif task == "multiclass":
        assert list(explained.classes) == list(estimator.predict(features[:100]))
    # What drives the labels drives the attributions: x3 is noise.
    assert explained.ranking()[-1] == "x3"


def _expvalue(tree, x: np.ndarray, subset: set[int]) -> np.ndarray:
    """E[f(x) | x_S] of one sklearn tree with path-dependent weighting (Lundberg et al. 2018, Algorithm 1)."""
    t = tree.tree_

    def g(node: int) -> np.ndarray:
        if t.children_left[node] == -1:
            value = t.value[node]
            return value[:, 0] if value.shape[1] == 1 else value[0]
        left, right, feature = t.children_left[node], t.children_right[node], t.feature[node]
        if feature in subset:
            return g(left if x[feature] <= t.threshold[node] else right)
        cover = t.weighted_n_node_samples
        return (cover[left] * g(left) + cover[right] * g(right)) / cover[node]

    return g(0)


def _brute_force_shapley(forest, x: np.ndarray) -> np.ndarray:
    m = len(x)

    def value(subset: set[int]) -> np.ndarray:
        return np.mean([_expvalue(tree, x, subset) for tree in forest.estimators_], axis=0)

    phi = np.zeros((m, np.atleast_1d(value(set())).size))
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
            for s in itertools.combinations(others, size):
                phi[i] += weight * (value(set(s) | {i}) - value(set(s)))
    return phi


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_tree_shap_equals_shapley_values_enumerated_by_brute_force(data, task: str) -> None:
    frame, labels, transform, features = data
    forest = build_sklearn("random_forest", {"max_depth": 4, "n_estimators": 3}, 0, task).fit(features, labels[task])
    explainer = TreeShap(forest, task)
    for row in features[:3]:
        explained = explainer.explain(row[None, :])
        expected = _brute_force_shapley(forest, row.astype("float64"))
        column = 0 if task == "regression" else int(explained.classes[0])
        np.testing.assert_allclose(explained.values[0], expected[:, column], atol=1e-6)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_linear_shap_agrees_with_the_shap_library(data, task: str) -> None:
    import shap

    frame, labels, transform, features = data
    name = "ridge" if task == "regression" else "logistic_regression"
    estimator = build_sklearn(name, {}, 0, task).fit(features, labels[task])
    baseline = features.mean(axis=0)
    ours = LinearShap(estimator, task, baseline)
    reference = shap.LinearExplainer(estimator, shap.maskers.Independent(features, max_samples=len(features)))
    theirs = np.asarray(reference.shap_values(features[:50]))
    explained = ours.explain(features[:50])
    if theirs.ndim == 3:  # (rows, features, classes)
        theirs = theirs[np.arange(50), :, explained.classes]
    np.testing.assert_allclose(explained.values, theirs, atol=1e-6)
    assert float(explained.additivity_errors().max()) <= EXACT_TOLERANCE


@pytest.fixture(scope="module")
def keras_models(data):
    from ml_tasks.training.keras_mlp import build_mlp

    frame, labels, transform, features = data
    models = {}
    for task in TASKS:
        y = labels[task]
        model = build_mlp(features.shape[1], {"n_layers": 2, "units": 16, "dropout": 0.1, "l2": 1e-5,
                                              "learning_rate": 1e-2, "batch_size": 128}, 0, task=task, n_classes=3,
                          target_mean=float(np.mean(y)), target_std=float(np.std(y)))
        model.fit(features, y, epochs=3, batch_size=128, verbose=0)
        models[task] = model
    return models


@pytest.mark.parametrize("task", list(TASKS))
def test_integrated_gradients_add_up_within_the_declared_tolerance(data, keras_models, tmp_path, task: str) -> None:
    frame, labels, transform, features = data
    explainer = ModelExplainer(_python_model(transform, task, network=keras_models[task],
                                             baseline_path=_baseline(tmp_path, transform, features)))
    assert explainer.method == INTEGRATED_GRADIENTS
    assert explainer.describe()["baseline"] == "training_mean"
    explained = explainer.explain(frame.head(40))
    tolerance = explainer.explainer.tolerance
    assert explained.max_additivity_error() <= tolerance, (explained.max_additivity_error(), explained.steps)
    assert explained.ranking()[-1] == "x3"
    if task != "regression":  # the explained output is the pre-activation: its activation gives the probability
        probabilities = keras_models[task].predict(features[:40], verbose=0)
        if task == "binary":
            np.testing.assert_allclose(1 / (1 + np.exp(-explained.outputs)), probabilities[:, 0], atol=1e-5)
        else:
            np.testing.assert_allclose(probabilities[np.arange(40), explained.classes], probabilities.max(axis=1))


def test_integrated_gradients_explain_any_class_of_a_batch(data, keras_models) -> None:
    """Rows that pick only some classes (a batch's rows refined again, or classes asked for) still select from
    every output of the network."""
    from ml_tasks.explain.explainers import IntegratedGradients

    features = data[3]
    explainer = IntegratedGradients(keras_models["multiclass"], "multiclass", features.mean(axis=0))
    for code in (0, 1):
        explained = explainer.explain(features[:6], classes=np.full(6, code))
        assert list(explained.classes) == [code] * 6
        assert float(explained.additivity_errors().max()) <= explainer.tolerance


def test_integrated_gradients_on_a_linear_network_is_the_closed_form(data) -> None:
    from ml_tasks.training.keras_mlp import build_mlp

    frame, labels, transform, features = data
    network = build_mlp(features.shape[1], {"n_layers": 0, "units": 8, "dropout": 0.0, "l2": 0.0,
                                            "learning_rate": 1e-2, "batch_size": 64}, 0, task="binary")
    network.fit(features, labels["binary"], epochs=2, verbose=0)
    baseline = features.mean(axis=0)
    explainer = ModelExplainer(SimpleNamespace(transform=transform, estimator=None, network=network, task="binary",
                                               target={"task": "binary", "classes": [0, 1]}, explanation_path=None))
    assert explainer.describe()["baseline"] == "transform_centre"  # no record: the transform's centre
    from ml_tasks.explain.explainers import IntegratedGradients

    ig = IntegratedGradients(network, "binary", baseline)
    kernel = np.asarray(network.layers[-1].kernel)[:, 0]
    explained = ig.explain(features[:20])
    np.testing.assert_allclose(explained.values, kernel * (features[:20] - baseline), atol=1e-5)


def test_column_groups_cover_every_feature_once(data) -> None:
    transform = data[2]
    groups = column_groups(transform)
    positions = sorted(i for _, idx in groups for i in idx)
    assert positions == list(range(len(transform.feature_names)))
    assert dict(groups)["colour"] == [3, 4, 5]


def test_ndcg_is_one_for_the_same_ranking_and_falls_as_the_top_features_sink() -> None:
    from ml_tasks.explain.drift import attribution_shift, ndcg

    reference = {"a": 4.0, "b": 2.0, "c": 1.0, "d": 0.1}
    assert ndcg(reference, ["a", "b", "c", "d"]) == pytest.approx(1.0)
    swapped = ndcg(reference, ["b", "a", "c", "d"])
    sunk = ndcg(reference, ["d", "c", "b", "a"])
    assert 1.0 > swapped > sunk
    assert ndcg(reference, ["x", "y", "z"], k=3) == 0.0  # none of what drove the reference
    shift = attribution_shift([{"feature": k, "mean_abs_attribution": v} for k, v in reference.items()],
                              [{"feature": k, "mean_abs_attribution": v} for k, v in
                               {"a": 0.1, "b": 0.2, "c": 1.0, "d": 5.0}.items()], threshold=0.9)
    assert shift.shifted and shift.current_top[0] == "d" and shift.to_dict()["shifted"] is True


JAX_EXPLAIN = """
import json, sys
import numpy as np
import keras
from ml_tasks.explain.explainers import IntegratedGradients
assert keras.backend.backend() == "jax", keras.backend.backend()
folder = sys.argv[1]
report = {}
for task in sys.argv[2:]:
    network = keras.saving.load_model(f"{folder}/{task}.keras", compile=False)
    features = np.load(folder + "/features.npy")
    explained = IntegratedGradients(network, task, np.load(folder + "/baseline.npy")).explain(features)
    np.save(f"{folder}/{task}_jax.npy", explained.values)
    report[task] = float(explained.additivity_errors().max())
print(json.dumps(report))
"""


def test_integrated_gradients_give_the_same_attributions_on_jax(data, keras_models, tmp_path) -> None:
    """The saved networks a version holds, explained under KERAS_BACKEND=jax in a fresh process (Keras' backend is
    fixed per process): the same attributions as under TensorFlow, within the method's tolerance."""
    import json
    import os
    import subprocess
    import sys

    from ml_tasks.explain.explainers import IntegratedGradients

    frame, labels, transform, features = data
    baseline = features.mean(axis=0)
    np.save(tmp_path / "features.npy", features[:30])
    np.save(tmp_path / "baseline.npy", baseline)
    tasks = ["binary", "multiclass", "regression"]
    ours = {}
    for task in tasks:
        keras_models[task].save(tmp_path / f"{task}.keras")
        ours[task] = IntegratedGradients(keras_models[task], task, baseline).explain(features[:30])
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", JAX_EXPLAIN, str(tmp_path), *tasks], env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    errors = json.loads(done.stdout.strip().splitlines()[-1])
    for task in tasks:
        assert errors[task] <= ours[task].tolerance
        scale = max(1.0, float(np.abs(ours[task].values).max()))
        np.testing.assert_allclose(np.load(tmp_path / f"{task}_jax.npy"), ours[task].values, atol=5e-3 * scale)
