"""The MLflow Model Registry: register candidates, move aliases, keep their history.

MLflow has no compare-and-set on aliases and keeps no alias history, so a move
of `champion` happens under a lock and only if `champion` still points where
the gate saw it; every move is appended to a history tag on the registered
model. Older versions are never deleted, so any earlier champion can be
restored with `ratchet rollback`.

The history is never cut: we keep every registered-model tag within
`MAX_TAG_CHARS` (5,000 characters, about 25 moves), so a full page is archived
under `ratchet.alias_history.<n>` and the newest page starts again.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ml_tasks import tracking
from ml_tasks.constants import (
    CHALLENGER_ALIAS,
    CHAMPION_ALIAS,
    TAG_ALIAS_HISTORY,
    TAG_EXPLAINER,
    TAG_PREVIOUS_CHAMPION,
    TAG_TOP_FEATURES,
    TOP_FEATURES_SHOWN,
)
from ml_tasks.errors import PromotionConflictError, RatchetError
from ml_tasks.settings import get_settings

if TYPE_CHECKING:
    from ml_tasks.config import RunConfig, RunContext

log = logging.getLogger(__name__)

MAX_TAG_CHARS = 5000
MAX_DESCRIPTION_CHARS = 5000


@dataclass(frozen=True)
class PromotionResult:
    name: str
    version: str
    previous_champion: str | None
    champion: str | None
    promoted: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_missing(exc: Exception) -> bool:
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower()


def alias_version(name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(tracking.client().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if _is_missing(exc):
            return None
        raise


def current_champion(name: str) -> str | None:
    return alias_version(name, CHAMPION_ALIAS)


@contextmanager
def model_lock(name: str) -> Iterator[None]:
    """An exclusive lock per registered model for alias moves on this host."""
    path = get_settings().locks / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unreachable_request(exc: BaseException) -> str | None:
    """MLflow's "API request to <url> failed ..." message, when a request of `exc`'s chain never got an answer."""
    seen: BaseException | None = exc
    while seen is not None:
        message = str(seen)
        if message.startswith("API request to ") and " failed with exception " in message:
            return message
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def _naming_the_server(what: str) -> Iterator[None]:
    """An unreachable tracking server named as such (still retryable: not a permanent error).

    MLflow words some of them misleadingly: registering a version whose logged model it cannot fetch says the
    model "may have been deleted", whatever the reason the fetch failed.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        request = _unreachable_request(exc)
        if request is None:
            raise
        uri = get_settings().mlflow_tracking_uri
        raise RatchetError(f"{what}: the MLflow tracking server {uri} did not answer after the client's retries "
                           f"({request})") from exc


def register_candidate(name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
    """Register the run's model once: a rerun finds the version its run already made."""
    with _naming_the_server(f"registering {model_uri} as {name}"):
        return _register_candidate(name, model_uri, run_id, tags)


def _register_candidate(name: str, model_uri: str, run_id: str, tags: dict[str, str]) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    client = tracking.client()
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if not _is_missing(exc):
            raise
        try:
            client.create_registered_model(name, description="Trained nightly by Ratchet; `champion` serves.")
        except MlflowException:
            pass  # created meanwhile by another run
    existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if existing:
        version = str(min(int(v.version) for v in existing))
        log.info("run %s already registered %s version %s; reusing it", run_id, name, version)
    else:
        version = str(mlflow.register_model(model_uri, name, tags=tags).version)
        log.info("registered %s version %s from %s", name, version, model_uri)
        version = _drop_doubles(name, run_id, version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:MAX_TAG_CHARS])
    return version


def _drop_doubles(name: str, run_id: str, version: str) -> str:
    """Keep one version per run when the client's retry of a create whose answer was lost made a second one.

    The REST client retries a POST that got no answer; when the server had done it, the retry registers the same
    run again. The extra versions are seconds old and no alias points at them: the first one stays.
    """
    client = tracking.client()
    made = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"))
    for extra in made[1:]:
        log.warning("%s version %s registers run %s a second time (a retried request): deleting it", name, extra, run_id)
        client.delete_model_version(name, str(extra))
    return str(made[0]) if made else version


def _archived_pages(tags: dict[str, str]) -> list[tuple[int, str]]:
    prefix = f"{TAG_ALIAS_HISTORY}."
    return sorted((int(key[len(prefix):]), value) for key, value in tags.items()
                  if key.startswith(prefix) and key[len(prefix):].isdigit())


