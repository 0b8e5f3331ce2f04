"""Two tuning slots in two processes share one stored study with enqueued trials: every trial runs once.

Optuna pops a waiting (enqueued) trial by reading it as WAITING and then setting it RUNNING. On SQLite, which
has no `SELECT ... FOR UPDATE`, two processes can both read the same trial as WAITING and both run it; the
second `tell` then fails with "Cannot tell a COMPLETE trial" (optuna/optuna#4621). Ratchet's storage claims a
waiting trial with one conditional UPDATE (`ml_tasks.training.tuning.ClaimingRDBStorage`). Real processes,
real SQLite file, real PostgreSQL on 127.0.0.1.
"""

from __future__ import annotations

import json
import multiprocessing
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
ENQUEUED = 24
SLOTS = 2


def _slot(storage_url: str, study_name: str, slot: int, out: str) -> None:
    """One slot process: optimizes until the queue is empty, records every trial it ran."""
    import time

    import optuna

    from ml_tasks.training.tuning import study_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=study_storage(storage_url))
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_int("x", 0, 10_000)
        if trial.user_attrs.get("enqueued"):  # popped from the queue, not sampled
            ran.append(x)
        time.sleep(0.01)
        return float(x)

    errors: list[str] = []
    waiting = (optuna.trial.TrialState.WAITING,)
    for _ in range(3 * ENQUEUED):  # bounded: a broken claim must fail the test, not hang it
        if not study.get_trials(deepcopy=False, states=waiting):
            break
        try:
            study.optimize(objective, n_trials=1)
        except Exception as exc:  # the race shows here as "Cannot tell a COMPLETE trial"
            errors.append(f"{type(exc).__name__}: {exc}")
    Path(out).write_text(json.dumps({"ran": ran, "errors": errors}))


def _postgres_url() -> str:
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"ratchet_claims_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg2.connect(**PG, dbname="postgres")
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is needed for this test (.ci/run starts it): {exc}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_slot_processes_run_every_enqueued_trial_once(backend, tmp_path):
    import optuna

    from ml_tasks.training.tuning import study_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}" if backend == "sqlite" else _postgres_url()
    study_name = f"claims-{backend}"
    study = optuna.create_study(study_name=study_name, storage=study_storage(url), direction="maximize")
    for x in range(ENQUEUED):
        study.enqueue_trial({"x": x}, user_attrs={"enqueued": True})
    context = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"slot-{i}.json" for i in range(SLOTS)]
    processes = [context.Process(target=_slot, args=(url, study_name, i, str(outs[i]))) for i in range(SLOTS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
        assert process.exitcode == 0
    results = [json.loads(out.read_text()) for out in outs]
    assert [r["errors"] for r in results] == [[]] * SLOTS
    ran = sorted(x for r in results for x in r["ran"])
    assert ran == list(range(ENQUEUED)), "an enqueued trial ran twice or not at all"
    assert all(r["ran"] for r in results), "one slot took the whole queue: the test did not race"
    trials = optuna.load_study(study_name=study_name, storage=study_storage(url)).get_trials(deepcopy=False)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    enqueued_params = sorted(t.params["x"] for t in trials[:ENQUEUED])
    assert enqueued_params == list(range(ENQUEUED))
