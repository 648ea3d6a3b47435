"""Speech balloons and lettering, found without weights, so they keep paper and black text.

A balloon is a closed, light page region that holds text: many small ink pieces of one
size, set in rows (horizontal lettering) or columns (vertical, as in Japanese manga)
(after Rigaud et al., "Robust frame and text extraction from comic books", 2011: text
and balloons are connected components of the black outlines and what they enclose).
Tests, on the region with its holes filled (`filled`):

- it is mostly paper (PAPER_SHARE) and light on the page (MIN_LIGHTNESS);
- it encloses at least MIN_GLYPHS ink pieces, with heights
  GLYPH_HEIGHT of the page and of one size (coefficient of variation < MAX_HEIGHT_CV);
- the pieces line up: their centers fall in few rows or few columns (ALIGNMENT glyphs per
  line on average);
- its ink covers TEXT_INK of the filled area (text, not a hatched drawing).

A face (eyes, nose, mouth: few pieces of unequal size) fails the count and size tests.
A balloon cut by the page edge (bleeding off the page, or turned out of it by a scan) is
still a balloon; such a region may also be a panel's background around a character, so
it must hold nothing bigger than a glyph (`holes_are_glyphs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from .segmentation import Segmentation, fill_holes

MIN_AREA_SHARE, MAX_AREA_SHARE = 0.002, 0.25  # a balloon's filled area, share of the page
PAPER_SHARE = 0.55
MIN_LIGHTNESS = 200  # mean page gray of the balloon's paper
MIN_GLYPHS = 6
GLYPH_HEIGHT = (0.006, 0.08)  # share of the page's longest side
MAX_HEIGHT_CV = 0.6
ALIGNMENT = 2.5  # glyphs per row (or column) on average
TEXT_INK = (0.03, 0.45)


@dataclass
class BalloonRegions:
    mask: np.ndarray  # bool H x W: balloons with their lettering (paper and text)
    regions: np.ndarray  # bool per page label: label belongs to a balloon
    boxes: list[list[int]]  # [x0, y0, x1, y1] per balloon


def _lines_of(centers: np.ndarray, size: float) -> int:
    """Number of rows the 1-D `centers` form: gaps larger than `size` start a new row."""
    ordered = np.sort(centers)
    return 1 + int((np.diff(ordered) > size).sum())


def holds_text(filled: np.ndarray, ink: np.ndarray, longest: int) -> bool:
    """The tests of the module docstring on one candidate (crops of the same box)."""
    glyph_ink = ink & filled  # ink the region encloses (its outline stroke lies outside `filled`)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(glyph_ink.astype(np.uint8), connectivity=8)
    if count - 1 < MIN_GLYPHS:
        return False
    heights = stats[1:, cv2.CC_STAT_HEIGHT].astype(np.float64)
    ok = (heights >= GLYPH_HEIGHT[0] * longest) & (heights <= GLYPH_HEIGHT[1] * longest)
    if ok.sum() < MIN_GLYPHS:
        return False
    heights, centers = heights[ok], centroids[1:][ok]
    if heights.std() / max(heights.mean(), 1e-6) > MAX_HEIGHT_CV:
        return False
    size = float(np.median(heights))
    rows, cols = _lines_of(centers[:, 1], 0.6 * size), _lines_of(centers[:, 0], 0.6 * size)
    if len(heights) / min(rows, cols) < ALIGNMENT:
        return False
    ink_share = glyph_ink.sum() / max(1, filled.sum())
    return TEXT_INK[0] <= ink_share <= TEXT_INK[1]


def holes_are_glyphs(region: np.ndarray, filled: np.ndarray, ink: np.ndarray, longest: int) -> bool:
    """What the region encloses (holes that are not ink) is no bigger than a glyph's
    counters: a drawn figure inside a background region is not lettering."""
    holes = filled & ~region & ~ink
    count, _, stats, _ = cv2.connectedComponentsWithStats(holes.astype(np.uint8), connectivity=4)
    biggest = GLYPH_HEIGHT[1] * longest
    return count == 1 or int(stats[1:, cv2.CC_STAT_AREA].max()) <= biggest * biggest


def find_balloons(seg: Segmentation, lines: np.ndarray, gray: np.ndarray) -> BalloonRegions:
    """Balloons of a page: `seg` its regions, `lines` its line art (0 = ink), `gray` its
    (descreened) gray. Every region inside a balloon (letter holes included) is marked."""
    h, w = seg.labels.shape
    ink = lines < 128
    longest = max(h, w)
    area = seg.areas()
    mean_gray = np.bincount(seg.labels.ravel(), weights=gray.ravel().astype(np.float64),
                            minlength=seg.count) / np.maximum(area, 1)
    mask = np.zeros((h, w), bool)
    boxes: list[list[int]] = []
    for label, sl in enumerate(ndimage.find_objects(seg.labels, max_label=seg.count - 1), start=1):
        if sl is None or mean_gray[label] < MIN_LIGHTNESS:
            continue
        bh, bw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        if bh * bw < MIN_AREA_SHARE * h * w or area[label] < MIN_AREA_SHARE * h * w * PAPER_SHARE:
            continue
        region = seg.labels[sl] == label
        filled = fill_holes(region)
        if not MIN_AREA_SHARE * h * w <= filled.sum() <= MAX_AREA_SHARE * h * w:
            continue
        if region.sum() < PAPER_SHARE * filled.sum():
            continue
        if seg.touches_border[label] and not holes_are_glyphs(region, filled, ink[sl], longest):
            continue
        if holds_text(filled, ink[sl], longest):
            mask[sl] |= filled
            boxes.append([int(sl[1].start), int(sl[0].start), int(sl[1].stop), int(sl[0].stop)])
    inside = np.bincount(seg.labels.ravel(), weights=mask.ravel().astype(np.float64), minlength=seg.count)
    regions = inside >= 0.5 * np.maximum(area, 1)
    regions[0] = False
    return BalloonRegions(mask, regions, boxes)
