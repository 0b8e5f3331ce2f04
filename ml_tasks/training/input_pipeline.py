"""Feed prepared Parquet to Keras: in memory when it fits, streamed batch by batch when it does not.

Preparation writes each split as Parquet with float32 feature columns and the integer target last. Splits
that fit the memory budget train fastest as arrays; larger ones do not fit next to the copies `fit` makes, so
they are read record batch by record batch with pyarrow, shuffled in a window of rows in numpy, cut into
batches and handed to Keras while the previous batches train.

The shuffle and batching happen in numpy, not in `tf.data`: an element-wise `shuffle(buffer).batch(n)`
costs an op per row, more than the model on a small machine, where one permutation of a window and row slices
cost almost nothing. The training file is already in random order (the split shuffles), so a window shuffle
only has to vary batches from epoch to epoch; the window is one record batch, so an epoch's first batch is
ready as soon as one record batch is read.

The API (what the trainer calls):

    from ml_tasks.training.input_pipeline import fit_source

    source = fit_source(train_path, val_path, batch_size=512, target=spec.target, seed=seed)
    model = build_mlp(source.n_features, params)
    model.fit(**source.fit_kwargs(), epochs=..., callbacks=[...])

`fit_source` decides with `should_stream(path, memory_budget)` (rows x features x 4 bytes against a budget,
`RATCHET_TRAIN_MEMORY_BUDGET`; `stream=True/False` forces it). In memory it returns arrays and `fit_kwargs()`
carries `batch_size` and `shuffle=True`. Streamed, under TensorFlow, it returns a
`tf.data.Dataset.from_generator(...)` that takes a block of batches per Python call (per-batch calls cost a
visible share of an epoch), produces whole blocks ahead (a block that starts a new window waits for its rows
to be read, longer than an AUTOTUNE batch prefetch covers), `rebatch`es them in C++, prefetches, and has its
cardinality set (Keras knows the epoch length). Under every other backend (JAX, torch) it returns a
`keras.utils.PyDataset` over the same batch generator, fitted with `shuffle=False` because the stream shuffles
itself; `RATCHET_INPUT_PIPELINE=pydataset` forces that path under TensorFlow too. Whatever the stream costs is
taken from the model on a busy machine, so it is kept small: reader threads are off, and columns become
row-major float32 through a column-major copy and a numpy transpose. `bench/training.py` measures both paths
and the README's benchmark section gives the figures.

An epoch's row order is drawn from (seed, epoch number): a fit resumed at epoch n (`first_epoch=n`) shuffles
its epochs as the uninterrupted fit did.

Every streamed epoch rereads the file: the OS page cache makes that cheap while the file fits in RAM, and
bounded by disk speed when it does not. Streaming memory is bounded by one row group (pyarrow decodes most of
a row group's column chunks at once) plus about three shuffle windows and the blocks produced ahead, whatever
the number of rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

BYTES_PER_VALUE = 4  # float32
DEFAULT_SHUFFLE_BUFFER = 65_536  # rows held and permuted at once: one record batch
READ_ROWS = 65_536  # rows per pyarrow record batch
READ_BUFFER = 1 << 20  # bytes: column chunks are read page by page, not whole row groups at once


def _local(path: str | Path) -> Path:
    text = str(path)
    if text.startswith("file://"):
        from ml_tasks.storage import local_path

        return Path(local_path(text))
    return Path(text)


@dataclass(frozen=True)
class ParquetShape:
    """Rows, feature names and target of one prepared split, from its footer alone."""

    rows: int
    features: tuple[str, ...]
    target: str
    row_groups: int

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def array_bytes(self) -> int:
        return self.rows * self.n_features * BYTES_PER_VALUE


def parquet_shape(path: str | Path, target: str | None = None) -> ParquetShape:
    """Read the footer: every column but `target` (default: the last column) is a feature."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(_local(path)).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    target = target or names[-1]
    if target not in names:
        raise KeyError(f"{path}: no target column {target!r} in {names}")
    return ParquetShape(meta.num_rows, tuple(n for n in names if n != target), target, meta.num_row_groups)


