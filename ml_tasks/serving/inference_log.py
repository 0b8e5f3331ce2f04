"""The inference log, its format in one place: written by `ratchet serve`, read by `model_monitoring`.

The layout, one JSON object per served row (sampled):
    <inference_logs>/<registered model>/date=YYYY-MM-DD/part-<uuid>.jsonl
    {"ts": ISO-8601 UTC, "request_id": str, "model": str, "version": str, "inputs": {column: value},
     "probability": float, "prediction": int}
Labels that arrive later (feedback):
    <feedback>/<registered model>/*.csv|*.parquet|*.pq|*.jsonl with columns request_id, label.

The writer (`InferenceLog`) runs in every server process: one writer thread appends what requests submitted,
batched and flushed a few times a second, one file per process per day; when it falls behind, requests are not
slowed: rows are dropped and counted. The reader (`read_log_window`, `read_feedback`) is monitoring's: one
window of the log in bounded memory, and the labels of its request ids.

This module stays light at import time (pandas only inside the reader): `ml_tasks.monitoring`, which DAG files
import at parse time, imports it.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.config import checked_name
from ml_tasks.serving.payloads import json_values
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    import pandas as pd

    from ml_tasks.datasets import DatasetSpec

log = logging.getLogger(__name__)

# --- the format ----------------------------------------------------------------------------------------------
# (the layout and the feedback columns the module docstring describes)

DAY_FOLDER = "date={date}"
LOG_SUFFIX = ".jsonl"
FEEDBACK_REQUEST_ID = "request_id"
FEEDBACK_LABEL = "label"
FEEDBACK_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl")


def model_folder(root: Path, model: str) -> Path:
    """`<root>/<registered model>`: one model's log (or feedback); the name is checked before it becomes a path."""
    return root / checked_name(model, "registered model")


def day_folder(model_root: Path, day: str) -> Path:
    """The folder of one UTC day (YYYY-MM-DD) of a model's log."""
    return model_root / DAY_FOLDER.format(date=day)


# --- the writer (`ratchet serve`) ----------------------------------------------------------------------------

LOG_QUEUE_REQUESTS = 10_000
LOG_FLUSH_SECONDS = 0.25


