"""Decide whether the candidate may replace the champion (TFX Evaluator semantics, and confidence).

Absolute thresholds bound the candidate's own metrics (overall and, when
configured, on every declared slice); change thresholds bound its difference
from the champion measured on the same rows in the same run. A change passes
only when the *lower bound* of the paired bootstrap interval of the
improvement clears the threshold: a candidate better by less than its
uncertainty is not promoted; with `require_confidence`, a change without an
interval (missing, or NaN) fails. The candidate's behavioural tests must pass;
one that could not run (too few rows) is recorded as skipped, never as passed,
and fails when the data set requires it. Robustness thresholds bound the
candidate's accuracy under noise and FGSM like any other threshold, so a more
accurate but brittle candidate is kept out. Every metric's direction comes
from LOWER_IS_BETTER (RMSE, MAE, log loss, ...), whatever the task kind.

With no champion yet, absolute thresholds apply and so does the naive-baseline
floor: the candidate must beat the baseline evaluation scored on the same rows
(class prior of the training split, or the training mean) on the data set's
primary metric by its `baseline_margin`, the paired bootstrap interval's lower
bound clearing the margin. Either counts as the absolute bound a first model
needs: with neither (no absolute thresholds, no baseline scored) it is never
blessed; with no thresholds at all and a champion, nothing is. The decision is
a record with every check.

What drives the model is an input too: evaluation ranks the candidate's
attributions against the champion's on the same rows (NDCG@10). When the data
set declares `explanation.gate_min_ndcg`, a candidate below it is held (the
same metrics can hide a model that now leans on other features: a leak, a
broken column); a declared check that cannot run (a version that cannot be
explained) fails with the reason rather than pass unseen. Undeclared, the NDCG
is recorded in the decision, not judged.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ml_tasks.config import GateConfig
from ml_tasks.constants import LOWER_IS_BETTER, TOP_FEATURES_SHOWN

if TYPE_CHECKING:
    from ml_tasks.config import RunConfig, RunContext

log = logging.getLogger(__name__)

# Every reason of the attribution check starts with this (the Models view picks a hold reason out by it). Reasons
# never hold "; ": the version tag joins them with it.
ATTRIBUTION_REASON = "attribution shift"


@dataclass(frozen=True)
class Check:
    kind: str  # "absolute", "slice", "change", "baseline", "behaviour", "robustness" or "attribution"
    metric: str
    threshold: float
    value: float | None
    passed: bool | None  # None: the check could not run (skipped)
    reason: str
    interval: tuple[float, float] | None = None
    status: str = ""  # "passed", "failed" or "skipped"

    def __post_init__(self) -> None:
        if not self.status:
            object.__setattr__(self, "status", "skipped" if self.passed is None else "passed" if self.passed else "failed")


@dataclass(frozen=True)
class GateDecision:
    blessed: bool
    decision: str  # "promote" or "keep_champion"
    reasons: list[str]
    checks: list[Check] = field(default_factory=list)
    champion_version: str | None = None
    # The candidate's attribution ranking against the champion's (ml_tasks.explain.AttributionShift.to_dict), when
    # measured: judged by an "attribution" check only when the data set declares a threshold.
    attribution_shift: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _absolute(metric: str, threshold: float, value: float | None) -> Check:
    lower = metric in LOWER_IS_BETTER
    if value is None or math.isnan(value):
        return Check("absolute", metric, threshold, value, False, f"{metric} is missing or NaN")
    passed = value <= threshold if lower else value >= threshold
    relation = ("<=" if lower else ">=") if passed else (">" if lower else "<")
    return Check("absolute", metric, threshold, value, passed, f"{metric} {value:.4f} {relation} {threshold}")


def _change(metric: str, threshold: float, candidate: float | None, champion: float | None,
            interval: dict[str, Any] | None = None, require_confidence: bool = False) -> Check:
    if candidate is None or champion is None or math.isnan(candidate) or math.isnan(champion):
        return Check("change", metric, threshold, None, False, f"{metric} missing for candidate or champion")
    improvement = champion - candidate if metric in LOWER_IS_BETTER else candidate - champion
    word = "improves" if improvement >= 0 else "worsens"
    reason = (f"{metric} {word} by {abs(improvement):.4f} over the champion ({candidate:.4f} vs {champion:.4f}); "
              f"needs at least {threshold:+.4f}")
    if interval is None or interval.get("lower") is None or math.isnan(interval["lower"]):
        if require_confidence:
            return Check("change", metric, threshold, improvement, False,
                         reason + "; require_confidence, but no confidence interval could be computed (missing or NaN)")
        return Check("change", metric, threshold, improvement, improvement >= threshold, reason + " (no interval)")
    lower, upper = float(interval["lower"]), float(interval["upper"])
    passed = lower >= threshold
    confidence = f"{100 * float(interval.get('confidence', 0.95)):g}%"
    reason += f"; {confidence} interval of the improvement [{lower:+.4f}, {upper:+.4f}]"
    if improvement >= threshold and not passed:
        reason += ": its lower bound does not clear the threshold"
    return Check("change", metric, threshold, improvement, passed, reason, (lower, upper))


def _baseline(metric: str, margin: float, candidate: float | None, baseline: float | None,
              interval: dict[str, Any] | None) -> Check:
    """The naive-baseline floor: the candidate beats the baseline on `metric` by more than `margin`, the bootstrap
    interval's lower bound included (an equally useless model, improvement 0 everywhere, fails at margin 0)."""
    if candidate is None or baseline is None or math.isnan(candidate) or math.isnan(baseline):
        return Check("baseline", metric, margin, None, False,
                     f"naive baseline: {metric} missing or NaN (candidate {candidate}, baseline {baseline})")
    improvement = baseline - candidate if metric in LOWER_IS_BETTER else candidate - baseline
    reason = (f"naive baseline: candidate {metric} {candidate:.4f} vs baseline {baseline:.4f} "
              f"(improvement {improvement:+.4f}; needs more than {margin:+.4f})")
    if interval is None or interval.get("lower") is None or math.isnan(float(interval["lower"])):
        return Check("baseline", metric, margin, improvement, False,
                     reason + "; no confidence interval of the improvement could be computed")
    lower, upper = float(interval["lower"]), float(interval["upper"])
    passed = lower > margin
    confidence = f"{100 * float(interval.get('confidence', 0.95)):g}%"
    reason += f"; {confidence} interval [{lower:+.4f}, {upper:+.4f}]"
    if not passed:
        reason += ": its lower bound does not clear the margin"
    return Check("baseline", metric, margin, improvement, passed, reason, (lower, upper))


