"""Stroke groups: which strokes of a panel belong to one drawing.

Strokes are the ink components of a panel's line art; specks smaller than `speck_size`
(screentone dots that survived line extraction, noise) are dropped. Strokes closer than
2 x `gap_radius` form a group, and groups whose boxes largely overlap are one (a part
drawn apart but inside the rest's extent: a cat's mouth under its head outline). A group
is a drawing when it covers at least `min_area` pixels and has one stroke at least
`min_stroke_size` (of the panel) long or spanning OWN_STROKE_SHARE of the group (small
characters far away): text, tone and hatching are made of short strokes only, a drawn
character is not. The other groups are satellites
(a hand drawn apart from the arm, whiskers, sweat drops, motion lines): one joins the
nearest drawing when it lies within `SATELLITE_REACH` x that drawing's size, else it is
left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SATELLITE_REACH = 0.1  # share of the drawing's longest side
SATELLITE_AREA = 0.25  # a drawing under this share of a neighbor's box area is a part of it
OWN_STROKE_SHARE = 0.35  # ... or a group whose longest stroke spans this share of its own size
FRAME_BOX_SHARE = 0.5  # a frame's box covers at least this share of the panel crop
SMALL_DRAWING_FLOOR = 0.6  # ... and is at least this share of min_stroke_size long (not a glyph)
NESTED_SHARE = 0.5  # groups whose boxes overlap by this share of the smaller box are one drawing
NESTED_MIN_RATIO = 0.15  # ... unless the smaller box is under this share of the bigger (a frame's contents)


@dataclass
class StrokeGroup:
    ink: np.ndarray  # bool crop: the group's strokes
    box: tuple[int, int, int, int]  # x, y, w, h of the crop in the panel (strokes + gap radius)


def stroke_groups(ink: np.ndarray, speck_size: float, min_stroke_size: float, gap_radius: int,
                  min_area: float) -> list[StrokeGroup]:
    """The drawings of one panel (bool ink crop at analysis size), satellites attached."""
    side = max(ink.shape)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep = extent >= max(2.0, speck_size * side)
    keep[0] = False
    strokes = keep[labels]
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * gap_radius + 1, 2 * gap_radius + 1))
    n_groups, groups, group_stats, _ = cv2.connectedComponentsWithStats(
        cv2.dilate(strokes.astype(np.uint8), disc), connectivity=8)
    groups = np.where(strokes, groups, 0)
    groups, group_stats = merge_nested(groups, group_stats)
    longest = np.zeros(n_groups)
    np.maximum.at(longest, groups[strokes], extent[labels[strokes]])
    box_area = group_stats[:, cv2.CC_STAT_WIDTH] * group_stats[:, cv2.CC_STAT_HEIGHT]
    own_size = np.maximum(group_stats[:, cv2.CC_STAT_WIDTH], group_stats[:, cv2.CC_STAT_HEIGHT])
    long_stroke = (longest >= min_stroke_size * side) | (
        (longest >= OWN_STROKE_SHARE * own_size) & (longest >= SMALL_DRAWING_FLOOR * min_stroke_size * side))
    main = long_stroke & (box_area >= min_area)
    main[0] = False
    main &= ~frame_groups(groups, group_stats, ink.shape)
    if not main.any():
        return []
    main = demote_small_neighbors(main, group_stats)
    groups = attach_satellites(groups, main, group_stats)
    out = []
    for g in np.flatnonzero(main):
        ys, xs = np.nonzero(groups == g)
        x0, y0 = max(0, xs.min() - gap_radius), max(0, ys.min() - gap_radius)
        x1, y1 = min(ink.shape[1], xs.max() + 1 + gap_radius), min(ink.shape[0], ys.max() + 1 + gap_radius)
        out.append(StrokeGroup(groups[y0:y1, x0:x1] == g, (int(x0), int(y0), int(x1 - x0), int(y1 - y0))))
    return out


def frame_groups(groups: np.ndarray, stats: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Groups that are a frame (a panel find_panels did not take, e.g. one holding only a
    small drawing): a box over FRAME_BOX_SHARE of the crop whose ink runs along its edges.
    Nothing joins a frame, and a frame is no drawing."""
    out = np.zeros(len(stats), bool)
    for g in np.flatnonzero(stats[:, 2] * stats[:, 3] >= FRAME_BOX_SHARE * shape[0] * shape[1]):
        if g == 0:
            continue
        ys, xs = np.nonzero(groups == g)
        x0, y0, w, h = stats[g, :4]
        band = max(2, int(0.04 * max(w, h)))
        near = (xs < x0 + band) | (xs >= x0 + w - band) | (ys < y0 + band) | (ys >= y0 + h - band)
        out[g] = len(xs) > 0 and near.mean() >= 0.6
    return out


