"""Declarative job configuration: conf/*.yaml validated by pydantic.

`load_config()` starts from conf/default.yaml, deep-merges a user file, then applies
`key.path=value` overrides. Unknown keys are errors that name the key, so a typo never
silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DEFAULT_CONFIG = CONF_DIR / "default.yaml"


class ConfigError(ValueError):
    """A configuration problem, phrased as one line for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class JobConfig(_Section):
    name: str | None = None
    shard_size: int = Field(16, ge=1, le=10000)
    max_image_pixels: int = Field(200_000_000, ge=1)
    max_image_side: int = Field(20000, ge=1)


class IngestConfig(_Section):
    video_stride: int = Field(1, ge=1)
    max_frames: int | None = Field(None, ge=1)
    scene_cut_threshold: float = Field(0.4, gt=0, le=1)


class LinesConfig(_Section):
    backend: str = "classical"
    work_size: int = Field(2048, ge=64)
    xdog_sigma: float = Field(0.7, gt=0)
    xdog_k: float = Field(1.6, gt=1)
    xdog_tau: float = 0.985
    xdog_phi: float = Field(40.0, gt=0)
    xdog_epsilon: float = 0.0
    screentone_smoothing: bool = True
    min_component_area: int = Field(6, ge=0)
    # Page styles (models/page_styles.py) and descreening (models/descreen.py).
    descreen: bool = True


class RetrievalConfig(_Section):
    # Embedder: `descriptor` (weight-free, line-art domain) or `clip` (local checkpoint).
    backend: Literal["descriptor", "clip"] = "descriptor"
    top_k: int = Field(3, ge=1, le=64)
    work_size: int = Field(256, ge=32)
    candidates_per_patch: int = Field(64, ge=1, le=4096)
    store_canvas: bool = False
    # FAISS index: auto = exact flat up to flat_max_vectors, approximate_index beyond.
    index: Literal["auto", "flat", "ivf", "hnsw", "pq"] = "auto"
    flat_max_vectors: int = Field(200_000, ge=1)
    approximate_index: Literal["ivf", "hnsw", "pq"] = "ivf"
    ivf_nlist: int | None = Field(None, ge=1)
    ivf_nprobe: int = Field(64, ge=1)
    ivf_train_per_list: int = Field(64, ge=39)
    pq_m: int | None = Field(None, ge=1)
    pq_refine_factor: int = Field(32, ge=1)
    pq_train_points: int = Field(65536, ge=256)
    hnsw_m: int = Field(32, ge=4, le=128)
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(128, ge=1)
    use_gpu: Literal["auto"] | bool = "auto"
    num_threads: int = Field(0, ge=0)
    on_corrupt_index: Literal["rebuild", "error"] = "rebuild"
    # CLIP embedder (backend: clip); never downloads.
    clip_checkpoint: str | None = None
    clip_arch: str = "ViT-B-32"
    clip_precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    clip_batch_size: int = Field(64, ge=1)
    device: str = "auto"
    # Identity (ID) pools.
    identities: Literal["auto"] | list[str] = "auto"
    page_identities: dict[str, list[str]] = Field(default_factory=dict)
    min_identity_confidence: float = Field(0.7, ge=0, le=1)
    identity_votes: int = Field(10, ge=1)
    identity_temperature: float = Field(0.02, gt=0)


class DiffusionConfig(_Section):
    """`colorize.backend: diffusion` (ColorFlow ICP + GSRP, models/colorflow, docs/diffusion.md)."""

    colorflow_path: str | None = None  # ColorFlow release folder (GraySD/...), converted to safetensors
    sd15_path: str | None = None  # local SD1.5 folder in diffusers layout
    steps: int = Field(10, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=0)
    conditioning_scale: float = Field(1.0, ge=0)
    prompt: str = "manga"
    negative_prompt: str = ""
    seed: int = Field(0, ge=0)
    device: str = "auto"  # auto: cuda if available, else cpu
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"  # auto: bfloat16 on cuda, float32 on cpu
    batch_pages: int = Field(2, ge=1, le=64)
    resolution: str = "auto"  # query size "WxH" (multiples of 32); auto: 640x640, 512x800 or 800x512 by aspect
    input_style: Literal["grayscale", "sketch"] = "grayscale"
    conditioning_channels: Literal["auto", 5, 9] = "auto"
    gsrp: bool = True
    gsrp_tile: int = Field(1024, ge=64)
    gsrp_tile_overlap: int = Field(64, ge=0)
    merge_lora: bool = True
    channels_last: bool = True
    torch_compile: bool = False


