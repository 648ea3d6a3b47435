"""Per-shard stage functions for the model stages: extract-lines, colorize, upscale.

Each is a plain function over one shard of the job directory (no Prefect, no Ray), built
on `storage.shards.run_stage_shard`, so it can be called from a test, a Prefect task or
a Ray actor alike.

Resolutions: frames hold the original pages; lines and color are at the colorize work
size (longest side `colorize.work_size`); final is back at the original size.
"""

from __future__ import annotations

import json
from typing import Protocol

import numpy as np

from chromaflow.config import Config
from chromaflow.storage.images import decode_png, encode_png, resize_longest
from chromaflow.storage.job import STAGE_CONFIG, JobDir
from chromaflow.storage.shards import ShardResult, json_bytes, run_stage_shard

from .colorizers.base import ColorizeRequest, Colorizer, Reference
from .lines import extract_lines
from .upscale import LIGHTNESS_BY_KIND, guided_upsample


def stage_config_hash(config: Config, stage: str) -> str:
    return config.section_hash(*STAGE_CONFIG[stage])


def run_lines_shard(job: JobDir, shard: int, config: Config) -> ShardResult:
    def process(key: str, inputs: dict) -> dict:
        page = resize_longest(decode_png(inputs["frames"]["png"]), config.colorize.work_size)
        art = extract_lines(page, config.lines)
        return {"png": encode_png(art.lines), "json": json_bytes({"kind": art.kind})}

    return run_stage_shard(job, "lines", shard, stage_config_hash(config, "lines"), process)


class ReferenceSource(Protocol):
    """What the colorize stage needs from the job's reference store."""

    fingerprint: str

    def load_reference(self, name: str) -> Reference: ...

    def load_patch(self, name: str, box) -> np.ndarray: ...


def run_color_shard(job: JobDir, shard: int, config: Config, colorizer: Colorizer,
                    references: ReferenceSource) -> ShardResult:
    """Colorize one shard with the job's reference store (its fingerprint is part of the
    cache key, so new references recolor the job)."""

    def request_for(key: str, inputs: dict) -> ColorizeRequest:
        frame_meta = json.loads(inputs["frames"]["json"])
        lines = decode_png(inputs["lines"]["png"], gray=True)
        page = resize_longest(decode_png(inputs["frames"]["png"]), config.colorize.work_size)
        retrieved = json.loads(inputs["retrieval"]["json"])
        refs = []
        for entry in retrieved.get("references", []):
            ref = references.load_reference(entry["name"])
            ref.score = float(entry.get("score", ref.score))
            refs.append(ref)
        quadrants = retrieved.get("quadrants") if getattr(colorizer, "uses_quadrant_patches", False) else None
        patches = ([[references.load_patch(hit["name"], hit["box"]) for hit in hits] for hits in quadrants]
                   if quadrants else None)
        return ColorizeRequest(key=key, page=page, lines=lines, kind=json.loads(inputs["lines"]["json"])["kind"],
                               references=refs, identities=list(retrieved.get("identities", [])),
                               scene_id=int(frame_meta.get("scene_id", 0)), quadrant_patches=patches)

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        requests = [request_for(key, inputs) for key, inputs in items]
        if len(requests) > 1:
            colors = colorizer.colorize_batch(requests)
        else:
            colors = [colorizer.colorize(requests[0])]
        outputs = []
        for request, color in zip(requests, colors):
            if color.shape[:2] != request.lines.shape[:2]:
                raise ValueError(f"{config.colorize.backend} returned {color.shape[:2]}, "
                                 f"expected {request.lines.shape[:2]}")
            meta = {"backend": config.colorize.backend, "kind": request.kind, "identities": request.identities,
                    "references": [r.name for r in request.references]}
            outputs.append({"png": encode_png(color), "json": json_bytes(meta)})
        return outputs

    batch = int(getattr(colorizer, "batch_pages", 1)) if hasattr(colorizer, "colorize_batch") else 1
    return run_stage_shard(job, "color", shard, stage_config_hash(config, "color"), process_batch=process_batch,
                           batch_size=batch, extra_input=references.fingerprint)


def run_final_shard(job: JobDir, shard: int, config: Config) -> ShardResult:
    def process(key: str, inputs: dict) -> dict:
        page = decode_png(inputs["frames"]["png"])
        color = decode_png(inputs["color"]["png"])
        meta = json.loads(inputs["frames"]["json"])
        meta.update(json.loads(inputs["color"]["json"]))
        final = guided_upsample(color, page, config.upscale, LIGHTNESS_BY_KIND[meta["kind"]])
        return {"png": encode_png(final), "json": json_bytes(meta)}

    return run_stage_shard(job, "final", shard, stage_config_hash(config, "final"), process)
