"""Fills inside the page's paper region: only those the page's own strokes hold.

Line art often leaves outlines open: a shirt that ends in the air at the bottom of a bust,
a chin stroke that stops short of the cheeks. The paper region that touches the page
border then holds the background and those leaked fills together, and no stroke says where
one ends and the other starts. The registered references do say it, but a misregistered
reference also paints its fills where the page has nothing: a gray arm beside the real
arm, a face shifted off a profile, a head close-up blown up across the paper (ghosts).

So inside a border-touching region, per-pixel reference colors are only candidates:

1. every pixel takes the color with most fit-weighted reference votes around it, paper
   where only weakly fitting references reach (MIN_PIXEL_VOTE);
2. thin slivers (misregistration along an outline) are opened away (`sliver_width`);
3. each remaining fill (a connected piece of one color) is kept only when it is *held by
   the page's strokes*: at least ANCHOR_SHARE of its outline lies along page ink. A shirt
   ending in the air is held on three sides; a ghost arm beside the real one, or a face
   painted over the paper, is held by almost nothing and stays paper;
4. holes inside a kept fill (a dropped ghost inside a face) take the fill's color.

Nothing is painted across a stroke: candidates never leave their page region.
"""

from __future__ import annotations

import cv2
import numpy as np

from .segmentation import fill_holes

MIN_PIXEL_VOTE = 0.12  # share of the (normalized) reference weight a pixel color needs
ANCHOR_SHARE = 0.5  # share of a fill's outline that must lie along page ink or the image border
ANCHOR_DISTANCE = 0.012  # outline pixels this close (share of the longest side) to ink are along it
MIN_FILL_SHARE = 0.0005  # fills smaller than this share of the page are dropped


def _ball(diameter: int) -> np.ndarray:
    diameter = max(3, int(diameter) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))


def anchored(fill: np.ndarray, near_ink: np.ndarray) -> np.ndarray:
    """Label mask of the connected pieces of `fill` whose outline is held by ink
    (see the module docstring). Returns bool mask of the kept pixels."""
    count, labels = cv2.connectedComponents(fill.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros_like(fill)
    inner = cv2.erode(fill.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0) > 0
    outline = fill & ~inner
    flat = labels.ravel()
    perimeter = np.bincount(flat, weights=outline.ravel().astype(np.float64), minlength=count)
    held = np.bincount(flat, weights=(outline & near_ink).ravel().astype(np.float64), minlength=count)
    area = np.bincount(flat, minlength=count)
    keep = (held >= ANCHOR_SHARE * np.maximum(perimeter, 1)) & (area >= MIN_FILL_SHARE * fill.size)
    keep[0] = False
    return keep[labels]


def open_fills(region_mask: np.ndarray, pixel_votes: np.ndarray, paper_index: int, page_ink: np.ndarray,
               smoothing: float, sliver_width: float) -> np.ndarray:
    """Color-table index per pixel of `region_mask` (the border-touching regions), paper
    where no held fill is (see the module docstring). Arrays at analysis size."""
    h, w = region_mask.shape
    longest = max(h, w)
    k = max(1, int(smoothing * longest)) | 1
    present = np.flatnonzero(pixel_votes.reshape(len(pixel_votes), -1).max(1) > 0)
    if not len(present):
        return np.full((h, w), paper_index, np.int32)
    # The most-voted color per pixel, one color plane at a time (an argmax over a stack of
    # planes reads memory across planes and costs more than the blurs); ties go to the
    # lower color index, as argmax does.
    best = np.zeros((h, w), np.float32)
    color = np.full((h, w), paper_index, np.int32)
    for c in present:
        smoothed = cv2.blur(pixel_votes[c], (k, k))
        better = smoothed > best
        np.copyto(best, smoothed, where=better)
        color[better] = c
    color[best <= MIN_PIXEL_VOTE] = paper_index
    color[~region_mask] = paper_index
    colored = color != paper_index
    kept = cv2.morphologyEx(colored.astype(np.uint8), cv2.MORPH_OPEN, _ball(sliver_width * longest)) > 0
    # Only the page's strokes hold a fill: the image border does not (a ghost blown up from
    # a close-up reference reaches the border too).
    reach = max(1.5, ANCHOR_DISTANCE * longest)
    near_ink = cv2.distanceTransform((~page_ink).astype(np.uint8), cv2.DIST_L2, 3) <= reach
    out = np.full((h, w), paper_index, np.int32)
    # Big fills first: a smaller fill inside a bigger one's hole is drawn over it after.
    colors, sizes = np.unique(color[kept], return_counts=True)
    for c in colors[np.argsort(-sizes, kind="stable")]:
        held = anchored(kept & (color == c), near_ink)
        if held.any():
            held = fill_holes(held) & region_mask
            out[held] = c
    return out
