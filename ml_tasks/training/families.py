"""Model families: their names, search spaces (declared here and nowhere else), grids and default parameters.

Every family sees the same prepared float32 features (the fitted transform's
output) and is logged as the same pyfunc, so evaluation, the gate and serving
never need to know which family won. A family is one name in `MODEL_FAMILIES`,
one entry in `SEARCH_SPACES` and `DEFAULT_PARAMS`, and a branch in
`ml_tasks.training.trials.run_trial` (tuning: per-step reports that a pruner
can stop) and, for scikit-learn, in `ml_tasks.training.sklearn_models`
(building, the final fit, saving and loading).

This module imports nothing heavy, at module level or below: the DAG file reads
the family names from it at parse time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ml_tasks.errors import ConfigError

log = logging.getLogger(__name__)

KERAS_MLP = "keras_mlp"
LOGISTIC_REGRESSION = "logistic_regression"
RIDGE = "ridge"
RANDOM_FOREST = "random_forest"
HIST_GRADIENT_BOOSTING = "hist_gradient_boosting"
# Not a family: tuning searches every family of the data set's task kind in one study (the family is a
# categorical parameter, each family's space conditional on it) and the best trial's family is trained.
AUTO = "auto"
# The concrete families (each has a search space and defaults).
FAMILIES = (KERAS_MLP, LOGISTIC_REGRESSION, RIDGE, RANDOM_FOREST, HIST_GRADIENT_BOOSTING)
SKLEARN_FAMILIES = (LOGISTIC_REGRESSION, RIDGE, RANDOM_FOREST, HIST_GRADIENT_BOOSTING)
# What a run may name as its `model_family` (the DAG Param's choices): a family, or AUTO.
MODEL_FAMILIES = (*FAMILIES, AUTO)
# The families of each task kind (keys are ml_tasks.datasets.TASK_KINDS): logistic regression classifies,
# ridge regresses; the MLP, the forest and gradient boosting have a head or an estimator for every kind.
TASK_FAMILIES: dict[str, tuple[str, ...]] = {
    "binary": (KERAS_MLP, LOGISTIC_REGRESSION, RANDOM_FOREST, HIST_GRADIENT_BOOSTING),
    "multiclass": (KERAS_MLP, LOGISTIC_REGRESSION, RANDOM_FOREST, HIST_GRADIENT_BOOSTING),
    "regression": (KERAS_MLP, RIDGE, RANDOM_FOREST, HIST_GRADIENT_BOOSTING),
}
# In an AUTO study the families' parameters are named "<family>__<name>" (families share some names, e.g.
# learning_rate, with other ranges); the tuning result names them plainly, with FAMILY_PARAM beside them.
FAMILY_PARAM = "family"
PARAM_SEPARATOR = "__"


@dataclass(frozen=True)
class Dim:
    """One hyperparameter: its range for random/TPE sampling and its discrete values for grid search."""

    kind: str  # "int", "float" or "categorical"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()
    grid: tuple[Any, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high


def _choice(choices: tuple[Any, ...], grid: tuple[Any, ...]) -> Dim:
    return Dim("categorical", choices=choices, grid=grid)


def _float(low: float, high: float, grid: tuple[float, ...], log: bool = False) -> Dim:
    return Dim("float", low, high, log, grid=grid)


def _int(low: int, high: int, grid: tuple[int, ...], log: bool = False) -> Dim:
    return Dim("int", low, high, log, grid=grid)


# The one place the search spaces are declared. `grid` values are what grid search runs (a product of them).
SEARCH_SPACES: dict[str, dict[str, Dim]] = {
    KERAS_MLP: {
        "n_layers": _choice((1, 2, 3), grid=(1, 2)),
        "units": _choice((32, 64, 128, 256), grid=(32, 128)),
        "dropout": _float(0.0, 0.4, grid=(0.0, 0.2)),
        "l2": _float(1e-6, 1e-3, grid=(1e-5,), log=True),
        "learning_rate": _float(1e-4, 1e-2, grid=(3e-4, 3e-3), log=True),
        "batch_size": _choice((256, 512, 1024), grid=(256,)),
    },
    LOGISTIC_REGRESSION: {
        "C": _float(1e-3, 1e2, grid=(0.01, 0.1, 1.0, 10.0), log=True),
        "class_weight": _choice(("none", "balanced"), grid=("none", "balanced")),
    },
    RIDGE: {
        "alpha": _float(1e-4, 1e2, grid=(0.01, 0.1, 1.0, 10.0), log=True),
    },
    RANDOM_FOREST: {
        "n_estimators": _choice((100, 200, 300), grid=(100, 300)),
        "max_depth": _int(3, 24, grid=(6, 12, 24)),
        "min_samples_leaf": _int(1, 64, grid=(1, 8), log=True),
        "max_features": _choice(("sqrt", "0.5", "1.0"), grid=("sqrt", "0.5")),
    },
    HIST_GRADIENT_BOOSTING: {
        "learning_rate": _float(0.01, 0.3, grid=(0.03, 0.1, 0.3), log=True),
        "max_iter": _choice((100, 200, 400), grid=(200,)),
        "max_leaf_nodes": _int(7, 127, grid=(15, 63), log=True),
        "min_samples_leaf": _int(5, 200, grid=(20, 100), log=True),
        "l2_regularization": _float(1e-6, 1.0, grid=(1e-6, 0.1), log=True),
    },
}

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    KERAS_MLP: {"n_layers": 2, "units": 128, "dropout": 0.1, "l2": 1e-5, "learning_rate": 1e-3, "batch_size": 512},
    LOGISTIC_REGRESSION: {"C": 1.0, "class_weight": "none"},
    RIDGE: {"alpha": 1.0},
    RANDOM_FOREST: {"n_estimators": 200, "max_depth": 12, "min_samples_leaf": 2, "max_features": "sqrt"},
    HIST_GRADIENT_BOOSTING: {"learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31, "min_samples_leaf": 20,
                             "l2_regularization": 1e-6},
}


# AUTO starts from each family's defaults, strongest first (as FLAML and AutoGluon do): the search then only ever
# improves on what a user gets from a family's defaults, untuned HistGradientBoosting included.
DEFAULTS_FIRST = (HIST_GRADIENT_BOOSTING, LOGISTIC_REGRESSION, RIDGE, RANDOM_FOREST, KERAS_MLP)


def default_points(task: str) -> list[dict[str, Any]]:
    """The task's families at their default parameters, as an AUTO study names them, in DEFAULTS_FIRST order."""
    allowed = families_for(task)
    return [study_params(f, DEFAULT_PARAMS[f]) for f in DEFAULTS_FIRST if f in allowed]


