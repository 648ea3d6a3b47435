"""retrieve: query the job's reference store with each page's line art and store what was
found (references, quadrant patches, assigned identities, and with
`retrieval.store_canvas` the ColorFlow canvas) in the `retrieve/` shard set.

Manga pages are split into panels (models/panels.py) and each panel is searched as a
drawing of its own: a page with two characters in two panels gets each one's references.
Frames of an episode are searched per scene so that a scene keeps one identity
assignment (no flicker between characters).

Character instances (the `instances/` shard set) are searched one by one as well, their
identities assigned jointly per page, or per track through an episode's scene
(retrieval/instance_search.py); each identified instance gets its identity's references.
The panels' own results stay what the page's background and unassigned instances are
colored from (the page's whole pool). For quadrant-patch backends each panel of a chapter
page also gets `instance_quadrants`: its quadrants' patches restricted to the identities
present there (episode frames keep the scene's quadrant patches).

Sample JSON: {"panels": [{"box": [x0, y0, x1, y1], <search result>}, ...], "instances":
[{"pieces": [label ids], "box", "group", "identity", "identity_scores", "references",
"quadrants" (, "track")}, ...]} plus the page-level union of `references` (best first) and
`identities`, for reports.
"""

from __future__ import annotations

import json
from itertools import groupby

import numpy as np

from chromaflow.conf import Config
from chromaflow.models.colorflow.canvas import build_canvas
from chromaflow.models.instances.assignment import UNKNOWN
from chromaflow.models.panels import panels_or_page
from chromaflow.models.patches import QUADRANTS, crop, whole_image
from chromaflow.retrieval.identity import identities_for_page
from chromaflow.retrieval.instance_search import identity_quadrants, search_page_instances, search_scene_instances
from chromaflow.retrieval.search import ReferenceIndex
from chromaflow.storage.images import decode_png, encode_png, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import json_bytes

from .ingest import EPISODE, sample_key
from .instances import read_instances
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


def page_result(panels: list[tuple[tuple, dict]], instances: list[dict] = ()) -> dict:
    """Per-panel and per-instance results plus the page-level union of references and identities."""
    best: dict[str, dict] = {}
    identities: list[str] = []
    for result in [r for _, r in panels] + list(instances):
        for ref in result.get("references", []):
            if ref["name"] not in best or ref["score"] > best[ref["name"]]["score"]:
                best[ref["name"]] = ref
    for _, result in panels:
        identities += [i for i in result.get("identities", []) if i not in identities]
    identities += [i["identity"] for i in instances if i["identity"] not in identities and i["identity"] != UNKNOWN]
    if instances and len(identities) > 1 and UNKNOWN in identities:
        identities.remove(UNKNOWN)  # a page whose characters were identified is not "unknown"
    return {"panels": [{"box": list(box), **result} for box, result in panels], "instances": list(instances),
            "references": sorted(best.values(), key=lambda r: -r["score"]), "identities": identities}


def run(job: JobDir, shard: int, config: Config) -> ShardStats:
    store = open_index(job, config)

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        pages = []
        for key, inputs in items:
            lines = decode_png(inputs["lines"]["png"], gray=True)
            page = resize_longest(decode_png(inputs["ingest"]["png"]), max(lines.shape))
            meta = json.loads(inputs["ingest"]["json"])
            pages.append((lines, page, meta, read_instances(inputs["instances"])))
        if pages and pages[0][2].get("kind") == "episode":
            keys = {key for key, _ in items}
            found = []
            for _, scene in groupby(pages, key=lambda p: p[2]["scene_id"]):
                found += search_scene(store, list(scene), config, keys)
        else:
            found = [search_chapter_page(store, lines, page, meta, instances, config)
                     for lines, page, meta, instances in pages]
        outputs = []
        for (lines, page, _, _), result in zip(pages, found):
            sample = {"json": json_bytes(result)}
            if config.retrieval.store_canvas:
                sample.update(canvas_sample(store, result["panels"][0], crop(page, result["panels"][0]["box"])))
            outputs.append(sample)
        return outputs

    return run_shard(job, "retrieve", shard, config, process_batch, batch_size=config.job.shard_size)


def search_chapter_page(store: ReferenceIndex, lines, page, meta: dict, instances, config: Config) -> dict:
    """A manga page: each panel searched, then each character instance."""
    top_k, cfg = config.retrieval.top_k, config.instances
    wanted = identities_for_page(config.retrieval, meta["index"] + 1)
    labels, records = instances
    found, _ = (search_page_instances(store, lines, page, labels, records, top_k, cfg.min_identity_confidence, wanted)
                if records else ([], []))
    masks = [np.isin(labels, i["pieces"]) for i in found]
    panels = []
    for box in panels_or_page(lines):
        vectors, quadrant_boxes, _ = store.embed_page(crop(lines, box), crop(page, box))
        result = store.search_vectors(vectors, top_k, wanted)
        if found:
            present, hits = identity_quadrants(store, vectors, quadrant_boxes, box, masks,
                                               [i["identity"] for i in found], top_k)
            if hits is not None:
                result = {**result, "quadrant_identities": present, "instance_quadrants": hits}
        panels.append((box, result))
    return page_result(panels, found)


def search_scene(store: ReferenceIndex, scene: list[tuple], config: Config, keys: set[str]) -> list[dict]:
    """An episode's scene: the frames share one identity assignment, and their instances
    are tracked through the scene (one identity per track). A held drawing's repeats
    (ingest's `hold_of`, a key of this shard) take its result instead of a search."""
    top_k, cfg = config.retrieval.top_k, config.instances
    wanted = identities_for_page(config.retrieval, scene[0][2]["index"] + 1)
    searched = [frame for frame in scene if frame[2].get("hold_of") not in keys]
    results = store.search_scene([(lines, page) for lines, page, _, _ in searched], top_k, wanted)
    if any(records for _, _, _, (_, records) in searched):
        per_frame = search_scene_instances(store, [(l, p, lab, rec) for l, p, _, (lab, rec) in searched], top_k,
                                           cfg.min_identity_confidence, wanted, cfg.track_max_cost,
                                           cfg.track_appearance_weight)
    else:
        per_frame = [[] for _ in searched]
    by_key = {sample_key(EPISODE, meta["index"]): page_result([(whole_image(lines), r)], inst)
              for (lines, _, meta, _), r, inst in zip(searched, results, per_frame)}
    return [by_key.get(sample_key(EPISODE, meta["index"])) or by_key[meta["hold_of"]] for _, _, meta, _ in scene]