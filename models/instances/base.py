"""What an instance segmenter returns: character instances of one page.

An instance is one character on the page: a mask over the page (its paper regions and the
strokes around them), a score (how sure the segmenter is that this is a character) and a
group: instances split from one silhouette (touching or overlapping characters, or one
character cut at a narrow neck) share a group, so retrieval can join them again when
they turn out to be one character (stages/retrieve.py).

Pages store their instances as one label map (uint8: 0 = no instance, i = instance i),
so where two instances overlap each pixel belongs to one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

MAX_INSTANCES = 255  # label maps are uint8


@dataclass
class Instance:
    mask: np.ndarray  # bool H x W, same size as the page's line art
    score: float = 1.0  # segmenter confidence in [0, 1]
    group: int = 0  # instances split from one silhouette share a group

    @property
    def box(self) -> tuple[int, int, int, int]:
        return mask_box(self.mask)

    @property
    def area(self) -> int:
        return int(self.mask.sum())


class InstanceSegmenter(Protocol):
    """`segment` finds the characters of one page; backends may add
    `segment_batch(pages) -> list[list[Instance]]` (the stage then hands them a shard's
    pages at once, e.g. one batched image-encoder pass on the GPU)."""

    name: str

    def segment(self, lines: np.ndarray, page: np.ndarray) -> list[Instance]:
        """lines: uint8 H x W (0 = ink); page: RGB uint8 H x W x 3, same size."""
        ...


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a mask's pixels, exclusive end; (0, 0, 0, 0) when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return 0, 0, 0, 0
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def label_map(instances: list[Instance], shape: tuple[int, int]) -> np.ndarray:
    """One uint8 label per pixel (instance i -> i + 1). Where instances overlap the more
    confident one wins (then the smaller one: it is usually the one in front)."""
    if len(instances) > MAX_INSTANCES:
        raise ValueError(f"{len(instances)} instances on one page; at most {MAX_INSTANCES} fit a label map")
    labels = np.zeros(shape, np.uint8)
    order = sorted(range(len(instances)), key=lambda i: (instances[i].score, -instances[i].area))
    for i in order:  # the last one painted wins
        labels[instances[i].mask] = i + 1
    return labels


def masks_from_labels(labels: np.ndarray, count: int) -> list[np.ndarray]:
    """The masks of instances 1..count of a label map."""
    return [labels == i for i in range(1, count + 1)]
