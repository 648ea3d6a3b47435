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

from dataclasses import dataclass

import cv2
import numpy as np

INK_THRESHOLD = 128  # lines < this are ink (0 = ink, 255 = paper)
# Ball radius as a share of the page's longest side (never below MIN_BALL_RADIUS pixels).
BALL_RADIUS_SHARE = 0.003
MIN_BALL_RADIUS = 1.5
# Quantization of reference colors: palette entries cover at least this share of the pixels.
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

    def areas(self) -> np.ndarray:
        return np.bincount(self.labels.ravel(), minlength=self.count)


def ink_mask(lines: np.ndarray) -> np.ndarray:
    return lines < INK_THRESHOLD


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
class Palette:
    lab: np.ndarray  # float32 (P, 3) CIELAB of each entry (OpenCV 8-bit scale)
    rgb: np.ndarray  # uint8 (P, 3)


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


def build_palette(colors: list[np.ndarray], masks: list[np.ndarray]) -> Palette:
    """Dominant flat colors of the reference pool: `flat_colors` of every reference's
    non-ink pixels, summed over the pool."""
    found: dict[tuple[int, int, int], float] = {}
    for color, mask in zip(colors, masks):
        for rgb, share in flat_colors(color, mask).items():
            found[rgb] = found.get(rgb, 0.0) + share
    if not found:
        for color, mask in zip(colors, masks):
            px = color[mask] if mask.any() else color.reshape(-1, 3)
            found[tuple(int(v) for v in np.median(px, axis=0))] = 1.0
    entries = sorted(found, key=lambda k: (-found[k], k))[:MAX_PALETTE]
    rgb = np.array(entries, dtype=np.uint8).reshape(-1, 3)
    return Palette(lab=rgb_to_lab(rgb), rgb=rgb)


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


def quantize(color: np.ndarray, palette: Palette) -> np.ndarray:
    """Index of the nearest palette entry (CIELAB distance) for every pixel; int32 H x W."""
    h, w = color.shape[:2]
    px = color.reshape(-1, 3)
    keys = rgb_keys(px)
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    lab = cv2.cvtColor(px[first][None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    d = ((lab[:, None, :] - palette.lab[None]) ** 2).sum(-1)
    return d.argmin(1)[inverse.ravel()].reshape(h, w).astype(np.int32)


def segment_reference(color: np.ndarray, lines: np.ndarray, palette: Palette) -> tuple[Segmentation, np.ndarray]:
    """Regions of a colored reference: 4-connected areas of one palette color, ink excluded.
    Returns (segmentation, palette index per region)."""
    index = quantize(color, palette)
    paper = ~ink_mask(lines)
    labels = np.zeros(index.shape, dtype=np.int32)
    region_colors = [0]
    next_label = 1
    for p in np.unique(index[paper]):
        mask = (paper & (index == p)).astype(np.uint8)
        n, comp = cv2.connectedComponents(mask, connectivity=4)
        if n <= 1:
            continue
        labels[comp > 0] = comp[comp > 0] + (next_label - 1)
        region_colors.extend([int(p)] * (n - 1))
        next_label += n - 1
    count = next_label
    return Segmentation(labels, count, _border_labels(labels, count)), np.array(region_colors, dtype=np.int32)


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
