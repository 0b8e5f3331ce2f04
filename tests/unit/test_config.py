import re
from datetime import UTC, datetime

import pytest

from ml_tasks.config import (
    DEFAULT_ABSOLUTE_THRESHOLDS,
    DEFAULT_CHANGE_THRESHOLDS,
    AugmentConfig,
    DriftConfig,
    DriftThresholds,
    GateConfig,
    RunConfig,
    RunContext,
    TrainConfig,
    TuneConfig,
    run_key_for,
    safe_key,
)
from ml_tasks.errors import ConfigError, UnsafePathError
from ml_tasks.params import object_param_schema, param_schema


def test_run_key_partitions_by_data_interval():
    start = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)
    assert run_key_for(start, "manual__x") == "20260102T020000Z"
    assert run_key_for(None, "manual__2026-01-02T02:00:00+00:00") == "manual__2026-01-02T02_00_00_00_00"


def test_safe_key_never_escapes():
    assert safe_key("../../etc/passwd") == "etc_passwd"
    assert "/" not in safe_key("a/../b")
    for raw in ("../", "../..", "", "///"):
        with pytest.raises(UnsafePathError):
            safe_key(raw)


def test_run_context_refuses_unsafe_keys(ratchet_home):
    with pytest.raises(UnsafePathError):
        RunContext("synthetic", "../escape")
    ctx = RunContext("synthetic", "20260101T020000Z")
    assert ctx.staging_dir == ratchet_home / "staging" / "synthetic" / "20260101T020000Z"


def test_params_build_typed_config():
    config = RunConfig.from_params({
        "dataset": "synthetic", "tuning_trials": 3, "absolute_thresholds": {"roc_auc": 0.8},
        "change_thresholds": {},
    })
    assert config.tune.trials == 3
    assert config.gate == GateConfig({"roc_auc": 0.8}, {})


@pytest.mark.parametrize("params", [
    {"dataset": "nope"},
    {"dataset": "synthetic", "tuning_trials": 0},
    {"dataset": "synthetic", "tuning_sampler": "grid-of-doom"},
    {"dataset": "synthetic", "absolute_thresholds": {"made_up": 1.0}},
])
def test_invalid_params_are_refused(params):
    with pytest.raises(ConfigError):
        RunConfig.from_params(params)


def test_tune_config_bounds():
    with pytest.raises(ConfigError):
        TuneConfig(trials=1000)


def test_a_param_left_out_takes_the_same_default_as_the_dag():
    config = RunConfig.from_params({"dataset": "synthetic"})
    assert config == RunConfig("synthetic")
    assert config.gate.absolute == DEFAULT_ABSOLUTE_THRESHOLDS and config.gate.change == DEFAULT_CHANGE_THRESHOLDS
    assert config.drift == DriftConfig() and config.tune == TuneConfig() and config.train == TrainConfig()


def test_param_schema_is_the_fields_default_and_bounds():
    assert param_schema(TuneConfig, "trials") == {"default": 6, "type": "integer", "minimum": 1, "maximum": 500}
    assert param_schema(TrainConfig, "adversarial_epsilon") == {"default": 0.0, "type": "number", "minimum": 0,
                                                                "maximum": 1}
    assert param_schema(DriftConfig, "action") == {"default": "warn", "type": "string", "enum": ["warn", "stop"]}
    assert param_schema(GateConfig, "require_confidence") == {"default": True, "type": "boolean"}
    assert param_schema(TrainConfig, "family") == param_schema(TuneConfig, "family")  # one Param, two configs
    drift = object_param_schema(DriftThresholds)
    assert drift["default"] == {"psi": 0.2, "ks": 0.1, "js": 0.1} == DriftConfig().thresholds
    assert drift["properties"]["psi"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 10}
    assert drift["additionalProperties"] is False


@pytest.mark.parametrize("build, param", [
    (lambda: TuneConfig(trials=501), "tuning_trials"),
    (lambda: TuneConfig(trials=True), "tuning_trials"),  # a bool is not an integer
    (lambda: TuneConfig(epochs=2.5), "tuning_epochs"),
    (lambda: TuneConfig(pruner="never"), "tuning_pruner"),
    (lambda: TrainConfig(max_epochs=0), "max_epochs"),
    (lambda: TrainConfig(adversarial_epsilon=1.5), "adversarial_epsilon"),
    (lambda: TrainConfig(family="svm"), "model_family"),
    (lambda: GateConfig(require_confidence="yes"), "require_confidence"),
    (lambda: RunConfig("synthetic", cv_folds=11), "cv_folds"),
    (lambda: AugmentConfig(noise_copies=6), "augment_noise_copies"),
    (lambda: AugmentConfig(smote_ratio=float("nan")), "smote_ratio"),
    (lambda: DriftConfig(action="panic"), "drift_action"),
    (lambda: DriftConfig(ks=2), "drift_thresholds.ks"),
    (lambda: DriftThresholds(psi=0), "drift_thresholds.psi"),
])
def test_configs_refuse_out_of_bounds_values_naming_the_param(build, param):
    with pytest.raises(ConfigError, match=re.escape(param) + " must be"):
        build()


def test_augmentation_and_review_params_reach_the_run_config():
    from ml_tasks.config import RunConfig

    config = RunConfig.from_params({"dataset": "synthetic", "augment_noise_copies": 2, "smote_ratio": 0.5,
                                    "cv_folds": 5, "require_approval": True, "slice_thresholds": {"roc_auc": 0.7}})
    assert config.augment == {"noise": {"copies": 2, "scale": 0.05}, "smote": {"ratio": 0.5}}
    assert config.cv_folds == 5 and config.require_approval and config.gate.slice_absolute == {"roc_auc": 0.7}
    plain = RunConfig.from_params({"dataset": "synthetic"})
    assert plain.augment == {} and not plain.require_approval and plain.gate.require_confidence


def test_local_uris_from_params_are_confined_to_the_allowed_roots(ratchet_home, tmp_path, monkeypatch):
    from ml_tasks.config import confined_uri

    inside = ratchet_home / "landing" / "synthetic" / "2026-01-02"
    inside.mkdir(parents=True)
    assert confined_uri(inside.as_uri(), "source_uri") == inside.as_uri()
    assert confined_uri("s3://bucket/prefix", "source_uri") == "s3://bucket/prefix"
    for uri in ("file:///etc", "file:///", f"{inside.as_uri()}/../../../../..", "file://otherhost/tmp"):
        with pytest.raises(UnsafePathError):
            confined_uri(uri, "source_uri")
    outside = tmp_path / "drops"
    outside.mkdir()
    escape = ratchet_home / "escape"
    escape.symlink_to("/etc")
    with pytest.raises(UnsafePathError, match="RATCHET_LOCAL_ROOTS"):
        confined_uri(outside.as_uri(), "source_uri")
    with pytest.raises(UnsafePathError):
        confined_uri(escape.as_uri(), "source_uri")  # a symlink inside a root that points out of it
    monkeypatch.setenv("RATCHET_LOCAL_ROOTS", str(outside))
    assert confined_uri(outside.as_uri(), "source_uri") == outside.as_uri()


def test_the_nightly_sync_refuses_a_source_outside_the_roots(ratchet_home):
    from ml_tasks import pipeline

    ctx = RunContext("synthetic", "20260102T020000Z")
    config = RunConfig.from_params({"dataset": "synthetic", "source_uri": "file:///etc"})
    with pytest.raises(UnsafePathError, match="outside the allowed local roots"):
        pipeline.sync(ctx, config, "2026-01-02")
    assert not ctx.staging_dir.exists()
