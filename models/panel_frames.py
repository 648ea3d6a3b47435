"""Panel frames: the border strokes a manga panel is drawn inside.

A panel's frame is ink the references never have (they are character art), so it must not
take part in registering a reference onto the page, and the paper it encloses is the
page's background, not a closed region of the drawing: a region bounded by the frame is
treated like one that reaches the page border (paper unless the page's own strokes hold a
fill there, models/open_fills.py).

A frame is an ink component (8-connected) whose box spans FRAME_SPAN of the page in both
directions, whose ink covers under FRAME_FILL of that box (a thin outline, not a dark
background) and which runs along all four sides of its box (SIDE_COVER of each side's
length within EDGE_BAND of it): a rectangle, not a round face outline that spans the page
too. Only its pixels along the box's edges are the frame; strokes of a drawing that touch
the frame stay strokes.
"""

from __future__ import annotations

import cv2
import numpy as np

FRAME_SPAN = 0.85  # the frame's box covers this share of the page's width and height
FRAME_FILL = 0.25  # and its ink under this share of the box
SIDE_COVER = 0.8  # share of each side's length with frame ink along it
EDGE_BAND = 0.03  # "along a side": within this share of the box's shorter side (>= 2 px)


def frame_strokes(ink: np.ndarray) -> np.ndarray:
    """Bool mask of the panel-frame ink in `ink` (bool H x W); empty when there is none."""
    h, w = ink.shape
    out = np.zeros(ink.shape, bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    area = stats[:, cv2.CC_STAT_AREA]
    candidates = (bw >= FRAME_SPAN * w) & (bh >= FRAME_SPAN * h) & (area < FRAME_FILL * np.maximum(bw * bh, 1))
    for i in np.flatnonzero(candidates[1:]) + 1:
        x, y = stats[i, cv2.CC_STAT_LEFT], stats[i, cv2.CC_STAT_TOP]
        mine = labels[y:y + bh[i], x:x + bw[i]] == i
        band = int(max(2, EDGE_BAND * min(bw[i], bh[i])))
        sides = (mine[:band].any(0), mine[-band:].any(0), mine[:, :band].any(1), mine[:, -band:].any(1))
        if min(side.mean() for side in sides) < SIDE_COVER:
            continue
        edges = np.zeros_like(mine)
        edges[:band], edges[-band:], edges[:, :band], edges[:, -band:] = True, True, True, True
        out[y:y + bh[i], x:x + bw[i]] |= mine & edges
    return out


def regions_on_frame(labels: np.ndarray, count: int, frame: np.ndarray) -> np.ndarray:
    """Bool per label: the region touches the frame (within 2 px of its ink)."""
    out = np.zeros(count, bool)
    if frame.any():
        near = cv2.dilate(frame.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        out[np.unique(labels[near & (labels > 0)])] = True
    return out
