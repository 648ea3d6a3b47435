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
from chromaflow.storage.shards import ShardResult, json_bytes, run_stage_shard, sha256_file

from .colorizers.base import ColorizeRequest, Colorizer, Reference
from .lines import extract_lines
from .panels import crop, whole_image
from .propagate import TemporalColorizer
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


class PaletteSource(Protocol):
    """The job's palette memory (retrieval/palette.py PaletteMemory)."""

    def colors(self, identities) -> np.ndarray: ...


def color_stage_inputs(job: JobDir, config: Config, store_fingerprint: str) -> str:
    """What a color shard depends on besides its shard inputs: the reference store and, when
    enabled, the job's palette memory (a changed memory recolors the job)."""
    if config.colorize.palette_memory and job.palette_memory.exists():
        return f"{store_fingerprint}:{sha256_file(job.palette_memory)}"
    return store_fingerprint


def run_color_shard(job: JobDir, shard: int, config: Config, colorizer: Colorizer,
                    references: ReferenceSource, palette_memory: PaletteSource | None = None) -> ShardResult:
    """Colorize one shard with the job's reference store and palette memory (both part of
    the cache key). Episode frames go through a TemporalColorizer that is fresh for every
    shard, so a shard's result never depends on which actor colorized which shard before it."""
    if job.read_info().get("kind") == "episode":
        colorizer = TemporalColorizer(colorizer)
    if not config.colorize.palette_memory:
        palette_memory = None

    def requests_for(key: str, inputs: dict) -> tuple[np.ndarray, list[tuple[tuple, ColorizeRequest]]]:
        """The page at work size and one request per panel (retrieval found the panels)."""
        frame_meta = json.loads(inputs["frames"]["json"])
        lines = decode_png(inputs["lines"]["png"], gray=True)
        kind = json.loads(inputs["lines"]["json"])["kind"]
        page = resize_longest(decode_png(inputs["frames"]["png"]), config.colorize.work_size)
        retrieved = json.loads(inputs["retrieval"]["json"])
        panels = retrieved.get("panels") or [{"box": whole_image(lines), **retrieved}]
        out = []
        for i, panel in enumerate(panels):
            box = tuple(panel["box"])
            refs = []
            for entry in panel.get("references", []):
                ref = references.load_reference(entry["name"])
                ref.score = float(entry.get("score", ref.score))
                refs.append(ref)
            quadrants = panel.get("quadrants") if getattr(colorizer, "uses_quadrant_patches", False) else None
            # The remembered colors of the panel's identities and of its references' pools
            # (an "unknown" panel still snaps to the pools its references came from).
            palette = (palette_memory.colors(set(panel.get("identities", [])) | {r.identity for r in refs})
                       if palette_memory is not None else None)
            patches = ([[references.load_patch(hit["name"], hit["box"]) for hit in hits] for hits in quadrants]
                       if quadrants else None)
            out.append((box, ColorizeRequest(
                key=key if len(panels) == 1 else f"{key}-panel{i}", page=crop(page, box), lines=crop(lines, box),
                kind=kind, references=refs, identities=list(panel.get("identities", [])),
                scene_id=int(frame_meta.get("scene_id", 0)), quadrant_patches=patches,
                palette=palette, palette_tolerance=config.colorize.palette_tolerance)))
        return page, out

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        pages = [requests_for(key, inputs) for key, inputs in items]
        requests = [request for _, panels in pages for _, request in panels]
        if len(requests) > 1 and hasattr(colorizer, "colorize_batch"):
            colors = iter(colorizer.colorize_batch(requests))
        else:
            colors = iter([colorizer.colorize(r) for r in requests])
        outputs = []
        for page, panels in pages:
            # Gutters and frames stay as drawn; every panel gets its colorization.
            result = page.copy()
            for (x0, y0, x1, y1), request in panels:
                color = next(colors)
                if color.shape[:2] != request.lines.shape[:2]:
                    raise ValueError(f"{config.colorize.backend} returned {color.shape[:2]}, "
                                     f"expected {request.lines.shape[:2]}")
                result[y0:y1, x0:x1] = color
            requests_of_page = [r for _, r in panels]
            meta = {"backend": config.colorize.backend, "kind": requests_of_page[0].kind,
                    "identities": sorted({i for r in requests_of_page for i in r.identities}),
                    "references": sorted({ref.name for r in requests_of_page for ref in r.references}),
                    "panels": len(panels)}
            # Per panel: what the backend reported (style, low-confidence boxes in panel pixels, ...).
            meta["diagnostics"] = [{"panel": list(box), **r.diagnostics} for box, r in panels if r.diagnostics]
            outputs.append({"png": encode_png(result), "json": json_bytes(meta)})
        return outputs

    batch = int(getattr(colorizer, "batch_pages", 1)) if hasattr(colorizer, "colorize_batch") else 1
    return run_stage_shard(job, "color", shard, stage_config_hash(config, "color"), process_batch=process_batch,
                           batch_size=batch, extra_input=color_stage_inputs(job, config, references.fingerprint))


def run_final_shard(job: JobDir, shard: int, config: Config) -> ShardResult:
    def process(key: str, inputs: dict) -> dict:
        page = decode_png(inputs["frames"]["png"])
        color = decode_png(inputs["color"]["png"])
        meta = json.loads(inputs["frames"]["json"])
        meta.update(json.loads(inputs["color"]["json"]))
        final = guided_upsample(color, page, config.upscale, LIGHTNESS_BY_KIND[meta["kind"]])
        return {"png": encode_png(final), "json": json_bytes(meta)}

    return run_stage_shard(job, "final", shard, stage_config_hash(config, "final"), process)
