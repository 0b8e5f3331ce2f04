"""Micro-batching of `/invocations`: small requests that arrive together share one transform and one model call."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ml_tasks.serving.loading import LoadedModel


class MicroBatcher:
    """Scores the small requests that arrive together with one transform and one model call.

    Under many concurrent clients most of a one-row request is fixed cost (building the frame, the transform's
    per-column work, the model call), so the requests that are ready in the same turn of the event loop are
    scored as one batch and the answers split again. A lone request waits for nothing: the batch runs on the
    loop's next turn. If the batch fails, each request is scored alone, so an error names its own rows.
    """

    def __init__(self) -> None:
        self._pending: list[tuple[LoadedModel, dict[str, list[Any]], int, asyncio.Future[Any]]] = []
        self._scheduled = False
        self.batches = 0
        self.requests = 0

    def submit(self, model: LoadedModel, columns: dict[str, list[Any]], n_rows: int) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((model, columns, n_rows, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    @staticmethod
    def _alone(model: LoadedModel, columns: dict[str, list[Any]], n_rows: int, future: asyncio.Future[Any]) -> None:
        try:
            result = model.predict(columns, n_rows)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        groups: dict[int, list[Any]] = {}
        for entry in pending:
            groups.setdefault(id(entry[0]), []).append(entry)  # the model each request took: a swap splits the batch
        for entries in groups.values():
            self.batches += 1
            self.requests += len(entries)
            if len(entries) == 1:
                self._alone(*entries[0])
                continue
            model = entries[0][0]
            merged = {name: [v for entry in entries for v in entry[1][name]] for name in model.column_names}
            try:
                scored = model.predict(merged, sum(entry[2] for entry in entries))
            except Exception:
                for entry in entries:
                    self._alone(*entry)
                continue
            start = 0
            for _, _, n_rows, future in entries:
                if not future.done():
                    future.set_result(_rows(scored, start, start + n_rows))
                start += n_rows


def _rows(scored: Any, start: int, stop: int) -> Any:
    """One request's rows of a batch's answer: a `Scored` (its columns), or a tuple of per-row lists."""
    if hasattr(scored, "rows"):
        return scored.rows(start, stop)
    return tuple(part[start:stop] for part in scored)
