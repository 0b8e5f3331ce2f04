import os

import pytest

from ml_tasks.errors import DataError, RatchetError
from ml_tasks.isolation import run_isolated


def test_runs_in_a_fresh_process_and_returns_json():
    result = run_isolated("os:getpid", {})
    assert result != os.getpid()


def test_errors_raised_on_purpose_keep_their_type():
    with pytest.raises(DataError, match="bad"):
        run_isolated("tests.unit.isolated_targets:raise_data_error", {"message": "bad"})


def test_a_killed_child_is_reported():
    with pytest.raises(RatchetError, match="SIGKILL"):
        run_isolated("tests.unit.isolated_targets:kill_self", {})


def test_transient_errors_stay_retryable_across_the_process_boundary():
    from ml_tasks.errors import PERMANENT_ERRORS, StorageError

    with pytest.raises(StorageError, match="endpoint gone") as caught:
        run_isolated("tests.unit.isolated_targets:raise_storage_error", {})
    assert not isinstance(caught.value, PERMANENT_ERRORS)  # Airflow retries it; a rerun resumes
    assert issubclass(DataError, PERMANENT_ERRORS)


def test_the_child_skips_teardown_but_not_what_a_normal_exit_runs(tmp_path):
    """exit_without_teardown: non-daemon threads are joined and exit handlers run; an idle pool does not hang it."""
    marker = tmp_path / "exit"
    assert run_isolated("tests.unit.isolated_targets:leave_exit_work", {"marker": str(marker)}, timeout_s=60) == "done"
    assert (tmp_path / "exit.thread").read_text() == "joined"
    assert (tmp_path / "exit.atexit").read_text() == "ran"
