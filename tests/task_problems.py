"""Small synthetic problems of every task kind (numpy only), for the training tests."""

from __future__ import annotations

from typing import Any

import numpy as np


def multiclass(rows: int = 900, features: int = 6, classes: int = 3, seed: int = 0) -> tuple[Any, Any]:
    """Float32 features and int64 codes 0..classes-1 that depend on two features (argmax of linear scores)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype("float32")
    weights = rng.normal(size=(features, classes))
    weights[2:] *= 0.1  # only two features matter much
    y = (x @ weights * 3 + rng.normal(scale=0.5, size=(rows, classes))).argmax(axis=1).astype("int64")
    return x, y


def regression(rows: int = 900, features: int = 6, seed: int = 0, scale: float = 250.0,
               offset: float = 1_000.0) -> tuple[Any, Any]:
    """Float32 features and a float64 target far from standard units (mean ~offset, std ~scale)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype("float32")
    signal = 1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3]
    y = offset + scale * (signal + rng.normal(scale=0.3, size=rows)) / 2
    return x, y.astype("float64")


def split(x: Any, y: Any, train: float = 0.7) -> tuple[Any, Any, Any, Any]:
    cut = int(len(y) * train)
    return x[:cut], y[:cut], x[cut:], y[cut:]
