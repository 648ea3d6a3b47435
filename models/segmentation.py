"""Region segmentation of line art and of flat-colored references.

Line art: paper pixels split into closed regions. Strokes often do not close (a gap of a few
pixels between two strokes would merge two regions), so seeds are the paper left after
"rolling a ball" of radius r along the ink (pixels farther than r from any ink, trapped-ball
style, Zhang et al. 2009) and grown back over the paper; gaps narrower than 2r never let a
seed through. Paper that no seed reaches (regions narrower than the ball) becomes regions of
its own. Anti-aliased strokes are ink where darker than mid-gray; colored strokes (BasicPBC's
red/blue shadow and highlight trace lines) are borders like black ones.

References: flat-colored images split into regions by their quantized colors, so a reference
needs no line art of its own to be matched region by region.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

INK_THRESHOLD = 128  # lines < this are ink (0 = ink, 255 = paper)
# Ball radius as a share of the page's longest side (never below MIN_BALL_RADIUS pixels).
BALL_RADIUS_SHARE = 0.003
MIN_BALL_RADIUS = 1.5
# Quantization of reference colors: color-table entries cover at least this share of the pixels.
MIN_PALETTE_SHARE = 0.0015
MAX_PALETTE = 32
# Longest side at which references are analysed and the region colorizer counts votes
# (nearest-neighbor scaling keeps flat colors exact).
ANALYSIS_SIZE = 640
PAPER_LAB = np.array([255.0, 128.0, 128.0], np.float32)  # white paper (OpenCV 8-bit CIELAB)


@dataclass
class Segmentation:
    labels: np.ndarray  # int32 H x W: 0 = ink, 1..n = regions
    count: int  # n + 1 (label 0 included)
    touches_border: np.ndarray  # bool per label: the region reaches the image border
    # pixels of regions only joins between stroke ends close off from the border
    # (split_at_closures); None: none
    joined: np.ndarray | None = None

    def areas(self) -> np.ndarray:
        return np.bincount(self.labels.ravel(), minlength=self.count)


def ink_mask(lines: np.ndarray) -> np.ndarray:
    return lines < INK_THRESHOLD


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` with its holes filled: what scipy.ndimage.binary_fill_holes gives (the
    background is 4-connected), by one flood fill of the outside instead of repeated
    dilations, which cost ~30x more on a page-sized mask."""
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    cv2.floodFill(padded, None, (0, 0), 2, flags=4)
    return padded[1:-1, 1:-1] != 2


def ball_radius(shape: tuple[int, int]) -> float:
    return max(MIN_BALL_RADIUS, BALL_RADIUS_SHARE * max(shape))


def _grow_labels(labels: np.ndarray, allowed: np.ndarray, max_steps: int) -> np.ndarray:
    """Geodesic growth: unlabeled allowed pixels take a 4-neighbor's label, step by step
    (4-neighbors never cross a 1-px diagonal stroke)."""
    dtype = np.uint16 if labels.max() < 65535 else np.float32  # both exact, both dilate fast in OpenCV
    grown = labels.astype(dtype)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    for _ in range(max_steps):
        todo = (grown == 0) & allowed
        if not todo.any():
            break
        dilated = cv2.dilate(grown, kernel)
        grown = np.where(todo, dilated, grown)
    return grown.astype(np.int32)


def segment_line_art(lines: np.ndarray, radius: float | None = None) -> Segmentation:
    """Closed paper regions of a line image (uint8, 0 = ink), gap-tolerant."""
    ink = ink_mask(lines)
    paper = ~ink
    h, w = lines.shape
    radius = ball_radius((h, w)) if radius is None else radius
    dist = cv2.distanceTransform(paper.astype(np.uint8), cv2.DIST_L2, 5)
    seeds = (dist > radius).astype(np.uint8)
    n_seeds, labels = cv2.connectedComponents(seeds, connectivity=4)
    labels = _grow_labels(labels.astype(np.int32), paper, max_steps=int(np.ceil(2 * radius)) + 2)
    # Paper no seed reached: regions narrower than the ball, closed off by ink.
    rest = paper & (labels == 0)
    if rest.any():
        n_rest, rest_labels = cv2.connectedComponents(rest.astype(np.uint8), connectivity=4)
        labels[rest] = rest_labels[rest] + (n_seeds - 1)
        count = n_seeds + n_rest - 1
    else:
        count = n_seeds
    labels, count = _compact(labels, count)
    return Segmentation(labels, count, _border_labels(labels, count))


