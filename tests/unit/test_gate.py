from ml_tasks.config import GateConfig
from ml_tasks.gate import decide

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
    config = GateConfig({"roc_auc": 0.5}, {"roc_auc": 0.01})
    assert decide(config, CANDIDATE, CHAMPION, "3").blessed  # +0.02
    worse = decide(config, {**CANDIDATE, "roc_auc": 0.875}, CHAMPION, "3")
    assert not worse.blessed and worse.decision == "keep_champion"
    assert any("worsens" in r for r in worse.reasons)


def test_lower_is_better_metrics():
    config = GateConfig({"log_loss": 0.4}, {"log_loss": 0.01})
    assert decide(config, CANDIDATE, CHAMPION, "1").blessed  # 0.30 vs 0.35: improves by 0.05
    assert not decide(config, {**CANDIDATE, "log_loss": 0.345}, CHAMPION, "1").blessed
    assert not decide(GateConfig({"log_loss": 0.2}), CANDIDATE, None, None).blessed


def test_equal_candidate_needs_strict_improvement_when_threshold_positive():
    assert not decide(GateConfig({}, {"roc_auc": 0.001}), CHAMPION, CHAMPION, "2").blessed


def test_champion_that_cannot_be_scored_blocks_promotion():
    decision = decide(GateConfig({"roc_auc": 0.5}, {"roc_auc": 0.0}), CANDIDATE, None, "4", "boom")
    assert not decision.blessed
    assert "boom" in decision.reasons


def test_nan_metric_fails():
    assert not decide(GateConfig({"roc_auc": 0.5}), {"roc_auc": float("nan")}, None, None).blessed
