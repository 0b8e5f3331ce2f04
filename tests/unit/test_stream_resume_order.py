"""A streamed epoch's row order depends on (seed, epoch) only, so a fit resumed at epoch n sees an uninterrupted run's order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml_tasks.training.input_pipeline import ParquetBatches

from .test_input_pipeline import _write_prepared


def _ids(batches: ParquetBatches, blocks: int) -> np.ndarray:
    return np.concatenate([bx[:, 0] for bx, _ in batches.blocks(blocks)]).astype(int)


def test_a_stream_started_at_epoch_n_repeats_the_nth_epoch_of_a_fresh_one(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    _write_prepared(path, 2500, row_group_size=700)
    fresh = ParquetBatches(path, batch_size=64, shuffle_buffer=1000, seed=3)
    uninterrupted = [_ids(fresh, 4) for _ in range(4)]
    resumed = ParquetBatches(path, batch_size=64, shuffle_buffer=1000, seed=3, epoch=2)
    np.testing.assert_array_equal(_ids(resumed, 4), uninterrupted[2])
    np.testing.assert_array_equal(_ids(resumed, 4), uninterrupted[3])
    assert not np.array_equal(uninterrupted[2], uninterrupted[3])
