"""Retries with exponential backoff and jitter, for clients that have none of their own (WebHDFS)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def with_retries(call: Callable[[], T], is_transient: Callable[[Exception], bool], attempts: int,
                 what: str, base_delay: float = 0.2, max_delay: float = 10.0) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            log.warning("%s failed (%s: %s); retry %s/%s in %.1fs", what, type(exc).__name__, exc, attempt,
                        attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
