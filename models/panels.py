"""Manga panel detection on line art.

A manga page is several drawings in framed panels. Colorizing the whole page as one
drawing aligns references to the page's ink box (frames included) and fills panel
interiors like any region; so pages are split into panels first and every panel is
retrieved and colorized as a drawing of its own, while gutters and frames stay as drawn.

A panel is a paper region of the line art that, with the holes inside it filled, is
nearly a rectangle (frames are straight), covers a sizeable share of the page and has a
drawing inside it (an empty box is part of a drawing, not a panel).
Pages without such frames (a single illustration, a video frame) are one panel: the
whole image.
"""

from __future__ import annotations

import cv2
import numpy as np

from .patches import Box, whole_image
from .segmentation import fill_holes

MIN_PANEL_SHARE = 0.04  # of the page area
MIN_RECTANGULARITY = 0.9  # filled area / bounding-box area
MIN_DRAWING_SHARE = 0.01  # a panel holds a drawing: ink or enclosed regions inside it
INSET = 2  # px taken off each side so the frame stroke stays outside the crop



def find_panels(lines: np.ndarray) -> list[Box]:
    """Panel interiors in reading order (top to bottom, then right to left as in manga,
    rows grouped by overlap). Empty list: the page has no panel frames."""
    h, w = lines.shape
    paper = (lines >= 128).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(paper, connectivity=4)
    panels: list[Box] = []
    for label in range(1, count):
        x, y, bw, bh, _ = stats[label]
        if bw * bh < MIN_PANEL_SHARE * h * w or (bw >= w - 1 and bh >= h - 1):
            continue
        if x == 0 or y == 0 or x + bw >= w or y + bh >= h:
            continue  # touches the page edge: gutter/margin or a borderless drawing
        region = labels[y:y + bh, x:x + bw] == label
        filled = fill_holes(region)
        if filled.mean() < MIN_RECTANGULARITY:
            continue
        if 1.0 - region.sum() / filled.sum() < MIN_DRAWING_SHARE:
            continue  # nothing drawn inside: a box that is part of a drawing (a shirt, a sign)
        panels.append((int(x) + INSET, int(y) + INSET, int(x + bw) - INSET, int(y + bh) - INSET))
    # Nested candidates (a framed inset inside a panel) belong to the outer panel.
    panels = [p for p in panels if not any(q != p and _contains(q, p) for q in panels)]
    return sorted(panels, key=lambda b: (b[1] // max(1, h // 20), -b[0]))


def _contains(outer: Box, inner: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def panels_or_page(lines: np.ndarray) -> list[Box]:
    """The panels, or the whole image as one panel."""
    return find_panels(lines) or [whole_image(lines)]
