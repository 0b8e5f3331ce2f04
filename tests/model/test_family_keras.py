"""The Keras MLP family end to end: trained in its own process, logged, scored through pyfunc; pruned per epoch."""

from __future__ import annotations

import pytest

from tests.unit.test_families import SMALL_PARAMS, train_and_score

pytestmark = pytest.mark.slow


def test_keras_family_trains_in_its_process_and_its_pyfunc_scores_raw_rows(ratchet_home):
    _, _, result = train_and_score(ratchet_home, "keras_mlp")
    assert result.model_path.endswith(".keras") and result.accelerators["backend"] in ("tensorflow", "jax", "torch")


def test_a_keras_trial_stops_at_the_epoch_its_report_prunes():
    import numpy as np
    import optuna

    from ml_tasks.training.trials import run_trial

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    seen: list[int] = []

    def report(step: int, value: float, last: bool) -> None:
        seen.append(step)
        assert not last
        assert 0 <= value <= 1
        if step == 1:
            raise optuna.TrialPruned("pruned")

    with pytest.raises(optuna.TrialPruned):
        run_trial("keras_mlp", SMALL_PARAMS["keras_mlp"], (x[:400], y[:400], x[400:], y[400:]), 6, 0, report)
    assert seen == [0, 1]
