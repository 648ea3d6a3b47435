"""Fitting coarse instance masks to the line art's own regions.

Segmenters find instances at a coarse scale (silhouettes at the analysis size, SAM at its
1024 input); their edges then cut through the drawing's regions. Here every closed region
of the line art (models/segmentation.py) that lies mostly inside one instance joins that
instance whole, so a split line between two characters follows the strokes between them.
Regions no instance holds a majority of (the background, fills leaking out through an
open stroke) keep the coarse per-pixel decision. Strokes join the instance of the regions
they border, so an instance's crop keeps its outline closed; ink no region reaches (solid
blacks) keeps the coarse decision.
"""

from __future__ import annotations

import cv2
import numpy as np

from chromaflow.models.segmentation import ball_radius, segment_line_art

MAJORITY = 0.5  # share of a region's pixels an instance needs to take the whole region
MARGIN = 0.03  # share of the page's longest side segmented around the instances
STROKE_STEPS = 6  # strokes up to about 2 x this many pixels wide join their regions' instance


def snap_to_regions(coarse: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Label map (uint8, 0 = none) of the same shape as `lines`, refined from `coarse`.
    Only the area around the instances is segmented (regions reaching past it are cut
    there, which changes nothing: beyond it no instance can take a majority)."""
    out = np.zeros_like(coarse)
    rows, cols = np.flatnonzero(coarse.any(axis=1)), np.flatnonzero(coarse.any(axis=0))
    if not len(rows):
        return out
    margin = int(MARGIN * max(coarse.shape)) + 1
    y0, y1 = max(0, rows[0] - margin), min(coarse.shape[0], rows[-1] + 1 + margin)
    x0, x1 = max(0, cols[0] - margin), min(coarse.shape[1], cols[-1] + 1 + margin)
    # The ball radius of the whole page, as the region colorizer segments it.
    out[y0:y1, x0:x1] = _snap(coarse[y0:y1, x0:x1], lines[y0:y1, x0:x1], ball_radius(lines.shape))
    return out


def _snap(coarse: np.ndarray, lines: np.ndarray, radius: float) -> np.ndarray:
    seg = segment_line_art(lines, radius)
    count = int(coarse.max()) + 1
    votes = np.bincount(seg.labels.ravel().astype(np.int64) * count + coarse.ravel(),
                        minlength=seg.count * count).reshape(seg.count, count)
    areas = np.maximum(votes.sum(1), 1)
    winner = votes.argmax(1)
    decided = votes.max(1) >= MAJORITY * areas
    decided[0] = False  # ink is decided below
    region_label = np.where(decided, winner, -1)
    out = region_label[seg.labels]
    mixed = out < 0
    out[mixed] = coarse[mixed]
    out = out.astype(np.uint8)
    ink = seg.labels == 0
    out[ink] = 0
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3))
    for _ in range(STROKE_STEPS):
        todo = ink & (out == 0)
        grown = cv2.dilate(out, kernel)
        if not (todo & (grown > 0)).any():
            break
        out[todo] = grown[todo]
    rest = ink & (out == 0)  # solid blacks (hair in gray pages) and strokes far from regions
    out[rest] = coarse[rest]
    return out
