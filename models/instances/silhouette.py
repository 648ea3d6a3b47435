"""The weight-free instance segmenter: character silhouettes from the line art.

Works on the line art the lines stage extracted (line-art, gray and screentoned pages all
arrive as 0 = ink on 255 = paper), at `analysis_size`, panel by panel (models/panels.py;
the frames stay outside the panel interiors):

1. Strokes: ink components; specks smaller than `speck_size` (screentone dots that survived
   line extraction, noise) are dropped.
2. Stroke groups (strokes.py): strokes closer than 2 x `gap_radius` belong together; a
   drawing has one stroke at least `min_stroke_size` long (text, tone and hatching are
   short strokes only); small stroke groups near a drawing join it (satellites). A drawing
   that runs across the panel edge to edge is scenery (balloons.py).
3. Silhouette of a drawing: its ink closed over small gaps, holes filled, plus every pixel
   that has ink of the drawing within `enclosure_reach` x its size in all 4 axis
   directions (outlines that stay open: a cat whose chin is a separate stroke); strokes
   running into a panel edge are joined along it. Speech balloons (a near-convex outline
   holding only rows of small glyphs), empty outlines and frame-like boxes are not
   characters (balloons.py).
4. Touching or overlapping characters: split where the silhouette narrows (necks.py); each
   piece is then completed on its own, with stroke ends at its bottom (a bust, legs)
   joined, so one character's ends are never joined to its neighbor's.
5. The coarse masks are fitted to the line art's regions at full size (snap.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from chromaflow.conf import InstancesConfig
from chromaflow.models.panels import find_panels
from chromaflow.models.segmentation import nearest_fill
from chromaflow.storage.images import resize_longest

from .balloons import is_balloon, is_frame, is_scenery
from .base import Instance
from .necks import split_at_necks
from .snap import snap_to_regions
from .strokes import stroke_groups

INK_LEVEL = 200  # analysis-size lines darker than this are ink (thin strokes survive the downscale)
EDGE_BAND = 0.03  # strokes ending within this share of the crop's size of an edge end on it
KEEP_PART = 0.05  # parts of a silhouette under this share of its biggest part are dropped
BOTTOM_GAP = 0.8  # stroke ends at the bottom up to this share of the group's size apart are joined
PANEL_GROUPS = 100_000  # group numbers: panel index * this + stroke group in the panel
OPEN_ENOUGH = 0.6  # a silhouette without its bottom closed must keep this share of the closed one
FRAME_COVER = 0.6  # outside the panels, a silhouette this much made of panel interior is a frame


@dataclass
class SilhouetteParams:
    """The InstancesConfig keys it reads (defaults there); shares are of the panel's
    longest side unless noted."""

    analysis_size: int
    speck_size: float
    min_stroke_size: float
    gap_radius: float
    enclosure_reach: float  # share of the stroke group's longest side
    min_area: float  # share of the page area
    split_depth: float
    max_instances: int

    @classmethod
    def from_config(cls, cfg=None) -> "SilhouetteParams":
        cfg = cfg or InstancesConfig()
        return cls(analysis_size=cfg.analysis_size, speck_size=cfg.silhouette_speck_size,
                   min_stroke_size=cfg.silhouette_min_stroke_size, gap_radius=cfg.silhouette_gap_radius,
                   enclosure_reach=cfg.silhouette_enclosure_reach, min_area=cfg.min_area,
                   split_depth=cfg.split_depth, max_instances=cfg.max_instances)


class SilhouetteSegmenter:
    name = "silhouette"

    def __init__(self, params: SilhouetteParams | None = None):
        self.params = params or SilhouetteParams.from_config()

    @classmethod
    def from_config(cls, config) -> "SilhouetteSegmenter":
        return cls(SilhouetteParams.from_config(config.instances))

    def segment(self, lines: np.ndarray, page: np.ndarray | None = None) -> list[Instance]:
        """Instances of one page (lines: uint8 H x W, 0 = ink). `page` is not needed."""
        h, w = lines.shape
        small = resize_longest(lines, self.params.analysis_size, cv2.INTER_AREA)
        ink = small < INK_LEVEL
        coarse = np.zeros(small.shape, np.uint8)
        groups: list[int] = []
        for group, piece in self.page_pieces(ink)[:min(self.params.max_instances, 255)]:
            coarse[piece & (coarse == 0)] = len(groups) + 1
            groups.append(group)
        if not groups:
            return []
        snapped = snap_to_regions(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_NEAREST), lines)
        instances = []
        for label, group in enumerate(groups, start=1):
            mask = snapped == label
            if mask.sum() >= self.params.min_area * h * w:
                instances.append(Instance(mask=mask, score=1.0, group=group))
        return instances

    def page_pieces(self, ink: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(group, piece mask) of the whole page at analysis size: first the drawings
        outside the panels' interiors (a frameless page, art breaking out of its panel, or
        a character whose square head find_panels took for a panel), then each panel's.
        Outside the interiors, a silhouette that is mostly panel interior is a frame; a
        panel's piece that lies inside an outside drawing is part of it."""
        min_px = self.params.min_area * ink.size
        boxes = find_panels(np.where(ink, 0, 255).astype(np.uint8))
        interiors = np.zeros(ink.shape, bool)
        for x0, y0, x1, y1 in boxes:
            interiors[y0:y1, x0:x1] = True
        pieces = self.panel_pieces(ink & ~interiors, min_px, interiors)
        outside = np.any([m for _, m in pieces], axis=0) if pieces else np.zeros(ink.shape, bool)
        for panel, (x0, y0, x1, y1) in enumerate(boxes, start=1):
            for group, piece in self.panel_pieces(ink[y0:y1, x0:x1], min_px):
                full = np.zeros(ink.shape, bool)
                full[y0:y1, x0:x1] = piece
                if (full & outside).sum() < 0.5 * full.sum():
                    pieces.append((panel * PANEL_GROUPS + group, full))  # group numbers unique over the page
        return pieces

    def panel_pieces(self, ink: np.ndarray, min_px: float,
                     interiors: np.ndarray | None = None) -> list[tuple[int, np.ndarray]]:
        """(group number, piece mask) of one panel crop at analysis size. `interiors`:
        panel interiors (blanked in `ink`); a silhouette mostly made of them is a frame."""
        p = self.params
        radius = max(1, round(p.gap_radius * max(ink.shape)))
        pieces = []
        for g, group in enumerate(stroke_groups(ink, p.speck_size, p.min_stroke_size, radius, min_px)):
            x, y, bw, bh = group.box
            sl = (slice(y, y + bh), slice(x, x + bw))
            edges = (x <= 1, y <= 1, x + bw >= ink.shape[1] - 1, y + bh >= ink.shape[0] - 1)
            if is_scenery(edges):
                continue
            sil = silhouette(group.ink, radius, p.enclosure_reach * max(bw, bh), edges, close_bottom=False)
            closed = silhouette(group.ink, radius, p.enclosure_reach * max(bw, bh), edges, close_bottom=True)
            if sil.sum() < OPEN_ENOUGH * closed.sum():
                sil = closed  # only its stroke ends at the bottom close it: one drawing, not several
            if sil.sum() < min_px or is_frame(sil, group.ink) or is_balloon(sil, ink[sl]):
                continue
            if interiors is not None and interiors[sl][sil].sum() >= FRAME_COVER * sil.sum():
                continue
            for piece in complete_pieces(group.ink, split_at_necks(sil, p.split_depth, int(min_px)), radius,
                                         p.enclosure_reach, edges):
                full = np.zeros(ink.shape, bool)
                full[sl] = piece
                pieces.append((g, full))
        return pieces


