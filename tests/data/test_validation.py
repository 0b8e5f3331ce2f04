"""Data tests: the committed suites accept good drops and stop each class of bad one."""

import json

import pytest

from ml_tasks.datasets import ACS_EMPLOYMENT, SYNTHETIC, acs_employment, synthetic
from ml_tasks.datasets.corruption import CORRUPTIONS, corrupt
from ml_tasks.errors import DataError, DataValidationError, UnreadableDataError
from ml_tasks.io import read_drop
from ml_tasks.settings import EXPECTATIONS_DIR
from ml_tasks.validation import bootstrap_suite, validate_drop


def _land(folder, frame, name="part-000.parquet"):
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".csv"):
        frame.to_csv(folder / name, index=False)
    else:
        frame.to_parquet(folder / name, index=False)
    return folder.as_uri()


def test_every_declared_dataset_has_a_committed_suite():
    for spec in (ACS_EMPLOYMENT, SYNTHETIC):
        payload = json.loads((EXPECTATIONS_DIR / "suites" / f"{spec.suite}.json").read_text())
        columns = payload["expectations"][0]["kwargs"]["column_list"]
        assert columns == list(spec.columns)


def test_good_synthetic_drop_passes_and_publishes_data_docs(ratchet_home, tmp_path):
    uri = _land(tmp_path / "drop", synthetic.generate(3000, seed=5, drift=0.3), "part.csv")
    outcome = validate_drop(uri, "synthetic", "run1")
    assert outcome.success and outcome.rows == 3000 and outcome.failed == 0
    assert (ratchet_home / "gx" / "data_docs" / "synthetic" / "run1" / "index.html").is_file()


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_corruption_is_stopped_with_the_column_named(ratchet_home, tmp_path, kind):
    frame = corrupt(synthetic.generate(3000, seed=2), SYNTHETIC, kind)
    uri = _land(tmp_path / kind, frame)
    with pytest.raises(DataValidationError) as caught:
        validate_drop(uri, "synthetic", kind)
    message = str(caught.value)
    assert "expect_" in message and "Data Docs:" in message
    column = SYNTHETIC.categorical_features[0] if kind in ("missing_column", "unseen_category") else "x0"
    assert column in message
    assert caught.value.failures


def test_real_acs_years_pass_their_suite(ratchet_home, tmp_path):
    frame = acs_employment.load_year(2018)
    outcome = validate_drop(_land(tmp_path / "2018", frame), "acs_employment", "acs2018")
    assert outcome.success and outcome.rows == len(frame) > 50_000


def test_volume_collapse_is_stopped(ratchet_home, tmp_path):
    uri = _land(tmp_path / "tiny", synthetic.generate(50, seed=1))
    with pytest.raises(DataValidationError, match="row_count"):
        validate_drop(uri, "synthetic", "tiny")


@pytest.mark.parametrize("name, content, match", [
    ("empty.csv", b"", "empty"),
    ("header_only.csv", b"x0,x1\n", "no rows"),
    ("truncated.parquet", b"PAR1\x00\x00garbage", "not readable as Parquet"),
    ("latin1.csv", "x0,segment\n1,caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("semicolons.csv", b"x0;x1;x2\n1;2;3\n", "wrong delimiter"),
])
def test_unreadable_files_name_the_file_and_the_cause(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UnreadableDataError, match=match) as caught:
        read_drop(tmp_path)
    assert name in str(caught.value)


def test_files_with_different_columns_are_refused(tmp_path):
    frame = synthetic.generate(100, seed=1)
    _land(tmp_path, frame, "a.parquet")
    _land(tmp_path, frame.drop(columns=["x1"]), "b.parquet")
    with pytest.raises(DataError, match="columns differ"):
        read_drop(tmp_path)


def test_bootstrap_writes_a_suite_that_accepts_its_reference(ratchet_home, tmp_path, monkeypatch):
    reference = synthetic.generate(2000, seed=9)
    payload = bootstrap_suite(SYNTHETIC, reference)
    kinds = {e["type"] for e in payload["expectations"]}
    assert {"expect_table_columns_to_match_ordered_list", "expect_column_values_to_be_in_set",
            "expect_column_values_to_be_between", "expect_table_row_count_to_be_between"} <= kinds
    suites = tmp_path / "expectations" / "suites"
    suites.mkdir(parents=True)
    (suites / "synthetic.json").write_text(json.dumps(payload))
    monkeypatch.setenv("RATCHET_EXPECTATIONS_DIR", str(tmp_path / "expectations"))
    from ml_tasks.settings import get_settings

    get_settings.cache_clear()
    assert validate_drop(_land(tmp_path / "ref", reference), "synthetic", "ref").success
