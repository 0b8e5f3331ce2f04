"""The configuration of one `ratchet serve`: what to serve and how, its limits, and the bearer token it requires.

`ServeConfig` travels to uvicorn's worker processes as JSON (`--workers` > 1). `/invocations` and `/version`
need `Authorization: Bearer <token>`: RATCHET_SERVE_TOKEN, or a token generated once into a 0600 file under
RATCHET_HOME, so every worker and every restart agree on it.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml_tasks.config import checked_name
from ml_tasks.constants import CHAMPION_ALIAS
from ml_tasks.errors import ConfigError
from ml_tasks.settings import get_settings

DEFAULT_MAX_ROWS = 10_000
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
TOKEN_ENV = "RATCHET_SERVE_TOKEN"
CONFIG_ENV = "RATCHET_SERVE_CONFIG"
SAMPLE_ENV = "RATCHET_INFERENCE_LOG_SAMPLE"
MAX_ROWS_ENV = "RATCHET_SERVE_MAX_ROWS"
MAX_BODY_ENV = "RATCHET_SERVE_MAX_BODY_BYTES"


@dataclass(frozen=True)
class ServeConfig:
    """What one `ratchet serve` serves (`models:/model@alias`), where, how often it checks the alias, its limits."""

    model: str
    alias: str = CHAMPION_ALIAS
    host: str = "127.0.0.1"
    port: int = 5001
    poll_seconds: float = 5.0
    log_sample: float = 1.0
    workers: int = 1
    max_rows: int = DEFAULT_MAX_ROWS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        checked_name(self.model, "registered model name")
        checked_name(self.alias, "alias")
        if not 0.0 <= self.log_sample <= 1.0:
            raise ConfigError(f"log sample must be a fraction 0..1, got {self.log_sample}")
        if not 0.05 <= self.poll_seconds <= 3600:
            raise ConfigError(f"poll seconds must be 0.05..3600, got {self.poll_seconds}")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be 1..64, got {self.workers}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        if self.max_rows < 1 or self.max_body_bytes < 1024:
            raise ConfigError("max rows must be at least 1 and max body bytes at least 1024")

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


def _env_number(name: str, default: float, cast: Callable[[str], Any]) -> Any:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The config of `ratchet serve`'s arguments; the limits (and the log sample, unless given) from the environment."""
    sample = args.log_sample if args.log_sample is not None else _env_number(SAMPLE_ENV, 1.0, float)
    return ServeConfig(
        model=args.model, alias=args.alias, host=args.host, port=args.port, poll_seconds=float(args.poll_seconds),
        log_sample=float(sample), workers=int(args.workers),
        max_rows=int(_env_number(MAX_ROWS_ENV, DEFAULT_MAX_ROWS, int)),
        max_body_bytes=int(_env_number(MAX_BODY_ENV, DEFAULT_MAX_BODY_BYTES, int)),
    )


def token_path() -> Path:
    """Where the generated token is kept when RATCHET_SERVE_TOKEN is not set."""
    return get_settings().home / "serving" / "token"


def serving_token() -> str:
    """RATCHET_SERVE_TOKEN, or a generated token kept in a 0600 file under RATCHET_HOME (created once)."""
    given = os.environ.get(TOKEN_ENV, "").strip()
    if given:
        return given
    path = token_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(secrets.token_urlsafe(32))
        except FileExistsError:
            pass  # another worker wrote it first
    return path.read_text().strip()


def bearer_token_matches(header: str, secret: bytes) -> bool:
    """Whether an Authorization header carries the server's bearer token (compared in constant time)."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), secret)