def _slices(thresholds: dict[str, float], slices: dict[str, dict[str, Any]]) -> list[Check]:
    checks = []
    for name, values in sorted(slices.items()):
        for metric, threshold in sorted(thresholds.items()):
            check = _absolute(metric, threshold, values.get(metric))
            checks.append(Check("slice", f"{metric}@{name}", threshold, check.value, check.passed,
                                f"slice {name} ({values.get('rows')} rows): {check.reason}"))
    return checks


def _robustness(thresholds: dict[str, float], measured: dict[str, float],
                skipped: dict[str, str] | None = None) -> list[Check]:
    """Least accuracy (R² for regression) under each declared perturbation; one this model was not measured under
    is skipped, with evaluation's reason where it gave one."""
    checks = []
    for measure, threshold in sorted(thresholds.items()):
        value = measured.get(measure)
        if value is None:
            why = (skipped or {}).get(measure.split("_")[0]) or "not measured for this model (FGSM needs a Keras model)"
            checks.append(Check("robustness", measure, threshold, None, None, f"robustness {measure}: {why}: skipped"))
            continue
        if math.isnan(value):
            checks.append(Check("robustness", measure, threshold, value, False, f"robustness {measure} is NaN"))
            continue
        passed = value >= threshold
        checks.append(Check("robustness", measure, threshold, value, passed,
                            f"accuracy under {measure} {value:.4f} {'>=' if passed else '<'} {threshold}"))
    return checks


