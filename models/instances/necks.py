"""Splitting a silhouette where it narrows: touching or overlapping characters.

Two characters that touch or overlap make one silhouette shaped like two blobs joined by
a neck. On the distance transform (distance to the silhouette's edge) each blob is a
peak and the neck a saddle between them. The silhouette is first cut into the basins of
all clear peaks (watershed); then neighboring basins are joined, weakest neck first,
while the lower peak rises less than `depth` x its own height above the saddle: a small
character touching a big one stays apart (its own peak is high above the contact), a
bump on one character's outline does not.

One character can have a neck too (head on shoulders). The shape cannot tell the two
cases apart, so pieces keep the silhouette's group and retrieval decides: pieces that are
not confidently different characters are joined again (stages/retrieve.py).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from chromaflow.models.segmentation import nearest_fill

MIN_PIECE_SHARE = 0.12  # a piece covers at least this share of the silhouette
SPLIT_SIZE = 96  # silhouettes larger than this (pixels, longest side) are split at half size
PEAK_NOISE = 0.08  # peaks lower than this share of the highest above their surroundings are noise


def split_at_necks(silhouette: np.ndarray, depth: float, min_area: int = 0) -> list[np.ndarray]:
    """Pieces of a bool silhouette (one piece: not split). Pieces smaller than
    MIN_PIECE_SHARE of the silhouette or `min_area` pixels join a neighbor. Large
    silhouettes are split at half size (the cut is refitted to the strokes later, snap.py)."""
    if depth <= 0 or not silhouette.any():
        return [silhouette]
    if max(silhouette.shape) > SPLIT_SIZE:
        h, w = silhouette.shape
        small = cv2.resize(silhouette.astype(np.uint8), ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
        pieces = _split(small > 0, depth, min_area / 4)
        if len(pieces) == 1:
            return [silhouette]
        labels = np.zeros(small.shape, np.uint8)
        for k, piece in enumerate(pieces, start=1):
            labels[piece] = k
        full = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        # Pixels of the silhouette the half-size labels missed go to the nearest piece.
        full = nearest_fill(full, full > 0)
        return [silhouette & (full == k) for k in range(1, len(pieces) + 1)]
    return _split(silhouette, depth, min_area)


def _split(silhouette: np.ndarray, depth: float, min_area: float) -> list[np.ndarray]:
    dist = cv2.distanceTransform(silhouette.astype(np.uint8), cv2.DIST_L2, 5)
    peaks = h_maxima(dist, PEAK_NOISE * float(dist.max()))
    count, markers = cv2.connectedComponents(peaks.astype(np.uint8), connectivity=8)
    if count <= 2:
        return [silhouette]
    basins = watershed(-dist, markers, mask=silhouette)
    height = np.zeros(count)
    np.maximum.at(height, basins.ravel(), dist.ravel())
    area = np.bincount(basins.ravel(), minlength=count).astype(np.float64)
    parent = list(range(count))
    smallest = max(min_area, MIN_PIECE_SHARE * float(silhouette.sum()))
    saddles = basin_saddles(basins, dist)
    while saddles:
        (a, b), saddle = max(saddles.items(), key=lambda kv: _weakness(kv, height, area, smallest))
        if _weakness(((a, b), saddle), height, area, smallest) < 1.0 - depth:
            break
        parent[b] = a
        height[a], area[a] = max(height[a], height[b]), area[a] + area[b]
        saddles = _merge(saddles, a, b)
    roots = sorted({_root(parent, k) for k in range(1, count)})
    if len(roots) <= 1:
        return [silhouette]
    lut = np.array([_root(parent, k) for k in range(count)])
    merged = lut[basins]
    return [merged == r for r in roots]


def _weakness(item, height: np.ndarray, area: np.ndarray, smallest: float) -> float:
    """Saddle / lower peak (1 = no neck at all); a basin too small to stand alone always
    joins (weakness above every threshold)."""
    (a, b), saddle = item
    if min(area[a], area[b]) < smallest:
        return 2.0 + saddle
    return saddle / max(min(height[a], height[b]), 1e-6)


def basin_saddles(basins: np.ndarray, dist: np.ndarray) -> dict[tuple[int, int], float]:
    """For each pair of touching basins, the highest pass between them: the max over
    neighboring pixel pairs across their border of the lower distance value."""
    keys, values = [], []
    n = int(basins.max()) + 1
    for la, lb, da, db in ((basins[:, :-1], basins[:, 1:], dist[:, :-1], dist[:, 1:]),
                           (basins[:-1, :], basins[1:, :], dist[:-1, :], dist[1:, :])):
        border = (la != lb) & (la > 0) & (lb > 0)
        lo, hi = np.minimum(la[border], lb[border]), np.maximum(la[border], lb[border])
        keys.append(lo.astype(np.int64) * n + hi)
        values.append(np.minimum(da[border], db[border]))
    keys, values = np.concatenate(keys), np.concatenate(values)
    if not len(keys):
        return {}
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    best = np.maximum.reduceat(values, starts)
    return {(int(k // n), int(k % n)): float(v) for k, v in zip(keys[starts], best)}


def _merge(saddles: dict[tuple[int, int], float], keep: int, gone: int) -> dict[tuple[int, int], float]:
    out: dict[tuple[int, int], float] = {}
    for (a, b), v in saddles.items():
        a, b = (keep if a == gone else a), (keep if b == gone else b)
        if a == b:
            continue
        key = (min(a, b), max(a, b))
        out[key] = max(out.get(key, -1.0), v)
    return out


def _root(parent: list[int], k: int) -> int:
    while parent[k] != k:
        k = parent[k]
    return k
