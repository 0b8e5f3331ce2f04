"""Drift and skew between a new data drop and the training data of the current champion.

A model is only as good as the match between the data it was trained on and the
data it will see. `compute_reference` condenses the training data ONCE into small,
JSON-serialisable statistics (decile bins, a quantile sketch, category
frequencies, class balance) that are stored with the model as an artifact, so the
nightly check never reloads or recomputes the raw training data. `compare` measures
a new drop against them and reports every distance for every feature, plus which
test fired against which threshold. Whether drift warns or stops a run is the
caller's decision.

Measures:
  * PSI (population stability index) over the reference decile bins (numeric) or
    the reference categories plus an "other/unseen" bucket (categorical). Missing
    values are a bucket of their own, so a jump in missingness shows up as drift.
    Empty buckets are smoothed with `PSI_EPSILON`.
  * KS statistic (numeric): the reference CDF is read off a quantile sketch of
    `quantiles` quantiles, which bounds the error of the statistic by
    1/(2*quantiles) (0.0005 for 1000). Above `SKETCH_ROWS` non-missing values on
    either side the sketch / the new CDF come from a seeded uniform sample of
    `SKETCH_ROWS` values, which adds a sampling error of at most ~0.0014 (DKW, 95%);
    a full sort of millions of values per column costs more than the rest of the
    work together.
  * Jensen-Shannon distance (base 2, in [0, 1]) over the same buckets as PSI;
    it fires for categorical features (and the label is judged by PSI).

Non-finite numbers (NaN, +-inf) count as missing.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

# The thresholds' defaults and bounds are declared once, with the run's other knobs.
from ml_tasks.config import DriftThresholds
from ml_tasks.errors import ConfigError, DataError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from ml_tasks.config import RunConfig, RunContext
    from ml_tasks.datasets import DatasetSpec

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
# Smoothing of empty buckets in PSI: a bucket empty on one side adds about (p) * ln(p / 1e-4).
PSI_EPSILON = 1e-4
# Above this many non-missing values, quantile sketches and the new sample's CDF come from a seeded sample.
SKETCH_ROWS = 1_000_000
# High-cardinality categoricals keep their most frequent categories; the rest is "__other__".
MAX_CATEGORIES = 1000
OTHER = "__other__"
MISSING = "__missing__"
_SEED = 20240601


@dataclass(frozen=True)
class DriftReport:
    """Every distance of every feature, which features drifted and why, and the label shift."""

    features: dict[str, dict[str, Any]]
    drifted_features: list[str]
    thresholds: DriftThresholds
    rows_reference: int
    rows_current: int
    label: dict[str, Any] | None = field(default=None)

    @property
    def drifted(self) -> bool:
        """True when a feature drifted or the label distribution shifted."""
        return bool(self.drifted_features) or bool(self.label and self.label.get("drifted"))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drifted": self.drifted}

    def summary(self) -> str:
        """Human-readable lines: each drifted feature with its numbers, or the largest distances."""
        t = self.thresholds
        head = (f"drift check of {self.rows_current:,} rows against a reference of {self.rows_reference:,} rows "
                f"(thresholds psi {t.psi:g}, ks {t.ks:g}, js {t.js:g})")
        lines = [head]
        if self.drifted_features:
            lines.append(f"{len(self.drifted_features)} of {len(self.features)} features drifted:")
            for name in self.drifted_features:
                lines.append(f"  {name}: {_describe(self.features[name], t)}")
        else:
            lines.append(f"no drift above thresholds in {len(self.features)} features; largest distances:")
            for measure in ("psi", "ks", "js"):
                values = [(stats[measure], name) for name, stats in self.features.items() if stats.get(measure) is not None]
                if values:
                    value, name = max(values)
                    lines.append(f"  {measure} {value:.4f} ({name})")
        if self.label is not None:
            label = self.label
            verdict = "SHIFTED" if label["drifted"] else "stable"
            if label.get("kind") == "numeric":
                lines.append(f"target {label['column']!r}: {verdict}, psi {label['psi']:.4f} (threshold {t.psi:g}), "
                             f"ks {label['ks']}; mean {label['reference_mean']} -> {label['current_mean']}")
            else:
                lines.append(f"label {label['column']!r}: {verdict}, psi {label['psi']:.4f} (threshold {t.psi:g}), "
                             f"js {label['js']:.4f}; {_fmt_freqs(label['reference'])} -> {_fmt_freqs(label['current'])}")
        return "\n".join(lines)


def _describe(stats: dict[str, Any], t: DriftThresholds) -> str:
    limits = {"psi": t.psi, "ks": t.ks, "js": t.js}
    parts = [f"{m} {stats[m]:.4f} > {limits[m]:g}" for m in stats["fired"]]
    others = [f"{m} {stats[m]:.4f}" for m in ("psi", "ks", "js") if m not in stats["fired"] and stats.get(m) is not None]
    text = ", ".join(parts + others)
    extra = [f"missing {stats['null_fraction_reference']:.1%} -> {stats['null_fraction_current']:.1%}"]
    if stats["kind"] == "numeric" and stats["mean_reference"] is not None and stats["mean_current"] is not None:
        extra.append(f"mean {stats['mean_reference']:.4g} -> {stats['mean_current']:.4g}")
    if stats["kind"] == "categorical" and stats["unseen_fraction"] > 0:
        extra.append(f"unseen {stats['unseen_fraction']:.1%} ({', '.join(stats['unseen_categories'][:5])})")
    return f"{text} ({'; '.join(extra)})"


def _fmt_freqs(freqs: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {v:.3f}" for k, v in freqs.items()) + "}"


# --- reference ---------------------------------------------------------------------------------------------


def compute_reference(frame: pd.DataFrame, spec: DatasetSpec, bins: int = 10, quantiles: int = 1000) -> dict[str, Any]:
    """Small JSON-serialisable statistics of the training data, computed once and stored with the model."""
    if bins < 2 or quantiles < 10:
        raise ConfigError(f"drift reference needs bins >= 2 and quantiles >= 10, got bins={bins} quantiles={quantiles}")
    _require_columns(frame, spec.features, "training data")
    rows = len(frame)
    if rows == 0:
        raise DataError("cannot compute a drift reference from an empty training frame")
    numeric = {name: _numeric_reference(_numeric_values(frame, name), rows, bins, quantiles)
               for name in spec.numeric_features}
    categorical = {name: _categorical_reference(frame[name], rows) for name in spec.categorical_features}
    label: dict[str, Any] | None = None
    if spec.target in frame.columns and not spec.is_classification:
        # A regression target drifts like a numeric feature: its bins and quantile sketch.
        label = {"column": spec.target, "kind": "numeric",
                 **_numeric_reference(_numeric_values(frame, spec.target), rows, bins, quantiles)}
    elif spec.target in frame.columns:
        label = {"column": spec.target, **_categorical_reference(frame[spec.target], rows)}
    else:
        log.warning("training data of %s has no target column %s: no label reference", spec.name, spec.target)
    log.info("drift reference of %s: %d rows, %d numeric and %d categorical features",
             spec.name, rows, len(numeric), len(categorical))
    return {
        "format_version": FORMAT_VERSION,
        "dataset": spec.name,
        "rows": rows,
        "bins": bins,
        "quantiles": quantiles,
        "numeric": numeric,
        "categorical": categorical,
        "label": label,
    }


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks feature column(s) {missing} needed for the drift check")


def _numeric_values(frame: pd.DataFrame, name: str) -> np.ndarray:
    """The finite values of a numeric column as float64 (NaN and +-inf are missing)."""
    import numpy as np

    column = frame[name]
    try:
        if column.dtype == np.float64:
            values = column.to_numpy()
        else:
            values = column.to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError(f"numeric feature {name!r} has non-numeric values (dtype {column.dtype}): {exc}") from None
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def _sorted_sample(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """All values sorted, or a seeded uniform sample of `SKETCH_ROWS` of them; and whether it is exact."""
    import numpy as np

    if len(values) <= SKETCH_ROWS:
        return np.sort(values), True
    rng = np.random.default_rng(_SEED)
    sample = values[rng.integers(0, len(values), size=SKETCH_ROWS)]  # a copy: sorting it in place is safe
    sample.sort()
    return sample, False


def _ranks(n: int, parts: int) -> np.ndarray:
    """Indices of the k/parts quantiles (k = 1..parts) of n sorted values: the inverted-CDF definition."""
    import numpy as np

    k = np.arange(1, parts + 1, dtype=np.int64)
    return (k * n + parts - 1) // parts - 1


def bin_fractions(values: np.ndarray, edges: list[float]) -> list[float]:
    """Fractions of `values` in the right-closed bins (-inf, e1], (e1, e2], ..., (e_last, inf)."""
    import numpy as np

    n = len(values)
    if n == 0:
        return [0.0] * (len(edges) + 1)
    at_or_below = [int(np.count_nonzero(values <= edge)) for edge in edges]
    counts = np.diff(np.array([0, *at_or_below, n], dtype=np.int64))
    return [float(c) / n for c in counts]


def _moments(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"mean": None, "std": None, "min": None, "max": None}
    mean = float(values.mean())
    centred = values - mean
    std = math.sqrt(float(centred @ centred) / len(values))
    return {"mean": _finite(mean), "std": _finite(std), "min": float(values.min()), "max": float(values.max())}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def sketch_of_sorted(sample: np.ndarray, bins: int, quantiles: int, minimum: float,
                     maximum: float) -> tuple[list[float], list[float]]:
    """The bin edges and the quantile sketch of a column from its sorted values (all, or a uniform sample of them).

    The sketch's ends are the column's exact minimum and maximum even when the rest is sampled."""
    import numpy as np

    edges = [float(e) for e in np.unique(sample[_ranks(len(sample), bins)[:-1]])]
    sketch = sample[_ranks(len(sample), quantiles)]
    sketch[-1] = maximum
    return edges, [minimum, *(float(q) for q in sketch)]


def _numeric_reference(values: np.ndarray, rows: int, bins: int, quantiles: int) -> dict[str, Any]:
    count = len(values)
    moments = _moments(values)
    sample, exact = _sorted_sample(values)
    if count:
        edges, sketch_list = sketch_of_sorted(sample, bins, quantiles, float(values.min()), float(values.max()))
    else:
        edges, sketch_list = [], []
    return {
        "count": count,
        "null_fraction": (rows - count) / rows,
        **moments,
        "edges": edges,
        "bin_fractions": bin_fractions(values, edges),
        "quantiles": sketch_list,
        "sketch_exact": exact,
    }


def _category_key(value: Any) -> str:
    """One spelling per category across dtypes: 3, 3.0 and "3" all become "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _category_key(value.item())
    return str(value)