def _attribution(threshold: float, explanation: dict[str, Any] | None, champion_version: str) -> Check:
    """The declared least NDCG of the candidate's attribution ranking against the champion's; one that could not be
    measured fails, with the reason (never passes unseen)."""
    metric = "ndcg"
    shift = (explanation or {}).get("shift")
    if shift is None:
        skipped = (explanation or {}).get("skipped") or {}
        why = (skipped.get("candidate") or skipped.get("champion")
               or ("evaluation measured no attributions" if not explanation else "no shift was measured"))
        return Check("attribution", metric, threshold, None, False,
                     f"{ATTRIBUTION_REASON} against champion v{champion_version} could not be measured ({why}), "
                     f"but the data set declares NDCG >= {threshold:g}: a declared check that cannot run fails")
    ndcg, k = float(shift["ndcg"]), int(shift.get("k") or 0)
    before = ", ".join(shift.get("reference_top", [])[:TOP_FEATURES_SHOWN])
    after = ", ".join(shift.get("current_top", [])[:TOP_FEATURES_SHOWN])
    passed = ndcg >= threshold
    relation = ">=" if passed else "<"
    reason = (f"{ATTRIBUTION_REASON}: NDCG@{k} {ndcg:.3f} {relation} {threshold:g} of the candidate's attribution "
              f"ranking against champion v{champion_version}'s")
    if not passed:
        reason += " (what drives the model moved: held)"
    reason += f", top features before: [{before}], after: [{after}]"
    return Check("attribution", f"{metric}@{k}", threshold, ndcg, passed, reason)


def _behaviour(results: list[dict[str, Any]]) -> list[Check]:
    checks = []
    for r in results:
        status = behaviour_status(r)
        checks.append(Check("behaviour", r["test"], float(r["threshold"]), r.get("value"),
                            None if status == "skipped" else status == "passed",
                            f"behavioural test {r['test']!r}: {r['detail']}", status=status))
    return checks


def behaviour_status(result: dict[str, Any]) -> str:
    """"passed", "failed" or "skipped" (records written before skips were recorded carry only `passed`)."""
    if result.get("status"):
        return str(result["status"])
    return "passed" if result.get("passed") else "failed"


def decide(
    config: GateConfig,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None = None,
    champion_error: str | None = None,
    intervals: dict[str, dict[str, Any]] | None = None,
    slices: dict[str, dict[str, Any]] | None = None,
    behaviour: list[dict[str, Any]] | None = None,
    robustness: dict[str, float] | None = None,
    baseline: dict[str, float] | None = None,
    baseline_intervals: dict[str, dict[str, Any]] | None = None,
    primary_metric: str | None = None,
    baseline_margin: float = 0.0,
    robustness_skipped: dict[str, str] | None = None,
    explanation: dict[str, Any] | None = None,
    attribution_min_ndcg: float | None = None,
) -> GateDecision:
    """`baseline` (the naive baseline's metrics on the same rows) with `baseline_intervals` (the candidate's paired
    improvement over it) and the data set's `primary_metric` and `baseline_margin`: the first-champion floor.
    `explanation` (evaluation's record) with a declared `attribution_min_ndcg`: the attribution check."""
    floor = champion_version is None and baseline is not None and primary_metric is not None
    if not config.absolute and not config.change and not floor:
        return GateDecision(False, "keep_champion", ["no thresholds configured: nothing is ever blessed"],
                            champion_version=champion_version)
    checks = [_absolute(m, t, candidate.get(m)) for m, t in sorted(config.absolute.items())]
    checks.extend(_slices(config.slice_absolute, slices or {}))
    checks.extend(_behaviour(behaviour or []))
    checks.extend(_robustness(config.robustness, robustness or {}, robustness_skipped))
    reasons: list[str] = []
    if champion_version is None:
        reasons.append("first run: no champion, only absolute thresholds and the naive-baseline floor apply")
        if floor:
            assert primary_metric is not None and baseline is not None
            checks.append(_baseline(primary_metric, baseline_margin, candidate.get(primary_metric),
                                    baseline.get(primary_metric), (baseline_intervals or {}).get(primary_metric)))
        elif not config.absolute:
            return GateDecision(False, "keep_champion",
                                reasons + ["no absolute thresholds and no naive baseline scored: a first model is "
                                           "never blessed without one"])
    elif champion is None:
        checks.append(Check("change", "*", 0.0, None, False,
                            champion_error or f"champion v{champion_version} could not be evaluated"))
    else:
        intervals = intervals if config.require_confidence else None
        checks.extend(_change(m, t, candidate.get(m), champion.get(m), (intervals or {}).get(m), config.require_confidence)
                      for m, t in sorted(config.change.items()))
    if champion_version is not None and attribution_min_ndcg is not None:
        checks.append(_attribution(attribution_min_ndcg, explanation, champion_version))
    failed = [c for c in checks if c.status == "failed"]
    skipped = [c for c in checks if c.status == "skipped"]
    blessed = not failed
    reasons.extend(c.reason for c in (failed + skipped if failed else checks))
    return GateDecision(blessed, "promote" if blessed else "keep_champion", reasons, checks, champion_version,
                        (explanation or {}).get("shift"))


