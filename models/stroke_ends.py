"""Where the page's strokes stop, and the short closures between them that a reader sees.

Line art leaves outlines open on purpose: an arm drawn as two lines that stop at the bottom
of a bust, a sleeve whose two edges end in the air, a chin stroke that stops short of the
cheek. Gaps narrower than the segmentation's ball are already closed (models/segmentation.py);
wider ones let the part leak into the paper around the character, where only the
references' overlay can say what it is, and that fails as soon as the pose changes (an
arm raised on the page, lowered in every reference, is left as paper).

A reader closes such an outline by joining the two stroke ends across the opening. Here:

1. the strokes' centerlines (skeleton) give their ends (centerline pixels with one
   neighbor) and each end's direction (away from the centroid of the centerline around it);
2. two ends are joined when they lie within MAX_GAP_WIDTHS stroke widths of each other,
   the straight join crosses no ink, and they cap two lines of one stroke that stop side
   by side or point at each other (CAP_COSINE);
3. nearest pairs first, each end joined once: two arm lines that stop side by side are
   capped, the wide gap between the arms (the shirt's open bottom) is not; that gap is an
   open edge (`open_edges`), which only holds fills (models/open_fills.py).

The joins only split regions that touch the page border (segmentation.split_at_closures):
a closed region never changes, and a part the joins close off entirely becomes a region of
its own, matched like any closed region.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import skeletonize

WIDTH_PERCENTILE = 30  # the stroke width is read at this percentile of the centerline (see stroke_width)
MAX_GAP_WIDTHS = 6.0  # ends this many stroke widths apart (or nearer) may be joined
BACK_WIDTHS = 1.5  # an end's direction: from the centroid of its centerline this many stroke widths around
SINGLE_LINE = 1.5  # an end has at most this many times one line's centerline pixels around it
MIN_STROKE_WIDTHS = 1.0  # a stroke shorter than this many widths (a dot) has no ends to join
OPEN_EDGE_WIDTHS = 24.0  # open_edges: ends this many stroke widths apart (or nearer)
# A join either caps two lines of one stroke that stop side by side (both run the same way,
# within CAP_COSINE, and the join crosses them: |cos| <= CAP_ACROSS; a thumb and a finger
# fan out and are not capped) or bridges two ends that point at each other (GAP_COSINE).
CAP_COSINE = 0.9
CAP_ACROSS = 0.5
GAP_COSINE = 0.7
AWAY_COSINE = -0.35  # open_edges: no end may point away from the other more than this
NEAREST_ENDS = 12  # an end is joined only to one of its few nearest ends
MAX_ENDS = 800  # more ends than this on a page are hatching or texture: nothing is joined
JOIN_THICKNESS = 2  # pixels: a join a 4-connected region growth cannot cross


def stroke_width(ink: np.ndarray, skeleton: np.ndarray) -> float:
    """The strokes' width: twice the distance from the centerline to the paper, at its
    WIDTH_PERCENTILE (black hair and other solid areas have long, wide centerlines that
    would pull a median up to their width)."""
    if not skeleton.any():
        return 0.0
    dist = cv2.distanceTransform(ink.astype(np.uint8), cv2.DIST_L2, 3)
    return float(2.0 * np.percentile(dist[skeleton], WIDTH_PERCENTILE))


def _neighbors(skeleton: np.ndarray) -> np.ndarray:
    """Number of 8-neighbors on the centerline, per pixel."""
    kernel = np.ones((3, 3), np.float32)
    kernel[1, 1] = 0
    return cv2.filter2D(skeleton.astype(np.float32), -1, kernel, borderType=cv2.BORDER_CONSTANT).astype(np.int32)


def stroke_ends(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(ends as (N, 2) y, x; their unit directions (N, 2), pointing out of the stroke;
    the stroke width, stroke_width). An end's direction runs from the centroid of the centerline
    around it (a box of BACK_WIDTHS stroke widths each way) to the end; ends with less
    centerline than MIN_STROKE_WIDTHS widths around them (dots, ticks) or more than one
    line's (SINGLE_LINE) are left out."""
    skeleton = skeletonize(ink) if ink.any() else np.zeros_like(ink)
    width = stroke_width(ink, skeleton)
    ends = np.argwhere(skeleton & (_neighbors(skeleton) == 1))
    if not (0 < width < min(ink.shape)) or not len(ends) or len(ends) > MAX_ENDS:
        # no strokes, a black page, or hatching and texture (not outlines left open)
        return np.zeros((0, 2), int), np.zeros((0, 2)), width
    box = 2 * max(2, int(round(BACK_WIDTHS * width))) + 1
    h, w = ink.shape
    yy, xx = np.mgrid[0:h, 0:w]
    sk = skeleton.astype(np.float32)
    local = [cv2.boxFilter(plane, -1, (box, box), normalize=False, borderType=cv2.BORDER_CONSTANT)
             for plane in (sk, sk * yy, sk * xx)]
    ey, ex = ends[:, 0], ends[:, 1]
    count = local[0][ey, ex]
    centroid = np.stack([local[1][ey, ex], local[2][ey, ex]], 1) / np.maximum(count, 1)[:, None]
    d = ends - centroid
    norm = np.hypot(d[:, 0], d[:, 1])
    # A stroke's end has one line running back into it; more centerline around it than
    # that is a junction or a mesh (screen dots kept as ink, hatching), not an open end.
    single_line = count <= SINGLE_LINE * (box // 2 + 1)
    keep = (count >= MIN_STROKE_WIDTHS * width) & single_line & (norm > 0)
    return ends[keep], d[keep] / norm[keep, None], width


def _crossing_ink(ink: np.ndarray, a: np.ndarray, b: np.ndarray, skip: float) -> np.ndarray:
    """Per pair of points a[k] -> b[k]: whether the straight line between them meets ink
    farther than `skip` from both (one sample per pixel of length, all pairs at once)."""
    length = np.hypot(*(b - a).T)
    n = np.ceil(length).astype(int) + 1
    pair = np.repeat(np.arange(len(a)), n)
    start = np.cumsum(n) - n
    t = (np.arange(n.sum()) - start[pair]) / np.maximum(n[pair] - 1, 1)
    along = t * length[pair]
    inside = (along > skip) & (along < length[pair] - skip)
    pts = np.rint(a[pair] + t[:, None] * (b - a)[pair]).astype(int)
    hit = inside & ink[pts[:, 0], pts[:, 1]]
    return np.bincount(pair[hit], minlength=len(a)) > 0


def _pairs(ink: np.ndarray, ends: tuple, max_widths: float, closing: bool, excluded: set | None = None
           ) -> list:
    """The pairs (a, b), a < b, of `ends` (stroke_ends(ink)) to join: ends at most `max_widths`
    stroke widths apart (each end tries its NEAREST_ENDS nearest) whose straight join
    crosses no ink, nearest first, each end once, none of `excluded`. `closing`: caps and
    bridges only (see CAP_COSINE); else pairs where neither end points away from the
    other (AWAY_COSINE)."""
    points, directions, width = ends
    if len(points) < 2:
        return []
    diff = points[None, :, :].astype(np.float64) - points[:, None, :]
    dist = np.hypot(diff[..., 0], diff[..., 1])
    np.fill_diagonal(dist, np.inf)
    near = np.zeros(dist.shape, bool)
    k = min(NEAREST_ENDS, len(points) - 1)
    near[np.arange(len(points))[:, None], np.argpartition(dist, k - 1, axis=1)[:, :k]] = True
    i, j = np.nonzero(np.triu((near | near.T) & (dist <= max_widths * width), 1))
    v = diff[i, j] / dist[i, j, None]  # unit vectors from i to j
    out_i = np.einsum("kd,kd->k", directions[i], v)  # how far each end points toward the other
    out_j = np.einsum("kd,kd->k", directions[j], -v)
    parallel = np.einsum("kd,kd->k", directions[i], directions[j])
    if closing:
        # A cap closes a tube: its two lines meet at the other end (an arm's lines at the
        # hand), one connected stroke. Separate parallel strokes (speed lines, hatching,
        # whiskers) have paper between them, and are never capped.
        _, strokes = cv2.connectedComponents(ink.astype(np.uint8), connectivity=8)
        one_stroke = strokes[points[i, 0], points[i, 1]] == strokes[points[j, 0], points[j, 1]]
        cap = (parallel >= CAP_COSINE) & (np.abs(out_i) <= CAP_ACROSS) & (np.abs(out_j) <= CAP_ACROSS) & one_stroke
        valid = cap | ((out_i >= GAP_COSINE) & (out_j >= GAP_COSINE))
    else:
        valid = (out_i >= AWAY_COSINE) & (out_j >= AWAY_COSINE)
    i, j = i[valid], j[valid]
    clear = ~_crossing_ink(ink, points[i].astype(np.float64), points[j].astype(np.float64), width)
    i, j = i[clear], j[clear]
    used = np.zeros(len(points), bool)
    pairs = []
    for k in np.argsort(dist[i, j], kind="stable"):
        a, b = int(i[k]), int(j[k])
        if used[a] or used[b] or (excluded and (a, b) in excluded):
            continue
        used[a] = used[b] = True
        pairs.append((a, b))
    return pairs


def _xy(point: np.ndarray) -> tuple[int, int]:
    return int(round(point[1])), int(round(point[0]))


def closing_joins(ink: np.ndarray) -> np.ndarray:
    """Mask of the joins that close outlines (see the module docstring)."""
    joins = np.zeros(ink.shape, np.uint8)
    ends = stroke_ends(ink)
    points = ends[0]
    for a, b in _pairs(ink, ends, MAX_GAP_WIDTHS, closing=True):
        cv2.line(joins, _xy(points[a]), _xy(points[b]), 1, JOIN_THICKNESS)
    return joins > 0


def open_edges(ink: np.ndarray) -> np.ndarray:
    """Where a part drawn open ends (a shirt's bottom between the last ends of its two
    sides), for models/open_fills.py to count as holding a fill: the straight line from
    every stroke end to its nearest end up to OPEN_EDGE_WIDTHS stroke widths away that it
    is not capped to, where neither points away from the other (each end once: the tips
    of a hand's fingers get a line or two, not a web across the paper around them)."""
    edges = np.zeros(ink.shape, np.uint8)
    ends = stroke_ends(ink)  # once for both: the caps to skip and the edges
    points = ends[0]
    capped = _pairs(ink, ends, MAX_GAP_WIDTHS, closing=True)
    for a, b in _pairs(ink, ends, OPEN_EDGE_WIDTHS, closing=False, excluded=set(capped)):
        cv2.line(edges, _xy(points[a]), _xy(points[b]), 1, JOIN_THICKNESS)
    return edges > 0
