"""Colorizer backends, registered by name and selected with `colorize.backend`.

Backends are named here as import paths so that choosing the weight-free default never
imports torch/diffusers. `colorize.backend` may also be an import path `package.module:Class`
of an installed plugin (any class with `from_config(config)` and `colorize(request)`);
the config is the operator's, never read from input data.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .base import ColorizeRequest, Colorizer, Reference

if TYPE_CHECKING:
    from chromaflow.conf import Config

BACKENDS: dict[str, str] = {
    "region": "chromaflow.models.colorizers.region:RegionColorizer",
    "diffusion": "chromaflow.models.colorflow.backend:DiffusionColorizer",
    "gray_rank": "chromaflow.models.colorizers.gray_rank:GrayRankColorizer",
    "palette": "chromaflow.models.colorizers.gray_rank:GrayRankColorizer",  # the old name of gray_rank
    "welsh": "chromaflow.models.colorizers.welsh:WelshColorizer",
    "dominant": "chromaflow.models.colorizers.dominant:DominantColorizer",  # issue 9's floor
}


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def build_colorizer(config: "Config") -> Colorizer:
    name = config.colorize.backend
    if name not in BACKENDS and ":" not in name:
        from chromaflow.conf import ConfigError

        raise ConfigError(f"unknown colorize backend {name!r}; available: {', '.join(available_backends())} "
                         f"(or a plugin as module:Class)")
    module_name, _, attr = BACKENDS.get(name, name).partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory.from_config(config)


__all__ = ["ColorizeRequest", "Colorizer", "Reference", "available_backends", "build_colorizer", "BACKENDS"]
