"""Character instances on a page: masks of the several characters a page or frame shows.

Backends are selected with `instances.backend` and named here as import paths, so the
weight-free default never imports torch:

    none        no instances (every page is colored as one drawing, as before)
    silhouette  weight-free: character silhouettes from the line art (silhouette.py)
    sam         Segment Anything from a local checkpoint (sam.py, sam_checkpoint.py)

The identity of each instance is decided by retrieval (stages/retrieve.py, assignment.py),
and episodes follow instances through a scene (tracking.py).
"""

from __future__ import annotations

import importlib

from .base import Instance, InstanceSegmenter, label_map, mask_box, masks_from_labels

BACKENDS: dict[str, str] = {
    "silhouette": "chromaflow.models.instances.silhouette:SilhouetteSegmenter",
    "sam": "chromaflow.models.instances.sam:SamSegmenter",
}
NONE = "none"


def build_segmenter(config) -> InstanceSegmenter | None:
    """The configured segmenter, or None for `instances.backend: none`."""
    name = config.instances.backend
    if name == NONE:
        return None
    module_name, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), attr).from_config(config)


__all__ = ["BACKENDS", "Instance", "InstanceSegmenter", "NONE", "build_segmenter", "label_map", "mask_box",
           "masks_from_labels"]