def _category_counts(column: pd.Series) -> tuple[dict[str, int], int]:
    """Counts per category key (most frequent first) and the number of missing values."""
    counts: dict[str, int] = {}
    for value, count in column.value_counts(dropna=True, sort=True).items():
        if count:
            key = _category_key(value)
            counts[key] = counts.get(key, 0) + int(count)
    missing = int(column.isna().sum())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))), missing


def _categorical_reference(column: pd.Series, rows: int) -> dict[str, Any]:
    counts, missing = _category_counts(column)
    return categorical_reference_from_counts(counts, missing, rows)


def categorical_reference_from_counts(counts: dict[str, int], missing: int, rows: int) -> dict[str, Any]:
    """A categorical's reference from its counts per category key (most frequent first) and its missing values."""
    count = rows - missing
    kept = dict(list(counts.items())[:MAX_CATEGORIES])
    other = count - sum(kept.values())
    return {
        "count": count,
        "null_fraction": missing / rows,
        "frequencies": {k: v / count for k, v in kept.items()} if count else {},
        "other_fraction": other / count if count else 0.0,
        "categories_total": len(counts),
    }


# --- comparison --------------------------------------------------------------------------------------------


def compare(reference: dict[str, Any], frame: pd.DataFrame, spec: DatasetSpec,
            thresholds: DriftThresholds | None = None) -> DriftReport:
    """Measure a new drop against the stored reference; every distance of every feature is reported."""
    thresholds = thresholds or DriftThresholds()
    _check_reference(reference, spec)
    _require_columns(frame, spec.features, "the new data")
    rows = len(frame)
    if rows == 0:
        raise DataError("the new data has no rows to compare against the drift reference")
    features: dict[str, dict[str, Any]] = {}
    for name in spec.numeric_features:
        stats = _compare_numeric(reference["numeric"][name], _numeric_values(frame, name), rows)
        features[name] = _judge(stats, {"psi": thresholds.psi, "ks": thresholds.ks})
    for name in spec.categorical_features:
        stats, _ = _compare_categorical(reference["categorical"][name], frame[name], rows)
        features[name] = _judge(stats, {"psi": thresholds.psi, "js": thresholds.js})
    label: dict[str, Any] | None = None
    ref_label = reference.get("label")
    if ref_label is not None and spec.target in frame.columns and ref_label.get("kind") == "numeric":
        stats = _compare_numeric(ref_label, _numeric_values(frame, spec.target), rows)
        label = {"column": spec.target, "kind": "numeric", "psi": stats["psi"], "ks": stats.get("ks"),
                 "reference_mean": stats["mean_reference"], "current_mean": stats["mean_current"],
                 "drifted": stats["psi"] > thresholds.psi}
    elif ref_label is not None and spec.target in frame.columns:
        shift, current = _compare_categorical(ref_label, frame[spec.target], rows)
        label = {
            "column": spec.target,
            "psi": shift["psi"],
            "js": shift["js"],
            "reference": {k: float(v) for k, v in ref_label["frequencies"].items()},
            "current": current,
            "unseen_fraction": shift["unseen_fraction"],
            "drifted": shift["psi"] > thresholds.psi,
        }
    drifted = [name for name, stats in features.items() if stats["drifted"]]
    report = DriftReport(features, drifted, thresholds, int(reference["rows"]), rows, label)
    log.info("drift of %s: %d of %d features drifted %s; label %s", spec.name, len(drifted), len(features), drifted,
             "absent" if label is None else f"psi {label['psi']:.4f}")
    return report


