"""colorize: each page (each panel of a manga page) colored by the configured backend from
the references retrieval found for it and the job's palette memory.

Several characters on a page (the `instances/` masks, their identities in `retrieve/`):
each instance is colored as a drawing of its own: its crop (everything outside its mask
erased to paper) is one request, with its identity's references only and that identity's
remembered colors, or, for an instance no identity was assigned to, the references its
own search found over all pools (the page's whole pool). Its result is composited inside
its mask. The panel's own request then colors only what no instance holds (scenery,
objects: the panel with the characters erased, from the panel's references), and is
skipped when hardly any ink is left there (BACKGROUND_MIN_INK): aligning the whole
pool's references to a few stray strokes would paint them over the paper. So the region
colorizer itself is unchanged. What no request colors (gutters, panel frames, a skipped
panel's paper) stays as drawn, but on a black-and-white page with its paper whitened
and neutral, as the colorizer whitens it (a scan's yellowed paper would otherwise stay
yellow around white panels). Backends that read per-quadrant patches (diffusion, one
forward pass per panel) get no per-instance requests; instead each quadrant's patches
come from the identities whose instances lie in it (`instance_quadrants`, see
stages/retrieve.py): a per-instance diffusion pass would multiply the GPU cost by the
number of characters, while ColorFlow's canvas already colors each quadrant from the
patches beside it.

Runs on the Ray actor pool: `load(config)` builds the colorizer once per actor (where
learned backends load their weights), `run` colorizes one shard with it. Episode frames
go through TemporalColorizers that are fresh for every shard (one per panel position and
one per instance track), so a shard's result never depends on which actor colorized which
shard before it. A frame that ingest marked as a repeat of an earlier drawing of its shard
(`hold_of`, models/holds.py) is not colorized: it reuses that frame's colors, moved by the
pan offset (`HeldColors`).
"""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np

from chromaflow.conf import Config
from chromaflow.models.colorizers import ColorizeRequest, Colorizer, build_colorizer
from chromaflow.models.descreen import PageTone, white_balanced
from chromaflow.models.holds import reuse_color
from chromaflow.models.instances.assignment import UNKNOWN
from chromaflow.models.page_styles import COLOR, style_name
from chromaflow.models.palette_memory import PaletteMemory
from chromaflow.models.patches import crop, whole_image
from chromaflow.models.propagate import TemporalColorizer
from chromaflow.retrieval.images import ReferenceImages
from chromaflow.storage.images import decode_png, encode_png, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes

from .held import in_place_source
from .instances import read_instances
from .lines import read_tone
from .palette_memory import job_palette_memory
from .runner import ShardStats, run_shard

CROP_MARGIN = 0.04  # share of an instance's size kept around it in its crop
# A panel whose characters are all instances is left as drawn outside them unless this
# share of its pixels is ink that belongs to no character (scenery, objects).
BACKGROUND_MIN_INK = 0.01


def load(config: Config) -> dict:
    """What an actor builds once: the colorizer."""
    return {"colorizer": build_colorizer(config)}


def run(job: JobDir, shard: int, config: Config, colorizer: Colorizer) -> ShardStats:
    episode = job.read_info().get("kind") == "episode"
    temporal: dict[str, TemporalColorizer] = {}  # per stream (panel position, instance track)
    references = ReferenceImages.open(job.references)
    memory = job_palette_memory(job, config)
    held = HeldColors()

    def colorize_pages(items: list[tuple[str, dict]]) -> list[dict]:
        pages = [page_requests(key, inputs, config, colorizer, references, memory) for key, inputs in items]
        requests = [(stream, r) for page in pages for stream, _, r in page.panels + page.instances]
        if episode:
            colors = iter([temporal.setdefault(stream, TemporalColorizer(colorizer)).colorize(r)
                           for stream, r in requests])
        elif len(requests) > 1 and hasattr(colorizer, "colorize_batch"):
            colors = iter(colorizer.colorize_batch([r for _, r in requests]))
        else:
            colors = iter([colorizer.colorize(r) for _, r in requests])
        return [page_sample(page, colors, config.colorize.backend) for page in pages]

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        fresh_keys: set[str] = set()
        for key, inputs in items:  # a repeat's drawing may be colored earlier in this batch
            if not held.can_reuse(inputs, fresh_keys):
                fresh_keys.add(key)
        fresh = [(key, inputs) for key, inputs in items if key in fresh_keys]
        colored = dict(zip([key for key, _ in fresh], colorize_pages(fresh))) if fresh else {}
        out = []
        for key, inputs in items:
            if key in colored:
                held.remember(key, colored[key])
                out.append(colored[key])
            else:
                out.append(held.reuse(inputs))
        return out

    batch = int(getattr(colorizer, "batch_pages", 1)) if hasattr(colorizer, "colorize_batch") else 1
    return run_shard(job, "colorize", shard, config, process_batch, batch_size=batch)


