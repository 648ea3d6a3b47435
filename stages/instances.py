"""instances: the characters on each page, as masks, in the `instances/` shard set.

Runs the configured segmenter (`instances.backend`: none | silhouette | sam,
models/instances) on each page's line art (and the page at the same size) and stores:

    png   the page's instance label map, uint8 at the line art's size (0 = no instance,
          i = instance i), a compressed PNG
    json  {"backend": ..., "size": [w, h], "instances": [{"id": i, "box": [x0, y0, x1, y1],
          "score": s, "group": g, "area": pixels}, ...]}

Instances split from one silhouette share a `group`. Which character each instance is
(its identity) is decided by retrieval, which reads this shard set (stages/retrieve.py
writes the identities with the boxes in `retrieve/`). An episode frame holding the drawing
before it in place takes that drawing's instances (stages/held.py). Segmenters are built once per
process (weights load once); with `sam` a shard's pages go to the model in batches of
`instances.sam_batch_pages`.
"""

from __future__ import annotations

import json

import numpy as np

from chromaflow.conf import Config
from chromaflow.models.instances import InstanceSegmenter, build_segmenter, label_map
from chromaflow.storage.images import decode_png, encode_png, resize_longest
from chromaflow.storage.job import JobDir
from chromaflow.storage.shards import Sample, json_bytes

from .held import HeldOutputs
from .runner import ShardStats, run_shard

LABEL_PNG_COMPRESSION = 6  # label maps are mostly runs of one value: they compress well and cheaply

_segmenters: dict[str, InstanceSegmenter | None] = {}


def open_segmenter(config: Config) -> InstanceSegmenter | None:
    """One segmenter per process and `instances` settings (weights load once)."""
    key = config.section_hash("instances")
    if key not in _segmenters:
        _segmenters[key] = build_segmenter(config)
    return _segmenters[key]


def run(job: JobDir, shard: int, config: Config) -> ShardStats:
    segmenter = open_segmenter(config)
    held = HeldOutputs()

    def process_batch(items: list[tuple[str, dict]]) -> list[dict]:
        repeats = [held.repeat_of(inputs) for _, inputs in items]
        pages = []
        for (_, inputs), repeat in zip(items, repeats):
            if repeat is None:
                lines = decode_png(inputs["lines"]["png"], gray=True)
                pages.append((lines, resize_longest(decode_png(inputs["ingest"]["png"]), max(lines.shape))))
        if segmenter is None:
            found = [[] for _ in pages]
        elif len(pages) > 1 and hasattr(segmenter, "segment_batch"):
            found = segmenter.segment_batch(pages)
        else:
            found = [segmenter.segment(lines, page) for lines, page in pages]
        computed = iter([instance_sample(lines.shape, instances, config.instances.backend)
                         for (lines, _), instances in zip(pages, found)])
        outputs = []
        for (key, inputs), repeat in zip(items, repeats):
            output = repeat if repeat is not None else next(computed)
            if repeat is None:
                held.remember(key, inputs, output)
            outputs.append(output)
        return outputs

    batch = config.instances.sam_batch_pages if config.instances.backend == "sam" else 1
    return run_shard(job, "instances", shard, config, process_batch, batch_size=batch)


def instance_sample(shape: tuple[int, int], instances, backend: str) -> dict:
    labels = label_map(instances, shape)
    meta = {"backend": backend, "size": [shape[1], shape[0]], "instances": []}
    for i, instance in enumerate(instances, start=1):
        mask = labels == i  # what the label map kept of it (overlaps go to one instance)
        if not mask.any():
            continue
        ys, xs = np.nonzero(mask)
        meta["instances"].append({"id": i, "box": [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1],
                                  "score": round(float(instance.score), 4), "group": int(instance.group),
                                  "area": int(mask.sum())})
    return {"png": encode_png(labels, LABEL_PNG_COMPRESSION), "json": json_bytes(meta)}


def read_instances(sample: Sample) -> tuple[np.ndarray, list[dict]]:
    """(label map, instance records) of one `instances/` sample."""
    return decode_png(sample["png"], gray=True), json.loads(sample["json"])["instances"]