class InferenceLog:
    """Sampled rows and predictions, appended as JSON lines by one writer thread, batched and flushed often.

    One file per process per day: <root>/<model>/date=YYYY-MM-DD/part-<process uuid>.jsonl. Every
    LOG_FLUSH_SECONDS the writer appends what arrived as whole lines in one write, then flushes.
    When the writer falls behind, requests are not slowed: rows are dropped and counted.
    """

    def __init__(self, root: Path, model: str, sample: float, seed: int | None = None) -> None:
        self.root = model_folder(root, model)
        self.model = model
        self.sample = sample
        self.part = uuid.uuid4().hex
        self.dropped = 0
        self.written = 0
        self._random = random.Random(seed)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=LOG_QUEUE_REQUESTS)
        self._files: dict[str, Any] = {}
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        if sample > 0:
            self._thread.start()

    def submit(self, request_id: str, version: str, columns: dict[str, list[Any]], n_rows: int,
               probability: list[float] | None, prediction: list[Any]) -> None:
        if self.sample <= 0:
            return
        rows: Any = None  # all rows
        if self.sample < 1:
            rows = [i for i in range(n_rows) if self._random.random() < self.sample]
            if not rows:
                return
        item = (time.time(), request_id, version, columns, n_rows, rows, probability, prediction)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += len(rows) if rows is not None else n_rows

    def _lines(self, item: Any) -> tuple[str, str]:
        """The request's sampled rows as JSON lines, encoded a column at a time (json.dumps per row costs far more)."""
        stamp, request_id, version, columns, n_rows, rows, probability, prediction = item
        when = datetime.fromtimestamp(stamp, UTC)
        ts = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if rows is not None:
            columns = {name: [values[i] for i in rows] for name, values in columns.items()}
            probability = [probability[i] for i in rows] if probability is not None else None
            prediction = [prediction[i] for i in rows]
        head = (f'{{"ts":{json.dumps(ts)},"request_id":{json.dumps(request_id)},"model":{json.dumps(self.model)},'
                f'"version":{json.dumps(version)},"inputs":{{')
        keys = [json.dumps(name) + ":" for name in columns]
        pieces = [[key + text for text in json_values(values)] for key, values in zip(keys, columns.values(), strict=True)]
        probabilities = json_values(probability) if probability is not None else ["null"] * len(prediction)
        lines = [f'{head}{inputs}}},"probability":{p},"prediction":{k}}}\n' for inputs, p, k in
                 zip(map(",".join, zip(*pieces, strict=True)), probabilities, json_values(prediction), strict=True)]
        return when.strftime("%Y-%m-%d"), "".join(lines)

    def _file(self, day: str) -> Any:
        handle = self._files.get(day)
        if handle is None:
            for old in list(self._files):  # a new day: the previous day's file is complete
                self._files.pop(old).close()
            folder = day_folder(self.root, day)
            folder.mkdir(parents=True, exist_ok=True)
            handle = (folder / f"part-{self.part}{LOG_SUFFIX}").open("a", encoding="utf-8")
            self._files[day] = handle
        return handle

    def _run(self) -> None:
        closing = False
        while not closing:
            # wake a few times a second, not once per request: one write and flush per turn
            closing = self._closing.wait(LOG_FLUSH_SECONDS)
            items = []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if items:
                self._write(items)
        for handle in self._files.values():
            handle.close()

    def _write(self, items: list[Any]) -> None:
        by_day: dict[str, list[str]] = {}
        for item in items:
            day, text = self._lines(item)
            by_day.setdefault(day, []).append(text)
            self.written += 1
        try:
            for day in sorted(by_day):
                handle = self._file(day)
                handle.write("".join(by_day[day]))
                handle.flush()
        except OSError:
            log.exception("could not append to the inference log under %s", self.root)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        if not self._thread.is_alive():
            return
        self._closing.set()
        self._thread.join(timeout)
        if self.dropped:
            log.warning("inference log: %s rows dropped while the writer was behind", self.dropped)


# --- the reader (`model_monitoring`) -------------------------------------------------------------------------

# The seed of the reservoir sample of a window over `max_rows`: a rerun of a window reads the same rows.
_SAMPLE_SEED = 20261129


def _days(start: datetime, end: datetime) -> Iterator[date]:
    day, last = start.date(), (end - timedelta(microseconds=1)).date()
    while day <= last:
        yield day
        day += timedelta(days=1)


def log_files(model: str, start: datetime, end: datetime) -> list[Path]:
    """The inference-log files of the days the window touches, in a stable order."""
    root = model_folder(get_settings().inference_logs, model)
    files: list[Path] = []
    for day in _days(start, end):
        folder = day_folder(root, day.isoformat())
        if folder.is_dir():
            files.extend(sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(LOG_SUFFIX)))
    return files


@dataclass
class LogWindow:
    """The window's served rows (a sample when over `max_rows`) and what reading them found.

    `frame["shared"]` marks rows whose request id names several rows (`ratchet serve` logs the rows of a
    many-row request together, under one id): a label per request id cannot say which row it is for.
    """

    frame: pd.DataFrame
    files: int
    rows: int
    malformed: int
    versions: dict[str, int]


def _probability(value: Any) -> float:
    """The logged positive-class probability; null (multiclass, regression) reads as NaN."""
    return math.nan if value is None else float(value)