def complete_pieces(ink: np.ndarray, pieces: list[np.ndarray], radius: int, reach: float,
                    edges: tuple[bool, bool, bool, bool]) -> list[np.ndarray]:
    """Each piece's own silhouette with its bottom closed (stroke ends of a bust or of legs
    joined): done per piece after the split, so one character's ends are never joined
    with its neighbor's and the split sees no artificial bridge."""
    labels = np.zeros(ink.shape, np.int32)
    for i, piece in enumerate(pieces):
        labels[piece] = i + 1
    # Every stroke belongs to the nearest piece.
    owner = nearest_fill(labels, labels > 0, mask_size=5)
    out = []
    for i, piece in enumerate(pieces):
        own = ink & (owner == i + 1)
        ys, xs = np.nonzero(own)
        size = max(xs.max() - xs.min(), ys.max() - ys.min(), 1) if len(xs) else 1
        full = piece | silhouette(own, radius, reach * size, edges, close_bottom=True)
        for j, other in enumerate(pieces):
            if j != i:
                full &= ~other
        out.append(full)
    return out


def silhouette(ink: np.ndarray, radius: int, reach: float, open_edges: tuple[bool, bool, bool, bool],
               close_bottom: bool = True) -> np.ndarray:
    """Filled silhouette of one stroke group (bool crop): closed over gaps up to 2 x
    radius, holes filled, plus the pixels enclosed by its ink in all 4 axis directions.
    Where the drawing stops at an edge (its own bottom, where figures are cut off, or a
    panel edge it runs into: `open_edges` = left, top, right, bottom of the crop touch the
    panel edge), the strokes ending there are joined along that edge first."""
    ink = close_edges(ink, open_edges, BOTTOM_GAP * max(ink.shape), radius + max(2, int(EDGE_BAND * max(ink.shape))),
                      close_bottom)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    pad = 2 * radius + 1  # closing must not erode strokes near the crop's edge
    padded = np.pad(ink.astype(np.uint8), pad)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, disc)[pad:-pad, pad:-pad] > 0
    filled = fill_holes(closed | enclosed(closed, reach))
    # Spurs of the enclosure test along long strokes: opened away at the gap radius.
    opened = cv2.morphologyEx(filled.astype(np.uint8), cv2.MORPH_OPEN, disc) > 0
    count, labels, stats, _ = cv2.connectedComponentsWithStats(opened.astype(np.uint8), connectivity=8)
    if count <= 1:
        return filled
    # Parts that stayed apart (a satellite too far to close over) are kept when sizeable:
    # they become pieces of their own, which retrieval joins or keeps apart.
    biggest = int(stats[1:, cv2.CC_STAT_AREA].max())
    keep = stats[:, cv2.CC_STAT_AREA] >= KEEP_PART * biggest
    keep[0] = False
    return keep[labels]


