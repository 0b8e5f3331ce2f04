"""Behavioural tests of the model family (Made-With-ML style): skill, invariance, direction."""

import numpy as np
import pytest

from ml_tasks.data.transform import FittedTransform
from ml_tasks.datasets import SYNTHETIC, synthetic
from ml_tasks.release.metrics import classification_metrics
from ml_tasks.training.keras_mlp import DEFAULT_MLP_PARAMS, build_mlp, configure_accelerators

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained():
    configure_accelerators()
    train = synthetic.generate(6000, seed=1)
    transform = FittedTransform.fit(train, list(SYNTHETIC.numeric_features), list(SYNTHETIC.categorical_features))
    model = build_mlp(len(transform.feature_names), DEFAULT_MLP_PARAMS, seed=0)
    model.fit(transform.apply(train), train[SYNTHETIC.target].to_numpy("float32"), epochs=8, batch_size=256, verbose=0)

    def predict(frame):
        return np.asarray(model.predict(transform.apply(frame), verbose=0)).reshape(-1)

    return predict


def test_beats_chance_clearly_on_unseen_rows(trained):
    test = synthetic.generate(2000, seed=2)
    metrics = classification_metrics(test[SYNTHETIC.target], trained(test))
    assert metrics["roc_auc"] > 0.85 and metrics["accuracy"] > 0.75


def test_invariant_to_a_feature_the_label_ignores(trained):
    rows = synthetic.generate(500, seed=3)
    shuffled = rows.copy()
    shuffled["x3"] = np.random.default_rng(0).permutation(shuffled["x3"].to_numpy())  # x3 has weight 0
    assert np.abs(trained(rows) - trained(shuffled)).mean() < 0.05


def test_moves_with_a_positive_feature(trained):
    rows = synthetic.generate(500, seed=4)
    higher = rows.copy()
    higher["x0"] += 1.0  # x0 has the largest positive weight
    assert (trained(higher) >= trained(rows) - 0.02).mean() > 0.95


def test_unseen_category_still_scores(trained):
    rows = synthetic.generate(50, seed=5)
    rows["channel"] = "carrier-pigeon"
    scores = trained(rows)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