def history_from_tags(tags: dict[str, str] | None) -> list[dict[str, Any]]:
    """Every alias move, oldest first, from a registered model's tags (archived pages, then the newest)."""
    tags = tags or {}
    history: list[dict[str, Any]] = []
    seen: set[str] = set()
    for page in [value for _, value in _archived_pages(tags)] + [tags.get(TAG_ALIAS_HISTORY, "[]")]:
        try:
            entries = json.loads(page)
        except ValueError:
            log.warning("an alias-history page is not JSON; skipped")
            continue
        for entry in entries if isinstance(entries, list) else []:
            key = json.dumps(entry, sort_keys=True)
            if key not in seen:  # a page archived just before a crash may repeat the newest page's entries
                seen.add(key)
                history.append(entry)
    return history


def alias_history(name: str) -> list[dict[str, Any]]:
    return history_from_tags(tracking.client().get_registered_model(name).tags)


def _move_alias(name: str, alias: str, version: str, reason: str) -> None:
    client = tracking.client()
    previous = alias_version(name, alias)
    if previous == version:
        return  # a rerun: the alias already points there, and the history stays as it was
    client.set_registered_model_alias(name, alias, version)
    entry = {"alias": alias, "version": version, "previous": previous, "reason": reason[:300],
             "at": datetime.now(UTC).isoformat(timespec="seconds")}
    tags = client.get_registered_model(name).tags or {}
    newest: list[dict[str, Any]] = json.loads(tags.get(TAG_ALIAS_HISTORY, "[]"))
    page = newest + [entry]
    if len(json.dumps(page, separators=(",", ":"))) > MAX_TAG_CHARS and newest:
        archived = _archived_pages(tags)
        number = (archived[-1][0] if archived else 0) + 1
        # archived first: a crash before the next write repeats entries (dropped on reading), never loses them
        client.set_registered_model_tag(name, f"{TAG_ALIAS_HISTORY}.{number:05d}",
                                        json.dumps(newest, separators=(",", ":")))
        page = [entry]
    client.set_registered_model_tag(name, TAG_ALIAS_HISTORY, json.dumps(page, separators=(",", ":")))


def set_challenger(name: str, version: str, reason: str) -> None:
    with model_lock(name):
        _move_alias(name, CHALLENGER_ALIAS, version, reason)


def compare_and_set_champion(name: str, version: str, expected_champion: str | None, reason: str) -> PromotionResult:
    """Compare-and-set `champion`: move it only if it still points at `expected_champion` (the gate's baseline)."""
    with model_lock(name):
        current = current_champion(name)
        if current != expected_champion:
            raise PromotionConflictError(
                f"{name}: champion is v{current}, but the gate compared against v{expected_champion}; "
                "not promoting over a champion the gate never saw"
            )
        if current == version:
            return PromotionResult(name, version, current, current, promoted=False)
        _move_alias(name, CHAMPION_ALIAS, version, reason)
        if current is not None:
            tracking.client().set_model_version_tag(name, version, TAG_PREVIOUS_CHAMPION, current)
    log.info("%s: champion moved from v%s to v%s", name, current, version)
    return PromotionResult(name, version, current, version, promoted=True)


def comparison_baseline(name: str, run_id: str) -> tuple[str | None, str | None]:
    """(baseline to compare against, champion now) for a candidate from MLflow run `run_id`.

    Normally both are the current champion. When the champion already is this
    run's own version (a rerun after it was promoted), the baseline is the
    champion it replaced, so the rerun reaches the same decision as the run did.
    """
    current = current_champion(name)
    if current is None:
        return None, None
    version = tracking.client().get_model_version(name, current)
    if version.run_id != run_id:
        return current, current
    return version.tags.get(TAG_PREVIOUS_CHAMPION) or None, current