class HeldColors:
    """The colored frames of a shard that later frames may repeat. A repeat always points at
    the last drawing that was colored (models/holds.py), so only the latest few are kept."""

    KEEP = 4

    def __init__(self):
        self._colored: dict[str, dict] = {}

    def can_reuse(self, inputs: dict, colored_in_batch: set[str]) -> bool:
        source = json.loads(inputs["ingest"]["json"]).get("hold_of")
        return source is not None and (source in self._colored or source in colored_in_batch)

    def remember(self, key: str, sample: dict) -> None:
        self._colored[key] = sample
        while len(self._colored) > self.KEEP:
            self._colored.pop(next(iter(self._colored)))

    def reuse(self, inputs: dict) -> dict:
        """The repeat's sample: its drawing's colors moved by the pan, its own strokes."""
        meta = json.loads(inputs["ingest"]["json"])
        source = self._colored[meta["hold_of"]]
        out_meta = json_bytes({**json.loads(source["json"]), "reused_from": meta["hold_of"],
                               "hold_offset": meta.get("hold_offset", [0.0, 0.0])})
        if in_place_source(meta) is not None:
            return {"png": source["png"], "json": out_meta}  # the same drawing in place: its colors as they are
        lines = decode_png(inputs["lines"]["png"], gray=True)
        color = decode_png(source["png"])
        scale = lines.shape[1] / meta["width"]  # offsets are in source pixels; colors are at the work size
        dx, dy = (v * scale for v in meta["hold_offset"])
        if color.shape[:2] != lines.shape:
            raise ValueError(f"{meta['source']}: repeats a frame of another size")
        return {"png": encode_png(reuse_color(color, lines, dx, dy)), "json": out_meta}


class PageWork:
    """One page's requests: per panel (stream, box, request) and per identified instance
    (stream, (box, mask in the box, record), request)."""

    def __init__(self, page: np.ndarray, kind: str, num_panels: int):
        self.page, self.kind, self.num_panels = page, kind, num_panels
        self.panels: list[tuple[str, tuple, ColorizeRequest]] = []
        self.instances: list[tuple[str, tuple, ColorizeRequest]] = []


def page_requests(key: str, inputs: dict, config: Config, colorizer: Colorizer, references: ReferenceImages,
                  memory: PaletteMemory | None) -> PageWork:
    """The page at work size, one request per panel (retrieval found the panels) and one
    per identified instance (backends without quadrant patches)."""
    frame_meta = json.loads(inputs["ingest"]["json"])
    lines = decode_png(inputs["lines"]["png"], gray=True)
    kind = json.loads(inputs["lines"]["json"])["kind"]
    tone = read_tone(inputs["lines"])
    page = resize_longest(decode_png(inputs["ingest"]["png"]), config.colorize.work_size)
    retrieved = json.loads(inputs["retrieve"]["json"])
    panels = retrieved.get("panels") or [{"box": whole_image(lines), **retrieved}]
    wants_patches = getattr(colorizer, "uses_quadrant_patches", False)
    scene_id = int(frame_meta.get("scene_id", 0))
    work = PageWork(page, kind, len(panels))
    per_instance = not wants_patches and bool(retrieved.get("instances"))
    labels = read_instances(inputs["instances"])[0] if per_instance else None
    characters = (np.isin(labels, [p for r in retrieved["instances"] for p in r["pieces"]])
                  if per_instance else None)
    for i, panel in enumerate(panels):
        box = tuple(panel["box"])
        panel_lines, panel_page = crop(lines, box), crop(page, box)
        kept = None  # where the panel's request sees the page (None: everywhere)
        if characters is not None and crop(characters, box).any():
            # The characters are colored one by one below; the panel's own request colors
            # what is left (scenery, objects), or nothing when only stray strokes are left.
            erased = crop(characters, box)
            kept = ~erased
            panel_lines = np.where(erased, 255, panel_lines).astype(np.uint8)
            panel_page = np.where(erased[..., None], 255, panel_page).astype(np.uint8)
            if (panel_lines < 128).mean() < BACKGROUND_MIN_INK:
                continue  # stays as drawn
        panel_tone = tone_crop(tone, box, kept)
        refs = [references.load_reference(entry["name"], float(entry.get("score", 0.0)))
                for entry in panel.get("references", [])]
        quadrants = (panel.get("instance_quadrants") or panel.get("quadrants")) if wants_patches else None
        patches = ([[references.load_patch(hit["name"], hit["box"]) for hit in hits] for hits in quadrants]
                   if quadrants else None)
        # The remembered colors of the panel's identities and of its references' pools
        # (an "unknown" panel still snaps to the pools its references came from).
        named = set(panel.get("identities", [])) | {r.identity for r in refs}
        named |= {n for names in panel.get("quadrant_identities", []) for n in names} if wants_patches else set()
        work.panels.append((f"panel{i}", box, ColorizeRequest(
            key=key if len(panels) == 1 else f"{key}-panel{i}", page=panel_page, lines=panel_lines,
            kind=kind, references=refs, identities=list(panel.get("identities", [])), scene_id=scene_id,
            quadrant_patches=patches, remembered_colors=memory.colors(named) if memory is not None else None,
            palette_tolerance=config.colorize.palette_tolerance, tone=panel_tone)))
    for n, record in enumerate(retrieved.get("instances", []) if per_instance else []):
        if record.get("references"):
            where, request = instance_request(f"{key}-instance{n}", record, labels, lines, page, kind, scene_id,
                                              references, memory, config, tone)
            work.instances.append((f"track{record.get('track', n)}", where, request))
    return work


