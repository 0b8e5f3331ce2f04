"""The registry on a real MLflow store (SQLite + local artifacts): compare-and-set, history, rollback, review."""

from __future__ import annotations

import multiprocessing

import pytest

from ml_tasks.constants import TAG_INFRA_VALIDATION
from ml_tasks.errors import PromotionConflictError

MODEL = "registry_test_model"
# What register() tags a version that passed infra validation with (the registry only reads the prefix).
INFRA_PASSED = "passed: 205 rows scored, single row p50 1.0 ms CPU"


@pytest.fixture
def versions(ratchet_home):
    import mlflow
    from mlflow.pyfunc import PythonModel

    from ml_tasks import tracking
    from ml_tasks.release import registry

    class Constant(PythonModel):  # the registry only needs an artifact to point at
        def predict(self, context, model_input, params=None):
            return model_input

    tracking.configure()
    made = []
    for _ in range(3):
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(name="model", python_model=Constant())
        made.append(registry.register_candidate(MODEL, f"runs:/{run.info.run_id}/model", run.info.run_id,
                                                {TAG_INFRA_VALIDATION: INFRA_PASSED}))
    registry.compare_and_set_champion(MODEL, made[0], None, "first")
    return made


def _promote_in_process(home: str, version: str, expected: str, results) -> None:
    import os

    os.environ["RATCHET_HOME"] = home
    from ml_tasks.release.registry import promote

    try:
        promote(MODEL, version, f"race for v{version}", expected_champion=expected, check_expected=True)
        results.put(("promoted", version))
    except PromotionConflictError as exc:
        results.put(("refused", str(exc)))


def test_concurrent_promotions_end_with_one_champion_and_a_complete_history(versions, ratchet_home):
    from ml_tasks.release.registry import alias_history, current_champion

    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    racers = [context.Process(target=_promote_in_process, args=(str(ratchet_home), v, versions[0], results))
              for v in versions[1:]]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(120)
    outcomes = sorted(results.get(timeout=5) for _ in racers)
    assert [o[0] for o in outcomes] == ["promoted", "refused"]
    winner = outcomes[0][1]
    assert current_champion(MODEL) == winner
    champion_moves = [(h["previous"], h["version"]) for h in alias_history(MODEL) if h["alias"] == "champion"]
    assert champion_moves == [(None, versions[0]), (versions[0], winner)]


def test_rollback_restores_the_prior_champion_and_records_it(versions):
    from ml_tasks.release.registry import alias_history, current_champion, promote, rollback

    promote(MODEL, versions[1], "reviewed")
    result = rollback(MODEL)
    assert result.champion == versions[0] == current_champion(MODEL)
    assert alias_history(MODEL)[-1]["reason"] == f"rollback from v{versions[1]}"
    assert rollback(MODEL, versions[2]).champion == versions[2]


def test_review_promotion_refuses_a_version_that_cannot_serve(versions):
    from ml_tasks import tracking
    from ml_tasks.release.registry import current_champion, promote

    tracking.client().set_model_version_tag(MODEL, versions[2], TAG_INFRA_VALIDATION, "failed: output columns ['x']")
    with pytest.raises(PromotionConflictError, match="failed infra validation"):
        promote(MODEL, versions[2], "reviewed")
    with pytest.raises(PromotionConflictError, match="expected v7"):
        promote(MODEL, versions[1], "reviewed", expected_champion="7", check_expected=True)
    assert current_champion(MODEL) == versions[0]


def test_review_promotion_refuses_a_version_never_infra_validated(versions):
    from ml_tasks import tracking
    from ml_tasks.release.registry import current_champion, promote

    client = tracking.client()
    client.delete_model_version_tag(MODEL, versions[2], TAG_INFRA_VALIDATION)
    with pytest.raises(PromotionConflictError, match="has no passed infra validation .* is missing"):
        promote(MODEL, versions[2], "reviewed")
    client.set_model_version_tag(MODEL, versions[2], TAG_INFRA_VALIDATION, "skipped")
    with pytest.raises(PromotionConflictError, match="is skipped"):
        promote(MODEL, versions[2], "reviewed")
    assert current_champion(MODEL) == versions[0]


def test_cli_promote_and_rollback(versions, capsys):
    from ml_tasks.ops import cli

    assert cli.main(["promote", MODEL, versions[1], "--expect", versions[0]]) == 0
    assert f"v{versions[0]} -> v{versions[1]}" in capsys.readouterr().out
    assert cli.main(["rollback", MODEL]) == 0
    assert cli.main(["promote", MODEL, versions[2], "--expect", "99"]) == 2


def test_alias_history_keeps_every_move_past_one_tags_size(versions):
    """A registered-model tag holds 5,000 characters (about 25 moves); older pages are archived, not cut."""
    from ml_tasks import tracking
    from ml_tasks.constants import TAG_ALIAS_HISTORY
    from ml_tasks.release.model_overview import model_overview
    from ml_tasks.release.registry import alias_history, promote

    before = len(alias_history(MODEL))
    moves = 60
    for i in range(moves):
        promote(MODEL, versions[1 + i % 2], f"move {i} " + "x" * 150)
    history = alias_history(MODEL)
    assert len(history) == before + moves
    assert [h["reason"].split(" ")[1] for h in history[before:]] == [str(i) for i in range(moves)]
    tags = tracking.client().get_registered_model(MODEL).tags
    pages = [key for key in tags if key.startswith(f"{TAG_ALIAS_HISTORY}.")]
    assert len(pages) >= 2 and all(len(value) <= 5000 for value in tags.values())
    assert model_overview(tracking.client(), MODEL)["alias_history"][0]["reason"].startswith(f"move {moves - 1} ")
