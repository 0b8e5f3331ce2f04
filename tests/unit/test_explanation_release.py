"""Explanations on the release side: evaluation's attributions, plots and partial dependence; the gate's attribution
check; the version tags, the model card and the Models view that show them.

The models are small scikit-learn fits behind our real pyfunc class (no MLflow), except one evaluation end to end
on a registered version.
"""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ml_tasks.config import GateConfig
from ml_tasks.datasets import SYNTHETIC
from ml_tasks.datasets.synthetic import generate

SPEC = dataclasses.replace(SYNTHETIC, attribution_gate_min_ndcg=0.8)
MULTI = dataclasses.replace(SYNTHETIC, name="tiers", task="multiclass", classes=("a", "b", "c"),
                            primary_metric="f1_macro")
PASSING = {"roc_auc": 0.9, "accuracy": 0.85}


class Loaded:
    """What `load_checked` returns, as far as evaluation uses it: `predict` on raw rows and the Python model."""

    def __init__(self, python_model):
        self.python_model = python_model

    def unwrap_python_model(self):
        return self.python_model

    def predict(self, frame):
        return self.python_model.predict(None, frame)


class Compressed(Loaded):
    def unwrap_python_model(self):
        raise AttributeError("a TFLite runtime holds no Python model")


def _fitted(frame: pd.DataFrame, labels, family: str = "logistic_regression", spec=SYNTHETIC, **params) -> Loaded:
    from ml_tasks.data.transform import FittedTransform
    from ml_tasks.release.pyfunc import RatchetClassifier, target_record
    from ml_tasks.training.sklearn_models import build_sklearn

    model = RatchetClassifier()
    model.transform = FittedTransform.fit(frame, list(spec.numeric_features), list(spec.categorical_features))
    model.network, model.explanation_path, model.target = None, None, target_record(spec)
    model.estimator = build_sklearn(family, params, 0, spec.task).fit(model.transform.apply(frame), labels)
    return Loaded(model)


@pytest.fixture(scope="module")
def drop():
    train, test = generate(2000, seed=0), generate(600, seed=1)
    return train, test[list(SYNTHETIC.features)]


@pytest.fixture(scope="module")
def linear(drop):
    train, _ = drop
    return _fitted(train, train["label"].to_numpy())


def _scores(model: Loaded, spec=SYNTHETIC):
    from ml_tasks.release.pyfunc import scores_from_frame

    return lambda rows: scores_from_frame(model.predict(rows), spec)


def test_partial_dependence_follows_the_model_and_keeps_categories_and_integers(drop, linear, tmp_path):
    from ml_tasks.release.explanation import DEPENDENCE_GRID, dependence_grid, dependence_plot, partial_dependence

    _, rows = drop
    curve, segment = partial_dependence(_scores(linear), rows.head(40), ["x0", "segment"], {"x0"}, rows)
    ice = np.asarray(curve["ice"])
    assert ice.shape == (40, len(curve["grid"])) and len(curve["grid"]) == DEPENDENCE_GRID
    assert np.all(np.diff(curve["grid"]) > 0) and np.all(np.diff(curve["pd"]) > 0)  # x0 has weight +1.5
    assert np.all(np.diff(ice, axis=1) > 0)  # logistic: every row's ICE line rises with it
    np.testing.assert_allclose(curve["pd"], ice.mean(axis=0), atol=1e-6)
    assert segment["grid"] == list(rows["segment"].value_counts().index)  # the most frequent first
    assert dependence_plot([curve, segment], tmp_path / "pd.png", "p").read_bytes()[:4] == b"\x89PNG"
    counts = pd.Series([3, 1, 4, 1, 5, 9, 2, 6], dtype="int64")
    grid = dependence_grid(counts, numeric=True)
    assert all(float(v).is_integer() for v in grid) and grid == sorted(set(grid))


