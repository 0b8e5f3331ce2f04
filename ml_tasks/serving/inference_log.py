"""The inference log: sampled served rows and their predictions, written as JSON lines off the request path.

One writer thread per server process appends what requests submitted, batched and flushed a few times a
second; when it falls behind, requests are not slowed: rows are dropped and counted.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml_tasks.config import checked_name
from ml_tasks.constants import INFERENCE_LOG_PARTITION, INFERENCE_LOG_SUFFIX
from ml_tasks.serving.payloads import json_values

log = logging.getLogger(__name__)

LOG_QUEUE_REQUESTS = 10_000
LOG_FLUSH_SECONDS = 0.25


class InferenceLog:
    """Sampled rows and predictions, appended as JSON lines by one writer thread, batched and flushed often.

    One file per process per day: <root>/<model>/date=YYYY-MM-DD/part-<process uuid>.jsonl. Every
    LOG_FLUSH_SECONDS the writer appends what arrived as whole lines in one write, then flushes.
    When the writer falls behind, requests are not slowed: rows are dropped and counted.
    """

    def __init__(self, root: Path, model: str, sample: float, seed: int | None = None) -> None:
        self.root = root / checked_name(model, "registered model name")
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
               probability: list[float], prediction: list[int]) -> None:
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
        """The request's sampled rows as JSON lines, encoded a column at a time (json.dumps per row costs 10x)."""
        stamp, request_id, version, columns, n_rows, rows, probability, prediction = item
        when = datetime.fromtimestamp(stamp, UTC)
        ts = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if rows is not None:
            columns = {name: [values[i] for i in rows] for name, values in columns.items()}
            probability, prediction = [probability[i] for i in rows], [prediction[i] for i in rows]
        head = (f'{{"ts":{json.dumps(ts)},"request_id":{json.dumps(request_id)},"model":{json.dumps(self.model)},'
                f'"version":{json.dumps(version)},"inputs":{{')
        keys = [json.dumps(name) + ":" for name in columns]
        pieces = [[key + text for text in json_values(values)] for key, values in zip(keys, columns.values(), strict=True)]
        lines = [f'{head}{inputs}}},"probability":{p},"prediction":{int(k)}}}\n' for inputs, p, k in
                 zip(map(",".join, zip(*pieces, strict=True)), json_values(probability), prediction, strict=True)]
        return when.strftime("%Y-%m-%d"), "".join(lines)

    def _file(self, day: str) -> Any:
        handle = self._files.get(day)
        if handle is None:
            for old in list(self._files):  # a new day: the previous day's file is complete
                self._files.pop(old).close()
            folder = self.root / INFERENCE_LOG_PARTITION.format(date=day)
            folder.mkdir(parents=True, exist_ok=True)
            handle = (folder / f"part-{self.part}{INFERENCE_LOG_SUFFIX}").open("a", encoding="utf-8")
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