def read_log_window(model: str, spec: DatasetSpec, start: datetime, end: datetime, max_rows: int) -> LogWindow:
    """Stream the window's log lines; keep only the features, ids and outputs, at most `max_rows` of them.

    Memory is bounded by `max_rows`, whatever the window holds: above it, reservoir sampling keeps a seeded
    uniform sample. Rows of one request follow each other in the log, so they are recognised as they pass.
    """
    import pandas as pd

    rng = random.Random(_SAMPLE_SEED)
    kept: list[list[Any]] = []
    seen = malformed = 0
    versions: dict[str, int] = {}
    files = log_files(model, start, end)
    features, loads, parse_ts = spec.features, json.loads, datetime.fromisoformat  # the loop runs per served row
    for path in files:
        previous_id: str | None = None
        previous_slot: int | None = None
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    entry = loads(line)
                    ts = parse_ts(entry["ts"])  # "Z" or "+00:00"; an offset-naive time is malformed
                    if ts.tzinfo is None:
                        raise ValueError("naive timestamp")
                    inputs = entry["inputs"]
                    row = [str(entry["request_id"]), str(entry.get("version", "")), _probability(entry["probability"]),
                           entry.get("prediction"), False]
                    row.extend([inputs.get(name) for name in features])
                except (ValueError, KeyError, TypeError, AttributeError):
                    malformed += 1
                    previous_id = previous_slot = None
                    continue
                if not start <= ts < end:
                    previous_id = previous_slot = None
                    continue
                seen += 1
                versions[row[1]] = versions.get(row[1], 0) + 1
                if row[0] == previous_id:
                    row[4] = True
                    if previous_slot is not None and kept[previous_slot][0] == previous_id:
                        kept[previous_slot][4] = True
                slot: int | None = None
                if len(kept) < max_rows:
                    slot = len(kept)
                    kept.append(row)
                else:  # reservoir sampling: every row of the window is kept with the same chance
                    drawn = rng.randrange(seen)
                    if drawn < max_rows:
                        slot = drawn
                        kept[slot] = row
                previous_id, previous_slot = row[0], slot
    if malformed:
        log.warning("%s: skipped %d malformed inference-log line(s) in %d file(s)", model, malformed, len(files))
    columns = ["request_id", "version", "probability", "prediction", "shared", *spec.features]
    frame = pd.DataFrame.from_records(kept, columns=columns)
    for name in spec.numeric_features:
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    frame["probability"] = frame["probability"].astype("float64")
    frame["shared"] = frame["shared"].astype(bool)
    from ml_tasks.data.transform import category_text

    if spec.task == "binary" and [category_text(c) for c in spec.classes] == ["0", "1"]:
        # 0/1 targets keep their numeric predictions (lines of versions without a target record too)
        predicted = pd.to_numeric(frame["prediction"].map(lambda v: int(v) if isinstance(v, bool) else v),
                                  errors="coerce")
        frame["prediction"] = predicted.where(predicted.notna(), (frame["probability"] >= 0.5).astype("float64"))
        frame["prediction"] = frame["prediction"].astype("float64")
    # other targets keep `prediction` in the target's original values (strings, or numbers for regression)
    log.info("%s: %d served rows in %s .. %s from %d file(s), %d kept", model, seen, start, end, len(files), len(frame))
    return LogWindow(frame, len(files), seen, malformed, dict(sorted(versions.items())))


def read_feedback(model: str, request_ids: set[str]) -> tuple[dict[str, Any], list[str]]:
    """Labels that arrived for these request ids (a later file wins), and the files that could not be read."""
    import pandas as pd

    folder = model_folder(get_settings().feedback, model)
    labels: dict[str, Any] = {}
    problems: list[str] = []
    if not folder.is_dir() or not request_ids:
        return labels, problems
    wanted = [FEEDBACK_REQUEST_ID, FEEDBACK_LABEL]
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FEEDBACK_SUFFIXES):
        try:
            if path.suffix.lower() == ".csv":
                table = pd.read_csv(path, usecols=wanted, dtype={FEEDBACK_REQUEST_ID: str})
            elif path.suffix.lower() == ".jsonl":
                table = pd.read_json(path, lines=True, dtype={FEEDBACK_REQUEST_ID: str})[wanted]
            else:
                table = pd.read_parquet(path, columns=wanted)
        except Exception as exc:  # a bad feedback file must not stop drift monitoring: it is reported
            problems.append(f"{path.name}: {type(exc).__name__}: {exc}"[:300])
            continue
        ids = table[FEEDBACK_REQUEST_ID].astype(str).tolist()  # a set lookup per label: isin of a big set is slow
        labels.update((i, v) for i, v in zip(ids, table[FEEDBACK_LABEL].tolist(), strict=True) if i in request_ids)
    if problems:
        log.warning("%s: %d feedback file(s) could not be read: %s", model, len(problems), problems)
    return labels, problems
