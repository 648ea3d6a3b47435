"""The configuration schema: every key, its type, its bounds and its default.

These pydantic models are the one place defaults are written. conf/default.yaml lists the
same values with a comment per key for people to read and copy; tests/test_config.py
fails when the two differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class JobConfig(_Section):
    name: str | None = None
    shard_size: int = Field(16, ge=1, le=10000)
    # Above Pillow's hard limit (178,956,970 px) the job's own header check replaces Pillow's
    # for pages only (storage/images.py); 200 Mpx takes a 12000x16000 spread.
    max_image_pixels: int = Field(200_000_000, ge=1)
    max_image_side: int = Field(20000, ge=1)
    # Per-page memory budget: W*H*8 B + file + 256 MiB must fit, else the page is refused
    # before decoding (storage/images.py page_memory_bytes, docs/storage.md "Memory").
    max_page_memory_mb: int = Field(2048, ge=64)
    max_file_mb: int = Field(1024, ge=1)  # a page file (or archive entry, by declared size) above: refused
    follow_symlinks: bool = False  # false: a chapter's symlinks that lead outside it are refused


class IngestConfig(_Section):
    video_stride: int = Field(1, ge=1)
    max_frames: int | None = Field(None, ge=1)
    # Episodes: scene cuts (models/scenes.py, PySceneDetect) and held drawings (models/holds.py).
    scene_detector: Literal["content", "adaptive"] = "content"
    scene_content_threshold: float = Field(27.0, gt=0)
    scene_adaptive_threshold: float = Field(3.0, gt=0)
    scene_min_frames: int = Field(4, ge=1)
    holds: bool = True
    hold_hash_distance: int = Field(6, ge=0, le=64)
    hold_pixel_threshold: float = Field(0.0005, ge=0, le=1)
    hold_max_pan: float = Field(0.05, ge=0, le=0.5)


class LinesConfig(_Section):
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
    # A ColorFlow weights folder holding GraySD/ (e.g. RUN_DIR/checkpoints/step-000500 from
    # `chromaflow train-colorizer`); when set it replaces diffusion.colorflow_path (issue 15).
    weights: str | None = None

    @field_validator("palette_memory_seed", "weights")
    @classmethod
    def _absolute_seed(cls, value: str | None) -> str | None:
        # Stored in job.json: a rerun from another directory must find the same file.
        return str(Path(value).expanduser().absolute()) if value else value

    @model_validator(mode="after")
    def _weights_point_the_backend(self) -> "ColorizeConfig":
        # The diffusion backend reads diffusion.colorflow_path; `weights` is the short name
        # a user passes for a trained checkpoint (--set colorize.weights=...).
        if self.weights and self.diffusion.colorflow_path != self.weights:
            self.diffusion = self.diffusion.model_copy(update={"colorflow_path": self.weights})
        return self


class InstancesConfig(_Section):
    """Several characters per page (models/instances, stages/instances.py): instance masks,
    an identity per instance, each instance colored from its identity's references."""

    backend: Literal["none", "silhouette", "sam"] = "silhouette"
    min_area: float = Field(0.002, ge=0, lt=1)
    max_instances: int = Field(32, ge=1, le=255)
    split_depth: float = Field(0.15, ge=0, le=1)
    # silhouette backend (weight-free)
    analysis_size: int = Field(512, ge=64)
    silhouette_speck_size: float = Field(0.006, ge=0, lt=1)
    silhouette_min_stroke_size: float = Field(0.05, ge=0, lt=1)
    silhouette_gap_radius: float = Field(0.008, ge=0, lt=0.2)
    silhouette_enclosure_reach: float = Field(0.35, ge=0, le=1)
    # sam backend: Segment Anything from a local checkpoint; never downloads
    sam_checkpoint: str | None = None
    sam_arch: Literal["auto", "vit_b", "vit_l", "vit_h"] = "auto"
    sam_input: Literal["lines", "page"] = "lines"
    sam_points_per_side: int = Field(32, ge=1, le=256)
    sam_points_per_batch: int = Field(64, ge=1)
    sam_pred_iou_thresh: float = Field(0.88, ge=0, le=1)
    sam_stability_score_thresh: float = Field(0.95, ge=0, le=1)
    sam_box_nms_thresh: float = Field(0.7, gt=0, le=1)
    sam_batch_pages: int = Field(4, ge=1, le=64)
    device: str = "auto"
    # identity per instance (stages/retrieve.py)
    min_identity_confidence: float = Field(0.4, ge=0, le=1)
    # episodes: instances followed through a scene (models/instances/tracking.py)
    track_max_cost: float = Field(0.8, ge=0)
    track_appearance_weight: float = Field(0.5, ge=0)

    @field_validator("sam_checkpoint")
    @classmethod
    def _absolute_checkpoint(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().absolute()) if value else value


