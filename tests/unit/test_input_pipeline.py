"""The input pipeline: every row once per epoch, a new order each epoch, the stream/in-memory rule, and a real fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ml_tasks.training.input_pipeline import ParquetBatches, fit_source, load_arrays, parquet_shape, should_stream

N_FEATURES = 5


def _write_prepared(path: Path, rows: int, row_group_size: int = 1000, seed: int = 0,
                    ids: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Like preparation's output: float32 feature columns, the int64 target last; feature 0 carries the row id."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, N_FEATURES)).astype("float32")
    if ids:
        x[:, 0] = np.arange(rows, dtype="float32")
    y = (x[:, 1] + 0.5 * x[:, 2] > 0).astype("int64")
    table = pa.Table.from_arrays([*(pa.array(x[:, j]) for j in range(N_FEATURES)), pa.array(y)],
                                 names=[*(f"f{j}" for j in range(N_FEATURES)), "label"])
    pq.write_table(table, path, row_group_size=row_group_size, compression="none")
    return x, y


def test_load_arrays_matches_the_file(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    x, y = _write_prepared(path, 2500)
    got_x, got_y = load_arrays(path)
    assert got_x.dtype == np.float32 and got_y.dtype == np.float32 and got_x.flags.c_contiguous
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y.astype("float32"))
    shape = parquet_shape(path)
    assert (shape.rows, shape.n_features, shape.target, shape.row_groups) == (2500, N_FEATURES, "label", 3)


def test_stream_yields_every_row_once_per_epoch_in_a_new_order(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    x, y = _write_prepared(path, 2500, row_group_size=700)
    batches = ParquetBatches(path, batch_size=64, shuffle_buffer=1000, seed=1)
    epochs = []
    for _ in range(2):
        seen = list(batches)
        assert len(seen) == batches.num_batches == 40
        assert all(len(bx) == 64 for bx, _ in seen[:-1]) and len(seen[-1][0]) == 2500 - 39 * 64
        ids = np.concatenate([bx[:, 0] for bx, _ in seen]).astype(int)
        assert sorted(ids) == list(range(2500))  # every row exactly once
        labels = np.concatenate([by for _, by in seen])
        np.testing.assert_array_equal(labels, y[ids])  # labels stay with their rows
        epochs.append(ids)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[0], np.arange(2500))
    ordered = np.concatenate([bx[:, 0] for bx, _ in ParquetBatches(path, batch_size=64, shuffle=False)]).astype(int)
    np.testing.assert_array_equal(ordered, np.arange(2500))


def test_should_stream_compares_array_bytes_with_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "train.parquet"
    _write_prepared(path, 1000)
    size = 1000 * N_FEATURES * 4
    assert should_stream(path, memory_budget=size - 1)
    assert not should_stream(path, memory_budget=size)
    monkeypatch.setenv("RATCHET_TRAIN_MEMORY_BUDGET", str(size - 1))
    assert should_stream(path)
    assert not should_stream(path.as_uri(), memory_budget=10**9)


@pytest.mark.parametrize("pipeline", ["tf.data", "pydataset"])
def test_a_streamed_fit_learns_like_an_in_memory_one(tmp_path: Path, pipeline: str) -> None:
    import keras

    from ml_tasks.training.keras_mlp import DEFAULT_MLP_PARAMS, build_mlp

    train, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    _write_prepared(train, 6000, seed=0, ids=False)
    _write_prepared(val, 1500, seed=1, ids=False)
    params = {**DEFAULT_MLP_PARAMS, "units": 16}
    results = {}
    for stream in (False, True):
        source = fit_source(train, val, batch_size=128, stream=stream, pipeline=pipeline, shuffle_buffer=2048)
        assert source.streamed is stream and source.n_features == N_FEATURES and source.train_rows == 6000
        model = build_mlp(source.n_features, params, seed=0)
        history = model.fit(**source.fit_kwargs(), epochs=3, verbose=0)
        results[stream] = history.history
        assert len(history.history["loss"]) == 3
        assert history.history["loss"][-1] < history.history["loss"][0]
    assert keras.backend.backend() == "tensorflow" or pipeline == "pydataset"
    # The label is a linear rule of features 1 and 2: both paths learn it equally well.
    assert results[True]["val_auc"][-1] > 0.9
    assert abs(results[True]["val_auc"][-1] - results[False]["val_auc"][-1]) < 0.05