def test_the_primary_score_of_a_multiclass_row_is_its_originally_predicted_class():
    from ml_tasks.release.explanation import primary_score

    matrix = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    assert primary_score(matrix).tolist() == [0.7, 0.6]
    assert primary_score(np.array([[0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]), np.array([0, 2])).tolist() == [0.2, 0.1]
    assert primary_score(np.array([0.3, 0.9])).tolist() == [0.3, 0.9]


def test_multiclass_dependence_keeps_each_rows_class(drop):
    from ml_tasks.release.explanation import partial_dependence

    train, rows = drop
    codes = np.digitize(train["x0"].to_numpy(), [-0.5, 0.5])
    model = _fitted(train, codes, spec=MULTI)
    predict = _scores(model, MULTI)
    moving, still = partial_dependence(predict, rows.head(30), ["x0", "x1"], {"x0", "x1"})
    base = np.asarray(predict(rows.head(30)))
    # x0 makes the classes: moved far enough, a row's own class loses (below 1/3, which a most-probable class never is)
    assert np.asarray(moving["ice"]).shape == (30, len(moving["grid"])) and np.min(moving["ice"]) < 1 / 3
    # x1 plays (almost) no part: each row's ICE line stays near its predicted class's probability
    ice = np.asarray(still["ice"])
    np.testing.assert_allclose(ice, np.repeat(base.max(axis=1)[:, None], ice.shape[1], axis=1), atol=0.1)


def test_evaluation_explains_candidate_and_champion_on_the_same_rows(drop, linear, tmp_path):
    from ml_tasks.constants import ATTRIBUTION_TOP_K, GLOBAL_ATTRIBUTIONS_FILE
    from ml_tasks.release.explanation import (
        ATTRIBUTIONS_FILE,
        BEESWARM_FILE,
        DEPENDENCE_FILE,
        EXPLANATION_ROWS,
        SHIFT_FILE,
        explain_evaluation,
    )

    train, held_out = drop
    forest = _fitted(train, train["label"].to_numpy(), "hist_gradient_boosting", max_iter=30)
    record = explain_evaluation(forest, _scores(forest), linear, held_out, SPEC, tmp_path, "3")
    rows = held_out.loc[pd.read_csv(tmp_path / ATTRIBUTIONS_FILE)["row"]]  # the seeded sample, in its order
    assert record["rows"] == len(rows) == EXPLANATION_ROWS < len(held_out) and record["skipped"] == {}
    assert record["explainer"]["method"] == "tree_shap" and record["champion_explainer"]["method"] == "linear_shap"
    assert record["additivity_error"] <= 1e-6 and record["explainer"]["additivity_error"] == record["additivity_error"]
    assert len(record["global"]) == min(ATTRIBUTION_TOP_K, len(SYNTHETIC.features))
    assert record["global"][0]["feature"] == "x0" and record["global"][-1]["feature"] == "x3"  # the rule's weights
    shift = record["shift"]
    assert shift["threshold"] == 0.8 and shift["ndcg"] > 0.9 and not shift["shifted"]
    written = json.loads((tmp_path / GLOBAL_ATTRIBUTIONS_FILE).read_text())
    assert written["rows"] == len(rows) and written["explainer"]["method"] == "tree_shap"
    assert [g["feature"] for g in written["global"]][:3] == [g["feature"] for g in record["global"]][:3]
    attributions = pd.read_csv(tmp_path / ATTRIBUTIONS_FILE)
    assert "attribution.segment" in attributions and attributions["row"].is_unique
    assert list(attributions["row"]) == list(held_out.sample(EXPLANATION_ROWS, random_state=0).index)  # seeded
    np.testing.assert_allclose(attributions.filter(like="attribution.").sum(axis=1) + attributions["base_value"],
                               attributions["output"], atol=1e-6)
    for name in (BEESWARM_FILE, DEPENDENCE_FILE):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / SHIFT_FILE).read_text())["champion_version"] == "3"


def test_a_champion_that_cannot_be_explained_is_recorded_as_skipped(drop, linear, tmp_path):
    from ml_tasks.release.explanation import explain_evaluation

    _, rows = drop
    record = explain_evaluation(linear, _scores(linear), Compressed(linear.python_model), rows.head(80), SYNTHETIC,
                                tmp_path, "2")
    assert record["shift"] is None and record["champion_global"] is None and record["global"]
    assert "champion v2 cannot be explained" in record["skipped"]["champion"]
    assert "compressed runtime" in record["skipped"]["champion"]
    lost = explain_evaluation(Compressed(linear.python_model), _scores(linear), None, rows.head(80), SYNTHETIC,
                              tmp_path / "none", "2", "models:/m/2 could not score the held-out rows: boom")
    assert lost["explainer"] is None and "the candidate cannot be explained" in lost["skipped"]["candidate"]
    assert "boom" in lost["skipped"]["champion"]