def _check_reference(reference: dict[str, Any], spec: DatasetSpec) -> None:
    version = reference.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(f"drift reference has format version {version!r}; this code reads {FORMAT_VERSION}: recompute it")
    if reference.get("dataset") != spec.name:
        raise ConfigError(f"drift reference was computed for data set {reference.get('dataset')!r}, not {spec.name!r}")
    missing = ([n for n in spec.numeric_features if n not in reference["numeric"]]
               + [n for n in spec.categorical_features if n not in reference["categorical"]])
    if missing:
        raise DataError(f"drift reference has no statistics for feature(s) {missing}: recompute it from the training data")


def _judge(stats: dict[str, Any], limits: dict[str, float]) -> dict[str, Any]:
    fired = [m for m, limit in limits.items() if stats[m] is not None and stats[m] > limit]
    return {**stats, "drifted": bool(fired), "fired": fired}


def _with_missing(fractions: list[float], null_fraction: float) -> np.ndarray:
    """Bucket probabilities: the non-missing distribution scaled by its share, then a missing bucket."""
    import numpy as np

    return np.array([f * (1.0 - null_fraction) for f in fractions] + [null_fraction], dtype=np.float64)


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of two bucket distributions; empty buckets are smoothed to `epsilon`."""
    import numpy as np

    r = np.maximum(reference, epsilon)
    c = np.maximum(current, epsilon)
    r, c = r / r.sum(), c / c.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) of two bucket distributions, in [0, 1]."""
    import numpy as np

    p = reference / reference.sum() if reference.sum() > 0 else reference
    q = current / current.sum() if current.sum() > 0 else current
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / m[nz])))

    divergence = (kl(p) + kl(q)) / 2
    return min(1.0, math.sqrt(max(0.0, divergence)))


