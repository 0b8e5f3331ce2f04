"""Drift between a new drop and the champion's training reference: distances, firing, robustness."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from ml_tasks.data import drift
from ml_tasks.data.drift import DriftThresholds, compare, compute_reference
from ml_tasks.datasets import SYNTHETIC, DatasetSpec
from ml_tasks.datasets.synthetic import generate
from ml_tasks.errors import ConfigError, DataError

ONE = DatasetSpec(name="one", description="one numeric column", target="y", numeric_features=("v",),
                  categorical_features=(), suite="one", registered_model="one")


@pytest.fixture(scope="module")
def reference() -> dict:
    return compute_reference(generate(60_000, seed=1), SYNTHETIC)


def _distances_are_finite(report: drift.DriftReport) -> None:
    for name, stats in report.features.items():
        for measure in ("psi", "js", "ks"):
            value = stats[measure]
            if measure == "ks" and stats["kind"] == "categorical":
                assert value is None
                continue
            if measure == "ks" and 1.0 in (stats["null_fraction_reference"], stats["null_fraction_current"]):
                assert value is None  # no values on one side: KS is undefined, reported as None, never NaN
                continue
            assert value is not None and math.isfinite(value) and value >= 0, (name, measure, value)
    json.dumps(report.to_dict(), allow_nan=False)


def test_same_distribution_shows_no_drift(reference: dict) -> None:
    report = compare(reference, generate(40_000, seed=2), SYNTHETIC)
    assert not report.drifted and report.drifted_features == []
    assert set(report.features) == set(SYNTHETIC.features)
    for name, stats in report.features.items():
        assert stats["psi"] < 0.01 and stats["js"] < 0.05 and stats["fired"] == [], (name, stats)
        if stats["kind"] == "numeric":
            assert stats["ks"] < 0.02
    assert report.label is not None and not report.label["drifted"] and report.label["psi"] < 0.01
    assert (report.rows_reference, report.rows_current) == (60_000, 40_000)
    assert "no drift above thresholds" in report.summary()
    _distances_are_finite(report)


def test_shifted_numerics_fire_psi_and_ks(reference: dict) -> None:
    report = compare(reference, generate(40_000, seed=3, drift=0.5), SYNTHETIC)
    assert report.drifted
    assert report.drifted_features == list(SYNTHETIC.numeric_features)
    for name in SYNTHETIC.numeric_features:
        stats = report.features[name]
        assert stats["fired"] == ["psi", "ks"] and stats["ks"] > 0.15 and stats["mean_shift_in_std"] > 0.4
    for name in SYNTHETIC.categorical_features:
        assert not report.features[name]["drifted"]
    summary = report.summary()
    assert "6 of 8 features drifted" in summary and "x0: psi" in summary and "> 0.2" in summary and "> 0.1" in summary


def test_categorical_mix_change_fires_and_counts_unseen(reference: dict) -> None:
    current = generate(40_000, seed=4)
    rng = np.random.default_rng(0)
    current["segment"] = rng.choice(["retail", "business", "public", "government"], size=len(current), p=[0.2, 0.2, 0.5, 0.1])
    report = compare(reference, current, SYNTHETIC)
    segment = report.features["segment"]
    assert segment["drifted"] and set(segment["fired"]) == {"psi", "js"}
    assert segment["unseen_fraction"] == pytest.approx(0.1, abs=0.01)
    assert segment["unseen_distinct"] == 1 and segment["unseen_categories"] == ["government"]
    assert report.drifted_features == ["segment"]
    assert "segment: psi" in report.summary() and "unseen 9.7% (government)" in report.summary()


@pytest.mark.parametrize("kind", ["normal", "scaled", "ints"])
def test_ks_from_sketch_agrees_with_scipy(kind: str) -> None:
    rng = np.random.default_rng(7)
    n = 100_000
    if kind == "ints":
        ref, cur = rng.poisson(3.0, n), rng.poisson(3.2, n)
    elif kind == "scaled":
        ref, cur = rng.normal(0, 1, n), rng.normal(0.02, 1.2, n)
    else:
        ref, cur = rng.normal(0, 1, n), rng.normal(0.05, 1, n)
    reference = compute_reference(pd.DataFrame({"v": ref}), ONE)
    ks = compare(reference, pd.DataFrame({"v": cur}), ONE).features["v"]["ks"]
    assert ks == pytest.approx(ks_2samp(ref, cur).statistic, abs=0.01)
    assert ks == pytest.approx(ks_2samp(ref, cur).statistic, abs=1 / 2000 + 1e-9)  # the documented bound


def test_ks_from_sampled_sketch_stays_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drift, "SKETCH_ROWS", 50_000)
    rng = np.random.default_rng(8)
    ref, cur = rng.normal(0, 1, 150_000), rng.normal(0.1, 1, 120_000)
    reference = compute_reference(pd.DataFrame({"v": ref}), ONE)
    assert not reference["numeric"]["v"]["sketch_exact"]
    assert reference["numeric"]["v"]["count"] == 150_000
    stats = compare(reference, pd.DataFrame({"v": cur}), ONE).features["v"]
    assert not stats["ks_exact_sample"]
    assert stats["ks"] == pytest.approx(ks_2samp(ref, cur).statistic, abs=0.015)


def test_reference_round_trips_through_json(reference: dict) -> None:
    text = json.dumps(reference, allow_nan=False)
    assert len(text) < 200_000
    restored = json.loads(text)
    current = generate(20_000, seed=5, drift=0.2)
    assert compare(restored, current, SYNTHETIC).to_dict() == compare(reference, current, SYNTHETIC).to_dict()
    assert reference["format_version"] == drift.FORMAT_VERSION and reference["dataset"] == "synthetic"
    assert reference["label"]["frequencies"].keys() == {"0", "1"}
    numeric = reference["numeric"]["x0"]
    assert len(numeric["edges"]) == 9 and len(numeric["bin_fractions"]) == 10 and len(numeric["quantiles"]) == 1001
    assert sum(numeric["bin_fractions"]) == pytest.approx(1.0)


def _awkward(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = generate(n, seed=seed)
    frame["x0"] = np.where(rng.random(n) < 0.9, np.nan, frame["x0"])  # NaN-heavy
    frame["x1"] = 3.0  # constant
    frame["x2"] = np.nan  # all missing
    frame["x3"] = rng.integers(0, 4, n)  # ints with ties
    frame.loc[frame.index[:50], "x4"] = np.inf  # infinities count as missing
    frame["x5"] = pd.array(rng.integers(0, 10, n), dtype="Int64")
    frame.loc[frame.index[:100], "x5"] = pd.NA
    segment = frame["segment"].astype("str")
    frame["segment"] = segment.where(rng.random(n) > 0.3)  # pandas 3 str dtype with missing values
    frame["channel"] = "web"  # constant categorical
    return frame


def test_nan_heavy_and_constant_columns_give_finite_distances() -> None:
    reference = compute_reference(_awkward(30_000, 1), SYNTHETIC)
    json.dumps(reference, allow_nan=False)
    assert reference["numeric"]["x2"]["count"] == 0 and reference["numeric"]["x2"]["quantiles"] == []
    assert reference["numeric"]["x1"]["edges"] == [3.0]
    assert reference["numeric"]["x4"]["null_fraction"] == pytest.approx(50 / 30_000)
    same = compare(reference, _awkward(20_000, 2), SYNTHETIC)
    assert same.features["x2"]["ks"] is None  # nothing to compare on either side
    for name in ("x0", "x1", "x3", "x4", "x5"):
        assert same.features[name]["ks"] is not None
    assert same.features["x1"]["psi"] == pytest.approx(0.0) and same.features["x1"]["ks"] < 0.001
    assert not same.drifted, same.summary()
    for stats in same.features.values():
        for measure in ("psi", "js"):
            assert math.isfinite(stats[measure])
    # the clean data against the awkward reference: missingness and the constants drift, nothing crashes
    clean = compare(reference, generate(20_000, seed=3), SYNTHETIC)
    _distances_are_finite(clean)
    assert {"x0", "x1", "x2", "segment", "channel"} <= set(clean.drifted_features)
    assert clean.features["channel"]["unseen_distinct"] == 3
    # and the awkward data against a clean reference
    dirty = compare(compute_reference(generate(20_000, seed=4), SYNTHETIC), _awkward(20_000, 5), SYNTHETIC)
    assert dirty.features["x2"]["ks"] is None and dirty.features["x2"]["null_fraction_current"] == 1.0
    assert "x2" in dirty.drifted_features
    json.dumps(dirty.to_dict(), allow_nan=False)


def test_missingness_jump_fires_psi(reference: dict) -> None:
    current = generate(20_000, seed=6)
    current.loc[current.index[: len(current) // 5], "x3"] = np.nan
    stats = compare(reference, current, SYNTHETIC).features["x3"]
    assert "psi" in stats["fired"] and stats["null_fraction_change"] == pytest.approx(0.2)
    assert stats["ks"] < 0.03  # the present values still follow the reference


def test_numeric_coded_categories_match_across_int_and_float() -> None:
    spec = DatasetSpec(name="codes", description="", target="y", numeric_features=(), categorical_features=("c",),
                       suite="codes", registered_model="codes")
    rng = np.random.default_rng(0)
    reference = compute_reference(pd.DataFrame({"c": rng.integers(1, 5, 10_000), "y": rng.integers(0, 2, 10_000)}), spec)
    codes = rng.integers(1, 5, 10_000).astype(float)
    codes[:10] = np.nan
    report = compare(json.loads(json.dumps(reference)), pd.DataFrame({"c": codes}), spec)
    assert report.features["c"]["unseen_fraction"] == 0.0 and not report.drifted
    assert report.label is None  # no target in the new drop


def test_label_shift_is_reported(reference: dict) -> None:
    current = generate(20_000, seed=7)
    current["label"] = 1
    report = compare(reference, current, SYNTHETIC)
    assert report.drifted_features == [] and report.drifted
    assert report.label is not None and report.label["drifted"] and report.label["current"] == {"1": 1.0}
    assert "label 'label': SHIFTED" in report.summary()


def test_missing_column_raises_a_data_error_naming_it(reference: dict) -> None:
    with pytest.raises(DataError, match="x3"):
        compare(reference, generate(1_000, seed=8).drop(columns=["x3"]), SYNTHETIC)
    with pytest.raises(DataError, match="channel"):
        compute_reference(generate(1_000, seed=8).drop(columns=["channel"]), SYNTHETIC)
    with pytest.raises(DataError, match="x1"):
        compare(reference, generate(1_000, seed=8).assign(x1="text"), SYNTHETIC)
    with pytest.raises(DataError, match="no rows"):
        compare(reference, generate(10, seed=8).iloc[:0], SYNTHETIC)


def test_reference_for_another_data_set_is_refused(reference: dict) -> None:
    with pytest.raises(ConfigError, match="synthetic"):
        compare(reference, pd.DataFrame({"v": [1.0]}), ONE)
    with pytest.raises(DataError, match="format version"):
        compare({**reference, "format_version": 99}, generate(10, seed=1), SYNTHETIC)


def test_thresholds_round_trip_and_validate() -> None:
    thresholds = DriftThresholds.from_dict({"psi": 0.3, "ks": 0.05})
    assert thresholds == DriftThresholds(psi=0.3, ks=0.05, js=0.1)
    assert DriftThresholds.from_dict(thresholds.to_dict()) == thresholds
    assert DriftThresholds.from_dict(None) == DriftThresholds()
    with pytest.raises(ConfigError, match="unknown"):
        DriftThresholds.from_dict({"chi2": 0.1})
    with pytest.raises(ConfigError, match="positive"):
        DriftThresholds.from_dict({"psi": -1})


def test_the_drift_stage_and_the_run_config_share_one_definition_of_the_thresholds() -> None:
    from ml_tasks.config import DriftConfig

    assert DriftThresholds.from_dict(DriftConfig().thresholds) == DriftThresholds()
    for bad in ({"ks": 2}, {"js": 0}, {"psi": 11}, {"psi": "0.3"}, {"ks": float("inf")}):
        with pytest.raises(ConfigError):
            DriftThresholds.from_dict(bad)
        with pytest.raises(ConfigError):
            DriftConfig.from_params("warn", bad)


def test_custom_thresholds_change_what_fires(reference: dict) -> None:
    current = generate(20_000, seed=9, drift=0.5)
    # The largest thresholds allowed: KS and JS never exceed 1, and drift is a distance strictly above its threshold.
    report = compare(reference, current, SYNTHETIC, DriftThresholds(psi=10.0, ks=1.0, js=1.0))
    assert not report.drifted and report.features["x0"]["ks"] > 0.15  # raw distances are always reported
    assert report.to_dict()["thresholds"] == {"psi": 10.0, "ks": 1.0, "js": 1.0}


def test_a_regression_target_drifts_like_a_numeric_feature():
    import dataclasses

    import numpy as np
    import pandas as pd

    from ml_tasks.data import drift
    from ml_tasks.datasets import SYNTHETIC

    spec = dataclasses.replace(SYNTHETIC, task="regression", classes=(), primary_metric="rmse", easy_cases=(),
                               target="price")
    rng = np.random.default_rng(0)

    def frame(shift: float) -> pd.DataFrame:
        out = pd.DataFrame({name: rng.normal(size=4000) for name in spec.numeric_features})
        out["segment"], out["channel"] = "retail", "web"
        out["price"] = rng.normal(1000 + shift, 100, size=4000)
        return out

    reference = drift.compute_reference(frame(0.0), spec)
    assert reference["label"]["kind"] == "numeric" and len(reference["label"]["quantiles"]) > 10
    stable = drift.compare(reference, frame(0.0), spec)
    shifted = drift.compare(reference, frame(150.0), spec)
    assert not stable.label["drifted"] and shifted.label["drifted"]
    assert shifted.label["current_mean"] > shifted.label["reference_mean"] + 100
    assert "target 'price': SHIFTED" in shifted.summary()
