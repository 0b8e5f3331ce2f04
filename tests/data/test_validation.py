"""Data tests: the committed suites accept good drops and stop each class of bad one."""

import json

import pytest

from ml_tasks.data.validation import bootstrap_suite, validate, validate_drop
from ml_tasks.datasets import ACS_EMPLOYMENT, SYNTHETIC, acs_employment, synthetic
from ml_tasks.datasets.corruption import CORRUPTIONS, corrupt
from ml_tasks.errors import ConfigError, DataError, DataValidationError, UnreadableDataError, UnsafePathError
from ml_tasks.io import read_drop
from ml_tasks.settings import EXPECTATIONS_DIR


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
    named = {"missing_column": SYNTHETIC.categorical_features[0], "unseen_category": SYNTHETIC.categorical_features[0],
             "extra_column": "comment", "reordered_columns": "expect_table_columns_to_match_ordered_list",
             "unseen_label": "'label'", "duplicate_flood": "expect_compound_columns_to_be_unique"}
    assert named.get(kind, "'x0'") in message
    if kind == "missing_column":  # every expectation that needs the column is counted under its absence
        assert "expect_compound_columns_to_be_unique" not in message and "is missing (" in message
    assert caught.value.failures


def test_real_acs_years_pass_their_suite(ratchet_home, tmp_path):
    frame = acs_employment.load_year(2018)
    outcome = validate_drop(_land(tmp_path / "2018", frame), "acs_employment", "acs2018")
    assert outcome.success and outcome.rows == len(frame) > 50_000


def test_volume_explosion_and_duplicate_flood_of_real_data_are_stopped(ratchet_home, tmp_path):
    import pandas as pd

    year = acs_employment.load_year(2018)
    uri = _land(tmp_path / "x3", pd.concat([year, year, year], ignore_index=True))
    with pytest.raises(DataValidationError) as caught:
        validate_drop(uri, "acs_employment", "x3")
    kinds = {f["expectation"] for f in caught.value.failures}
    assert {"expect_table_row_count_to_be_between", "expect_compound_columns_to_be_unique"} <= kinds


def test_messages_name_counts_and_examples_never_rows(ratchet_home, tmp_path):
    frame = corrupt(synthetic.generate(3000, seed=2), SYNTHETIC, "out_of_range")
    with pytest.raises(DataValidationError) as caught:
        validate_drop(_land(tmp_path / "bad", frame), "synthetic", "bad")
    (failure,) = [f for f in caught.value.failures if f["expectation"] == "expect_column_values_to_be_between"]
    assert failure["column"] == "x0" and failure["unexpected_count"] > 0 and len(failure["examples"]) <= 5
    assert "channel" not in str(caught.value).split("Data Docs:")[0].split("x0")[1]  # no other column of the rows


def test_data_docs_policy_builds_them_only_when_asked(ratchet_home, tmp_path):
    good = _land(tmp_path / "good", synthetic.generate(1000, seed=3))
    outcome = validate_drop(good, "synthetic", "quiet", data_docs="on_failure")
    assert outcome.success and outcome.data_docs_uri == ""
    assert not (ratchet_home / "gx" / "data_docs" / "synthetic" / "quiet").exists()
    bad = _land(tmp_path / "bad", corrupt(synthetic.generate(1000, seed=3), SYNTHETIC, "nulls"))
    with pytest.raises(DataValidationError, match="Data Docs: file://"):
        validate_drop(bad, "synthetic", "loud", data_docs="on_failure")
    assert (ratchet_home / "gx" / "data_docs" / "synthetic" / "loud" / "index.html").is_file()


def test_validate_checks_any_drop_against_any_suite(ratchet_home, tmp_path):
    uri = _land(tmp_path / "drop", synthetic.generate(1000, seed=4))
    outcome = validate(uri, "synthetic", "manual__1")
    assert outcome.success and outcome.suite == "synthetic"
    with pytest.raises(ConfigError, match="not found"):
        validate(uri, "no_such_suite", "manual__2")


@pytest.mark.parametrize("suite", ["../synthetic", "/etc/passwd", "a/b", "..", ""])
def test_suite_names_from_outside_are_refused(ratchet_home, tmp_path, suite):
    with pytest.raises(UnsafePathError):
        validate((tmp_path).as_uri(), suite, "run")


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


def test_cli_validate_and_bootstrap_from_a_uri(ratchet_home, tmp_path, monkeypatch, capsys):
    from ml_tasks.ops import cli

    good = _land(tmp_path / "good", synthetic.generate(1000, seed=6))
    assert cli.main(["validate", good, "--suite", "synthetic", "--data-docs", "never", "--run-key", "cli1"]) == 0
    assert "passed" in capsys.readouterr().out
    bad = _land(tmp_path / "bad", corrupt(synthetic.generate(1000, seed=6), SYNTHETIC, "unseen_category"))
    assert cli.main(["validate", bad, "--suite", "synthetic", "--run-key", "cli2"]) == 1
    assert "segment" in capsys.readouterr().err
    monkeypatch.setenv("RATCHET_EXPECTATIONS_DIR", str(tmp_path / "expectations"))
    from ml_tasks.settings import get_settings

    get_settings.cache_clear()
    assert cli.main(["expectations", "bootstrap", "synthetic", "--from", good]) == 0
    assert (tmp_path / "expectations" / "suites" / "synthetic.json").is_file()