def ks_from_sketch(sketch: list[float], sorted_values: np.ndarray) -> float:
    """KS statistic between the distribution summarised by `sketch` and the empirical CDF of `sorted_values`.

    `sketch` holds the minimum then the k/Q quantiles (k = 1..Q, inverted-CDF definition). For any x
    with j sketch quantiles (k >= 1) at or below it, the reference CDF lies in [j/Q, (j+1)/Q), so reading
    it as (j + 1/2)/Q errs by at most 1/(2Q), and so does the statistic. Both CDFs are step functions whose
    difference is monotone between consecutive sketch values, so the supremum is attained at a sketch
    value or just below one: only those points are evaluated.
    """
    import numpy as np

    q = np.asarray(sketch, dtype=np.float64)
    parts = len(q) - 1
    points = np.unique(q)
    ref_at = np.minimum(1.0, (np.searchsorted(q[1:], points, side="right") + 0.5) / parts)
    ref_below = np.concatenate(([0.0], ref_at[:-1]))
    m = len(sorted_values)
    cur_at = np.searchsorted(sorted_values, points, side="right") / m
    cur_below = np.searchsorted(sorted_values, points, side="left") / m
    return float(max(np.abs(ref_at - cur_at).max(), np.abs(ref_below - cur_below).max()))