class ColorizeConfig(_Section):
    backend: str = "region"
    work_size: int = Field(1024, ge=64)
    # `region` backend (models/colorizers/region.py)
    region_min_share: float = Field(0.00015, ge=0, lt=0.1)
    region_overlay_weight: float = Field(1.0, ge=0)
    region_match_weight: float = Field(2.0, ge=0)
    region_match_sigma: float = Field(0.3, gt=0)
    region_border_smoothing: float = Field(0.01, ge=0, lt=0.5)
    region_sliver_width: float = Field(0.02, ge=0, lt=0.5)
    region_ball_radius: float = Field(0.003, ge=0, lt=0.1)
    region_leak_radius: float = Field(0.0, ge=0, lt=0.2)
    region_fit_power: float = Field(4.0, ge=0, le=64)
    # Page styles, correspondence confidence (models/colorizers/region.py, docs/quality.md).
    region_min_confidence: float = Field(0.5, ge=0, le=1)
    color_pages: Literal["keep", "recolor"] = "keep"
    tone_output: Literal["descreened", "screen"] = "descreened"
    palette_memory: bool = True
    palette_tolerance: float = Field(8.0, ge=0, le=100)
    palette_memory_seed: str | None = None
    diffusion: DiffusionConfig = DiffusionConfig()

    @field_validator("palette_memory_seed")
    @classmethod
    def _absolute_seed(cls, value: str | None) -> str | None:
        # Stored in job.json: a rerun from another directory must find the same file.
        return str(Path(value).expanduser().absolute()) if value else value


class UpscaleConfig(_Section):
    backend: str = "guided_filter"
    radius: int = Field(2, ge=1)
    eps: float = Field(1e-4, gt=0)


class RayConfig(_Section):
    address: str | None = None
    num_actors: int = Field(2, ge=1)
    num_cpus_per_actor: float = Field(1, ge=0)
    num_gpus_per_actor: float = Field(0, ge=0)
    max_shard_attempts: int = Field(3, ge=1)


class PrefectConfig(_Section):
    task_retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(1, ge=0)
    max_parallel_tasks: int = Field(4, ge=1)


class ExportConfig(_Section):
    cbz: bool = True
    video_fps: float | None = Field(None, gt=0)
    report_thumb_size: int = Field(320, ge=32)


class Config(_Section):
    job: JobConfig = JobConfig()
    ingest: IngestConfig = IngestConfig()
    lines: LinesConfig = LinesConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    colorize: ColorizeConfig = ColorizeConfig()
    upscale: UpscaleConfig = UpscaleConfig()
    ray: RayConfig = RayConfig()
    prefect: PrefectConfig = PrefectConfig()
    export: ExportConfig = ExportConfig()

    def section_hash(self, *keys: str) -> str:
        """Stable hash of the named sections or dotted keys ("colorize.work_size"): a stage's
        cache key changes only when settings it reads change."""
        dump = self.model_dump(mode="json")
        picked = {}
        for key in keys:
            node = dump
            for part in key.split("."):
                node = node[part]
            picked[key] = node
        payload = json.dumps(picked, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


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
    data = _read_yaml(DEFAULT_CONFIG)
    origin = str(DEFAULT_CONFIG)
    if path is not None:
        data = _deep_merge(data, _read_yaml(Path(path)))
        origin = str(path)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
        origin += " + --set overrides"
    return validate_config(data, origin)