def demote_small_neighbors(main: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """A drawing much smaller than a drawing next to it (box area under SATELLITE_AREA of
    the other's, box gap within SATELLITE_REACH x the other's size) is a part of it (a
    raised hand, a tail) and becomes its satellite. A small character that really stands
    there is cut off again later: its silhouette stays a piece of its own, and retrieval
    keeps it apart when it is confidently someone else (retrieval/instance_search.py)."""
    x0, y0 = stats[:, 0].astype(np.int64), stats[:, 1].astype(np.int64)
    x1, y1 = x0 + stats[:, 2], y0 + stats[:, 3]
    area = (x1 - x0) * (y1 - y0)
    size = np.maximum(stats[:, 2], stats[:, 3])
    out = main.copy()
    for g in np.flatnonzero(main):
        gap_x = np.maximum(0, np.maximum(x0 - x1[g], x0[g] - x1))
        gap_y = np.maximum(0, np.maximum(y0 - y1[g], y0[g] - y1))
        bigger = main & (area * SATELLITE_AREA > area[g]) & (np.maximum(gap_x, gap_y) <= SATELLITE_REACH * size)
        if bigger.any():
            out[g] = False
    return out


def merge_nested(groups: np.ndarray, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Join groups whose boxes overlap by NESTED_SHARE of the smaller box: a part drawn
    apart from the rest but inside its extent (a cat's mouth and whiskers under its head
    outline). A box far smaller than the one it lies in (a character inside a frame
    find_panels did not take for a panel) is not a part of it. Returns the relabeled groups and the joined boxes' stats (x, y, w, h, area)."""
    n = len(stats)
    x0, y0 = stats[:, 0].astype(np.int64), stats[:, 1].astype(np.int64)
    x1, y1 = x0 + stats[:, 2], y0 + stats[:, 3]
    area = (x1 - x0) * (y1 - y0)
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(1, n):
        ix = np.maximum(0, np.minimum(x1[i], x1[i + 1:]) - np.maximum(x0[i], x0[i + 1:]))
        iy = np.maximum(0, np.minimum(y1[i], y1[i + 1:]) - np.maximum(y0[i], y0[i + 1:]))
        smaller, bigger = np.minimum(area[i], area[i + 1:]), np.maximum(area[i], area[i + 1:])
        nested = (ix * iy >= NESTED_SHARE * smaller) & (smaller >= NESTED_MIN_RATIO * bigger)
        for j in np.flatnonzero(nested) + i + 1:
            parent[root(int(j))] = root(i)
    roots = np.array([root(i) for i in range(n)])
    if (roots == np.arange(n)).all():
        return groups, stats
    merged = stats.copy()
    for r in np.unique(roots[1:]):
        members = np.flatnonzero(roots == r)
        mx0, my0 = x0[members].min(), y0[members].min()
        merged[r, :4] = mx0, my0, x1[members].max() - mx0, y1[members].max() - my0
    return roots[groups], merged


def attach_satellites(groups: np.ndarray, main: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """Relabel each satellite group's strokes with the nearest drawing's label when it is
    close enough (SATELLITE_REACH x the drawing's longest side); others become 0."""
    main_pixels = main[groups]
    if not ((groups > 0) & ~main_pixels).any():
        return np.where(main_pixels, groups, 0)
    dist, nearest = cv2.distanceTransformWithLabels((~main_pixels).astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(int(nearest.max()) + 1, np.int64)
    lut[nearest[main_pixels]] = groups[main_pixels]
    owner = lut[nearest]
    size = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]).astype(np.float64)
    where = np.flatnonzero(((groups > 0) & ~main_pixels).ravel())
    sat, d = groups.ravel()[where], dist.ravel()[where]
    order = np.lexsort((d, sat))  # per satellite group, its pixel closest to a drawing first
    first = order[np.r_[True, sat[order][1:] != sat[order][:-1]]]
    relabel = np.arange(len(size))
    relabel[~main] = 0
    targets = owner.ravel()[where[first]]
    close = d[first] <= SATELLITE_REACH * size[targets]
    relabel[sat[first][close]] = targets[close]
    return relabel[groups]
