"""Watching the served alias: a new version is loaded off the request path and swapped in when it is warm.

A thread polls `models:/NAME@alias`; when the alias points at a new version, it loads that version completely
(download, checks, warm-up) while the old one keeps answering, then swaps one reference. A request holds the
model it started with, so in-flight requests finish on the old one. A version that fails to load is retried
after `RETRY_FAILED_SECONDS` (or at once if the alias moves on), and the old one keeps serving meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ml_tasks.serving.config import ServeConfig
from ml_tasks.serving.loading import LoadedModel, load_version

log = logging.getLogger(__name__)

# A failed load of a version is retried after this long (or at once if the alias moves elsewhere).
RETRY_FAILED_SECONDS = 60.0


class ModelWatcher:
    """Polls the alias; loads a new version off the request path and swaps one reference when it is warm."""

    def __init__(self, config: ServeConfig, loader: Callable[[str, str, str], LoadedModel] = load_version) -> None:
        self.config = config
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._loader = loader
        self._failed: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alias-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def poll_once(self) -> bool:
        """Load and swap in the version the alias points at now, if it is new; True when a swap happened."""
        from ml_tasks.release.registry import alias_version

        name, alias = self.config.model, self.config.alias
        target = alias_version(name, alias)
        if target is None:
            self.last_error = f"{name}@{alias} does not exist (yet)"
            if self.current is None:
                log.warning("%s; waiting for it", self.last_error)
            return False
        current = self.current
        if current is not None and current.version == target:
            return False
        failed_at = self._failed.get(target)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_FAILED_SECONDS:
            return False
        started = time.perf_counter()
        try:
            loaded = self._loader(name, target, alias)
        except Exception as exc:
            self._failed = {target: time.monotonic()}
            self.last_error = f"{name} v{target} failed to load: {exc}"
            log.exception("%s; still serving %s", self.last_error,
                          f"v{current.version}" if current is not None else "nothing")
            return False
        self.current = loaded  # one reference: requests already running keep the model they took
        self._failed.clear()
        self.last_error = None
        log.info("serving %s v%s (%s) after %.1fs to load; previously %s", name, target, alias,
                 time.perf_counter() - started, f"v{current.version}" if current is not None else "nothing")
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:  # the registry unreachable for a moment: keep serving, try again
                self.last_error = f"could not read {self.config.model}@{self.config.alias}: {exc}"
                log.warning("%s", self.last_error)
            self._stop.wait(self.config.poll_seconds)
