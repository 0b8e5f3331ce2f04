"""The configuration of one `ratchet serve`: what to serve and how, its limits, and the bearer token it requires.

`ServeConfig` travels to uvicorn's worker processes as JSON (`--workers` > 1). `/invocations`, `/explain` and
`/version` need `Authorization: Bearer <token>`: RATCHET_SERVE_TOKEN, or a token generated once into a 0600 file under
RATCHET_HOME, so every worker and every restart agree on it.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ml_tasks.config import checked_name
from ml_tasks.constants import CHAMPION_ALIAS
from ml_tasks.environment_variables import (
    RATCHET_INFERENCE_LOG_SAMPLE,
    RATCHET_SERVE_CONFIG,
    RATCHET_SERVE_EXPLAIN_MAX_ROWS,
    RATCHET_SERVE_MAX_BODY_BYTES,
    RATCHET_SERVE_MAX_ROWS,
    RATCHET_SERVE_TOKEN,
    EnvironmentVariable,
)
from ml_tasks.errors import ConfigError
from ml_tasks.settings import get_settings

T = TypeVar("T")


def _declared_default(variable: EnvironmentVariable[T]) -> T:
    """A knob's default is its variable's declared one: one default, whether the config comes from the CLI or not."""
    if variable.default is None:
        raise TypeError(f"{variable.name} declares no default")
    return variable.default


def _from_environment(variable: EnvironmentVariable[T]) -> T:
    """The variable's value, read now; its declared default when it is unset."""
    value = variable.get()
    return _declared_default(variable) if value is None else value


@dataclass(frozen=True)
class ServeConfig:
    """What one `ratchet serve` serves (`models:/model@alias`), where, how often it checks the alias, its limits."""

    model: str
    alias: str = CHAMPION_ALIAS
    host: str = "127.0.0.1"
    port: int = 5001
    poll_seconds: float = 5.0
    log_sample: float = _declared_default(RATCHET_INFERENCE_LOG_SAMPLE)
    workers: int = 1
    max_rows: int = _declared_default(RATCHET_SERVE_MAX_ROWS)
    max_body_bytes: int = _declared_default(RATCHET_SERVE_MAX_BODY_BYTES)
    explain_max_rows: int = _declared_default(RATCHET_SERVE_EXPLAIN_MAX_ROWS)

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
        if self.max_rows < 1 or self.explain_max_rows < 1 or self.max_body_bytes < 1024:
            raise ConfigError("max rows (and explain max rows) must be at least 1 and max body bytes at least 1024")

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


def config_from_args(args: argparse.Namespace) -> ServeConfig:
    """The config of `ratchet serve`'s arguments; the limits (and the log sample, unless given) from the environment."""
    sample = args.log_sample if args.log_sample is not None else _from_environment(RATCHET_INFERENCE_LOG_SAMPLE)
    return ServeConfig(
        model=args.model, alias=args.alias, host=args.host, port=args.port, poll_seconds=float(args.poll_seconds),
        log_sample=float(sample), workers=int(args.workers),
        max_rows=_from_environment(RATCHET_SERVE_MAX_ROWS),
        max_body_bytes=_from_environment(RATCHET_SERVE_MAX_BODY_BYTES),
        explain_max_rows=_from_environment(RATCHET_SERVE_EXPLAIN_MAX_ROWS),
    )


def pass_to_workers(config: ServeConfig) -> None:
    """Put the config where uvicorn's worker processes find it (they inherit this process's environment)."""
    RATCHET_SERVE_CONFIG.set(config.to_json())


def config_from_environment() -> ServeConfig:
    """The config `pass_to_workers` left, in a worker process."""
    text = RATCHET_SERVE_CONFIG.get()
    if text is None:
        raise ConfigError(f"{RATCHET_SERVE_CONFIG.name} is not set: this app factory is for the worker processes "
                          "of `ratchet serve --workers N`")
    return ServeConfig.from_json(text)


def token_path() -> Path:
    """Where the generated token is kept when RATCHET_SERVE_TOKEN is not set."""
    return get_settings().home / "serving" / "token"


def serving_token() -> str:
    """RATCHET_SERVE_TOKEN, or a generated token kept in a 0600 file under RATCHET_HOME (created once)."""
    given = RATCHET_SERVE_TOKEN.get()
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


def token_source() -> str:
    """Where the server's token comes from, for the start-up line: the variable's name or the file."""
    return RATCHET_SERVE_TOKEN.name if RATCHET_SERVE_TOKEN.is_set else str(token_path())


def bearer_token_matches(header: str, secret: bytes) -> bool:
    """Whether an Authorization header carries the server's bearer token (compared in constant time)."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), secret)