def _compare_numeric(ref: dict[str, Any], values: np.ndarray, rows: int) -> dict[str, Any]:
    count = len(values)
    null_current = (rows - count) / rows
    moments = _moments(values)
    current_bins = bin_fractions(values, ref["edges"])
    r = _with_missing(ref["bin_fractions"], ref["null_fraction"])
    c = _with_missing(current_bins, null_current)
    ks: float | None = None
    exact = True
    if count and ref["count"]:
        sample, exact = _sorted_sample(values)
        ks = ks_from_sketch(ref["quantiles"], sample)
    std_ref = ref["std"]
    shift = None
    if moments["mean"] is not None and ref["mean"] is not None and std_ref:
        shift = _finite((moments["mean"] - ref["mean"]) / std_ref)
    below, above = _outside(values, ref["min"], ref["max"])
    return {
        "kind": "numeric",
        "psi": psi(r, c),
        "ks": ks,
        "js": js_distance(r, c),
        "null_fraction_reference": float(ref["null_fraction"]),
        "null_fraction_current": null_current,
        "null_fraction_change": null_current - float(ref["null_fraction"]),
        "mean_reference": ref["mean"],
        "mean_current": moments["mean"],
        "mean_shift_in_std": shift,
        "std_reference": std_ref,
        "std_current": moments["std"],
        "min_current": moments["min"],
        "max_current": moments["max"],
        "below_reference_min": below,
        "above_reference_max": above,
        "bin_fractions_reference": [float(f) for f in ref["bin_fractions"]],
        "bin_fractions_current": current_bins,
        "ks_exact_sample": exact,
    }


def _outside(values: np.ndarray, low: float | None, high: float | None) -> tuple[float, float]:
    """Fractions of the non-missing new values below the reference minimum and above its maximum."""
    import numpy as np

    if not len(values) or low is None or high is None:
        return 0.0, 0.0
    return float(np.count_nonzero(values < low)) / len(values), float(np.count_nonzero(values > high)) / len(values)