def close_edges(ink: np.ndarray, open_edges: tuple[bool, bool, bool, bool], max_gap: float,
                band: int, close_bottom: bool = True) -> np.ndarray:
    """Close a drawing where it is cut off: strokes that run into a panel edge (`open_edges`
    = left, top, right, bottom of the crop lie on the panel's edge) are joined along that
    edge, and stroke *ends* at one level at the bottom (a bust, legs: lines that stop) are
    joined by a line at that level; consecutive ones at most `max_gap` apart."""
    out = ink.copy()
    left, top, right, bottom = open_edges
    for is_open, line, near in ((bottom, out[-1, :], ink[-band:, :].any(axis=0)),
                                (top, out[0, :], ink[:band, :].any(axis=0)),
                                (left, out[:, 0], ink[:, :band].any(axis=1)),
                                (right, out[:, -1], ink[:, -band:].any(axis=1))):
        if is_open:
            _join(line, np.flatnonzero(near), max_gap)
    level, columns = bottom_ends(ink, band) if close_bottom else (0, ())
    if len(columns) > 1:
        _join(out[min(level + 1, ink.shape[0] - 1)], columns, max_gap)
    return out


def _join(line: np.ndarray, hits: np.ndarray, max_gap: float) -> None:
    for a, b in zip(hits[:-1], hits[1:]):
        if 1 < b - a <= max_gap:
            line[a:b + 1] = True


def bottom_ends(ink: np.ndarray, band: int) -> tuple[int, np.ndarray]:
    """The lowest level where strokes END (a narrow run of ink whose stroke goes on
    upwards, not the flat bottom of a curve), and the columns of the ends at that level
    (within `band` rows). A round chin is not an end: its lowest run is wide."""
    rows = np.flatnonzero(ink.any(axis=1))
    if not len(rows):
        return 0, np.zeros(0, np.int64)
    level = int(rows[-1])
    strip = ink[max(0, level - band):level + 1].any(axis=0)
    starts = np.flatnonzero(np.diff(np.r_[0, strip.astype(np.int8)]) == 1)
    stops = np.flatnonzero(np.diff(np.r_[strip.astype(np.int8), 0]) == -1)
    ends = [np.arange(a, b + 1) for a, b in zip(starts, stops) if b - a + 1 <= 2 * band]
    return level, (np.concatenate(ends) if len(ends) > 1 else np.zeros(0, np.int64))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask with every region it encloses filled (flood fill of the outside from a
    one-pixel border: what the flood does not reach is inside)."""
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, flood, (0, 0), 1, flags=4 | cv2.FLOODFILL_MASK_ONLY)
    return flood[2:-2, 2:-2] == 0


def enclosed(ink: np.ndarray, reach: float) -> np.ndarray:
    """Pixels with ink within `reach` pixels in all four axis directions (running max of
    the last ink index, O(pixels))."""
    h, w = ink.shape
    inside = ~ink
    for axis, n in ((1, w), (0, h)):
        index = np.arange(n, dtype=np.float32)
        index = index[None, :] if axis == 1 else index[:, None]
        before = np.maximum.accumulate(np.where(ink, index, -np.inf), axis=axis)
        after = np.flip(np.minimum.accumulate(np.flip(np.where(ink, index, np.inf), axis=axis), axis=axis), axis=axis)
        inside &= (index - before <= reach) & (after - index <= reach)
    return inside
