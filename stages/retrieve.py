"""retrieve: query the job's reference store with each page's line art and store what was
found (references, quadrant patches, assigned identities, and with
`retrieval.store_canvas` the ColorFlow canvas) in the `retrieve/` shard set.

Manga pages are split into panels (models/panels.py) and each panel is searched as a
drawing of its own: a page with two characters in two panels gets each one's references.
Frames of an episode are searched per scene so that a scene keeps one identity
assignment (no flicker between characters).

Sample JSON: {"panels": [{"box": [x0, y0, x1, y1], <search result>}, ...]} plus the
page-level union of `references` (best first) and `identities`, for reports.
"""

from __future__ import annotations

import json
from itertools import groupby

import numpy as np

from chromaflow.conf import Config
from chromaflow.models.colorflow.canvas import build_canvas
from chromaflow.models.panels import panels_or_page
from chromaflow.models.patches import QUADRANTS, crop, whole_image
from chromaflow.retrieval.identity import identities_for_page
from chromaflow.retrieval.search import ReferenceIndex
from chromaflow.storage.images import decode_png, encode_png, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes

from .runner import ShardStats, run_shard

_indexes: dict[tuple, ReferenceIndex] = {}


def open_index(job: JobDir, config: Config) -> ReferenceIndex:
    """One open index per job folder, store version and retrieval settings in a process
    (the index and the embedder are loaded once, not per shard)."""
    folder = job.references.resolve()
    key = (str(folder), (folder / "store.json").stat().st_mtime_ns, config.section_hash("retrieval"))
    if key not in _indexes:
        _indexes[key] = ReferenceIndex.open(folder, config)
    return _indexes[key]


def canvas_for_page(store: ReferenceIndex, result: dict, query: np.ndarray, size: tuple[int, int] | None = None):
    """ColorFlow's canvas (models/colorflow/canvas.py) from a search result: each quadrant's
    patches loaded from the store; the cells record which reference and box each came from."""
    colors: dict[str, np.ndarray] = {}  # each reference decoded once, however many of its patches are used

    def patch(hit: dict) -> np.ndarray:
        if hit["name"] not in colors:
            colors[hit["name"]] = store.load_reference(hit["name"]).color
        return crop(colors[hit["name"]], tuple(int(v) for v in hit["box"]))

    canvas = build_canvas(query, [[patch(hit) for hit in hits[:3]] for hits in result["quadrants"]], size)
    by_slot = {(q, r + 1): hit for q, hits in zip(QUADRANTS, result["quadrants"]) for r, hit in enumerate(hits[:3])}
    for cell in canvas.cells:
        hit = by_slot[(cell["quadrant"], cell["rank"])]
        cell.update({"reference": hit["name"], "identity": hit["identity"], "score": hit["score"],
                     "reference_box": hit["box"]})
    return canvas


def canvas_sample(store: ReferenceIndex, result: dict, query: np.ndarray,
                  size: tuple[int, int] | None = None) -> dict[str, bytes]:
    """Shard members for a page's canvas (with `retrieval.store_canvas`): canvas.png (RGB),
    mask.png (gray), canvas.json (`Canvas.info()`, the references used per cell)."""
    canvas = canvas_for_page(store, result, query, size)
    return {"canvas.png": encode_png(canvas.image), "mask.png": encode_png(canvas.mask),
            "canvas.json": json.dumps(canvas.info(), sort_keys=True).encode()}


def page_result(panels: list[tuple[tuple, dict]]) -> dict:
    """Per-panel results plus the page-level union of references and identities."""
    best: dict[str, dict] = {}
    identities: list[str] = []
    for _, result in panels:
        for ref in result.get("references", []):
            if ref["name"] not in best or ref["score"] > best[ref["name"]]["score"]:
                best[ref["name"]] = ref
        identities += [i for i in result.get("identities", []) if i not in identities]
    return {"panels": [{"box": list(box), **result} for box, result in panels],
            "references": sorted(best.values(), key=lambda r: -r["score"]), "identities": identities}


def run(job: JobDir, shard: int, config: Config) -> ShardStats:
    store = open_index(job, config)
    top_k = config.retrieval.top_k

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        pages = []
        for key, inputs in items:
            lines = decode_png(inputs["lines"]["png"], gray=True)
            page = resize_longest(decode_png(inputs["ingest"]["png"]), max(lines.shape))
            meta = json.loads(inputs["ingest"]["json"])
            pages.append((lines, page, meta))
        found: list[dict] = []
        if pages and pages[0][2].get("kind") == "episode":
            for _, scene in groupby(pages, key=lambda p: p[2]["scene_id"]):
                scene = list(scene)
                wanted = identities_for_page(config.retrieval, scene[0][2]["index"] + 1)
                results = store.search_scene([(lines, page) for lines, page, _ in scene], top_k, wanted)
                found += [page_result([(whole_image(lines), r)]) for (lines, _, _), r in zip(scene, results)]
        else:
            for lines, page, meta in pages:
                wanted = identities_for_page(config.retrieval, meta["index"] + 1)
                found.append(page_result([(box, store.search(crop(lines, box), crop(page, box), top_k, wanted))
                                          for box in panels_or_page(lines)]))
        outputs = []
        for (lines, page, _), result in zip(pages, found):
            sample = {"json": json_bytes(result)}
            if config.retrieval.store_canvas:
                sample.update(canvas_sample(store, result["panels"][0], crop(page, result["panels"][0]["box"])))
            outputs.append(sample)
        return outputs

    return run_shard(job, "retrieve", shard, config, process_batch, batch_size=config.job.shard_size)
