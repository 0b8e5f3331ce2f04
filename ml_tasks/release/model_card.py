"""The model card a reviewer reads in the MLflow registry before approving a version.

Rendered from the run's stage records (data, validation, drift, training,
evaluation, gate, infra validation) as Markdown: MLflow shows a version's
description as Markdown. The whole card is also logged as an artifact; the
description keeps what fits in MLflow's limit.
"""

from __future__ import annotations

import math
from typing import Any

from ml_tasks.config import RunContext
from ml_tasks.constants import EXPLANATION_ARTIFACT_DIR, GLOBAL_ATTRIBUTIONS_FILE, TOP_FEATURES_SHOWN
from ml_tasks.datasets import get_dataset
from ml_tasks.release.explanation import PLOT_FILES as EXPLANATION_PLOTS
from ml_tasks.release.gate import behaviour_status

PLOTS = ("roc_curve.png", "pr_curve.png", "calibration_curve.png", "confusion_matrix.png", "permutation_importance.png")


def _number(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def render(ctx: RunContext, name: str, version: str, run_id: str, stages: dict[str, dict[str, Any]]) -> str:
    """Markdown for `name` v`version` from the run's stage records (missing stages are skipped)."""
    spec = get_dataset(ctx.dataset)
    prepared, validated = stages.get("prepare") or {}, stages.get("validate") or {}
    drifted, trained = stages.get("drift") or {}, stages.get("train") or {}
    tuned, evaluated = stages.get("tune") or {}, stages.get("evaluate") or {}
    gated, infra = stages.get("gate") or {}, stages.get("infra") or {}
    lines = [
        f"# {name} v{version}",
        f"Trained by Ratchet's `{ctx.dag_id or 'nightly_retrain'}` run `{ctx.run_id or ctx.run_key}` "
        f"(data partition `{ctx.run_key}`); MLflow run `{run_id}`.",
        "",
        "## Data",
        f"- **Data set**: `{spec.name}`: {spec.description}",
        f"- **Rows**: {prepared.get('rows_in')} in, {prepared.get('rows_out')} after cleaning "
        f"(train {prepared.get('train_rows')}, validation {prepared.get('val_rows')}, test {prepared.get('test_rows')}); "
        f"fingerprint `{str(prepared.get('fingerprint', ''))[:16]}`",
        f"- **Validation**: passed {validated.get('evaluated')} expectations of suite `{validated.get('suite')}`"
        + (f" ([Data Docs]({validated['data_docs_uri']}))" if validated.get("data_docs_uri") else ""),
    ]
    if drifted.get("checked"):
        features = ", ".join(drifted.get("drifted_features") or []) or "none"
        lines.append(f"- **Drift** from champion v{drifted.get('champion_version')}'s training data: drifted features: "
                     f"{features}; largest PSI {_number((drifted.get('largest') or {}).get('psi'))}")
    elif drifted:
        lines.append(f"- **Drift**: not checked ({drifted.get('reason')})")
    task = evaluated.get("task") or spec.task
    target_line = (f"- **Task**: {task}; target `{spec.target}`"
                   + (f", classes {list(spec.classes)!r}" if spec.is_classification else " (values in its own units)")
                   + f"; primary metric `{spec.primary_metric}`")
    lines += ["", "## Model", target_line,
              f"- **Family**: `{trained.get('family', 'keras_mlp')}`; parameters: `{tuned.get('best_params')}`",
              f"- **Training**: {trained.get('epochs_run', 'n/a')} epochs (best {trained.get('best_epoch', 'n/a')}); "
              f"fit: {trained.get('fit_diagnosis', 'n/a')}"]
    candidate, champion = evaluated.get("candidate") or {}, evaluated.get("champion")
    intervals = evaluated.get("intervals") or {}
    lines += ["", f"## Metrics on {evaluated.get('rows')} held-out rows", "",
              f"| metric | this version | champion v{evaluated.get('champion_version')} | improvement (95% interval) |",
              "|---|---|---|---|"]
    for metric, value in candidate.items():
        interval = intervals.get(metric)
        shown = (f"{interval['improvement']:+.4f} [{interval['lower']:+.4f}, {interval['upper']:+.4f}]"
                 if interval else "n/a")
        lines.append(f"| {metric} | {_number(value)} | {_number((champion or {}).get(metric))} | {shown} |")
    baseline = evaluated.get("baseline")
    if baseline:
        primary = spec.primary_metric
        lines += ["", f"Naive baseline ({'training mean' if task == 'regression' else 'training class prior'}) on the "
                      f"same rows: {primary} {_number(baseline.get(primary))}"]
    per_class = evaluated.get("per_class") or {}
    if per_class:
        lines += ["", "| class | precision | recall |", "|---|---|---|"]
        lines += [f"| {c} | {_number(v.get('precision'))} | {_number(v.get('recall'))} |" for c, v in per_class.items()]
    slices = evaluated.get("slices") or {}
    if slices:
        first, second = _SLICE_METRICS.get(task, _SLICE_METRICS["binary"])
        lines += ["", "## Slices", "", f"| slice | rows | {first} | {second} |", "|---|---|---|---|"]
        lines += [f"| {s} | {v.get('rows')} | {_number(v.get(first))} | {_number(v.get(second))} |"
                  for s, v in sorted(slices.items())]
    lines += ["", "## Gate", f"**{gated.get('decision', 'n/a')}**" + (" (blessed)" if gated.get("blessed") else ""), ""]
    lines += [f"- {reason}" for reason in gated.get("reasons") or []]
    if infra:
        lines.append(f"- infra validation: {infra.get('summary', infra.get('passed'))}")
    behaviour = evaluated.get("behaviour") or []
    robustness = evaluated.get("robustness") or {}
    lines += ["", "## Behaviour and robustness"]
    status_word = {"passed": "pass", "failed": "FAIL", "skipped": "SKIPPED"}
    lines += [f"- {status_word[behaviour_status(b)]}: {b['test']}: {b['detail']}" for b in behaviour]
    if robustness:
        measure = "R²" if task == "regression" else "accuracy"
        lines.append(f"- {measure} under noise: " + ", ".join(f"{k} {_number(v, 3)}" for k, v in robustness.items()))
    lines += ["", "## Why it decides"] + why_it_decides(evaluated.get("explanation"))
    plots = _TASK_PLOTS.get(task, PLOTS)
    lines += ["", "## Plots", "MLflow run artifacts: " + ", ".join(f"`evaluation/{p}`" for p in plots)]
    lines += ["", "## Limitations"] + [f"- {item}" for item in limitations(spec.name, evaluated)]
    return "\n".join(lines) + "\n"


_SLICE_METRICS = {"binary": ("roc_auc", "accuracy"), "multiclass": ("f1_macro", "accuracy"),
                  "regression": ("rmse", "r2")}
_TASK_PLOTS = {"multiclass": ("confusion_matrix.png", "permutation_importance.png"),
               "regression": ("predicted_vs_actual.png", "residuals.png", "permutation_importance.png")}


def why_it_decides(explanation: dict[str, Any] | None) -> list[str]:
    """The explainer, its top features by mean |attribution|, how exactly they add up, and the shift from the
    champion: what a reviewer checks the model leans on what it should."""
    explanation = explanation or {}
    skipped = explanation.get("skipped") or {}
    explainer = explanation.get("explainer")
    if not explainer:
        return [f"- Not explained: {skipped.get('candidate') or 'evaluated before explanations were measured'}."]
    exact = "exact" if explainer.get("exact") else f"approximate, tolerance {explainer.get('tolerance')}"
    lines = [f"- **Explainer**: `{explainer.get('method')}` ({exact}; baseline `{explainer.get('baseline')}`), "
             f"attributions in `{explainer.get('output_space')}` on {explanation.get('rows')} held-out rows"
             + (f" ({explanation['rows_note']})" if explanation.get("rows_note") else ""),
             "- **Additivity error** (max |sum of attributions + base - output|): "
             + (f"{error:.2g}" if isinstance(error := explanation.get("additivity_error"), float) else "n/a"),
             "", "| feature | mean abs attribution | mean attribution |", "|---|---|---|"]
    lines += [f"| {e['feature']} | {_number(e.get('mean_abs_attribution'))} | {_number(e.get('mean_attribution'))} |"
              for e in (explanation.get("global") or [])[:TOP_FEATURES_SHOWN]]
    shift = explanation.get("shift")
    if shift:
        judged = (f"declared least {shift['threshold']:g}: {'held' if shift.get('shifted') else 'passed'}"
                  if shift.get("threshold") is not None else "recorded, not judged")
        lines += ["", f"- **Against champion v{explanation.get('champion_version')}** on the same rows: NDCG@"
                      f"{shift.get('k')} {_number(shift.get('ndcg'), 3)} ({judged}); its top features: "
                      + ", ".join(shift.get("reference_top", [])[:TOP_FEATURES_SHOWN])]
    elif skipped.get("champion"):
        lines += ["", f"- **Against the champion**: not measured: {skipped['champion']}"]
    files = [GLOBAL_ATTRIBUTIONS_FILE, *EXPLANATION_PLOTS]
    lines += ["", "MLflow run artifacts: " + ", ".join(f"`{EXPLANATION_ARTIFACT_DIR}/{f}`" for f in files)]
    return lines


def limitations(dataset: str, evaluated: dict[str, Any]) -> list[str]:
    """What a reviewer should know the numbers above do not show."""
    items = [f"Measured on held-out rows of the `{dataset}` drop it was trained on; later populations may differ "
             "(the nightly drift task compares each new drop with this version's training statistics)."]
    slices = evaluated.get("slices") or {}
    scored = [(v.get("roc_auc"), s) for s, v in slices.items() if v.get("roc_auc") is not None]
    if scored:
        worst_auc, worst = min(scored)
        items.append(f"Weakest declared slice: {worst} (ROC AUC {_number(worst_auc)}).")
    robustness = evaluated.get("robustness") or {}
    if "clean" in robustness and robustness:
        noisiest = max(robustness, key=lambda k: float(k.split("_")[1]) if k.startswith("noise_") else 0.0)
        measure = "R²" if evaluated.get("task") == "regression" else "Accuracy"
        items.append(f"{measure} falls from {_number(robustness['clean'], 3)} to {_number(robustness[noisiest], 3)} "
                     f"under {noisiest.replace('_', ' ')} x std feature noise.")
    task = evaluated.get("task", "binary")
    if task == "binary":
        items.append("Decisions use a 0.5 probability threshold; scores are not calibrated beyond what the calibration "
                     "error above shows.")
    elif task == "multiclass":
        items.append("The prediction is the most probable class; probabilities are not calibrated beyond what the "
                     "calibration error above shows.")
    else:
        items.append("Predictions are point estimates in the target's units, with no interval.")
    return items