class UpscaleConfig(_Section):
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
    overlap_stages: bool = True
    artifact_pages: int = Field(64, ge=1, le=1000)


class ExportConfig(_Section):
    cbz: bool = True
    video_fps: float | None = Field(None, gt=0)
    report_thumb_size: int = Field(320, ge=32)
    # Episodes (storage/video.py): encoder, quality, audio, contact sheet size.
    video_codec: str = "auto"
    video_crf: int = Field(18, ge=0, le=51)
    video_preset: str = "medium"
    audio: bool = True
    report_max_frames: int = Field(48, ge=1)


class TrainConfig(_Section):
    """`chromaflow build-training-set`, `train-colorizer`, `train-guided-sr` (training/, docs/training.md)."""

    seed: int = Field(0, ge=0)
    # build-training-set
    page_max_side: int = Field(1024, ge=64)
    shard_size: int = Field(64, ge=1, le=100000)
    validation_chapters: int = Field(1, ge=0)
    refs_per_quadrant: int = Field(3, ge=1, le=16)
    exclude_neighbors: int = Field(8, ge=0)
    screen_weight: tuple[float, float] = (0.0, 1.0)
    screen_period: tuple[float, float] = (4.0, 8.0)
    shuffled_references: bool = False
    shuffle_grids: list[int] = Field(default_factory=lambda: [2, 4, 8, 16, 32])
    instance_crops: bool = False
    # models
    sd15_path: str | None = None
    init_weights: str | None = None
    random_base: Literal["tiny", "sd15"] | None = None
    lora_rank: int = Field(64, ge=1, le=1024)
    # Ray Train
    num_workers: int = Field(1, ge=1)
    use_gpu: Literal["auto"] | bool = "auto"
    cpus_per_worker: float = Field(1, gt=0)
    max_failures: int = Field(0, ge=0)
    data_workers: int = Field(0, ge=0)
    # optimisation
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(1, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-5, gt=0)
    lr_warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(1e-2, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    optimizer: Literal["auto", "adamw", "adamw8bit"] = "auto"
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    gradient_checkpointing: bool = True
    ema_decay: float | None = Field(None, gt=0, lt=1)
    # colorizer samples
    timestep_shift: float = 1.5
    query_size: str = "512x800"
    crop_context: tuple[float, float] = (0.25, 1.0)
    crop_downsample: float = Field(0.5, gt=0, le=1)
    screenstyle_prob: float = Field(0.5, ge=0, le=1)
    shuffled_reference_prob: float = Field(0.0, ge=0, le=1)
    # guided SR samples
    gsrp_crop: int = Field(512, ge=64)
    gsrp_scale: float = Field(0.5, gt=0, lt=1)
    gsrp_vae_roundtrip: bool = True
    # bookkeeping
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    validate_every: int = Field(1000, ge=0)
    validation_pages: int = Field(4, ge=1)

    @field_validator("sd15_path", "init_weights")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().absolute()) if value else value

    @field_validator("shuffle_grids")
    @classmethod
    def _grids(cls, value: list[int]) -> list[int]:
        if not value or any(g < 2 or g > 64 for g in value):
            raise ValueError("grids must be between 2 and 64 cells per side")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.validate_every and self.validate_every % self.checkpoint_every:
            raise ValueError(f"validate_every ({self.validate_every}) must be a multiple of checkpoint_every "
                             f"({self.checkpoint_every}): validation colorizes from a saved checkpoint")
        for name in ("screen_weight", "crop_context"):
            low, high = getattr(self, name)
            if not 0 <= low <= high <= 1:
                raise ValueError(f"{name} must be [low, high] with 0 <= low <= high <= 1")
        if not 0 < self.screen_period[0] <= self.screen_period[1]:
            raise ValueError("screen_period must be [low, high] with 0 < low <= high")
        try:
            width, height = (int(v) for v in self.query_size.lower().split("x"))
        except ValueError:
            raise ValueError(f"query_size: expected 'WxH', got {self.query_size!r}") from None
        if width % 32 or height % 32 or width <= 0 or height <= 0:
            raise ValueError(f"query_size {self.query_size}: sides must be positive multiples of 32")
        return self


class Config(_Section):
    job: JobConfig = JobConfig()
    ingest: IngestConfig = IngestConfig()
    lines: LinesConfig = LinesConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    colorize: ColorizeConfig = ColorizeConfig()
    instances: InstancesConfig = InstancesConfig()
    upscale: UpscaleConfig = UpscaleConfig()
    ray: RayConfig = RayConfig()
    prefect: PrefectConfig = PrefectConfig()
    export: ExportConfig = ExportConfig()
    train: TrainConfig = TrainConfig()

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
