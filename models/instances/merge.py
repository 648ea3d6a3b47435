"""Segment Anything masks merged into character instances.

SAM's automatic generator returns masks for everything a point prompt can pick: the
paper around the characters, whole characters, and their parts (hair, face, clothes,
an eye), often several overlapping masks of one thing. A character is several of them:

1. Background-like masks are dropped: larger than MAX_SHARE of the page, or spanning
   nearly the whole page in both directions (the paper, a panel's interior).
2. Masks mostly inside a larger kept mask (CONTAINED of their area) are its parts and
   join it; what is not inside any larger mask is an instance of its own.
3. Instances that touch share a group: they may be one character SAM saw as separate
   parts (hair above a face) or two characters side by side; retrieval decides which
   (stages/retrieve.py joins pieces of a group that are one character).
"""

from __future__ import annotations

import cv2
import numpy as np

from .base import Instance

MAX_SHARE = 0.4  # of the page area
SPAN = 0.9  # of the page width and height
CONTAINED = 0.7  # share of a mask's area inside a larger one for it to be a part of it
TOUCH_PIXELS = 3


def merge_masks(masks: list[dict], shape: tuple[int, int], min_area: float) -> list[Instance]:
    """Character instances from SamAutomaticMaskGenerator records ("segmentation" bool
    H x W, "area", "predicted_iou"), at the page's shape."""
    h, w = shape
    kept = []
    for record in masks:
        mask = np.asarray(record["segmentation"], bool)
        if mask.shape != (h, w):
            mask = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        area = int(mask.sum())
        if area == 0 or area > MAX_SHARE * h * w:
            continue
        ys, xs = np.nonzero(mask)
        if xs.max() - xs.min() >= SPAN * w and ys.max() - ys.min() >= SPAN * h:
            continue
        kept.append((area, float(record.get("predicted_iou", 1.0)), mask))
    kept.sort(key=lambda item: -item[0])
    wholes: list[list] = []  # [mask, score]
    for area, score, mask in kept:
        owner = next((whole for whole in wholes if (whole[0] & mask).sum() >= CONTAINED * area), None)
        if owner is None:
            wholes.append([mask.copy(), score])
        else:
            owner[0] |= mask
            owner[1] = max(owner[1], score)
    wholes = [wm for wm in wholes if wm[0].sum() >= min_area * h * w]
    groups = touching_groups([m for m, _ in wholes])
    return [Instance(mask=m, score=min(1.0, s), group=g) for (m, s), g in zip(wholes, groups)]


def touching_groups(masks: list[np.ndarray]) -> list[int]:
    """Group number per mask: masks that touch (within TOUCH_PIXELS), transitively."""
    parent = list(range(len(masks)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * TOUCH_PIXELS + 1,) * 2)
    grown = [cv2.dilate(m.astype(np.uint8), kernel) > 0 for m in masks]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            if (grown[i] & masks[j]).any():
                parent[root(j)] = root(i)
    return [root(i) for i in range(len(masks))]