def check_family(family: str, allow_auto: bool = False) -> str:
    """`family` if it is a concrete family (or AUTO, with `allow_auto`); else a ConfigError."""
    allowed = MODEL_FAMILIES if allow_auto else FAMILIES
    if family not in allowed:
        raise ConfigError(f"model family must be one of {', '.join(allowed)}; got {family!r}")
    return family


def families_for(task: str) -> tuple[str, ...]:
    """The families that can learn a target of this task kind."""
    if task not in TASK_FAMILIES:
        raise ConfigError(f"task kind must be one of {', '.join(TASK_FAMILIES)}; got {task!r}")
    return TASK_FAMILIES[task]


def check_family_for_task(family: str, task: str) -> str:
    """`family` if it can learn a `task` target (AUTO always can); else a ConfigError naming those that can."""
    check_family(family, allow_auto=True)
    if family != AUTO and family not in families_for(task):
        raise ConfigError(f"model family {family!r} cannot learn a {task} target; "
                          f"use one of {', '.join(families_for(task))} or {AUTO!r}")
    return family


def candidate_families(family: str, task: str) -> tuple[str, ...]:
    """The families a study of `family` searches: the task's families for AUTO, else the one."""
    return families_for(task) if check_family_for_task(family, task) == AUTO else (family,)


