"""Job configuration: the pydantic schema (defaults), YAML loading and overrides.

Shipped as package data with the YAML presets: default.yaml (every key, commented),
colorflow-sd15.yaml (the diffusion backend on a GPU host).
"""

from .loading import CONF_DIR, DEFAULT_CONFIG, ConfigError, load_config, parse_overrides, validate_config
from .schema import (ColorizeConfig, Config, DiffusionConfig, ExportConfig, IngestConfig, InstancesConfig, JobConfig,
                     LinesConfig, PrefectConfig, RayConfig, RetrievalConfig, UpscaleConfig)

__all__ = ["CONF_DIR", "DEFAULT_CONFIG", "ColorizeConfig", "Config", "ConfigError", "DiffusionConfig",
           "ExportConfig", "IngestConfig", "InstancesConfig", "JobConfig", "LinesConfig", "PrefectConfig", "RayConfig",
           "RetrievalConfig", "UpscaleConfig", "load_config", "parse_overrides", "validate_config"]
