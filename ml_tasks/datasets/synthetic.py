"""A seeded generator for tests and benchmarks: any size, drift and label noise on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ml_tasks.datasets.spec import DatasetSpec

if TYPE_CHECKING:
    import pandas as pd

# The generator's columns: datasets/synthetic.yaml declares exactly these (tests/unit/test_declarations.py checks).
# Kept here, not read from the declaration, so the generator works whatever RATCHET_DATASETS_DIR points at.
NUMERIC_FEATURES = ("x0", "x1", "x2", "x3", "x4", "x5")
CATEGORICAL_FEATURES = ("segment", "channel")
TARGET = "label"
SEGMENTS = ("retail", "business", "public")
CHANNELS = ("web", "store", "phone", "partner")
# The rule: logit = numeric @ WEIGHTS + SEGMENT_EFFECTS[segment] + CHANNEL_EFFECTS[channel] (x3 has no effect).
WEIGHTS = (1.5, -1.0, 0.8, 0.0, 0.5, -0.6)
SEGMENT_EFFECTS = (0.4, -0.3, 0.0)
CHANNEL_EFFECTS = (0.0, 0.3, -0.4, 0.2)


def generate(n_rows: int, seed: int = 0, drift: float = 0.0, label_noise: float = 0.0) -> pd.DataFrame:
    """Rows whose label follows a fixed logistic rule of the features.

    `drift` shifts the numeric features' means (the rule stays); `label_noise`
    flips that fraction of labels, which makes a model trained on it worse.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    numeric = rng.normal(loc=drift, scale=1.0, size=(n_rows, len(NUMERIC_FEATURES)))
    segment = rng.choice(len(SEGMENTS), size=n_rows, p=[0.5, 0.3, 0.2])
    channel = rng.choice(len(CHANNELS), size=n_rows)
    logit = _logit(numeric, segment, channel)
    label = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-2.0 * logit))).astype("int64")
    if label_noise > 0:
        flip = rng.random(n_rows) < label_noise
        label = np.where(flip, 1 - label, label)
    frame = pd.DataFrame(numeric, columns=list(NUMERIC_FEATURES))
    frame["segment"] = np.asarray(SEGMENTS, dtype=object)[segment]
    frame["channel"] = np.asarray(CHANNELS, dtype=object)[channel]
    frame[TARGET] = label
    return frame


def _logit(numeric: Any, segment: Any, channel: Any) -> Any:
    """The rule's logit: numeric values (rows x NUMERIC_FEATURES), segment and channel codes."""
    import numpy as np

    return numeric @ np.asarray(WEIGHTS) + np.asarray(SEGMENT_EFFECTS)[segment] + np.asarray(CHANNEL_EFFECTS)[channel]


def rule_logit(frame: pd.DataFrame) -> Any:
    """The logit of `generate`'s rule for `frame`'s rows (P(label=1) before label noise is sigmoid(2 * logit)).

    With symmetric label noise it is still the best possible ranking of the rows: the oracle score against which
    a learned model's ROC AUC can be judged (bench/tuning.py).
    """
    segment = frame["segment"].map({name: code for code, name in enumerate(SEGMENTS)}).to_numpy("int64")
    channel = frame["channel"].map({name: code for code, name in enumerate(CHANNELS)}).to_numpy("int64")
    return _logit(frame[list(NUMERIC_FEATURES)].to_numpy("float64"), segment, channel)


def wide_spec(n_numeric: int = 22, n_categorical: int = 7) -> DatasetSpec:
    """The declaration of `generate_wide`'s columns (not a registered data set: pass it to `prepare(spec=...)`)."""
    return DatasetSpec(
        name="synthetic_wide",
        description=f"Seeded synthetic data, {n_numeric} numeric and {n_categorical} categorical features (benchmarks).",
        target="label",
        numeric_features=tuple(f"x{i}" for i in range(n_numeric)),
        categorical_features=tuple(f"c{i}" for i in range(n_categorical)),
        suite="synthetic",
        registered_model="synthetic_wide_classifier",
    )


def generate_wide(n_rows: int, n_numeric: int = 22, n_categorical: int = 7, seed: int = 0,
                  missing_rate: float = 0.0) -> pd.DataFrame:
    """Rows of `wide_spec(n_numeric, n_categorical)`: a logistic rule of the features, a ~30% positive class.

    Categorical j has 3 + j % 6 string categories. `missing_rate` blanks that fraction of feature values.
    Built column by column in float64 / small-string arrays, so 5M x 30 costs about its own size.
    """
    import numpy as np
    import pandas as pd

    spec = wide_spec(n_numeric, n_categorical)
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    logit = np.full(n_rows, -1.0)
    for i, name in enumerate(spec.numeric_features):
        values = rng.standard_normal(n_rows)
        logit += values * (1.0 / (1 + i % 5)) * (1 if i % 2 else -1)
        columns[name] = values
    for j, name in enumerate(spec.categorical_features):
        levels = 3 + j % 6
        codes = rng.integers(levels, size=n_rows)
        logit += np.linspace(-0.5, 0.5, levels)[codes]
        columns[name] = np.asarray([f"{name}_{k}" for k in range(levels)], dtype=object)[codes]
    label = (rng.random(n_rows) < 1.0 / (1.0 + np.exp(-logit))).astype("int64")
    if missing_rate > 0:
        for name in spec.features:
            blank = rng.random(n_rows) < missing_rate
            if columns[name].dtype == object:
                columns[name][blank] = None
            else:
                columns[name][blank] = np.nan
    columns[spec.target] = label
    return pd.DataFrame(columns, copy=False)


TIERS = ("bronze", "silver", "gold", "platinum")


def generate_multiclass(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """`generate`'s features with a four-class string target `tier` (the argmax of noisy linear scores)."""
    import numpy as np

    frame = generate(n_rows, seed=seed).drop(columns=[TARGET])
    rng = np.random.default_rng(seed + 1)
    x = frame[list(NUMERIC_FEATURES)].to_numpy()
    weights = np.array([[1.5, 0.0, -1.0, 0.2], [0.0, 1.5, 0.5, -1.0], [-1.0, 0.5, 1.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0], [0.3, -0.3, 0.3, 0.8], [-0.5, 0.2, 0.0, 0.6]])
    scores = x @ weights + rng.gumbel(scale=0.5, size=(n_rows, len(TIERS)))
    frame["tier"] = np.asarray(TIERS, dtype=object)[scores.argmax(axis=1)]
    return frame


def generate_regression(n_rows: int, seed: int = 0, missing_target: float = 0.0) -> pd.DataFrame:
    """`generate`'s features with a positive numeric target `amount` in the hundreds (missing where asked)."""
    import numpy as np

    frame = generate(n_rows, seed=seed).drop(columns=[TARGET])
    rng = np.random.default_rng(seed + 2)
    x = frame[list(NUMERIC_FEATURES)].to_numpy()
    segment_effect = frame["segment"].map({"retail": 0.0, "business": 60.0, "public": -30.0}).to_numpy()
    amount = 400 + x @ np.array([80.0, -50.0, 30.0, 0.0, 20.0, -10.0]) + segment_effect + rng.normal(0, 25, n_rows)
    frame["amount"] = np.where(rng.random(n_rows) < missing_target, np.nan, np.round(amount, 2))
    return frame
