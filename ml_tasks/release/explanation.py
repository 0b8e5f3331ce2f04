"""Why a version decides, measured in every evaluation on a seeded sample of held-out rows.

The candidate is explained by its family's explainer (`ml_tasks.explain`), and the champion on the same rows, so
the gate can rank one's attributions against the other's (NDCG@k, as SageMaker Clarify measures attribution
drift). Beside the attributions: a beeswarm summary, and partial dependence with ICE curves of the top features,
measured through the served `predict` whatever the explainer's output space, so they show what a client sees.

TreeSHAP's work per row grows with each tree's leaves x depth², so a large forest is explained on fewer rows
(never fewer than MIN_EXPLANATION_ROWS), and the record says so: 500 rows of a 200-tree, depth-12 forest take
half a minute. A version that cannot be explained (a compressed runtime, an unknown family) is recorded as
skipped with the reason.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.constants import ATTRIBUTION_TOP_K, GLOBAL_ATTRIBUTIONS_FILE

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml_tasks.datasets import DatasetSpec
    from ml_tasks.explain import ModelExplainer, RowExplanations

log = logging.getLogger(__name__)

EXPLANATION_ROWS = 500
# The ranking the gate compares settles early: on the synthetic data, NDCG@10 of 16 to 50 rows' ranking against 500
# rows' was 0.99 or more for both tree families (ten samples each).
MIN_EXPLANATION_ROWS = 32
EXPLANATION_SEED = 0
# TreeSHAP work (leaves x depth² summed over trees, per row, of every version explained) allowed per evaluation:
# 0.5 to 2 s of shap's path-dependent algorithm on one core (measured 1.6 to 7 ns per unit).
TREE_SHAP_WORK_BUDGET = 3e8
# Partial dependence and ICE: the top features, rows per curve, and grid points (numeric quantiles 5%..95%, or the
# most frequent categories).
DEPENDENCE_FEATURES = 3
DEPENDENCE_ROWS = 100
DEPENDENCE_GRID = 10

BEESWARM_FILE = "attribution_beeswarm.png"
DEPENDENCE_FILE = "partial_dependence.png"
DEPENDENCE_DATA_FILE = "partial_dependence.json"
ATTRIBUTIONS_FILE = "attributions.csv"
SHIFT_FILE = "attribution_shift.json"
PLOT_FILES = (BEESWARM_FILE, DEPENDENCE_FILE)


def tree_shap_work(explainer: ModelExplainer) -> float:
    """Path-dependent TreeSHAP's work per row (leaves x depth², summed over trees); 0 for other methods."""
    from ml_tasks.explain import TREE_SHAP

    if explainer.method != TREE_SHAP:
        return 0.0
    estimator = getattr(explainer.explainer, "estimator", None)
    trees = getattr(estimator, "estimators_", None)
    if trees is not None:  # a forest
        return float(sum(t.tree_.n_leaves * max(int(t.tree_.max_depth), 1) ** 2 for t in trees))
    total = 0.0
    for iteration in getattr(estimator, "_predictors", None) or []:  # HistGradientBoosting: one tree per class
        for predictor in iteration:
            nodes = predictor.nodes
            total += float(nodes["is_leaf"].sum()) * max(int(nodes["depth"].max()), 1) ** 2
    return total