def gate(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], evaluated: dict[str, Any]) -> dict[str, Any]:
    """The nightly's gate stage: decide, and keep the blessing record (decision, every check, the thresholds and the
    numbers they were applied to) in the run's report folder and its MLflow run, with the decision as tags."""
    import mlflow

    from ml_tasks import tracking
    from ml_tasks.constants import BLESSING_FILE, MLFLOW_REPORT_DIR, TAG_GATE_DECISION, TAG_GATE_REASONS
    from ml_tasks.datasets import get_dataset
    from ml_tasks.io import write_json

    spec = get_dataset(ctx.dataset)
    decision = decide(
        config.gate, evaluated["candidate"], evaluated["champion"],
        evaluated["champion_version"], evaluated.get("champion_error"),
        intervals=evaluated.get("intervals"), slices=evaluated.get("slices"), behaviour=evaluated.get("behaviour"),
        robustness=evaluated.get("robustness"), baseline=evaluated.get("baseline"),
        baseline_intervals=evaluated.get("baseline_intervals"), primary_metric=spec.primary_metric,
        baseline_margin=spec.baseline_margin, robustness_skipped=evaluated.get("robustness_skipped"),
        explanation=evaluated.get("explanation"), attribution_min_ndcg=spec.attribution_gate_min_ndcg,
    )
    record = {**decision.to_dict(),
              "thresholds": {"absolute": config.gate.absolute, "change": config.gate.change,
                             "slice_absolute": config.gate.slice_absolute,
                             "robustness": config.gate.robustness, "require_confidence": config.gate.require_confidence,
                             "baseline_margin": spec.baseline_margin, "primary_metric": spec.primary_metric,
                             "attribution_min_ndcg": spec.attribution_gate_min_ndcg},
              "task": spec.task, "baseline": evaluated.get("baseline"),
              "baseline_intervals": evaluated.get("baseline_intervals"),
              "candidate": evaluated["candidate"], "champion": evaluated["champion"],
              "intervals": evaluated.get("intervals"), "behaviour": evaluated.get("behaviour"),
              "slices": evaluated.get("slices"), "robustness": evaluated.get("robustness"),
              "explanation": evaluated.get("explanation"), "expected_champion": evaluated["expected_champion"]}
    blessing_path = write_json(ctx.report_dir / BLESSING_FILE, record)
    tracking.configure()
    with mlflow.start_run(run_id=prepared["mlflow_run_id"]):
        mlflow.set_tags({TAG_GATE_DECISION: decision.decision, TAG_GATE_REASONS: "; ".join(decision.reasons)[:4000]})
        mlflow.log_artifact(str(blessing_path), artifact_path=MLFLOW_REPORT_DIR)
    log.info("gate for %s: %s (%s)", ctx.tracking_key, decision.decision, "; ".join(decision.reasons))
    return {**record, "blessing_uri": blessing_path.as_uri()}
