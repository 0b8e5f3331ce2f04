from ml_tasks.config import GateConfig
from ml_tasks.release.gate import decide

CANDIDATE = {"roc_auc": 0.90, "accuracy": 0.85, "log_loss": 0.30}
CHAMPION = {"roc_auc": 0.88, "accuracy": 0.86, "log_loss": 0.35}


def test_no_thresholds_never_blesses():
    decision = decide(GateConfig(), CANDIDATE, None, None)
    assert not decision.blessed
    assert "no thresholds" in decision.reasons[0]


def test_first_run_uses_absolute_thresholds_only():
    decision = decide(GateConfig({"roc_auc": 0.8}, {"roc_auc": 0.5}), CANDIDATE, None, None)
    assert decision.blessed and decision.decision == "promote"
    assert any("first run" in r for r in decision.reasons)
    assert [c.kind for c in decision.checks] == ["absolute"]


def test_first_run_without_absolute_thresholds_is_not_blessed():
    decision = decide(GateConfig({}, {"roc_auc": 0.0}), CANDIDATE, None, None)
    assert not decision.blessed


def test_absolute_threshold_failure_names_metric_and_values():
    decision = decide(GateConfig({"roc_auc": 0.95}), CANDIDATE, None, None)
    assert not decision.blessed
    assert any("roc_auc 0.9000 < 0.95" in r for r in decision.reasons)


def test_change_threshold_against_champion():
    config = GateConfig({"roc_auc": 0.5}, {"roc_auc": 0.01}, require_confidence=False)  # point estimates
    assert decide(config, CANDIDATE, CHAMPION, "3").blessed  # +0.02
    worse = decide(config, {**CANDIDATE, "roc_auc": 0.875}, CHAMPION, "3")
    assert not worse.blessed and worse.decision == "keep_champion"
    assert any("worsens" in r for r in worse.reasons)


def test_lower_is_better_metrics():
    config = GateConfig({"log_loss": 0.4}, {"log_loss": 0.01}, require_confidence=False)  # point estimates
    assert decide(config, CANDIDATE, CHAMPION, "1").blessed  # 0.30 vs 0.35: improves by 0.05
    assert not decide(config, {**CANDIDATE, "log_loss": 0.345}, CHAMPION, "1").blessed
    assert not decide(GateConfig({"log_loss": 0.2}), CANDIDATE, None, None).blessed


def test_equal_candidate_needs_strict_improvement_when_threshold_positive():
    assert not decide(GateConfig({}, {"roc_auc": 0.001}), CHAMPION, CHAMPION, "2").blessed


def test_champion_that_cannot_be_scored_blocks_promotion():
    decision = decide(GateConfig({"roc_auc": 0.5}, {"roc_auc": 0.0}), CANDIDATE, None, "4", "boom")
    assert not decision.blessed
    assert "boom" in decision.reasons


def test_require_confidence_fails_a_change_whose_interval_is_nan_or_missing():
    """A claimed improvement with no interval is unverified: with require_confidence it fails, never falls back."""
    config = GateConfig({"roc_auc": 0.5}, {"roc_auc": 0.01})
    nan = {"roc_auc": {"improvement": 0.02, "lower": float("nan"), "upper": float("nan"), "confidence": 0.95}}
    for intervals in (nan, {}, None):
        decision = decide(config, CANDIDATE, CHAMPION, "3", intervals=intervals)
        assert not decision.blessed
        assert any("no confidence interval could be computed" in r for r in decision.reasons)
    assert decide(GateConfig({"roc_auc": 0.5}, {"roc_auc": 0.01}, require_confidence=False), CANDIDATE, CHAMPION, "3",
                  intervals=nan).blessed  # switched off: the point estimate decides, as documented


def test_a_skipped_behavioural_test_is_recorded_as_skipped_and_fails_only_when_required():
    skipped = {"test": "easy", "kind": "easy_case", "value": None, "threshold": 0.9, "passed": None,
               "status": "skipped", "required": False, "detail": "skipped: 3 held-out rows match 'x > 9' (needs 10)"}
    decision = decide(GateConfig({"roc_auc": 0.5}), CANDIDATE, None, None, behaviour=[skipped])
    assert decision.blessed
    check = next(c for c in decision.checks if c.kind == "behaviour")
    assert check.status == "skipped" and check.passed is None
    assert any("skipped: 3 held-out rows" in r for r in decision.reasons)
    required = {**skipped, "passed": False, "status": "failed", "required": True,
                "detail": "required, but only 3 held-out rows match 'x > 9' (needs 10)"}
    decision = decide(GateConfig({"roc_auc": 0.5}), CANDIDATE, None, None, behaviour=[required])
    assert not decision.blessed and any("required, but only 3" in r for r in decision.reasons)