def explanation_rows(explainers: list[ModelExplainer], wanted: int) -> tuple[int, str | None]:
    """How many sampled rows every version can be explained on within TREE_SHAP_WORK_BUDGET, and why, when fewer."""
    work = sum(tree_shap_work(e) for e in explainers)
    if work <= 0 or work * wanted <= TREE_SHAP_WORK_BUDGET:
        return wanted, None
    rows = min(wanted, max(MIN_EXPLANATION_ROWS, int(TREE_SHAP_WORK_BUDGET // work)))
    return rows, (f"{rows} of {wanted} sampled rows: TreeSHAP of these trees costs about {work:.3g} node-depth "
                  f"units a row (budget {TREE_SHAP_WORK_BUDGET:.3g} an evaluation)")


def _describe(explainer: ModelExplainer, explained: RowExplanations) -> dict[str, Any]:
    return {**explainer.describe(), "additivity_error": explained.max_additivity_error()}


def explain_evaluation(candidate_model: Any, predict: Callable[[pd.DataFrame], Any], champion_model: Any,
                       features: pd.DataFrame, spec: DatasetSpec, folder: Path, champion_version: str | None = None,
                       champion_skip: str | None = None) -> dict[str, Any]:
    """Explain the candidate (and the champion, on the same rows), write the artifacts into `folder`, and return
    the evaluation's `explanation` record.

    `predict` answers the candidate's scores for raw rows (partial dependence); `champion_model` is None when there
    is no champion or it could not score (`champion_skip` then says why).
    """
    from ml_tasks.explain import attribution_shift, model_explainer

    started = time.perf_counter()
    threshold = spec.attribution_gate_min_ndcg
    record: dict[str, Any] = {"rows": 0, "rows_note": None, "explainer": None, "additivity_error": None,
                              "global": [], "champion_version": champion_version, "champion_explainer": None,
                              "champion_global": None, "shift": None, "threshold": threshold, "skipped": {}}
    candidate = _attempt(record, "candidate", "the candidate", lambda: model_explainer(candidate_model))
    champion = None
    if champion_model is not None:
        champion = _attempt(record, "champion", f"champion v{champion_version}",
                            lambda: model_explainer(champion_model))
    elif champion_version is not None:
        record["skipped"]["champion"] = champion_skip or f"champion v{champion_version} was not loaded"
    folder.mkdir(parents=True, exist_ok=True)
    if candidate is None:
        (folder / GLOBAL_ATTRIBUTIONS_FILE).write_text(json.dumps(
            {"explainer": None, "rows": 0, "global": [], "skipped": record["skipped"]["candidate"]}, indent=2))
        return record
    sample = features.sample(min(EXPLANATION_ROWS, len(features)), random_state=EXPLANATION_SEED)
    rows, record["rows_note"] = explanation_rows([e for e in (candidate, champion) if e is not None], len(sample))
    sample = sample.iloc[:rows]  # a seeded sample's prefix is itself a seeded sample: both versions get these rows
    explained = _attempt(record, "candidate", "the candidate", lambda: candidate.explain(sample))
    if explained is None:
        return record
    candidate_global = explained.global_importance()
    record.update({"rows": len(sample), "explainer": _describe(candidate, explained),
                   "additivity_error": explained.max_additivity_error(), "global": candidate_global[:ATTRIBUTION_TOP_K]})
    if explained.max_additivity_error() > explained.tolerance:
        log.warning("the candidate's attributions miss additivity by %.3g (tolerance %.3g)",
                    explained.max_additivity_error(), explained.tolerance)
    if champion is not None:
        champion_explained = _attempt(record, "champion", f"champion v{champion_version}",
                                      lambda: champion.explain(sample))
        if champion_explained is not None:
            champion_global = champion_explained.global_importance()
            shift = attribution_shift(champion_global, candidate_global, threshold)
            record.update(champion_explainer=_describe(champion, champion_explained),
                          champion_global=champion_global[:ATTRIBUTION_TOP_K], shift=shift.to_dict())
            (folder / SHIFT_FILE).write_text(json.dumps(
                {"champion_version": champion_version, "champion_explainer": record["champion_explainer"],
                 "champion_global": champion_global, "shift": record["shift"]}, indent=2))
    (folder / GLOBAL_ATTRIBUTIONS_FILE).write_text(json.dumps(
        {"explainer": record["explainer"], "rows": len(sample), "rows_note": record["rows_note"],
         "global": candidate_global}, indent=2))
    attributions_frame(explained, sample).to_csv(folder / ATTRIBUTIONS_FILE, index=False)
    top = [entry["feature"] for entry in candidate_global[:DEPENDENCE_FEATURES]]
    curves = partial_dependence(predict, sample.iloc[:DEPENDENCE_ROWS], top, set(spec.numeric_features), sample)
    (folder / DEPENDENCE_DATA_FILE).write_text(json.dumps(curves))
    beeswarm_plot(explained, sample, folder / BEESWARM_FILE, numeric=set(spec.numeric_features))
    dependence_plot(curves, folder / DEPENDENCE_FILE, score_label(spec))
    log.info("explained %s held-out rows (%s, additivity error %.3g) in %.2fs; shift against champion v%s: %s",
             len(sample), candidate.method, explained.max_additivity_error(), time.perf_counter() - started,
             champion_version, record["shift"] or record["skipped"].get("champion"))
    return record


def _attempt(record: dict[str, Any], who: str, what: str, work: Callable[[], Any]) -> Any:
    """`work()`, or None with the reason recorded under `skipped[who]` when the version cannot be explained."""
    from ml_tasks.explain import ExplainerError

    try:
        return work()
    except ExplainerError as exc:
        record["skipped"][who] = f"{what} cannot be explained: {exc}"
        log.warning("%s", record["skipped"][who])
        return None


def attributions_frame(explained: RowExplanations, rows: pd.DataFrame) -> pd.DataFrame:
    """One line per explained row: its held-out row index, explained class, base value, output and attributions."""
    import pandas as pd

    frame = pd.DataFrame(explained.values, columns=[f"attribution.{c}" for c in explained.columns])
    frame.insert(0, "row", rows.index.to_numpy())
    frame.insert(1, "explained_class", explained.classes if explained.classes is not None else None)
    frame.insert(2, "base_value", explained.base_values)
    frame.insert(3, "output", explained.outputs)
    return frame


def score_label(spec: DatasetSpec) -> str:
    from ml_tasks.data.transform import category_text

    if spec.task == "binary":
        return f"P({spec.target} = {category_text(spec.classes[1])})" if spec.classes else "P(positive class)"
    if spec.task == "multiclass":
        return "P(the row's originally predicted class)"
    return f"predicted {spec.target}"


def primary_score(scores: Any, picked: np.ndarray | None = None) -> np.ndarray:
    """The one number per row that dependence plots follow: the positive-class probability (binary), the probability
    of the class `picked` for each row (multiclass; the predicted class when None), or the prediction (regression)."""
    import numpy as np

    values = np.asarray(scores, dtype="float64")
    if values.ndim == 2 and values.shape[1] > 1:
        columns = values.argmax(axis=1) if picked is None else np.asarray(picked, dtype="int64")
        return values[np.arange(len(values)), columns]
    return values.reshape(-1)


def dependence_grid(values: pd.Series, numeric: bool, points: int = DEPENDENCE_GRID) -> list[Any]:
    """Numeric: distinct quantiles from 5% to 95% (whole numbers for an integer column); else the most frequent
    categories."""
    import numpy as np
    import pandas as pd

    present = values.dropna()
    if present.empty:
        return []
    if not numeric:
        return list(present.value_counts().index[:points])
    grid = np.unique(np.quantile(present.astype("float64"), np.linspace(0.05, 0.95, points)))
    if pd.api.types.is_integer_dtype(values.dtype):
        grid = np.unique(np.rint(grid))
    return [v.item() for v in grid]


def partial_dependence(predict: Callable[[pd.DataFrame], Any], rows: pd.DataFrame, features: list[str],
                       numeric: set[str], values: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Per feature, ICE curves (each row's score as the feature moves over its grid, the other columns kept) and
    their mean, the partial dependence. Grids come from `values` (default `rows`); each row keeps its originally
    predicted class (multiclass). One `predict` call for every row at every grid point of every feature."""
    import numpy as np
    import pandas as pd

    values = rows if values is None else values
    grids = {f: dependence_grid(values[f], f in numeric) if not rows.empty else [] for f in features}
    frames = [rows]
    for feature, grid in grids.items():
        for value in grid:
            moved = rows.copy()
            column = pd.Series([value] * len(rows), index=rows.index, dtype=object)
            moved[feature] = column.astype(rows[feature].dtype) if feature in numeric else column
            frames.append(moved)
    scores = np.asarray(predict(pd.concat(frames, ignore_index=True)), dtype="float64")
    picked = scores[: len(rows)].argmax(axis=1) if scores.ndim == 2 and scores.shape[1] > 1 else None
    curves, start = [], len(rows)
    for feature, grid in grids.items():
        block = scores[start:start + len(grid) * len(rows)]
        start += len(grid) * len(rows)
        ice = primary_score(block, None if picked is None else np.tile(picked, len(grid))).reshape(len(grid), -1).T
        shown = [v if isinstance(v, (int, float, str, bool)) else str(v) for v in grid]
        curves.append({"feature": feature, "numeric": feature in numeric, "grid": shown,
                       "pd": ice.mean(axis=0).tolist() if grid else [], "ice": ice.round(6).tolist() if grid else []})
    return curves


def _value_rank(values: pd.Series, numeric: bool) -> np.ndarray:
    """Each row's value as a rank in [0, 1] among the explained rows (categories in sorted order); NaN when missing."""
    import numpy as np

    if numeric:
        return values.astype("float64").rank(pct=True).to_numpy()
    text = values.astype("string")
    categories = sorted(text.dropna().unique())
    position = {c: i for i, c in enumerate(categories)}
    scale = max(len(categories) - 1, 1)
    return np.array([np.nan if v is None else position[v] / scale for v in text.to_numpy(dtype=object, na_value=None)],
                    dtype="float64")


def _swarm_offsets(x: np.ndarray, width: float = 0.38, bins: int = 40) -> np.ndarray:
    """Vertical offsets that pile the points of each x bin around the line, as wide as the bin is full (beeswarm)."""
    import numpy as np

    if len(x) == 0:
        return np.zeros(0)
    counts, edges = np.histogram(x, bins=bins)
    which = np.clip(np.digitize(x, edges[1:-1]), 0, bins - 1)
    offsets = np.zeros(len(x))
    peak = max(int(counts.max()), 1)
    for b in np.unique(which):
        idx = np.flatnonzero(which == b)
        k = np.arange(len(idx))
        offsets[idx] = ((k + 1) // 2) * np.where(k % 2, 1.0, -1.0) * (2 * width / peak)
    return offsets


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def beeswarm_plot(explained: RowExplanations, rows: pd.DataFrame, path: Path, top: int = ATTRIBUTION_TOP_K,
                  numeric: set[str] | None = None) -> Path:
    """Per row dots of the top features' attributions, coloured by the feature's value rank (low blue, high red)."""
    import numpy as np
    import pandas as pd

    plt = _pyplot()
    order = [entry["feature"] for entry in explained.global_importance()[:top]][::-1]  # largest at the top
    position = {c: j for j, c in enumerate(explained.columns)}
    fig, ax = plt.subplots(figsize=(6.5, 0.42 * len(order) + 1.4))
    xs, ys, colours = [], [], []
    for i, feature in enumerate(order):  # gathered, then drawn in one scatter: one artist, not one per feature
        x = explained.values[:, position[feature]]
        is_numeric = (feature in numeric) if numeric is not None else pd.api.types.is_numeric_dtype(rows[feature])
        xs.append(x)
        ys.append(i + _swarm_offsets(x))
        colours.append(_value_rank(rows[feature], is_numeric))
    x, y, colour = (np.concatenate(a) if a else np.zeros(0) for a in (xs, ys, colours))
    missing = np.isnan(colour)
    ax.scatter(x[missing], y[missing], s=7, color="#a0aec0", linewidths=0)
    points = ax.scatter(x[~missing], y[~missing], c=colour[~missing], cmap="coolwarm", vmin=0.0, vmax=1.0, s=7,
                        linewidths=0)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    ax.set_yticks(range(len(order)), order)
    ax.set_xlabel(f"attribution ({explained.output_space}, {explained.method})")
    ax.set_title(f"Attributions of {len(explained.values)} held-out rows")
    bar = fig.colorbar(points, ax=ax, ticks=[0, 1], pad=0.01)
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label("feature value (rank)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def dependence_plot(curves: list[dict[str, Any]], path: Path, label: str) -> Path:
    """One panel per feature: thin ICE lines per row and the partial dependence (their mean) on top."""
    import numpy as np
    from matplotlib.collections import LineCollection

    plt = _pyplot()
    fig, axes = plt.subplots(1, max(len(curves), 1), figsize=(3.6 * max(len(curves), 1), 3.4), squeeze=False)
    for ax, curve in zip(axes[0], curves, strict=False):
        x = np.asarray(curve["grid"], dtype="float64") if curve["numeric"] else np.arange(len(curve["grid"]))
        if len(x):
            ice = np.asarray(curve["ice"], dtype="float64")
            # one collection of every row's line: a Line2D per row makes the figure ten times slower to draw
            ax.add_collection(LineCollection(list(np.stack([np.broadcast_to(x, ice.shape), ice], axis=-1)),
                                             colors="#4a5568", alpha=0.15, linewidths=0.7))
            ax.plot(x, curve["pd"], color="#dd6b20", linewidth=2.2, label="partial dependence")
        if not curve["numeric"]:
            ax.set_xticks(x, [str(v) for v in curve["grid"]], rotation=45, ha="right")
        ax.set_xlabel(curve["feature"])
        ax.set_ylabel(label)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle("Partial dependence (orange) and ICE curves of the top features")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
