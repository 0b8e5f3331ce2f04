"""Data files fuzzed through validation: random bytes, truncated and mislabeled files, mangled CSV text.

Every case must end in a `DataError` whose message names the file (unreadable)
or the failed expectation (readable but wrong): never another exception, never
a hang (pytest-timeout bounds each test). Property-based with `hypothesis`.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_tasks.data.validation import validate
from ml_tasks.datasets import synthetic
from ml_tasks.errors import DataError, DataValidationError, UnreadableDataError

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_cases = itertools.count()


def _good_bytes(kind: str) -> bytes:
    frame = synthetic.generate(300, seed=3)
    buffer = io.BytesIO()
    if kind == "csv":
        buffer.write(frame.to_csv(index=False).encode())
    else:
        frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


GOOD = {kind: _good_bytes(kind) for kind in ("csv", "parquet")}


def _validate(root: Path, name: str, payload: bytes) -> None:
    folder = root / f"case-{next(_cases)}"
    folder.mkdir(parents=True)
    (folder / name).write_bytes(payload)
    outcome = validate(folder.as_uri(), "synthetic", "fuzz")
    raise AssertionError(f"{name} ({len(payload)} bytes) passed validation: {outcome}")


def _assert_refused_clearly(root: Path, name: str, payload: bytes) -> None:
    with pytest.raises(DataError) as refused:
        _validate(root, name, payload)
    message = str(refused.value)
    if isinstance(refused.value, UnreadableDataError):
        assert name in message, message
    elif isinstance(refused.value, DataValidationError):
        assert refused.value.failures and "expect" in message, message
    assert len(message) < 20_000  # a clear message, not a dump of the file


@pytest.mark.timeout(600)
@FUZZ
@given(payload=st.binary(min_size=1, max_size=4096), suffix=st.sampled_from([".csv", ".parquet"]))
def test_random_bytes_are_refused_with_the_file_named(ratchet_home, tmp_path, payload, suffix):
    _assert_refused_clearly(tmp_path, f"part-000{suffix}", payload)


@pytest.mark.timeout(600)
@FUZZ
@given(kind=st.sampled_from(["csv", "parquet"]), keep=st.floats(min_value=0.0, max_value=0.97))
def test_truncated_files_are_refused(ratchet_home, tmp_path, kind, keep):
    payload = GOOD[kind]
    cut = payload[: max(1, int(len(payload) * keep))]
    _assert_refused_clearly(tmp_path, f"part-000.{kind}", cut)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("kind", "named"), [("csv", "parquet"), ("parquet", "csv")])
def test_mislabeled_files_are_refused(ratchet_home, tmp_path, kind, named):
    _assert_refused_clearly(tmp_path, f"part-000.{named}", GOOD[kind])


@pytest.mark.timeout(600)
@settings(FUZZ, max_examples=12)  # each readable case runs the whole suite (~1-2 s)
@given(data=st.data())
def test_mangled_csv_text_is_refused_or_named_by_an_expectation(ratchet_home, tmp_path, data):
    """Random edits of a good CSV (a cell replaced with junk, a header renamed, a line dropped, a delimiter swapped)."""
    lines = GOOD["csv"].decode().splitlines()
    edit = data.draw(st.sampled_from(["junk_cell", "rename_header", "drop_column", "swap_delimiter", "junk_line"]))
    row = data.draw(st.integers(min_value=1, max_value=len(lines) - 1))
    junk = data.draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters=",\n\r\""),
                             min_size=1, max_size=12))
    header = lines[0].split(",")
    column = data.draw(st.integers(min_value=0, max_value=len(header) - 1))
    if edit == "junk_cell":
        cells = lines[row].split(",")
        cells[column] = f"{junk}?x"  # never a valid number or category
        lines[row] = ",".join(cells)
    elif edit == "rename_header":
        header[column] = f"{header[column]}_{junk}x"
        lines[0] = ",".join(header)
    elif edit == "drop_column":
        lines = [",".join(c for i, c in enumerate(line.split(",")) if i != column) for line in lines]
    elif edit == "swap_delimiter":
        lines = [line.replace(",", ";") for line in lines]
    else:
        lines.insert(row, ",".join([f"{junk}x"] * (len(header) + 2)))
    _assert_refused_clearly(tmp_path, "part-000.csv", "\n".join(lines).encode())


def test_the_unmangled_file_passes(ratchet_home, tmp_path):
    """The control: the good bytes the fuzzers start from pass, so every refusal above is the fuzzing's doing."""
    for kind in ("csv", "parquet"):
        folder = tmp_path / kind
        folder.mkdir()
        (folder / f"part-000.{kind}").write_bytes(GOOD[kind])
        assert validate(folder.as_uri(), "synthetic", "fuzz").success
