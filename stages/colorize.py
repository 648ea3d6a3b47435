"""colorize: each page (each panel of a manga page) colored by the configured backend from
the references retrieval found for it and the job's palette memory.

Runs on the Ray actor pool: `load(config)` builds the colorizer once per actor (where
learned backends load their weights), `run` colorizes one shard with it. Episode frames
go through a TemporalColorizer that is fresh for every shard, so a shard's result never
depends on which actor colorized which shard before it.
"""

from __future__ import annotations

import json

import numpy as np

from chromaflow.conf import Config
from chromaflow.models.colorizers import ColorizeRequest, Colorizer, build_colorizer
from chromaflow.models.palette_memory import PaletteMemory
from chromaflow.models.patches import crop, whole_image
from chromaflow.models.propagate import TemporalColorizer
from chromaflow.retrieval.images import ReferenceImages
from chromaflow.storage.images import decode_png, encode_png, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes

from .palette_memory import job_palette_memory
from .runner import ShardStats, run_shard


def load(config: Config) -> dict:
    """What an actor builds once: the colorizer."""
    return {"colorizer": build_colorizer(config)}


def run(job: JobDir, shard: int, config: Config, colorizer: Colorizer) -> ShardStats:
    if job.read_info().get("kind") == "episode":
        colorizer = TemporalColorizer(colorizer)
    references = ReferenceImages.open(job.references)
    memory = job_palette_memory(job, config)

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        pages = [page_requests(key, inputs, config, colorizer, references, memory) for key, inputs in items]
        requests = [request for _, panels in pages for _, request in panels]
        if len(requests) > 1 and hasattr(colorizer, "colorize_batch"):
            colors = iter(colorizer.colorize_batch(requests))
        else:
            colors = iter([colorizer.colorize(r) for r in requests])
        return [page_sample(page, panels, colors, config.colorize.backend) for page, panels in pages]

    batch = int(getattr(colorizer, "batch_pages", 1)) if hasattr(colorizer, "colorize_batch") else 1
    return run_shard(job, "colorize", shard, config, process_batch, batch_size=batch)


def page_requests(key: str, inputs: dict, config: Config, colorizer: Colorizer, references: ReferenceImages,
                  memory: PaletteMemory | None) -> tuple[np.ndarray, list[tuple[tuple, ColorizeRequest]]]:
    """The page at work size and one request per panel (retrieval found the panels)."""
    frame_meta = json.loads(inputs["ingest"]["json"])
    lines = decode_png(inputs["lines"]["png"], gray=True)
    kind = json.loads(inputs["lines"]["json"])["kind"]
    page = resize_longest(decode_png(inputs["ingest"]["png"]), config.colorize.work_size)
    retrieved = json.loads(inputs["retrieve"]["json"])
    panels = retrieved.get("panels") or [{"box": whole_image(lines), **retrieved}]
    wants_patches = getattr(colorizer, "uses_quadrant_patches", False)
    out = []
    for i, panel in enumerate(panels):
        box = tuple(panel["box"])
        refs = [references.load_reference(entry["name"], float(entry.get("score", 0.0)))
                for entry in panel.get("references", [])]
        quadrants = panel.get("quadrants") if wants_patches else None
        patches = ([[references.load_patch(hit["name"], hit["box"]) for hit in hits] for hits in quadrants]
                   if quadrants else None)
        # The remembered colors of the panel's identities and of its references' pools
        # (an "unknown" panel still snaps to the pools its references came from).
        remembered = (memory.colors(set(panel.get("identities", [])) | {r.identity for r in refs})
                      if memory is not None else None)
        out.append((box, ColorizeRequest(
            key=key if len(panels) == 1 else f"{key}-panel{i}", page=crop(page, box), lines=crop(lines, box),
            kind=kind, references=refs, identities=list(panel.get("identities", [])),
            scene_id=int(frame_meta.get("scene_id", 0)), quadrant_patches=patches,
            palette=remembered, palette_tolerance=config.colorize.palette_tolerance)))
    return page, out


def page_sample(page: np.ndarray, panels: list[tuple[tuple, ColorizeRequest]], colors, backend: str) -> dict:
    """The colored page (gutters and frames stay as drawn) and its metadata."""
    result = page.copy()
    for (x0, y0, x1, y1), request in panels:
        color = next(colors)
        if color.shape[:2] != request.lines.shape[:2]:
            raise ValueError(f"{backend} returned {color.shape[:2]}, expected {request.lines.shape[:2]}")
        result[y0:y1, x0:x1] = color
    requests = [r for _, r in panels]
    meta = {"backend": backend, "kind": requests[0].kind,
            "identities": sorted({i for r in requests for i in r.identities}),
            "references": sorted({ref.name for r in requests for ref in r.references}),
            "panels": len(panels)}
    # Per panel: what the backend reported (style, low-confidence boxes in panel pixels, ...).
    meta["diagnostics"] = [{"panel": list(box), **r.diagnostics} for box, r in panels if r.diagnostics]
    return {"png": encode_png(result), "json": json_bytes(meta)}