def grid_space(family: str) -> dict[str, list[Any]]:
    """The declared grid of a family, as Optuna's GridSampler takes it."""
    return {name: list(dim.grid) for name, dim in SEARCH_SPACES[check_family(family)].items()}


def grid_size(family: str, task: str = "binary") -> int:
    """Grid points of a family; for AUTO, of the task's families together (the union of their grids)."""
    if family == AUTO:
        return sum(grid_size(f) for f in families_for(task))
    return math.prod(len(values) for values in grid_space(family).values())


def grid_points(family: str, task: str = "binary") -> list[dict[str, Any]]:
    """Every grid point as the parameters a trial takes (AUTO: each family's grid, family-named parameters)."""
    import itertools

    if family == AUTO:
        return [{FAMILY_PARAM: f, **{auto_name(f, k): v for k, v in point.items()}}
                for f in families_for(task) for point in grid_points(f)]
    space = grid_space(family)
    return [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]


def auto_name(family: str, name: str) -> str:
    return f"{family}{PARAM_SEPARATOR}{name}"


def suggest(trial: Any, family: str, task: str = "binary") -> dict[str, Any]:
    """Sample a family's parameters from an Optuna trial (the grid sampler answers with grid values).

    For AUTO the family is sampled first (a categorical over the task's families) and then only that family's
    parameters, named "<family>__<name>" in the study (define-by-run: a conditional space per family). The
    returned parameters always name a family's own parameters plainly, with FAMILY_PARAM for AUTO.
    """
    if family == AUTO:
        chosen = trial.suggest_categorical(FAMILY_PARAM, list(families_for(task)))
        return {FAMILY_PARAM: chosen, **_suggest(trial, chosen, prefix=auto_name(chosen, ""))}
    return _suggest(trial, family)


def _suggest(trial: Any, family: str, prefix: str = "") -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, dim in SEARCH_SPACES[check_family(family)].items():
        key = prefix + name
        if dim.kind == "categorical":
            params[name] = trial.suggest_categorical(key, list(dim.choices))
        elif dim.kind == "int":
            params[name] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            params[name] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return params


def plain_params(study_params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters as the trainer takes them: AUTO's "<family>__<name>" become "<name>" (FAMILY_PARAM kept)."""
    family = study_params.get(FAMILY_PARAM)
    if family is None:
        return dict(study_params)
    prefix = auto_name(str(family), "")
    return {FAMILY_PARAM: family,
            **{k.removeprefix(prefix): v for k, v in study_params.items() if k.startswith(prefix)}}


def study_params(family: str, params: dict[str, Any]) -> dict[str, Any]:
    """Plain parameters of `family` as an AUTO study names them (to enqueue a trial)."""
    return {FAMILY_PARAM: family, **{auto_name(family, k): v for k, v in params.items() if k != FAMILY_PARAM}}


def split_family(configured: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The family to train and its parameters: AUTO takes the family the tuning result's parameters name."""
    rest = {k: v for k, v in params.items() if k != FAMILY_PARAM}
    family = str(params.get(FAMILY_PARAM) or configured)
    if family == AUTO:
        raise ConfigError("model_family is auto but the tuning result names no family (parameter 'family')")
    return check_family(family), rest


def coerce_params(family: str, raw: dict[str, str]) -> dict[str, Any] | None:
    """Parameters read back as text (MLflow params) in their declared types; None if any is missing or off-space."""
    params: dict[str, Any] = {}
    for name, dim in SEARCH_SPACES[check_family(family)].items():
        if name not in raw:
            return None
        text = str(raw[name])
        value: Any
        try:
            if dim.kind == "categorical":
                value = next((c for c in dim.choices if str(c) == text), None)
            elif dim.kind == "int":
                value = int(float(text))
            else:
                value = float(text)
        except ValueError:
            return None
        if value is None or not dim.contains(value):
            return None
        params[name] = value
    return params


def is_sklearn(family: str) -> bool:
    return check_family(family) in SKLEARN_FAMILIES