def promote(name: str, version: str, reason: str, *, expected_champion: str | None = None,
            check_expected: bool = False) -> PromotionResult:
    """Promote a named version after review (`promote_model` DAG, `ratchet promote`).

    Refuses a version that did not pass infra validation: one that failed it, and one that never went
    through it (registered by hand, or before infra validation existed), since nothing then says it can
    serve. With `check_expected`, the move is a compare-and-set against `expected_champion`, like the nightly's.
    """
    from ml_tasks.constants import TAG_INFRA_VALIDATION

    client = tracking.client()
    tags = client.get_model_version(name, version).tags  # fails clearly if it does not exist
    infra = str(tags.get(TAG_INFRA_VALIDATION, ""))
    if infra.startswith("failed"):
        raise PromotionConflictError(f"{name} v{version} failed infra validation ({infra}); it cannot serve")
    if not infra.startswith("passed"):
        raise PromotionConflictError(f"{name} v{version} has no passed infra validation (tag {TAG_INFRA_VALIDATION!r} "
                                     f"is {infra or 'missing'}): nothing says it can serve; not promoting")
    with model_lock(name):
        current = current_champion(name)
        if check_expected and current != expected_champion:
            raise PromotionConflictError(f"{name}: champion is v{current}, expected v{expected_champion}; not promoting")
        if current == version:
            return PromotionResult(name, version, current, current, promoted=False)
        _move_alias(name, CHAMPION_ALIAS, version, reason)
        if current is not None:
            client.set_model_version_tag(name, version, TAG_PREVIOUS_CHAMPION, current)
    log.info("%s: champion moved from v%s to v%s (%s)", name, current, version, reason)
    return PromotionResult(name, version, current, version, promoted=True)


def explanation_tags(explanation: dict[str, Any] | None) -> dict[str, str]:
    """TAG_EXPLAINER (the explainer's description and additivity error, or why there is none) and TAG_TOP_FEATURES
    (its top features by mean |attribution|, a JSON list) of a version, from its evaluation's explanation record."""
    explanation = explanation or {}
    explainer = explanation.get("explainer")
    if not explainer:
        why = ((explanation.get("skipped") or {}).get("candidate")
               or "not explained: evaluated before explanations were measured")
        return {TAG_EXPLAINER: json.dumps({"skipped": why}), TAG_TOP_FEATURES: "[]"}
    described = {**explainer, "additivity_error": explanation.get("additivity_error", explainer.get("additivity_error"))}
    top = [str(entry["feature"]) for entry in (explanation.get("global") or [])[:TOP_FEATURES_SHOWN]]
    return {TAG_EXPLAINER: json.dumps(described), TAG_TOP_FEATURES: json.dumps(top)}


def set_description(name: str, version: str, markdown: str) -> None:
    """The version's description (MLflow's UI renders Markdown): where reviewers read the model card."""
    tracking.client().update_model_version(name, version, description=markdown[:MAX_DESCRIPTION_CHARS])


def rollback(name: str, to_version: str | None = None) -> PromotionResult:
    """Point `champion` back at `to_version`, or at the champion before the current one."""
    current = current_champion(name)
    if current is None:
        raise PromotionConflictError(f"{name} has no champion to roll back")
    target = to_version
    if target is None:
        target = tracking.client().get_model_version(name, current).tags.get(TAG_PREVIOUS_CHAMPION)
        if not target:
            raise PromotionConflictError(f"{name} v{current} records no previous champion; pass --to VERSION")
    tracking.client().get_model_version(name, target)  # fails clearly if it does not exist
    with model_lock(name):
        if current_champion(name) != current:
            raise PromotionConflictError(f"{name}: champion moved during the rollback; try again")
        _move_alias(name, CHAMPION_ALIAS, target, f"rollback from v{current}")
    return PromotionResult(name, target, current, target, promoted=True)