def instance_request(key: str, record: dict, labels: np.ndarray, lines: np.ndarray, page: np.ndarray, kind: str,
                     scene_id: int, references: ReferenceImages, memory: PaletteMemory | None,
                     config: Config, tone: PageTone | None) -> tuple[tuple, ColorizeRequest]:
    """One instance's crop (paper outside its mask) and its references: its identity's,
    or for an unknown instance those its search found over all pools."""
    mask = np.isin(labels, record["pieces"])
    ys, xs = np.nonzero(mask)
    margin = int(CROP_MARGIN * max(xs.max() - xs.min(), ys.max() - ys.min())) + 1
    box = (max(0, int(xs.min()) - margin), max(0, int(ys.min()) - margin),
           min(mask.shape[1], int(xs.max()) + 1 + margin), min(mask.shape[0], int(ys.max()) + 1 + margin))
    inside = crop(mask, box)
    identity = record["identity"]
    refs = [references.load_reference(entry["name"], float(entry.get("score", 0.0))) for entry in record["references"]]
    request = ColorizeRequest(
        key=key, page=np.where(inside[..., None], crop(page, box), 255).astype(np.uint8),
        lines=np.where(inside, crop(lines, box), 255).astype(np.uint8), kind=kind, references=refs,
        identities=[identity], scene_id=scene_id,
        remembered_colors=memory.colors({identity} if identity != UNKNOWN else {r.identity for r in refs})
        if memory is not None else None,
        palette_tolerance=config.colorize.palette_tolerance, tone=tone_crop(tone, box, inside))
    return (box, inside, record), request


def tone_crop(tone: PageTone | None, box: tuple, keep: np.ndarray | None = None) -> PageTone | None:
    """The tone page's descreened gray under a request's crop, paper outside `keep` (where
    the request's page is erased to paper too)."""
    if tone is None:
        return None
    gray = crop(tone.gray, box)
    return replace(tone, gray=gray if keep is None else np.where(keep, gray, 255).astype(np.uint8))


def page_sample(work: PageWork, colors, backend: str) -> dict:
    """The colored page (gutters and frames stay as drawn; instances inside their masks)
    and its metadata."""
    result = as_drawn(work.page, work.kind)
    for _, (x0, y0, x1, y1), request in work.panels:
        color = _checked(next(colors), request, backend)
        result[y0:y1, x0:x1] = color
    placed = []
    for _, ((x0, y0, x1, y1), inside, record), request in work.instances:
        color = _checked(next(colors), request, backend)
        region = result[y0:y1, x0:x1]
        region[inside] = color[inside]
        placed.append({"identity": record["identity"], "box": record["box"],
                       "references": [r.name for r in request.references]})
    requests = [r for _, _, r in work.panels + work.instances]
    meta = {"backend": backend, "kind": work.kind,
            "identities": sorted({i for r in requests for i in r.identities if i != UNKNOWN}
                                 or {i for r in requests for i in r.identities}),
            "references": sorted({ref.name for r in requests for ref in r.references}),
            "panels": work.num_panels, "instances": placed}
    # Per panel and instance: what the backend reported (style, low-confidence boxes in the
    # crop's pixels, ...), with the crop's box on the page.
    meta["diagnostics"] = (
        [{"panel": list(box), **r.diagnostics} for _, box, r in work.panels if r.diagnostics]
        + [{"instance": list(where[0]), **r.diagnostics} for _, where, r in work.instances if r.diagnostics])
    return {"png": encode_png(result), "json": json_bytes(meta)}


def as_drawn(page: np.ndarray, kind: str) -> np.ndarray:
    """The page where no request colors it: a color page as it is; a black-and-white page
    (line, gray, tone) white-balanced and without chroma (its paper white, its ink black)."""
    if style_name(kind) == COLOR:
        return page.copy()
    return cv2.cvtColor(cv2.cvtColor(white_balanced(page), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def _checked(color: np.ndarray, request: ColorizeRequest, backend: str) -> np.ndarray:
    if color.shape[:2] != request.lines.shape[:2]:
        raise ValueError(f"{backend} returned {color.shape[:2]}, expected {request.lines.shape[:2]}")
    return color
