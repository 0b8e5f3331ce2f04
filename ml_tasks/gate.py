"""Decide whether the candidate may replace the champion (TFX Evaluator semantics).

Absolute thresholds bound the candidate's own metrics; change thresholds bound
its difference from the champion measured on the same rows in the same run.
With no champion yet only absolute thresholds apply; with no thresholds at all
nothing is ever blessed. The decision is a record with every check and reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ml_tasks.config import GateConfig
from ml_tasks.constants import LOWER_IS_BETTER


@dataclass(frozen=True)
class Check:
    kind: str  # "absolute" or "change"
    metric: str
    threshold: float
    value: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateDecision:
    blessed: bool
    decision: str  # "promote" or "keep_champion"
    reasons: list[str]
    checks: list[Check] = field(default_factory=list)
    champion_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _absolute(metric: str, threshold: float, value: float | None) -> Check:
    lower = metric in LOWER_IS_BETTER
    if value is None or math.isnan(value):
        return Check("absolute", metric, threshold, value, False, f"{metric} is missing or NaN")
    passed = value <= threshold if lower else value >= threshold
    relation = ("<=" if lower else ">=") if passed else (">" if lower else "<")
    return Check("absolute", metric, threshold, value, passed, f"{metric} {value:.4f} {relation} {threshold}")


def _change(metric: str, threshold: float, candidate: float | None, champion: float | None) -> Check:
    if candidate is None or champion is None or math.isnan(candidate) or math.isnan(champion):
        return Check("change", metric, threshold, None, False, f"{metric} missing for candidate or champion")
    improvement = champion - candidate if metric in LOWER_IS_BETTER else candidate - champion
    passed = improvement >= threshold
    word = "improves" if improvement >= 0 else "worsens"
    return Check(
        "change", metric, threshold, improvement, passed,
        f"{metric} {word} by {abs(improvement):.4f} over the champion ({candidate:.4f} vs {champion:.4f}); "
        f"needs at least {threshold:+.4f}",
    )


def decide(
    config: GateConfig,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    champion_version: str | None = None,
    champion_error: str | None = None,
) -> GateDecision:
    if not config.absolute and not config.change:
        return GateDecision(False, "keep_champion", ["no thresholds configured: nothing is ever blessed"],
                            champion_version=champion_version)
    checks = [_absolute(m, t, candidate.get(m)) for m, t in sorted(config.absolute.items())]
    reasons: list[str] = []
    if champion_version is None:
        reasons.append("first run: no champion, only absolute thresholds apply")
        if not config.absolute:
            return GateDecision(False, "keep_champion",
                                reasons + ["no absolute thresholds: a first model is never blessed without one"])
    elif champion is None:
        checks.append(Check("change", "*", 0.0, None, False,
                            champion_error or f"champion v{champion_version} could not be evaluated"))
    else:
        checks.extend(_change(m, t, candidate.get(m), champion.get(m)) for m, t in sorted(config.change.items()))
    failed = [c for c in checks if not c.passed]
    blessed = not failed
    reasons.extend(c.reason for c in (failed if failed else checks))
    return GateDecision(blessed, "promote" if blessed else "keep_champion", reasons, checks, champion_version)
