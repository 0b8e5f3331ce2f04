"""A seeded generator for tests and benchmarks: any size, drift and label noise on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ml_tasks.datasets import SYNTHETIC

if TYPE_CHECKING:
    import pandas as pd

SEGMENTS = ("retail", "business", "public")
CHANNELS = ("web", "store", "phone", "partner")


def generate(n_rows: int, seed: int = 0, drift: float = 0.0, label_noise: float = 0.0) -> pd.DataFrame:
    """Rows whose label follows a fixed logistic rule of the features.

    `drift` shifts the numeric features' means (the rule stays); `label_noise`
    flips that fraction of labels, which makes a model trained on it worse.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    numeric = rng.normal(loc=drift, scale=1.0, size=(n_rows, len(SYNTHETIC.numeric_features)))
    segment = rng.choice(len(SEGMENTS), size=n_rows, p=[0.5, 0.3, 0.2])
    channel = rng.choice(len(CHANNELS), size=n_rows)
    weights = np.array([1.5, -1.0, 0.8, 0.0, 0.5, -0.6])
    logit = numeric @ weights + np.array([0.4, -0.3, 0.0])[segment] + np.array([0.0, 0.3, -0.4, 0.2])[channel]
    label = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-2.0 * logit))).astype("int64")
    if label_noise > 0:
        flip = rng.random(n_rows) < label_noise
        label = np.where(flip, 1 - label, label)
    frame = pd.DataFrame(numeric, columns=list(SYNTHETIC.numeric_features))
    frame["segment"] = np.asarray(SEGMENTS, dtype=object)[segment]
    frame["channel"] = np.asarray(CHANNELS, dtype=object)[channel]
    frame[SYNTHETIC.target] = label
    return frame