def test_a_large_forest_is_explained_on_fewer_rows_and_says_so(drop):
    from ml_tasks.explain import model_explainer
    from ml_tasks.release.explanation import MIN_EXPLANATION_ROWS, explanation_rows, tree_shap_work

    train, _ = drop
    forest = model_explainer(_fitted(train, train["label"].to_numpy(), "random_forest", n_estimators=5))
    work = tree_shap_work(forest)
    assert work > 0 and tree_shap_work(model_explainer(_fitted(train, train["label"].to_numpy()))) == 0
    assert explanation_rows([forest], 500) == (500, None)
    many = [forest] * 4000  # as costly as a forest of 20,000 such trees
    rows, note = explanation_rows(many, 500)
    assert rows == MIN_EXPLANATION_ROWS and note and f"{rows} of 500" in note


def _explanation(ndcg: float, shifted_top: list[str], threshold: float | None) -> dict:
    return {"explainer": {"method": "tree_shap", "output_space": "log_odds", "exact": True, "tolerance": 1e-6,
                          "baseline": "training_mean", "additivity_error": 1e-12},
            "additivity_error": 1e-12, "rows": 500, "rows_note": None,
            "global": [{"feature": f, "mean_abs_attribution": 1.0 / (i + 1), "mean_attribution": 0.0}
                       for i, f in enumerate(shifted_top)],
            "champion_version": "3", "champion_global": [], "skipped": {}, "threshold": threshold,
            "shift": {"ndcg": ndcg, "k": 10, "threshold": threshold, "reference_top": ["x0", "x1", "x2"],
                      "current_top": shifted_top, "shifted": threshold is not None and ndcg < threshold}}


def test_the_gate_holds_a_shifted_candidate_only_when_a_threshold_is_declared():
    from ml_tasks.release.gate import decide

    config = GateConfig({"roc_auc": 0.8}, {})
    shifted = _explanation(0.41, ["x3", "x0", "x1"], 0.8)
    held = decide(config, PASSING, PASSING, "3", explanation=shifted, attribution_min_ndcg=0.8)
    assert not held.blessed and held.decision == "keep_champion"
    (reason,) = [r for r in held.reasons if r.startswith("attribution shift")]
    assert "NDCG@10 0.410 < 0.8" in reason and "champion v3" in reason and "; " not in reason
    assert "before: [x0, x1, x2], after: [x3, x0, x1]" in reason
    check = next(c for c in held.checks if c.kind == "attribution")
    assert check.status == "failed" and check.value == 0.41 and check.threshold == 0.8
    blessing = held.to_dict()  # what `gate` writes to blessing.json, with the thresholds and the numbers
    assert blessing["attribution_shift"]["ndcg"] == 0.41 and blessing["attribution_shift"]["current_top"][0] == "x3"
    undeclared = decide(config, PASSING, PASSING, "3", explanation=_explanation(0.41, ["x3"], None))
    assert undeclared.blessed and all(c.kind != "attribution" for c in undeclared.checks)
    assert undeclared.attribution_shift["ndcg"] == 0.41  # recorded, not judged
    kept = decide(config, PASSING, PASSING, "3", explanation=_explanation(0.97, ["x0", "x1", "x2"], 0.8),
                  attribution_min_ndcg=0.8)
    assert kept.blessed and any("NDCG@10 0.970 >= 0.8" in r for r in kept.reasons)
    first = decide(config, PASSING, None, None, explanation=_explanation(1.0, ["x0"], 0.8), attribution_min_ndcg=0.8)
    assert first.blessed and all(c.kind != "attribution" for c in first.checks)  # no champion: nothing to rank against


def test_a_declared_attribution_check_that_cannot_run_fails_with_the_reason():
    from ml_tasks.release.gate import decide

    config = GateConfig({"roc_auc": 0.8}, {})
    compressed = {"shift": None, "skipped": {"champion": "champion v3 cannot be explained: a compressed runtime"}}
    decision = decide(config, PASSING, PASSING, "3", explanation=compressed, attribution_min_ndcg=0.8)
    assert not decision.blessed
    (reason,) = [r for r in decision.reasons if r.startswith("attribution shift")]
    assert "could not be measured (champion v3 cannot be explained: a compressed runtime)" in reason
    assert "a declared check that cannot run fails" in reason
    assert not decide(config, PASSING, PASSING, "3", explanation=None, attribution_min_ndcg=0.8).blessed
    assert decide(config, PASSING, PASSING, "3", explanation=compressed).blessed  # undeclared: not judged