def default_memory_budget() -> int:
    """`RATCHET_TRAIN_MEMORY_BUDGET` bytes, else a quarter of the memory available now.

    A quarter, because `fit` on arrays holds the arrays, the backend's copy of them
    and the model's working set at once.
    """
    from ml_tasks.environment_variables import RATCHET_TRAIN_MEMORY_BUDGET

    budget = RATCHET_TRAIN_MEMORY_BUDGET.get()
    if budget is not None:
        return int(budget)
    import psutil

    return int(psutil.virtual_memory().available // 4)


def should_stream(path: str | Path, memory_budget: int | None = None, target: str | None = None) -> bool:
    """True when the split's float32 features (rows x features x 4 bytes) exceed the budget."""
    shape = parquet_shape(path, target)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    return shape.array_bytes > budget


def _to_matrix(batch: Any, features: tuple[str, ...]) -> np.ndarray:
    """A record batch's feature columns as one C-ordered float32 matrix.

    Each column is copied into a row of a column-major buffer (a plain copy), which numpy then transposes
    in cache-sized blocks: much less CPU than Arrow's `to_tensor(row_major=True)` (README, Benchmarks).
    Nulls become NaN.
    """
    import numpy as np

    by_column = np.empty((len(features), batch.num_rows), dtype=np.float32)
    for j, name in enumerate(features):
        by_column[j] = batch.column(name).to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(by_column.T)


def load_arrays(path: str | Path, target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A whole prepared split in memory: float32 features (n, k), float32 labels (n,)."""
    import numpy as np
    import pyarrow.parquet as pq

    shape = parquet_shape(path, target)
    x = np.empty((shape.rows, shape.n_features), dtype=np.float32)
    y = np.empty(shape.rows, dtype=np.float32)
    start = 0
    for batch in pq.ParquetFile(_local(path)).iter_batches(batch_size=READ_ROWS, columns=[*shape.features, shape.target]):
        n = batch.num_rows
        x[start:start + n] = _to_matrix(batch, shape.features)
        y[start:start + n] = batch.column(shape.target).to_numpy(zero_copy_only=False)
        start += n
    return x, y


@dataclass
class ParquetBatches:
    """Re-iterable (features, labels) numpy batches of a Parquet split, read a record batch at a time.

    Each iteration is an epoch: row groups in a new random order (when `shuffle`),
    rows permuted within a window of `shuffle_buffer` rows, batches of exactly
    `batch_size` rows but the last. Memory: about two windows of rows.
    """

    path: str | Path
    batch_size: int
    target: str | None = None
    shuffle: bool = True
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER
    seed: int = 0
    shape: ParquetShape = field(init=False)
    # The order of an epoch is drawn from (seed, epoch): a resumed fit starts at its epoch (`fit_source(first_epoch=)`)
    # and gets the orders an uninterrupted one would have had (Keras starts one iteration per epoch, in order).
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        self.path = _local(self.path)
        self.shape = parquet_shape(self.path, self.target)
        self.target = self.shape.target

    @property
    def num_batches(self) -> int:
        return math.ceil(self.shape.rows / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def _chunks(self, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        import pyarrow.parquet as pq

        source = pq.ParquetFile(self.path, buffer_size=READ_BUFFER, pre_buffer=False)
        groups = list(range(self.shape.row_groups))
        if self.shuffle:
            rng.shuffle(groups)
        columns = [*self.shape.features, self.shape.target]
        for group in groups:
            # no reader threads: on 2 cores they only compete with the model's (a fifth less CPU to decode)
            for batch in source.iter_batches(batch_size=READ_ROWS, row_groups=[group], columns=columns,
                                             use_threads=False):
                yield _to_matrix(batch, self.shape.features), batch.column(self.shape.target).to_numpy(
                    zero_copy_only=False).astype("float32")

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self.blocks(1)

    def blocks(self, batches_per_block: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch in pieces of `batches_per_block` whole batches (the last piece may be shorter)."""
        import numpy as np

        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        piece = self.batch_size * max(1, batches_per_block)
        window = max(self.shuffle_buffer, piece) if self.shuffle else piece
        pending_x: list[np.ndarray] = []
        pending_y: list[np.ndarray] = []
        held = 0

        def drain(final: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
            # Rows are gathered piece by piece (a few MB each): no second window-sized copy, and the GIL is
            # never held long enough to stall the training loop's thread.
            nonlocal pending_x, pending_y, held
            x = pending_x[0] if len(pending_x) == 1 else np.concatenate(pending_x)
            y = pending_y[0] if len(pending_y) == 1 else np.concatenate(pending_y)
            order = rng.permutation(len(x)) if self.shuffle else None
            usable = len(x) if final else len(x) - len(x) % piece
            for start in range(0, usable, piece):
                if order is None:
                    yield x[start:start + piece], y[start:start + piece]
                else:
                    rows = order[start:start + piece]
                    yield x[rows], y[rows]
            rest = slice(usable, len(x))
            pending_x, pending_y = ([x[order[rest]] if order is not None else x[rest]],
                                    [y[order[rest]] if order is not None else y[rest]]) if usable < len(x) else ([], [])
            held = len(x) - usable

        for x, y in self._chunks(rng):
            pending_x.append(x)
            pending_y.append(y)
            held += len(x)
            if held >= window:
                yield from drain(final=False)
        if held:
            yield from drain(final=True)


def as_tf_dataset(batches: ParquetBatches, batches_per_block: int | None = None, blocks_ahead: int | None = None) -> Any:
    """`tf.data.Dataset.from_generator` over blocks of batches, `rebatch`ed, prefetched (AUTOTUNE), cardinality set.

    The generator hands over `batches_per_block` batches at a time and `rebatch` cuts them in C++:
    one Python call per block instead of per batch. `blocks_ahead` whole blocks are produced ahead
    in tf.data's thread: a block that starts a new shuffle window (reading and decoding its rows)
    takes longer than the few batches an AUTOTUNE prefetch holds last.
    """
    import tensorflow as tf

    from ml_tasks.environment_variables import RATCHET_TF_BATCHES_PER_BLOCK, RATCHET_TF_BLOCKS_AHEAD

    batches_per_block = RATCHET_TF_BATCHES_PER_BLOCK.get() if batches_per_block is None else batches_per_block
    blocks_ahead = RATCHET_TF_BLOCKS_AHEAD.get() if blocks_ahead is None else blocks_ahead
    k = batches.shape.n_features
    dataset = tf.data.Dataset.from_generator(
        lambda: batches.blocks(batches_per_block),
        output_signature=(tf.TensorSpec(shape=(None, k), dtype=tf.float32), tf.TensorSpec(shape=(None,), dtype=tf.float32)),
    )
    if blocks_ahead > 0:
        dataset = dataset.prefetch(blocks_ahead)
    if batches_per_block > 1:
        dataset = dataset.rebatch(batches.batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches.num_batches))
    return dataset.prefetch(tf.data.AUTOTUNE)


def as_py_dataset(batches: ParquetBatches, max_queue_size: int = 64) -> Any:
    """A `keras.utils.PyDataset` serving the batches in order (any backend); fit it with `shuffle=False`.

    Index 0 starts a new epoch of the stream; a later index is served by the next batch. Keras
    asks for indices in order with one worker; its signature probe (indices 0 and 1 before the
    first epoch) only costs one extra start. The queue holds 64 batches:
    enough to cover the time in which a new shuffle window is read.
    """
    import keras

    class _Sequential(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False, max_queue_size=max_queue_size)
            self._stream: Iterator[tuple[np.ndarray, np.ndarray]] | None = None

        @property
        def num_batches(self) -> int:
            return batches.num_batches

        def __len__(self) -> int:
            return batches.num_batches

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            if index == 0 or self._stream is None:
                self._stream = iter(batches)
            return next(self._stream)

    return _Sequential()


@dataclass
class FitSource:
    """What `model.fit` takes for one training run: arrays or a streamed dataset, and validation data."""

    x: Any
    y: Any
    validation_data: Any
    batch_size: int
    n_features: int
    train_rows: int
    streamed: bool
    pipeline: str  # "arrays", "tf.data" or "pydataset"

    def fit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.fit` (add epochs and callbacks)."""
        kwargs: dict[str, Any] = {"x": self.x, "validation_data": self.validation_data}
        if self.streamed:
            kwargs["shuffle"] = False  # the stream shuffles; Keras must not reorder PyDataset indices
        else:
            kwargs.update(y=self.y, batch_size=self.batch_size, shuffle=True)
        return kwargs


def _streamed(batches: ParquetBatches, pipeline: str) -> Any:
    return as_tf_dataset(batches) if pipeline == "tf.data" else as_py_dataset(batches)


def fit_source(train_path: str | Path, val_path: str | Path | None, batch_size: int, *, target: str | None = None,
               seed: int = 0, memory_budget: int | None = None, stream: bool | None = None,
               shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, pipeline: str | None = None,
               first_epoch: int = 0) -> FitSource:
    """Training and validation data for `model.fit`, in memory or streamed (see the module docstring).

    `stream`: None decides by `should_stream` on the training split (the validation split follows it);
    `pipeline`: for streamed data, "tf.data" (default under TensorFlow) or "pydataset" (default elsewhere);
    `first_epoch`: the epoch a resumed fit starts at (a streamed epoch's row order depends on it).
    """
    import keras

    shape = parquet_shape(train_path, target)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    streamed = shape.array_bytes > budget if stream is None else stream
    if not streamed:
        x, y = load_arrays(train_path, shape.target)
        val = load_arrays(val_path, shape.target) if val_path is not None else None
        log.info("training on %s rows x %s features in memory (%.0f MiB; budget %.0f MiB)", shape.rows, shape.n_features,
                 shape.array_bytes / 2**20, budget / 2**20)
        return FitSource(x, y, val, batch_size, shape.n_features, shape.rows, False, "arrays")
    from ml_tasks.environment_variables import RATCHET_INPUT_PIPELINE

    chosen = pipeline or RATCHET_INPUT_PIPELINE.get() or ("tf.data" if keras.backend.backend() == "tensorflow" else "pydataset")
    if chosen not in ("tf.data", "pydataset"):
        raise ValueError(f"input pipeline must be 'tf.data' or 'pydataset', got {chosen!r}")
    if chosen == "tf.data" and keras.backend.backend() != "tensorflow":
        chosen = "pydataset"
    train = ParquetBatches(train_path, batch_size, shape.target, shuffle=True, shuffle_buffer=shuffle_buffer, seed=seed,
                           epoch=first_epoch)
    val_source = None
    if val_path is not None:
        val_source = _streamed(ParquetBatches(val_path, batch_size, shape.target, shuffle=False), chosen)
    log.info("streaming %s rows x %s features from %s (%.0f MiB as arrays; budget %.0f MiB) with %s, %s batches/epoch",
             shape.rows, shape.n_features, train_path, shape.array_bytes / 2**20, budget / 2**20, chosen, train.num_batches)
    return FitSource(_streamed(train, chosen), None, val_source, batch_size, shape.n_features, shape.rows, True, chosen)
