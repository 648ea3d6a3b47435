"""Follow-Your-Color-style instance crops for training samples (`train.instance_crops`).

Follow-Your-Color colors each character from its own reference with its own mask. A
training page's characters are found by the configured instances segmenter (the same one
the `instances` stage runs, `instances.backend`, on the page's line art). Each instance, as
the stage stores it, becomes a crop of the colored target page at its box, white outside
its mask, stored as `inst00.png`, ... with its box, score and `group` in the sample's json
(pieces split from one silhouette share a group: touching characters, or one character cut
at a narrow neck; the pipeline decides which by retrieval, a trainer may join them).
"""

from __future__ import annotations

import numpy as np

from chromaflow.conf import Config
from chromaflow.models.instances import build_segmenter, label_map, mask_box

_segmenters: dict[str, object] = {}


def _segmenter(config: Config):
    """One segmenter per process and `instances` settings (SAM weights load once)."""
    key = config.section_hash("instances")
    if key not in _segmenters:
        _segmenters[key] = build_segmenter(config)
    return _segmenters[key]


def instance_crops(color: np.ndarray, lines: np.ndarray, config: Config) -> tuple[list[np.ndarray], list[dict]]:
    """The page's instances as crops of `color` (white outside each mask) and their records,
    largest first; none with `instances.backend: none`."""
    segmenter = _segmenter(config)
    if segmenter is None:
        return [], []
    instances = segmenter.segment(lines, color)
    labels = label_map(instances, lines.shape)  # overlaps go to one instance, as in the stage
    found = [(labels == i, instance) for i, instance in enumerate(instances, start=1)]
    crops, records = [], []
    for mask, instance in sorted((f for f in found if f[0].any()), key=lambda f: -int(f[0].sum())):
        x0, y0, x1, y1 = mask_box(mask)
        crops.append(np.where(mask[y0:y1, x0:x1, None], color[y0:y1, x0:x1], np.uint8(255)).astype(np.uint8))
        records.append({"box": [x0, y0, x1, y1], "score": round(float(instance.score), 4), "group": int(instance.group),
                        "area": int(mask.sum())})
    return crops, records
