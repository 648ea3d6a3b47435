"""What a silhouette of strokes can be without being a character: a speech balloon, an
empty outline, a frame, scenery.

A speech balloon is a near-convex closed outline whose inside is paper holding only text:
several small glyph components of similar height, in rows or columns (Rigaud et al., GREC 2011/2015; the
recipe in ../shared/research/notes-screentone-and-region-matching.md, section C). A closed
outline with nothing inside (an empty balloon, a box) is not a character either. A frame
is a near-rectangular silhouette whose ink runs along its bounding box (a panel find_panels
missed, an inset box). Scenery (a horizon, mountains, a street) runs across the panel
from one edge to the opposite one; a character close-up that fills its panel does too,
and is then left to the panel's own retrieval, as a page without instances would be.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SOLIDITY = 0.88  # silhouette area / convex hull area of a balloon (tails and bumps allowed)
MIN_GLYPHS = 6  # text is several glyphs
MAX_GLYPH_SHARE = 0.15  # a glyph is at most this share of the balloon's longest side
MAX_GLYPH_HEIGHT_CV = 0.35  # glyph heights of one text are alike
MIN_LINE_GLYPHS = 3  # glyphs come in rows (or columns) of at least this many
MIN_IN_LINES = 0.8  # share of the glyphs that sit in such rows or columns
MIN_RECTANGULARITY = 0.95  # frames: silhouette area / bounding box area
FRAME_BAND = 0.04  # frames: ink within this share of the box size from the box edges
MIN_FRAME_INK = 0.6  # frames: share of the ink lying in that band


def inner_components(silhouette: np.ndarray, ink: np.ndarray) -> np.ndarray:
    """Stats rows (x, y, w, h, area) of the ink components wholly inside the silhouette,
    away from its outline."""
    depth = max(2, int(0.04 * max(silhouette.shape)))
    core = cv2.erode(silhouette.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * depth + 1,) * 2))
    count, labels, stats, _ = cv2.connectedComponentsWithStats((ink & silhouette).astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros((0, 5), np.int32)
    outside_core = np.bincount(labels[(core == 0) & ink & silhouette], minlength=count) > 0
    inner = np.flatnonzero(~outside_core)
    inner = inner[inner > 0]
    return stats[inner]


def is_balloon(silhouette: np.ndarray, ink: np.ndarray) -> bool:
    """A near-convex outline holding nothing, or only a few rows of small glyphs."""
    contours, _ = cv2.findContours(silhouette.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return False
    hull_area = cv2.contourArea(cv2.convexHull(np.vstack(contours)))
    if hull_area <= 0 or silhouette.sum() / hull_area < MIN_SOLIDITY:
        return False
    glyphs = inner_components(silhouette, ink)
    if len(glyphs) == 0:
        return True  # an empty outline
    side = max(silhouette.shape)
    sizes = np.maximum(glyphs[:, 2], glyphs[:, 3])
    heights = glyphs[:, 3].astype(np.float64)
    return (len(glyphs) >= MIN_GLYPHS and sizes.max() <= MAX_GLYPH_SHARE * side
            and heights.std() <= MAX_GLYPH_HEIGHT_CV * heights.mean() and in_text_lines(glyphs))


def in_text_lines(glyphs: np.ndarray) -> bool:
    """Most glyphs sit in rows (horizontal text) or columns (vertical text) of at least
    MIN_LINE_GLYPHS: centers closer than half a glyph apart across the line."""
    size = float(np.median(np.maximum(glyphs[:, 2], glyphs[:, 3])))
    for center in (glyphs[:, 1] + glyphs[:, 3] / 2, glyphs[:, 0] + glyphs[:, 2] / 2):
        order = np.sort(center)
        breaks = np.flatnonzero(np.diff(order) > 0.5 * size)
        lengths = np.diff(np.concatenate([[0], breaks + 1, [len(order)]]))
        if lengths[lengths >= MIN_LINE_GLYPHS].sum() >= MIN_IN_LINES * len(order):
            return True
    return False


def is_frame(silhouette: np.ndarray, ink: np.ndarray) -> bool:
    """A filled rectangle whose ink mostly runs along its edges."""
    ys, xs = np.nonzero(silhouette)
    if not len(xs):
        return False
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    if silhouette.sum() < MIN_RECTANGULARITY * (x1 - x0) * (y1 - y0):
        return False
    band = max(2, int(FRAME_BAND * max(x1 - x0, y1 - y0)))
    iy, ix = np.nonzero(ink)
    if not len(ix):
        return False
    near = (ix < x0 + band) | (ix >= x1 - band) | (iy < y0 + band) | (iy >= y1 - band)
    return near.mean() >= MIN_FRAME_INK


def is_scenery(touches: tuple[bool, bool, bool, bool]) -> bool:
    """The drawing reaches two opposite panel edges (touches = left, top, right, bottom)."""
    left, top, right, bottom = touches
    return (left and right) or (top and bottom)
