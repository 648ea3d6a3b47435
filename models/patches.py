"""Boxes and crops, and ColorFlow's patch layout (RAP, paper §3.1): used by retrieval (what is
embedded), the ColorFlow canvas (where patches go) and the panel splitter.

A query page is cut into 4 overlapping crops of 3/4 width x 3/4 height, stride 1/4, in the
order top-left, top-right, bottom-left, bottom-right. A reference gets the same 4 crops plus
the full image (5 patches). Boxes are (x0, y0, x1, y1), pixel coordinates, x1/y1 exclusive.
"""

from __future__ import annotations

import numpy as np

QUADRANTS = ("tl", "tr", "bl", "br")
FULL = "full"

Box = tuple[int, int, int, int]


def quadrant_boxes(width: int, height: int) -> list[Box]:
    """The 4 overlapping 3/4-size crops, TL, TR, BL, BR."""
    cw, ch = max(1, round(width * 3 / 4)), max(1, round(height * 3 / 4))
    x_off, y_off = width - cw, height - ch
    return [(0, 0, cw, ch), (x_off, 0, width, ch), (0, y_off, cw, height), (x_off, y_off, width, height)]


def reference_boxes(width: int, height: int) -> list[tuple[str, Box]]:
    """ColorFlow's 5 reference patches: the full image, then the 4 quadrant crops."""
    return [(FULL, (0, 0, width, height))] + list(zip(QUADRANTS, quadrant_boxes(width, height)))


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def whole_image(image: np.ndarray) -> Box:
    return (0, 0, image.shape[1], image.shape[0])
