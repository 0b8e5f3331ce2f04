"""Optuna's RDB storage, with a claim of a waiting trial that holds on every database.

Optuna pops a waiting (enqueued) trial by reading it with `SELECT ... FOR UPDATE` and then setting it
RUNNING. SQLite ignores FOR UPDATE, so two tuning slots can both read the same trial as WAITING and both
run it; the second `tell` then fails with "Cannot tell a COMPLETE trial" (optuna/optuna#4621). Enqueued
trials are what a warm start and a retried slot add, so this hit `tuning_workers > 1` runs. Here the claim
is one conditional `UPDATE ... WHERE state = 'WAITING'`: exactly one slot's update matches, the others are
told the trial is taken and go on to the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.storages._rdb import models
from optuna.trial import TrialState
from sqlalchemy import update

log = logging.getLogger(__name__)


class ClaimingRDBStorage(optuna.storages.RDBStorage):
    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        session = self.scoped_session()
        try:
            trials = models.TrialModel.__table__
            result: Any = session.execute(  # a CursorResult: it has the matched row count
                update(trials)
                .where(trials.c.trial_id == trial_id, trials.c.state == TrialState.WAITING)
                # RDBStorage keeps naive UTC times (see optuna.storages._rdb.models.TrialModel.datetime_start)
                .values(state=TrialState.RUNNING, datetime_start=datetime.now(UTC).replace(tzinfo=None))
            )
            claimed = result.rowcount == 1
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()
        if not claimed:
            log.debug("trial %s was claimed by another slot first", trial_id)
        return claimed