def test_the_gate_holds_a_candidate_whose_label_now_follows_another_feature(drop):
    """Champion and candidates fitted on real drops, explained by their explainers on the candidate's held-out rows:
    a clean drop passes the declared NDCG; a drop whose label now follows x3 (weight 0 in the clean rule) is held."""
    from ml_tasks.explain import attribution_shift, model_explainer
    from ml_tasks.release.gate import decide

    clean, _ = drop
    champion = model_explainer(_fitted(clean, clean["label"].to_numpy(), "hist_gradient_boosting", max_iter=40))
    config = GateConfig({"roc_auc": 0.7}, {})
    outcomes = {}
    for name, seed in (("clean", 11), ("changed", 12)):
        train, held_out = generate(2000, seed=seed), generate(400, seed=seed + 100)[list(SYNTHETIC.features)]
        labels = train["label"].to_numpy()
        if name == "changed":  # on purpose: x3 now drives the label, the clean rule's features do not
            noise = np.random.default_rng(seed).normal(scale=0.3, size=len(train))
            labels = (train["x3"].to_numpy() + noise > 0).astype("int64")
        candidate = model_explainer(_fitted(train, labels, "hist_gradient_boosting", max_iter=40))
        shift = attribution_shift(champion.explain(held_out).global_importance(),
                                  candidate.explain(held_out).global_importance(), SPEC.attribution_gate_min_ndcg)
        explanation = {"shift": shift.to_dict(), "skipped": {}}
        outcomes[name] = (shift, decide(config, PASSING, PASSING, "1", explanation=explanation,
                                        attribution_min_ndcg=SPEC.attribution_gate_min_ndcg))
    clean_shift, clean_decision = outcomes["clean"]
    changed_shift, changed_decision = outcomes["changed"]
    assert clean_decision.blessed and clean_shift.ndcg >= 0.95, clean_shift
    assert not changed_decision.blessed and changed_shift.ndcg < 0.8 and changed_shift.current_top[0] == "x3"
    assert any("after: [x3" in r for r in changed_decision.reasons)


def test_the_blessing_record_shows_the_attribution_check(ratchet_home, monkeypatch):
    from ml_tasks import datasets, tracking
    from ml_tasks.config import RunConfig, RunContext
    from ml_tasks.release.gate import gate

    monkeypatch.setattr(datasets, "get_dataset", lambda name: SPEC)  # synthetic, declaring gate_min_ndcg 0.8
    ctx = RunContext("synthetic", "attribution-run")
    prepared = {"mlflow_run_id": tracking.ensure_parent_run(ctx)}
    config = RunConfig.from_params({"dataset": "synthetic", "absolute_thresholds": {"roc_auc": 0.6},
                                    "change_thresholds": {}})
    evaluated = {"candidate": PASSING, "champion": PASSING, "champion_version": "3", "expected_champion": "3",
                 "explanation": _explanation(0.41, ["x3", "x0"], 0.8)}
    assert not gate(ctx, config, prepared, evaluated)["blessed"]
    blessing = json.loads((ctx.report_dir / "blessing.json").read_text())
    assert blessing["thresholds"]["attribution_min_ndcg"] == 0.8 and blessing["attribution_shift"]["ndcg"] == 0.41
    assert {"kind": "attribution", "status": "failed", "value": 0.41}.items() <= next(
        c for c in blessing["checks"] if c["kind"] == "attribution").items()


