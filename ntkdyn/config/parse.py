"""Reading a config: YAML in and out, ``--set`` overrides, the typed parse of a mapping into the
sections of ``schema`` (every key known, every value of its type, numbers finite), then
``validate``. Reads no data file (the config file itself only, in ``load_raw``)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml

from ntkdyn.config.schema import Config, ConfigError, number_from_text
from ntkdyn.config.validate import validate

_number_from_text = number_from_text


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def _coerce(value: Any, tp, key: str):
    """Check ``value`` against the annotation ``tp``; build nested dataclasses."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if isinstance(value, dict) and dict in inner:  # e.g. eta: a number or a schedule mapping
            return value
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item)}, got {value!r}")
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp in (float, int) and isinstance(value, str):
        value = _number_from_text(
            value, key, "an integer" if tp is int else "a number"
        )  # PyYAML reads 1e-3 (no dot) as a string
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value) and not (key in INFINITE_OK and value == math.inf):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        ):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


INFINITE_OK = ("train.divergence_factor",)  # float keys where +inf means "never"


def _build(cls, raw: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]
    names = [f.name for f in fields]
    derived = {f.name for f in dataclasses.fields(cls)} - set(names)
    for key in raw:
        if key not in names and key not in derived:  # derived keys (config.yaml's notes) are re-derived
            raise ConfigError(f"unknown key '{prefix}{key}'; allowed: {', '.join(names)}")
    kwargs = {}
    for f in fields:
        if f.name in raw:
            kwargs[f.name] = _coerce(raw[f.name], hints[f.name], prefix + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key '{prefix}{f.name}'")
    return cls(**kwargs)


def from_dict(raw: dict) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping at the top level, got {type(raw).__name__}")
    return validate(_build(Config, raw))


def load_raw(path: str) -> dict:
    try:
        with open(path) as fh:
            raw = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    return raw if raw is not None else {}


def apply_override(raw: dict, assignment: str) -> dict:
    """'a.b=value' (value parsed as YAML; list items by index: 'optimizers.0.eta=0.1')."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.steps=500")
    key, text = assignment.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {assignment!r}: the key before '=' is empty, e.g. train.steps=500")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(
            f"--set {assignment!r}: the value {text!r} is not YAML ({problem}); quote a string or "
            "write a number, a list [a, b] or a mapping {k: v}"
        ) from None
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: {part!r} is not an index of a list of length {len(node)}")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {'.'.join(parts[:depth])} is not a mapping")
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and part not in node:
                node[part] = {}
            node = node[part]
    return raw


def load(path: str, overrides: Sequence[str] = ()) -> Config:
    raw = load_raw(path)
    for assignment in overrides:
        raw = apply_override(raw, assignment)
    return from_dict(raw)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def dump(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