def test_behavioural_tests_with_too_few_rows_are_skipped_not_passed():
    import dataclasses

    import pandas as pd

    from ml_tasks.datasets import SYNTHETIC
    from ml_tasks.release.evaluation import behavioural_tests
    from ml_tasks.release.gate import behaviour_status

    features = pd.DataFrame({c: [0.0] * 20 for c in ("x0", "x1", "x2", "x3", "x4", "x5")} |
                            {"segment": ["a"] * 20, "channel": ["web"] * 20})
    results = behavioural_tests(lambda frame: [0.5] * len(frame), features, SYNTHETIC)
    easy = [r for r in results if r["kind"] == "easy_case"]
    assert easy and all(r["status"] == "skipped" and r["passed"] is None for r in easy), easy
    assert all(behaviour_status(r) == "skipped" for r in easy)
    required = dataclasses.replace(SYNTHETIC, required_behaviour=tuple(r["test"] for r in easy))
    forced = [r for r in behavioural_tests(lambda frame: [0.5] * len(frame), features, required) if r["kind"] == "easy_case"]
    assert all(r["status"] == "failed" and r["passed"] is False for r in forced)


def test_nan_metric_fails():
    assert not decide(GateConfig({"roc_auc": 0.5}), {"roc_auc": float("nan")}, None, None).blessed


def _interval(lower, upper, improvement=None):
    return {"lower": lower, "upper": upper, "confidence": 0.95,
            "improvement": (lower + upper) / 2 if improvement is None else improvement}


def test_better_by_less_than_its_interval_is_not_promoted():
    # +0.02 on the point estimate, but the interval reaches below the +0.001 threshold
    decision = decide(GateConfig({}, {"roc_auc": 0.001}), CANDIDATE, CHAMPION, "1",
                      intervals={"roc_auc": _interval(-0.004, 0.041, 0.02)})
    assert not decision.blessed
    (check,) = decision.checks
    assert check.interval == (-0.004, 0.041) and "lower bound does not clear" in check.reason


def test_interval_clearing_the_threshold_promotes_and_is_recorded():
    decision = decide(GateConfig({}, {"roc_auc": 0.001}), CANDIDATE, CHAMPION, "1",
                      intervals={"roc_auc": _interval(0.006, 0.034)})
    assert decision.blessed and "[+0.0060, +0.0340]" in decision.reasons[0]


def test_exact_tie_with_zero_threshold_passes_and_with_positive_threshold_fails():
    tie = {"roc_auc": 0.88}
    assert decide(GateConfig({}, {"roc_auc": 0.0}), tie, tie, "1", intervals={"roc_auc": _interval(0.0, 0.0)}).blessed
    assert not decide(GateConfig({}, {"roc_auc": 0.001}), tie, tie, "1", intervals={"roc_auc": _interval(0.0, 0.0)}).blessed


def test_lower_is_better_interval_is_of_the_decrease():
    decision = decide(GateConfig({}, {"log_loss": 0.01}), CANDIDATE, CHAMPION, "1",
                      intervals={"log_loss": _interval(0.02, 0.08)})
    assert decision.blessed and "log_loss improves by 0.0500" in decision.reasons[0]


def test_slices_must_meet_their_thresholds():
    slices = {"SEX=1": {"rows": 900, "roc_auc": 0.91}, "SEX=2": {"rows": 850, "roc_auc": 0.61}}
    decision = decide(GateConfig({"roc_auc": 0.8}, {}, slice_absolute={"roc_auc": 0.7}), CANDIDATE, None, None,
                      slices=slices)
    assert not decision.blessed
    assert any("slice SEX=2 (850 rows): roc_auc 0.6100 < 0.7" in r for r in decision.reasons)


def test_a_failed_behavioural_test_blocks_promotion():
    behaviour = [{"test": "invariant to x3", "threshold": 0.05, "value": 0.2, "passed": False,
                  "detail": "mean |change in probability| 0.2000 when x3 is shuffled"}]
    decision = decide(GateConfig({"roc_auc": 0.8}, {}), CANDIDATE, None, None, behaviour=behaviour)
    assert not decision.blessed and any("invariant to x3" in r for r in decision.reasons)


def test_confidence_can_be_switched_off_for_point_estimates():
    decision = decide(GateConfig({}, {"roc_auc": 0.001}, require_confidence=False), CANDIDATE, CHAMPION, "1",
                      intervals={"roc_auc": _interval(-0.004, 0.041)})
    assert decision.blessed