def test_version_tags_model_card_and_models_view_show_what_drives_the_version(monkeypatch):
    from ml_tasks.config import RunContext
    from ml_tasks.constants import TAG_EXPLAINER, TAG_GATE_DECISION, TAG_GATE_REASONS, TAG_TOP_FEATURES
    from ml_tasks.release import model_card
    from ml_tasks.release.gate import decide
    from ml_tasks.release.model_overview import _version_summary
    from ml_tasks.release.registry import explanation_tags
    from ml_tasks.settings import PROJECT_ROOT

    explanation = _explanation(0.41, ["x3", "x0", "x1", "x2", "x4", "x5"], 0.8)
    tags = explanation_tags(explanation)
    assert json.loads(tags[TAG_EXPLAINER]) == {**explanation["explainer"], "additivity_error": 1e-12}
    assert json.loads(tags[TAG_TOP_FEATURES]) == ["x3", "x0", "x1", "x2", "x4"]  # TOP_FEATURES_SHOWN
    skipped = explanation_tags({"explainer": None, "skipped": {"candidate": "the candidate cannot be explained: x"}})
    assert json.loads(skipped[TAG_EXPLAINER]) == {"skipped": "the candidate cannot be explained: x"}
    assert skipped[TAG_TOP_FEATURES] == "[]" and "skipped" in json.loads(explanation_tags(None)[TAG_EXPLAINER])

    card = model_card.render(RunContext("synthetic", "card-run"), "m", "4", "run", {"evaluate": {
        "task": "binary", "rows": 600, "candidate": PASSING, "explanation": explanation}})
    why = card.split("## Why it decides")[1].split("## Plots")[0]
    assert "`tree_shap`" in why and "`log_odds`" in why and "on 500 held-out rows" in why
    assert "| x3 | 1.0000 |" in why and "output|): 1e-12" in why
    assert "NDCG@10 0.410 (declared least 0.8: held)" in why
    assert "`evaluation/explanation/attribution_beeswarm.png`" in why
    assert "Not explained" in model_card.render(RunContext("synthetic", "card-run"), "m", "4", "run", {})

    held = decide(GateConfig({"roc_auc": 0.8}, {}), PASSING, PASSING, "3", explanation=explanation,
                  attribution_min_ndcg=0.8)
    version = SimpleNamespace(version="4", run_id="", creation_timestamp=0,
                              tags={**tags, TAG_GATE_DECISION: held.decision, TAG_GATE_REASONS: "; ".join(held.reasons)})
    summary = _version_summary(None, "m", version, [], {})
    assert summary["top_features"] == ["x3", "x0", "x1", "x2", "x4"]
    assert summary["attribution_hold"].startswith("attribution shift: NDCG@10 0.410 < 0.8")
    monkeypatch.syspath_prepend(str(PROJECT_ROOT / "plugins"))
    from ratchet_airflow.web import render_models

    page = render_models({"mlflow_ui_url": "http://m", "key_metrics": ["roc_auc"], "models": [
        {"name": "m", "champion": None, "challenger": summary, "versions": [summary], "version_count": 1,
         "alias_history": [], "mlflow_url": "http://m/#/models/m"}]})
    assert "held: attribution shift" in page and "<li>x3</li>" in page
    assert page.count("NDCG@10 0.410") == 1  # the hold shown once, marked, not again among the reasons


def test_an_evaluation_logs_the_explanation_of_a_registered_version(ratchet_home):
    """`evaluate_in_process` end to end on a registered scikit-learn version (the legacy fixture, explained from
    its transform's centre) as candidate and as champion: the same model ranks its features the same."""
    import shutil
    from pathlib import Path

    import mlflow

    from ml_tasks import tracking
    from ml_tasks.config import RunContext
    from ml_tasks.constants import EXPLANATION_ARTIFACT_DIR, GLOBAL_ATTRIBUTIONS_FILE, TEST_RAW_FILE, TRAIN_FILE
    from ml_tasks.release.evaluation import evaluate_in_process

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_models" / "sklearn_logistic"
    tracking.configure()
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(shutil.copytree(fixture, ratchet_home.parent / "model")), artifact_path="model")
    version = str(mlflow.register_model(f"runs:/{run.info.run_id}/model", SYNTHETIC.registered_model).version)
    ctx = RunContext(SYNTHETIC.name, "2026-01-02")
    ctx.prepared_dir.mkdir(parents=True, exist_ok=True)
    generate(300, seed=5).to_parquet(ctx.prepared_dir / TEST_RAW_FILE)
    generate(300, seed=6)[["label"]].to_parquet(ctx.prepared_dir / TRAIN_FILE)
    result = evaluate_in_process(ctx.to_dict(), f"models:/{SYNTHETIC.registered_model}/{version}", version,
                                 run.info.run_id)
    explanation = result["explanation"]
    assert explanation["rows"] == 300 and explanation["explainer"]["baseline"] == "transform_centre"
    assert explanation["shift"]["ndcg"] == pytest.approx(1.0) and explanation["shift"]["threshold"] is None
    logged = {Path(a.path).name for a in tracking.client().list_artifacts(run.info.run_id, EXPLANATION_ARTIFACT_DIR)}
    assert {GLOBAL_ATTRIBUTIONS_FILE, "attribution_beeswarm.png", "partial_dependence.png", "attributions.csv",
            "attribution_shift.json"} <= logged
    metrics = tracking.client().get_run(run.info.run_id).data.metrics
    assert metrics["explain.additivity_error_max"] <= 1e-6 and metrics["explain.ndcg_vs_champion"] == pytest.approx(1)