def _compare_categorical(ref: dict[str, Any], column: pd.Series, rows: int) -> tuple[dict[str, Any], dict[str, float]]:
    """The distances of one categorical column, and its current frequencies (for the label)."""
    counts, missing = _category_counts(column)
    count = rows - missing
    null_current = missing / rows
    known = list(ref["frequencies"])
    unseen = {k: v for k, v in counts.items() if k not in ref["frequencies"]}
    unseen_total = sum(unseen.values())
    cur_fracs = [counts.get(k, 0) / count if count else 0.0 for k in known] + [unseen_total / count if count else 0.0]
    ref_fracs = [float(v) for v in ref["frequencies"].values()] + [float(ref["other_fraction"])]
    r = _with_missing(ref_fracs, ref["null_fraction"])
    c = _with_missing(cur_fracs, null_current)
    changes = sorted(
        ({"category": k, "reference": rf, "current": cf} for k, rf, cf in zip([*known, OTHER], ref_fracs, cur_fracs, strict=True)),
        key=lambda d: -abs(d["current"] - d["reference"]),
    )
    return {
        "kind": "categorical",
        "psi": psi(r, c),
        "ks": None,
        "js": js_distance(r, c),
        "null_fraction_reference": float(ref["null_fraction"]),
        "null_fraction_current": null_current,
        "null_fraction_change": null_current - float(ref["null_fraction"]),
        "unseen_fraction": unseen_total / count if count else 0.0,
        "unseen_distinct": len(unseen),
        "unseen_categories": list(unseen)[:10],
        "largest_changes": changes[:5],
    }, ({k: v / count for k, v in counts.items()} if count else {})


def drift(ctx: RunContext, config: RunConfig, synced: dict[str, Any],
          measure: Callable[[Path, dict[str, Any], DatasetSpec, DriftThresholds], DriftReport] | None = None
          ) -> dict[str, Any]:
    """The nightly's drift stage: compare the drop with the champion's training data, every distance recorded in
    the run's MLflow run and report folder; drift above the thresholds warns, or stops the run when asked.
    `measure(folder, reference, spec, thresholds)` compares on another engine; by default pandas reads the drop."""
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.constants import DRIFT_REPORT_FILE, MLFLOW_REPORT_DIR, TAG_DRIFT
    from ml_tasks.datasets import get_dataset
    from ml_tasks.errors import DataDriftError
    from ml_tasks.io import read_drop, write_json
    from ml_tasks.release.registry import champion_drift_reference
    from ml_tasks.storage import local_path

    spec = get_dataset(ctx.dataset)
    run_id = tracking.ensure_parent_run(ctx)
    version, reference, why_not = champion_drift_reference(spec.registered_model, run_id)
    if reference is None:
        log.info("drift not checked for %s: %s", ctx.tracking_key, why_not)
        return {"checked": False, "reason": why_not, "champion_version": version, "action": config.drift.action}
    thresholds = DriftThresholds.from_dict(config.drift.thresholds)
    folder = local_path(synced["staging_uri"])
    if measure is not None:  # another engine (Spark) reads the drop
        found = measure(folder, reference, spec, thresholds)
    else:
        found = compare(reference, read_drop(folder), spec, thresholds)
    report_path = write_json(ctx.report_dir / DRIFT_REPORT_FILE, {"champion_version": version, **found.to_dict()})
    largest = {
        test: max((f[test] for f in found.features.values() if f.get(test) is not None), default=None)
        for test in ("psi", "ks", "js")
    }
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"drift.{feature}.{test}": float(values[test])
                            for feature, values in found.features.items()
                            for test in ("psi", "ks", "js") if values.get(test) is not None})
        mlflow.set_tag(TAG_DRIFT, ", ".join(found.drifted_features) or "none")
        mlflow.log_artifact(str(report_path), artifact_path=MLFLOW_REPORT_DIR)
    summary = found.summary()
    result = {"checked": True, "champion_version": version, "action": config.drift.action,
              "drifted": found.drifted, "drifted_features": found.drifted_features,
              "label_drifted": bool(found.label and found.label.get("drifted")),
              "largest": largest, "thresholds": thresholds.to_dict(), "report_uri": report_path.as_uri(),
              "summary": summary}
    if found.drifted and config.drift.action == "stop":
        raise DataDriftError(f"the drop drifted from champion version {version}'s training data "
                             f"and drift_action is 'stop':\n{summary}")
    if found.drifted:
        log.warning("drift from champion version %s (continuing: drift_action is 'warn'):\n%s", version, summary)
    else:
        log.info("no drift above thresholds from champion version %s:\n%s", version, summary)
    return result