def register(ctx: RunContext, config: RunConfig, prepared: dict[str, Any], validated: dict[str, Any],
             trained: dict[str, Any], gated: dict[str, Any]) -> dict[str, Any]:
    """The nightly's register stage: register the candidate once, check it can serve (infra validation), write its
    model card, make it challenger.

    `champion` is not moved here: the promote stage does that, after a reviewer's approval when the run asks for one.
    """
    import mlflow

    from ml_tasks import records
    from ml_tasks.constants import (
        INFRA_VALIDATION_FILE,
        MLFLOW_REPORT_DIR,
        MODEL_CARD_FILE,
        TAG_AIRFLOW_DAG_ID,
        TAG_AIRFLOW_RUN_ID,
        TAG_DATASET,
        TAG_FINGERPRINT,
        TAG_GATE_DECISION,
        TAG_GATE_REASONS,
        TAG_INFRA_VALIDATION,
        TAG_RUN_KEY,
        TAG_VALIDATION,
    )
    from ml_tasks.datasets import get_dataset
    from ml_tasks.errors import InfraValidationError
    from ml_tasks.io import write_json
    from ml_tasks.release import model_card
    from ml_tasks.release.infra_validation import validate_version

    name = get_dataset(ctx.dataset).registered_model
    stages = {stage: records.read_stage(ctx, stage) or {} for stage in records.STAGES}
    tags = {
        TAG_RUN_KEY: ctx.tracking_key,
        TAG_DATASET: ctx.dataset,
        TAG_FINGERPRINT: prepared["fingerprint"],
        TAG_VALIDATION: f"passed {validated['evaluated']} expectations of {validated['suite']}",
        TAG_AIRFLOW_DAG_ID: ctx.dag_id,
        TAG_AIRFLOW_RUN_ID: ctx.run_id,
        TAG_GATE_DECISION: gated["decision"],
        TAG_GATE_REASONS: "; ".join(gated["reasons"]),
        **explanation_tags(stages["evaluate"].get("explanation")),
    }
    run_id = prepared["mlflow_run_id"]
    version = register_candidate(name, trained["model_uri"], run_id, tags)
    infra = validate_version(ctx, name, version)
    client = tracking.client()
    client.set_model_version_tag(name, version, TAG_INFRA_VALIDATION, infra.summary[:4000])
    infra_path = write_json(ctx.report_dir / INFRA_VALIDATION_FILE, infra.to_dict())
    stages["infra"] = {**infra.to_dict(), "summary": infra.summary}
    card = model_card.render(ctx, name, version, run_id, stages)
    card_path = ctx.report_dir / MODEL_CARD_FILE
    card_path.write_text(card)
    set_description(name, version, card)
    tracking.configure()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_artifact(str(card_path), artifact_path=MLFLOW_REPORT_DIR)
        mlflow.log_artifact(str(infra_path), artifact_path=MLFLOW_REPORT_DIR)
    if not infra.passed:
        raise InfraValidationError(f"{name} v{version} cannot serve: {infra.summary}")
    set_challenger(name, version, f"candidate of {ctx.tracking_key}")
    return {"registered_model": name, "version": version, "infra_validation": infra.summary,
            "blessed": bool(gated["blessed"]), "expected_champion": gated["expected_champion"],
            "needs_review": bool(gated["blessed"] and config.require_approval),
            "model_card_uri": card_path.as_uri()}


def promote_candidate(ctx: RunContext, registered: dict[str, Any], review: str | None = None) -> dict[str, Any]:
    """The nightly's promote stage: move `champion` to the registered version by compare-and-set, when the gate
    blessed it (and a reviewer approved, when the run asks for one)."""
    from ml_tasks.constants import REVIEW_APPROVE, TAG_REVIEW

    name, version = registered["registered_model"], registered["version"]
    champion = current_champion(name)
    if not registered["blessed"]:
        result = PromotionResult(name, version, champion, champion, promoted=False)
        return {**result.to_dict(), "reason": "the gate did not bless this version"}
    if registered["needs_review"]:
        tracking.client().set_model_version_tag(name, version, TAG_REVIEW, review or "no answer")
        if review != REVIEW_APPROVE:
            result = PromotionResult(name, version, champion, champion, promoted=False)
            return {**result.to_dict(), "reason": f"reviewer's answer: {review or 'none'}"}
    promotion = compare_and_set_champion(name, version, registered["expected_champion"],
                                         f"gate passed for {ctx.tracking_key}"
                                         + (" and a reviewer approved" if registered["needs_review"] else ""))
    return {**promotion.to_dict(), "reason": "blessed" + (" and approved" if registered["needs_review"] else "")}


def champion_drift_reference(name: str, run_id: str | None = None) -> tuple[str | None, dict[str, Any] | None, str]:
    """The drift reference stored with the champion: (version, reference, why not).

    With the nightly run's MLflow `run_id`, the champion it is compared with (`comparison_baseline`): a rerun after
    the run's own version was promoted measures drift against the champion it replaced.
    """
    import tempfile
    from pathlib import Path

    import mlflow

    from ml_tasks.constants import DRIFT_REFERENCE_FILE, MLFLOW_DATA_DIR
    from ml_tasks.io import read_json

    version = comparison_baseline(name, run_id)[0] if run_id else current_champion(name)
    if version is None:
        return None, None, f"{name} has no champion yet: nothing to compare with"
    client = tracking.client()
    run_id = str(client.get_model_version(name, version).run_id)
    stored = {Path(a.path).name for a in client.list_artifacts(run_id, MLFLOW_DATA_DIR)}
    if DRIFT_REFERENCE_FILE not in stored:
        return version, None, f"champion version {version} was trained before drift references were stored"
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{MLFLOW_DATA_DIR}/{DRIFT_REFERENCE_FILE}", dst_path=tmp,
            tracking_uri=get_settings().mlflow_tracking_uri,
        )
        return version, read_json(Path(local)), ""
