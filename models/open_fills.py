"""Fills inside the page's paper region: only those the page's own strokes hold.

Line art often leaves outlines open: a shirt that ends in the air at the bottom of a bust,
a chin stroke that stops short of the cheeks. The paper region that touches the page
border then holds the background and those leaked fills together, and no stroke says where
one ends and the other starts. The registered references do say it, but a misregistered
reference also paints its fills where the page has nothing: a gray arm beside the real
arm, a face shifted off a profile, a head close-up blown up across the paper (ghosts).

So inside a border-touching region, per-pixel reference colors are only candidates:

1. every pixel takes the color with most fit-weighted reference votes around it, paper
   where only weakly fitting references reach (MIN_PIXEL_VOTE) or where no color has
   most of the votes (PIXEL_MAJORITY: references of other poses, misregistered on a
   close-up page, each paint their own part there);
2. thin slivers (misregistration along an outline) are opened away (`sliver_width`);
3. each remaining fill (a connected piece of one color) is kept only when it is *held by
   the page's strokes*: at least ANCHOR_SHARE of its outline lies along page ink or along
   a line between two stroke ends (`open_edges`, models/stroke_ends.py: a shirt's bottom
   between the last ends of its sides is where the drawing stops). A shirt ending in the
   air is held on three sides; a ghost arm beside the real one, or a face
   painted over the paper, is held by almost nothing and stays paper. The page's edge (the
   image border, a panel frame) neither holds nor counts where the references that vote
   there show the fill's region whole (WHOLE_SHARE of the votes come from reference
   regions that do not touch their own reference's border): a face cut by the edge of a
   close-up page is the face the references show entire, held by its own outline; a ghost
   blown up from a close-up reference comes from regions that reference cuts itself, and
   the edge does not excuse it. A fill also holds where it meets a held fill (a face in
   two tones has no stroke between them);
4. holes inside a kept fill (a dropped ghost inside a face) take the fill's color.

Nothing is painted across a stroke: candidates never leave their page region.
"""

from __future__ import annotations

import cv2
import numpy as np

from .segmentation import fill_holes

MIN_PIXEL_VOTE = 0.12  # share of the (normalized) reference weight a pixel color needs
PIXEL_MAJORITY = 0.5  # ... and share of all the votes there
ANCHOR_SHARE = 0.5  # share of a fill's outline that must lie along page ink (see the docstring)
ANCHOR_DISTANCE = 0.012  # outline pixels this close (share of the longest side) to ink are along it
MIN_FILL_SHARE = 0.0005  # fills smaller than this share of the page are dropped
WHOLE_SHARE = 0.5  # share of the votes at the page's edge from whole reference regions for it not to count


def _ball(diameter: int) -> np.ndarray:
    diameter = max(3, int(diameter) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (diameter, diameter))


def anchored(fill: np.ndarray, near_ink: np.ndarray, edge: np.ndarray | None = None) -> np.ndarray:
    """Mask of the connected pieces of `fill` whose outline is held by ink (see the module
    docstring); outline pixels on `edge` (the page's edge where the references show the
    fill whole) neither hold nor count."""
    count, labels = cv2.connectedComponents(fill.astype(np.uint8), connectivity=4)
    if count <= 1:
        return np.zeros_like(fill)
    inner = cv2.erode(fill.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                      borderValue=0) > 0
    outline = fill & ~inner
    if edge is not None:
        outline &= ~edge
    flat = labels.ravel()
    perimeter = np.bincount(flat, weights=outline.ravel().astype(np.float64), minlength=count)
    held = np.bincount(flat, weights=(outline & near_ink).ravel().astype(np.float64), minlength=count)
    area = np.bincount(flat, minlength=count)
    keep = (held >= ANCHOR_SHARE * np.maximum(perimeter, 1)) & (area >= MIN_FILL_SHARE * fill.size)
    keep[0] = False
    return keep[labels]


def _edge_shown_whole(pixel_votes: np.ndarray, whole: np.ndarray, frame: np.ndarray | None,
                      reach: float) -> np.ndarray:
    """The page's edge (image border, near a panel frame) where most votes come from
    reference regions that lie whole inside their reference."""
    edge = np.zeros(whole.shape, bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    if frame is not None and frame.any():
        edge |= cv2.distanceTransform((~frame).astype(np.uint8), cv2.DIST_L2, 3) <= reach
    total = pixel_votes.sum(axis=0)
    return edge & (whole >= WHOLE_SHARE * np.maximum(total, 1e-6)) & (total > 0)


def open_fills(region_mask: np.ndarray, pixel_votes: np.ndarray, paper_index: int, page_ink: np.ndarray,
               smoothing: float, sliver_width: float, whole: np.ndarray | None = None,
               frame: np.ndarray | None = None, open_edges: np.ndarray | None = None) -> np.ndarray:
    """Color-table index per pixel of `region_mask` (the border-touching regions), paper
    where no held fill is (see the module docstring). `whole`: per pixel, the votes cast
    from whole reference regions (correspondence.inclusion_votes); `frame`: the page's
    panel-frame ink (not in `page_ink`); `open_edges`: lines between stroke ends that hold
    like ink (stroke_ends.open_edges). Arrays at analysis size."""
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
    total = np.zeros((h, w), np.float32)
    color = np.full((h, w), paper_index, np.int32)
    for c in present:
        smoothed = cv2.blur(pixel_votes[c], (k, k))
        total += smoothed
        better = smoothed > best
        np.copyto(best, smoothed, where=better)
        color[better] = c
    color[(best <= MIN_PIXEL_VOTE) | (best < PIXEL_MAJORITY * total)] = paper_index
    color[~region_mask] = paper_index
    colored = color != paper_index
    kept = cv2.morphologyEx(colored.astype(np.uint8), cv2.MORPH_OPEN, _ball(sliver_width * longest)) > 0
    # Only the page's strokes hold a fill. The page's edge stops counting only where the
    # references show the fill whole (a ghost blown up from a close-up reference reaches
    # the border too).
    reach = max(1.5, ANCHOR_DISTANCE * longest)
    near_ink = cv2.distanceTransform((~page_ink).astype(np.uint8), cv2.DIST_L2, 3) <= reach
    if open_edges is not None:
        near_ink |= cv2.distanceTransform((~open_edges).astype(np.uint8), cv2.DIST_L2, 3) <= reach
    edge = None if whole is None else _edge_shown_whole(pixel_votes, whole, frame, reach)
    out = np.full((h, w), paper_index, np.int32)
    colors, sizes = np.unique(color[kept], return_counts=True)
    if not len(colors):
        return out
    order = colors[np.argsort(-sizes, kind="stable")]
    held = {c: anchored(kept & (color == c), near_ink, edge) for c in order}
    # A fill beside a held fill is held there too (a face in two tones has no stroke
    # between them); a ghost beside the paper or another ghost is not.
    beside = cv2.dilate(np.any(list(held.values()), axis=0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    # Big fills first: a smaller fill inside a bigger one's hole is drawn over it after.
    for c in order:
        fill = held[c] | anchored(kept & (color == c) & ~held[c], near_ink | beside, edge)
        if fill.any():
            out[fill_holes(fill) & region_mask] = c
    return out
