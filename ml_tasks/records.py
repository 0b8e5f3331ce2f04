"""Stage records: each stage writes its small JSON result beside the run's report.

They are what the run report is assembled from, whether the run ended well or
stopped early, and what a rerun finds to reuse.
"""

from __future__ import annotations

from typing import Any

from ml_tasks.config import RunContext
from ml_tasks.io import read_json, write_json

STAGES = ("sync", "validate", "drift", "prepare", "tune", "train", "evaluate", "gate", "register", "promote")


def write_stage(ctx: RunContext, stage: str, payload: dict[str, Any]) -> dict[str, Any]:
    write_json(ctx.stage_dir / f"{stage}.json", payload)
    return payload


def read_stage(ctx: RunContext, stage: str) -> dict[str, Any] | None:
    path = ctx.stage_dir / f"{stage}.json"
    return read_json(path) if path.is_file() else None


def clear_stages_after(ctx: RunContext, stage: str) -> None:
    """A stage that runs again invalidates the records of the stages after it."""
    for later in STAGES[STAGES.index(stage) + 1 :]:
        (ctx.stage_dir / f"{later}.json").unlink(missing_ok=True)