def _compact(labels: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """Renumber so labels 1..n are all present (0 stays ink)."""
    present = np.bincount(labels.ravel(), minlength=count) > 0
    present[0] = True
    remap = np.cumsum(present) - 1
    return remap[labels].astype(np.int32), int(present.sum())


def _border_labels(labels: np.ndarray, count: int) -> np.ndarray:
    border = np.zeros(count, dtype=bool)
    border[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
    border[0] = False
    return border


@dataclass
class ColorTable:
    """The reference pool's flat colors; fills and reference regions are indices into it."""

    lab: np.ndarray  # float32 (P, 3) CIELAB of each entry (OpenCV 8-bit scale)
    rgb: np.ndarray  # uint8 (P, 3)
    unflat: list[int] = field(default_factory=list)  # references without flat colors (quantized instead)

    def nearest(self, rgb) -> int:
        """Index of the entry nearest (CIELAB) to one RGB color."""
        return int(np.argmin(((self.lab - rgb_to_lab(np.array([rgb]))[0]) ** 2).sum(1)))


def rgb_keys(px: np.ndarray) -> np.ndarray:
    """One int64 per RGB pixel (N x 3 uint8), so distinct colors are found with np.unique."""
    return (px[:, 0].astype(np.int64) << 16) | (px[:, 1].astype(np.int64) << 8) | px[:, 2]


def flat_colors(color: np.ndarray, mask: np.ndarray) -> dict[tuple[int, int, int], float]:
    """Exact RGB values covering at least MIN_PALETTE_SHARE of the masked pixels (flat
    fills; anti-aliasing blends and JPEG noise do not), with their pixel shares."""
    px = color[mask]
    if len(px) == 0:
        return {}
    keys = rgb_keys(px)
    uniq, counts = np.unique(keys, return_counts=True)
    share = counts / len(px)
    keep = share >= MIN_PALETTE_SHARE
    return {(int(k >> 16), int((k >> 8) & 255), int(k & 255)): float(s) for k, s in zip(uniq[keep], share[keep])}


FLAT_SHARE = 0.5  # a reference is flat-colored when its flat colors cover this share of its paper
UNFLAT_COLORS = 12  # a painting-like reference is quantized to this many colors


def painted_colors(color: np.ndarray, mask: np.ndarray) -> dict[tuple[int, int, int], float]:
    """A reference without flat fills (a painting, a photo): its colors quantized by
    k-means (deterministic seeding) to UNFLAT_COLORS, with their pixel shares."""
    px = color[mask] if mask.any() else color.reshape(-1, 3)
    px = px[:: max(1, len(px) // 20000)].astype(np.float32)
    k = int(min(UNFLAT_COLORS, len(np.unique(px, axis=0))))
    if k <= 1:
        return {tuple(int(v) for v in np.median(px, axis=0)): 1.0}
    cv2.setRNGSeed(0)
    _, labels, centers = cv2.kmeans(px, k, None, (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5),
                                    2, cv2.KMEANS_PP_CENTERS)
    shares = np.bincount(labels.ravel(), minlength=k) / len(px)
    return {tuple(int(round(v)) for v in c): float(sh) for c, sh in zip(centers, shares)}


def build_color_table(colors: list[np.ndarray], masks: list[np.ndarray]) -> ColorTable:
    """Dominant flat colors of the reference pool: `flat_colors` of every reference's
    non-ink pixels, summed over the pool. A reference whose flat colors cover under
    FLAT_SHARE of its paper is painting-like: its k-means colors stand in (listed in
    `unflat`, so the caller can warn)."""
    found: dict[tuple[int, int, int], float] = {}
    unflat = []
    for i, (color, mask) in enumerate(zip(colors, masks)):
        flat = flat_colors(color, mask)
        if sum(flat.values()) < FLAT_SHARE:
            flat = painted_colors(color, mask)
            unflat.append(i)
        for rgb, share in flat.items():
            found[rgb] = found.get(rgb, 0.0) + share
    entries = sorted(found, key=lambda k: (-found[k], k))[:MAX_PALETTE]
    rgb = np.array(entries, dtype=np.uint8).reshape(-1, 3)
    return ColorTable(lab=rgb_to_lab(rgb), rgb=rgb, unflat=unflat)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB -> float32 CIELAB on OpenCV's 8-bit scale (L*255/100, a+128, b+128)."""
    return cv2.cvtColor(np.asarray(rgb, np.uint8).reshape(1, -1, 3), cv2.COLOR_RGB2LAB)[0].astype(np.float32)


def snap_colors(rgb: np.ndarray, targets: np.ndarray | None, tolerance: float) -> np.ndarray:
    """Each color (uint8 N x 3) within `tolerance` (CIELAB distance) of a target color
    becomes the nearest target; paper white and colors far from every target stay."""
    rgb = np.asarray(rgb, np.uint8).reshape(-1, 3)
    if targets is None or not len(targets) or not len(rgb):
        return rgb.copy()
    lab = rgb_to_lab(rgb)
    d = np.linalg.norm(lab[:, None, :] - rgb_to_lab(targets)[None], axis=2)
    nearest = d.argmin(1)
    snap = (d[np.arange(len(rgb)), nearest] <= tolerance) & (np.linalg.norm(lab - PAPER_LAB, axis=1) > tolerance)
    out = rgb.copy()
    out[snap] = np.asarray(targets, np.uint8).reshape(-1, 3)[nearest[snap]]
    return out


def snap_image(img: np.ndarray, targets: np.ndarray | None, tolerance: float) -> np.ndarray:
    """`snap_colors` applied to every pixel of an RGB image (via its distinct colors)."""
    if targets is None or not len(targets):
        return img
    px = img.reshape(-1, 3)
    keys = rgb_keys(px)
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return snap_colors(px[first], targets, tolerance)[inverse.ravel()].reshape(img.shape)


def quantize(color: np.ndarray, palette: ColorTable) -> np.ndarray:
    """Index of the nearest color-table entry (CIELAB distance) for every pixel; int32 H x W."""
    h, w = color.shape[:2]
    px = color.reshape(-1, 3)
    keys = rgb_keys(px)
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    lab = cv2.cvtColor(px[first][None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    d = ((lab[:, None, :] - palette.lab[None]) ** 2).sum(-1)
    return d.argmin(1)[inverse.ravel()].reshape(h, w).astype(np.int32)


def segment_reference(color: np.ndarray, lines: np.ndarray, palette: ColorTable,
                      index: np.ndarray | None = None) -> tuple[Segmentation, np.ndarray]:
    """Regions of a colored reference: 4-connected areas of one color-table entry, ink
    excluded (`index`: quantize(color, palette) when already known). Returns
    (segmentation, color-table index per region)."""
    from skimage.measure import label as label_equal

    index = quantize(color, palette) if index is None else index
    paper = ~ink_mask(lines)
    labels = label_equal(np.where(paper, index + 1, 0), connectivity=1, background=0).astype(np.int32)
    count = int(labels.max()) + 1
    region_colors = np.zeros(count, np.int32)
    region_colors[labels.ravel()] = index.ravel()
    region_colors[0] = 0
    return Segmentation(labels, count, _border_labels(labels, count)), region_colors


def split_leaky_regions(seg: Segmentation, radius: float) -> Segmentation:
    """Second, coarser trapped-ball pass inside the border-touching regions only.

    A fill whose outline has a gap wider than the first ball (a face whose strokes stop short
    of each other) leaks into the background region. Rolling a ball of `radius` through that
    region separates the leaked fill again wherever the gap is narrower than 2 * radius; the
    pieces that do not reach the image border become regions of their own (and are matched
    like any closed region), the rest stays border-touching."""
    if radius <= 0 or not seg.touches_border.any():
        return seg
    leaky = seg.touches_border[seg.labels]
    dist = cv2.distanceTransform(leaky.astype(np.uint8), cv2.DIST_L2, 5)
    n, seeds = cv2.connectedComponents((dist > radius).astype(np.uint8), connectivity=4)
    if n <= 2:
        return seg
    seed_border = _border_labels(seeds, n)
    grown = _grow_labels(seeds.astype(np.int32), leaky, max_steps=int(np.ceil(2 * radius)) + 2)
    # Only pieces that stay away from the border become new regions.
    new_ids = np.flatnonzero(~seed_border)
    new_ids = new_ids[new_ids > 0]
    if len(new_ids) == 0:
        return seg
    remap = np.zeros(n, dtype=np.int64)
    remap[new_ids] = np.arange(seg.count, seg.count + len(new_ids))
    labels = seg.labels.copy()
    take = leaky & (remap[grown] > 0)
    labels[take] = remap[grown][take]
    labels, count = _compact(labels.astype(np.int32), seg.count + len(new_ids))
    return Segmentation(labels, count, _border_labels(labels, count))


def split_at_closures(seg: Segmentation, joins: np.ndarray) -> Segmentation:
    """Border-touching regions cut along `joins` (models/stroke_ends.py: short closures
    between stroke ends); pieces cut off from the image border become regions of their own
    (matched like any closed region), the join pixels join the piece beside them, and
    closed regions never change."""
    leaky = seg.touches_border[seg.labels]
    cut = leaky & joins
    if not cut.any():
        return seg
    n, pieces = cv2.connectedComponents((leaky & ~cut).astype(np.uint8), connectivity=4)
    if n <= 2:
        return seg
    pieces = _grow_labels(pieces.astype(np.int32), cut, max_steps=8)
    labels = seg.labels.copy()
    labels[leaky] = 0
    new = np.zeros(n, np.int64)
    new[1:] = np.arange(seg.count, seg.count + n - 1)
    take = leaky & (pieces > 0)
    labels[take] = new[pieces[take]]
    labels, count = _compact(labels.astype(np.int32), seg.count + n - 1)
    border = _border_labels(labels, count)
    joined = leaky & ~border[labels] & (labels > 0)
    return Segmentation(labels, count, border, joined)


GRAY_STEP = 24.0  # gray levels: two flat grays this far apart are two parts (hair and skin)
MIN_PART_SHARE = 0.0015  # a split-off part covers at least this share of the page


def gray_levels(gray: np.ndarray, paper: np.ndarray) -> np.ndarray:
    """The page's flat gray levels: modes of the paper's gray histogram (smoothed, 2-level
    bins) at least GRAY_STEP apart, strongest first kept."""
    hist = np.bincount(np.clip(gray[paper], 0, 255).astype(np.int64) // 2, minlength=128).astype(np.float64)
    hist = np.convolve(hist, np.ones(5) / 5.0, mode="same")
    peaks = [i for i in range(128) if hist[i] > 0 and hist[i] >= hist[max(0, i - 1)] and hist[i] >= hist[min(127, i + 1)]
             and hist[i] >= 0.002 * hist.sum()]
    levels: list[float] = []
    for i in sorted(peaks, key=lambda i: -hist[i]):
        level = 2.0 * i + 1.0
        if all(abs(level - other) >= GRAY_STEP for other in levels):
            levels.append(level)
    return np.array(sorted(levels), np.float32)


def split_by_gray(seg: Segmentation, gray: np.ndarray) -> Segmentation:
    """Regions split where the (descreened) gray level jumps without a stroke: every pixel
    takes the nearest of the page's gray levels, each region's parts of one level become
    regions; parts smaller than MIN_PART_SHARE of the page (ramps along strokes, noise)
    go back to the neighbors they touch."""
    from skimage.measure import label as label_equal

    paper = seg.labels > 0
    gray = cv2.medianBlur(np.clip(gray, 0, 255).astype(np.uint8), 5)  # descreening residue, grain
    levels = gray_levels(gray, paper)
    if len(levels) < 2:
        return seg
    # Nearest level of every gray value, looked up per pixel.
    level = np.abs(np.arange(256, dtype=np.float32)[:, None] - levels[None, :]).argmin(1)[gray]
    key = np.where(paper, seg.labels.astype(np.int64) * len(levels) + level + 1, 0)
    parts = label_equal(key, connectivity=1, background=0).astype(np.int32)
    count = int(parts.max()) + 1
    areas = np.bincount(parts.ravel(), minlength=count)
    small = areas < max(8, MIN_PART_SHARE * parts.size)
    small[0] = False
    if small[1:].all():
        return seg
    parts[small[parts]] = 0
    # Small parts join the nearest big part of the same region (one distance transform).
    grown = np.where(paper, nearest_fill(parts, parts > 0), 0)
    same_region = np.zeros(count, np.int64)
    same_region[parts.ravel()] = seg.labels.ravel()
    lost = paper & (same_region[grown] != seg.labels)
    grown = np.where(lost, 0, grown)
    if lost.any():  # parts no big part of their region is nearest to keep their own label
        n, rest = cv2.connectedComponents(lost.astype(np.uint8), connectivity=4)
        grown[lost] = rest[lost] + count - 1
        count += n - 1
    labels, count = _compact(grown.astype(np.int32), count)
    return Segmentation(labels, count, _border_labels(labels, count), seg.joined)


def nearest_fill(values: np.ndarray, known: np.ndarray, mask_size: int = 3) -> np.ndarray:
    """Every unknown pixel takes the value of the nearest known pixel (Euclidean, OpenCV's
    `mask_size` 3 or 5 approximation)."""
    _, nearest = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, mask_size,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(int(nearest.max()) + 1, dtype=values.dtype)
    lut[nearest[known]] = values[known]
    return lut[nearest]
