"""Augmentation of the training split: noisy copies of real rows, and SMOTE-style oversampling of small classes.

Preparation calls it after the split and after the transform, on the training
matrix only, so validation and test stay real rows. Both methods write into
rows preallocated at the end of that float32 matrix (numerics first, already
standardised) and record, for each new row, the real row it was made from,
so cross-validation folds can keep it out of that row's validation fold.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ml_tasks.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

# Augmentation parameters, each group off unless named in `prepare(augment=...)`.
# noise: `copies` noisy copies of a `fraction` of the training rows, Gaussian noise of `scale` train std.
# smote: every class below `ratio` x the largest class gets rows interpolated between one of its rows and one
# of its `k` nearest same-class neighbours, searched among at most `sample` rows (so it scales).
AUGMENT_DEFAULTS: dict[str, dict[str, float]] = {
    "noise": {"copies": 1, "fraction": 1.0, "scale": 0.05},
    "smote": {"ratio": 1.0, "k": 5, "sample": 20_000},
}


def augment_plan(augment: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """`prepare`'s `augment` checked and completed: each method named, with every parameter (defaults filled in)."""
    plan: dict[str, dict[str, float]] = {}
    for method, params in (augment or {}).items():
        if method not in AUGMENT_DEFAULTS:
            raise ConfigError(f"unknown augmentation {method!r}; known: {', '.join(AUGMENT_DEFAULTS)}")
        params = dict(params or {})
        unknown = sorted(set(params) - set(AUGMENT_DEFAULTS[method]))
        if unknown:
            raise ConfigError(f"augmentation {method!r}: unknown parameters {unknown}; known: {sorted(AUGMENT_DEFAULTS[method])}")
        plan[method] = {**AUGMENT_DEFAULTS[method], **{k: float(v) for k, v in params.items()}}
    noise, smote = plan.get("noise"), plan.get("smote")
    if noise and not (noise["copies"] >= 0 and 0 < noise["fraction"] <= 1 and noise["scale"] >= 0):
        raise ConfigError(f"augmentation noise: copies >= 0, 0 < fraction <= 1, scale >= 0; got {noise}")
    if smote and not (0 < smote["ratio"] <= 1 and smote["k"] >= 1 and smote["sample"] >= 2):
        raise ConfigError(f"augmentation smote: 0 < ratio <= 1, k >= 1, sample >= 2; got {smote}")
    return plan


def rows_to_add(plan: dict[str, dict[str, float]], labels: np.ndarray) -> int:
    """Rows the plan adds to a training split of these labels, so the training matrix is allocated once."""
    added = 0
    if "smote" in plan:
        added += sum(_smote_counts(labels, plan["smote"]["ratio"]).values())
    if "noise" in plan:
        added += int(plan["noise"]["copies"]) * math.ceil(plan["noise"]["fraction"] * len(labels))
    return added


def augment_into(matrix: np.ndarray, labels: np.ndarray, n_real: int, plan: dict[str, dict[str, float]], n_numeric: int,
                 rng: np.random.Generator, base: np.ndarray) -> dict[str, int]:
    """Rows n_real.. of `matrix` and `labels` made by the plan's methods (SMOTE first, then noise copies of the real
    rows), `base` set to the real row each was made from; returns the rows added per method."""
    added: dict[str, int] = {}
    at = n_real
    if "smote" in plan:
        added["smote"] = _smote_into(matrix, labels, n_real, at, plan["smote"], n_numeric, rng, base)
        at += added["smote"]
    if "noise" in plan:
        added["noise"] = _noise_into(matrix, labels, n_real, at, plan["noise"], n_numeric, rng, base)
    return added


def _smote_counts(labels: np.ndarray, ratio: float) -> dict[int, int]:
    """Rows to add per class so every class reaches `ratio` x the largest one."""
    import numpy as np

    classes, counts = np.unique(labels, return_counts=True)
    goal = math.ceil(ratio * int(counts.max()))
    return {int(c): goal - int(n) for c, n in zip(classes, counts, strict=True) if n < goal}


def _noise_into(matrix: np.ndarray, labels: np.ndarray, n_real: int, start: int, plan: dict[str, float], n_numeric: int,
                rng: np.random.Generator, base: np.ndarray) -> int:
    """Noisy copies of real training rows into rows start.. of `matrix`; numerics are standardised, so noise of
    `scale` is `scale` x each feature's train std."""
    import numpy as np

    per_copy = math.ceil(plan["fraction"] * n_real)
    at = start
    for _ in range(int(plan["copies"])):
        rows = np.sort(rng.permutation(n_real)[:per_copy]) if per_copy < n_real else np.arange(n_real)
        block = slice(at, at + len(rows))
        for j in range(matrix.shape[1]):
            matrix[block, j] = matrix[rows, j]
            if j < n_numeric and plan["scale"] > 0:
                matrix[block, j] += rng.normal(0.0, plan["scale"], size=len(rows)).astype("float32")
        labels[block] = labels[rows]
        base[block] = rows
        at += len(rows)
    return at - start


def _smote_into(matrix: np.ndarray, labels: np.ndarray, n_real: int, start: int, plan: dict[str, float], n_numeric: int,
                rng: np.random.Generator, base: np.ndarray) -> int:
    """SMOTE-style rows into rows start.. of `matrix`: numerics interpolated between a row of the class and one of
    its k nearest same-class neighbours (in standardised units), categoricals copied from that row."""
    import numpy as np
    from sklearn.neighbors import NearestNeighbors

    at = start
    for cls, n_new in sorted(_smote_counts(labels[:n_real], plan["ratio"]).items()):
        pool = np.flatnonzero(labels[:n_real] == cls)
        if len(pool) > plan["sample"]:
            pool = np.sort(rng.choice(pool, size=int(plan["sample"]), replace=False))
        picks = rng.integers(len(pool), size=n_new)
        k = min(int(plan["k"]), len(pool) - 1)
        if n_numeric and k >= 1:
            features = np.ascontiguousarray(matrix[pool, :n_numeric])
            _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(features).kneighbors(features)
            partner = neighbours[picks, rng.integers(1, k + 1, size=n_new)]
            gap = rng.random(n_new).astype("float32")
        else:
            partner, gap = picks, np.zeros(n_new, dtype="float32")
        block = slice(at, at + n_new)
        for j in range(matrix.shape[1]):
            own = matrix[pool[picks], j]
            matrix[block, j] = own + gap * (matrix[pool[partner], j] - own) if j < n_numeric else own
        labels[block] = cls
        base[block] = pool[picks]
        at += n_new
    return at - start
