"""Loading a configuration: the schema's defaults, a user YAML file deep-merged over them,
then `key.path=value` overrides. Unknown keys are errors that name the key, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .schema import Config

CONF_DIR = Path(__file__).resolve().parent  # shipped with the package (conf/*.yaml)
DEFAULT_CONFIG = CONF_DIR / "default.yaml"


class ConfigError(ValueError):
    """A configuration problem, phrased as one line for the user."""


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """Turn ['colorize.work_size=512', 'ray.address=auto'] into a nested dict.
    Values are parsed as YAML scalars, so numbers, booleans and null work."""
    nested: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r}: empty key")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is set twice")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return nested


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            problems.append(f"'{key}': {err['msg']}")
    return f"{origin}: " + "; ".join(problems)


def validate_config(data: dict[str, Any], origin: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        data = _read_yaml(Path(path))
        origin = str(path)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
        origin += " + --set overrides"
    return validate_config(data, origin)