def test_a_run_whose_candidate_is_better_by_less_than_its_interval_keeps_the_champion(ratchet_home):
    """The gate stage end to end on scores: a real paired bootstrap, the blessing record, the MLflow tags."""
    import json

    import numpy as np

    from ml_tasks import tracking
    from ml_tasks.config import RunConfig, RunContext
    from ml_tasks.pipeline import gate
    from ml_tasks.release.metrics import classification_metrics, paired_bootstrap

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    champion = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(size=len(y)))))
    # the candidate is the champion plus a little noise: its AUC differs by a hair, either way, by luck
    candidate = np.clip(champion + rng.normal(scale=0.02, size=len(y)), 0.001, 0.999)
    evaluated = {
        "candidate": classification_metrics(y, candidate), "champion": classification_metrics(y, champion),
        "champion_version": "1", "expected_champion": "1",
        "intervals": {m: i.to_dict() for m, i in paired_bootstrap(y, candidate, champion, ["roc_auc"]).items()},
    }
    interval = evaluated["intervals"]["roc_auc"]
    assert interval["lower"] < 0 < interval["upper"]
    ctx = RunContext("synthetic", "ci-run")
    prepared = {"mlflow_run_id": tracking.ensure_parent_run(ctx)}
    config = RunConfig.from_params({"dataset": "synthetic", "absolute_thresholds": {"roc_auc": 0.6},
                                    "change_thresholds": {"roc_auc": 0.0}})
    record = gate(ctx, config, prepared, evaluated)
    assert not record["blessed"] and record["decision"] == "keep_champion"
    blessing = json.loads((ctx.report_dir / "blessing.json").read_text())
    assert blessing["intervals"]["roc_auc"] == interval and blessing["thresholds"]["require_confidence"] is True
    tags = tracking.client().get_run(prepared["mlflow_run_id"]).data.tags
    assert tags["ratchet.gate.decision"] == "keep_champion" and "interval" in tags["ratchet.gate.reasons"]


def test_a_more_accurate_but_brittle_candidate_is_kept_out():
    config = GateConfig({"roc_auc": 0.5}, {"roc_auc": 0.01}, require_confidence=False, robustness={"noise_0.5": 0.7})
    brittle = {"clean": 0.86, "noise_0.5": 0.61}
    decision = decide(config, CANDIDATE, CHAMPION, "3", robustness=brittle)  # +0.02 roc_auc over the champion
    assert not decision.blessed
    assert "accuracy under noise_0.5 0.6100 < 0.7" in decision.reasons
    assert decide(config, CANDIDATE, CHAMPION, "3", robustness={"clean": 0.86, "noise_0.5": 0.74}).blessed


def test_a_robustness_measure_the_model_did_not_get_is_skipped_not_passed():
    config = GateConfig({"roc_auc": 0.5}, robustness={"fgsm_0.1": 0.6})
    decision = decide(config, CANDIDATE, None, None, robustness={"clean": 0.86, "noise_0.5": 0.7})  # scikit-learn: no FGSM
    check = next(c for c in decision.checks if c.kind == "robustness")
    assert check.status == "skipped" and check.passed is None and decision.blessed
    assert any("fgsm_0.1: not measured for this model" in r for r in decision.reasons)


def test_robustness_thresholds_are_checked_by_the_config():
    import pytest

    from ml_tasks.config import RunConfig
    from ml_tasks.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown measure 'noise_0.3'"):
        GateConfig(robustness={"noise_0.3": 0.5})
    with pytest.raises(ConfigError, match=r"accuracy in \[0, 1\]"):
        GateConfig(robustness={"noise_0.5": 1.5})
    config = RunConfig.from_params({"dataset": "synthetic", "robustness_thresholds": {"fgsm_0.1": 0.55}})
    assert config.gate.robustness == {"fgsm_0.1": 0.55}


def test_the_blessing_record_shows_the_robustness_that_kept_a_candidate_out(ratchet_home):
    import json

    from ml_tasks import tracking
    from ml_tasks.config import RunConfig, RunContext
    from ml_tasks.pipeline import gate

    ctx = RunContext("synthetic", "robust-run")
    prepared = {"mlflow_run_id": tracking.ensure_parent_run(ctx)}
    config = RunConfig.from_params({"dataset": "synthetic", "absolute_thresholds": {"roc_auc": 0.6},
                                    "change_thresholds": {}, "robustness_thresholds": {"noise_0.5": 0.7}})
    evaluated = {"candidate": CANDIDATE, "champion": None, "champion_version": None, "expected_champion": None,
                 "robustness": {"clean": 0.86, "noise_0.5": 0.61}}
    record = gate(ctx, config, prepared, evaluated)
    assert not record["blessed"]
    blessing = json.loads((ctx.report_dir / "blessing.json").read_text())
    assert blessing["thresholds"]["robustness"] == {"noise_0.5": 0.7}
    assert {"kind": "robustness", "metric": "noise_0.5", "value": 0.61, "status": "failed"}.items() <= next(
        c for c in blessing["checks"] if c["kind"] == "robustness").items()
    tags = tracking.client().get_run(prepared["mlflow_run_id"]).data.tags
    assert "accuracy under noise_0.5 0.6100 < 0.7" in tags["ratchet.gate.reasons"]  # what the Models view lists
