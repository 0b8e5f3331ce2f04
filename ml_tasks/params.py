"""Knobs: the fields of a typed config that a DAG Param sets, each with its one default and the values it accepts.

A knob is a dataclass field declared with `knob(default, "param_name", minimum=..., maximum=..., choices=...)`.
`param_schema` turns the field into the keyword arguments of the DAG Param that sets it (default, JSON-schema
type, bounds, enum); the DAG file still builds the `airflow.sdk.Param` itself, since ml_tasks never imports
Airflow. `check_knobs`, called from the config's `__post_init__`, refuses what the Param's schema refuses, so
the trigger form, the REST API and a config built in code or from Params agree on every default and bound.

This module imports nothing but the standard library and `ml_tasks.errors`: DAG files read it at parse time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from ml_tasks.errors import ConfigError

_KNOB = "ratchet.knob"
_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


@dataclass(frozen=True)
class Knob:
    """What one knob accepts, in JSON-schema terms, and the name of the DAG Param that sets it."""

    param: str
    json_type: str
    minimum: float | None = None
    maximum: float | None = None
    # A strict lower bound (drift thresholds: above 0).
    exclusive_minimum: float | None = None
    choices: tuple[str, ...] = ()
    # None is accepted too (a check that can be switched off).
    nullable: bool = False

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the Param, without its default."""
        schema: dict[str, Any] = {"type": [self.json_type, "null"] if self.nullable else self.json_type}
        bounds = {"minimum": self.minimum, "exclusiveMinimum": self.exclusive_minimum, "maximum": self.maximum}
        schema.update({key: value for key, value in bounds.items() if value is not None})
        if self.choices:
            schema["enum"] = list(self.choices)
        return schema

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.choices:
            return value in self.choices
        if self.json_type == "boolean":
            return isinstance(value, bool)
        if isinstance(value, bool) or not isinstance(value, int if self.json_type == "integer" else (int, float)):
            return False
        return (math.isfinite(value)
                and (self.minimum is None or value >= self.minimum)
                and (self.exclusive_minimum is None or value > self.exclusive_minimum)
                and (self.maximum is None or value <= self.maximum))

    def describe(self) -> str:
        """The accepted values in words, for the refusal message."""
        if self.choices:
            return f"one of {', '.join(self.choices)}" + (" or null" if self.nullable else "")
        if self.json_type == "boolean":
            return "true or false"
        if self.exclusive_minimum is not None:
            low = "positive" if self.exclusive_minimum == 0 else f"above {self.exclusive_minimum}"
            text = low if self.maximum is None else f"{low}, at most {self.maximum}"
        elif self.minimum is not None and self.maximum is not None:
            text = f"{self.minimum}..{self.maximum}"
        elif self.minimum is not None:
            text = f"at least {self.minimum}"
        else:
            text = "finite" if self.maximum is None else f"at most {self.maximum}"
        kind = "an integer" if self.json_type == "integer" else "a number"
        return f"{text} ({kind}{', or null' if self.nullable else ''})"

    def check(self, value: Any) -> None:
        if not self.accepts(value):
            raise ConfigError(f"{self.param} must be {self.describe()}, got {value!r}")


def knob(default: Any, param: str, *, minimum: float | None = None, maximum: float | None = None,
         exclusive_minimum: float | None = None, choices: tuple[str, ...] = (), nullable: bool = False) -> Any:
    """A dataclass field with this default whose values are bounded as declared; `param` names the DAG Param.

    The JSON-schema type follows the default's Python type (bool, int, float, str).
    """
    json_type = _JSON_TYPES[type(default)]
    return field(default=default, metadata={_KNOB: Knob(param, json_type, minimum, maximum, exclusive_minimum,
                                                         choices, nullable)})


def same_knob(config: type, name: str) -> Any:
    """The knob `config.name` again, for a second config that one Param feeds (model_family: tuning and training)."""
    (declared,) = [f for f in fields(config) if f.name == name]
    return field(default=declared.default, metadata=declared.metadata)


def knobs(config: Any) -> dict[str, tuple[Knob, Any]]:
    """Every knob of a config class (or instance): field name -> (knob, declared default)."""
    return {f.name: (f.metadata[_KNOB], f.default) for f in fields(config) if _KNOB in f.metadata}


def check_knobs(config: Any) -> None:
    """Refuse a config instance whose knobs hold values their Params would refuse."""
    for name, (declared, _) in knobs(config).items():
        declared.check(getattr(config, name))


def param_schema(config: type, name: str) -> dict[str, Any]:
    """`Param(**param_schema(TuneConfig, "trials"), title=..., description=...)`: default, type, bounds, enum."""
    declared, default = knobs(config)[name]
    return {"default": default, **declared.schema()}


def object_param_schema(config: type) -> dict[str, Any]:
    """A config of knobs only as one object Param (drift thresholds): its defaults, each key bounded, no other keys."""
    declared = knobs(config)
    return {
        "default": {name: default for name, (_, default) in declared.items()},
        "type": "object",
        "properties": {name: knob.schema() for name, (knob, _) in declared.items()},
        "additionalProperties": False,
    }

