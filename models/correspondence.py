"""Which reference color every page region takes, and how sure that is.

Evidence per (page region, color-table entry), summed over the references, each weighted
by its retrieval score x global stroke fit ** fit_power:

- **inclusion** (BasicPBC's idea, classical): the reference is registered onto the page
  (models/registration.py: global alignment + dense flow), and each page pixel looks up the
  reference color under it, weighted by the local stroke fit there. A region's share of a
  color is where its pixels land in the reference; a moved arm lands in the reference's
  arm because the flow followed it, and where no reference fits, nobody votes.
- **what the region is**: a one-to-one assignment (Hungarian) of closed page regions to
  reference regions on a descriptor cost (position in the aligned frame, size, extent,
  fill ratio, and the details drawn inside it: a face keeps its eyes wherever it turns),
  so regions the flow lost still find their counterpart;
- **gray level** (gray and tone pages): a page region's gray predicts its color's
  lightness. A line gray -> lightness map is fitted on the regions the votes are sure of,
  and every color's vote is weighted by how well its lightness fits the region's gray.

A region's confidence is its winning color's share of its votes. Unsure regions take the
best-voted of the identity's remembered colors (palette memory) instead of another
character's or a stray reference's, and are reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .registration import Frame, Registration
from .segmentation import ColorTable, Segmentation

# Relative weights of the descriptor components in the match cost.
DESCRIPTOR_WEIGHTS = np.array([1.0, 1.0, 1.5, 0.5, 0.5, 0.3, 0.6])
DETAIL_SHARE = 0.05  # a hole is a detail drawn inside a region (an eye) if its non-ink part is below this share of the region
DETAIL_MIN_SHARE = 0.0002  # ... and it covers at least this share of the image (screen dots left by descreening do not)
FIT_FLOOR = 0.05  # a registered reference keeps this much of a say where its strokes do not fit
LIGHTNESS_SIGMA = 22.0  # gray levels: spread of a color's lightness around the fitted map
MIN_LIGHTNESS_FITS = 3  # confident regions needed before the gray -> lightness map is trusted


@dataclass
class ReferenceView:
    """One reference, prepared for voting at analysis size."""

    index: np.ndarray  # int32 H x W: color-table index of every pixel (-1: ink)
    regions: Segmentation  # flat-color regions of the reference
    region_colors: np.ndarray  # int32: color-table index per reference region
    region_shapes: np.ndarray  # region_shapes(regions.labels, regions.count)
    weight: float  # retrieval score x global fit ** fit_power (normalized over the pool)
    registration: Registration


def region_shapes(labels: np.ndarray, count: int) -> np.ndarray:
    """(count, 6) where and how big every region is, in pixels: center x, center y, area,
    bbox width, bbox height (0 for labels without pixels), and how many details are drawn
    inside it (inner_details; not counted, 0, for regions touching the image's edge, which
    are never matched one-to-one). Row 0 (ink) is unused. Free of any frame, so a
    reference's shapes are computed once for all the pages it serves."""
    flat = labels.ravel()
    h, w = labels.shape
    xs = np.broadcast_to(np.arange(w, dtype=np.float64), (h, w)).ravel()
    ys = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None], (h, w)).ravel()
    area = np.bincount(flat, minlength=count).astype(np.float64)
    safe = np.maximum(area, 1)
    shapes = np.zeros((count, 6), dtype=np.float64)
    shapes[:, 0] = np.bincount(flat, weights=xs, minlength=count) / safe
    shapes[:, 1] = np.bincount(flat, weights=ys, minlength=count) / safe
    shapes[:, 2] = area
    min_detail = DETAIL_MIN_SHARE * labels.size
    on_edge = np.zeros(count, bool)
    on_edge[np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])] = True
    for i, sl in enumerate(ndimage.find_objects(labels, max_label=count - 1), start=1):
        if sl is not None:
            shapes[i, 3] = sl[1].stop - sl[1].start
            shapes[i, 4] = sl[0].stop - sl[0].start
            if not on_edge[i] and shapes[i, 3] * shapes[i, 4] >= area[i] + min_detail:  # else none fits in its box
                shapes[i, 5] = inner_details(labels[sl] == i, labels[sl] == 0, area[i], min_detail)
    return shapes


def inner_details(region: np.ndarray, ink: np.ndarray, area: float, min_size: float) -> int:
    """Holes of a region that are drawn details (eyes and a mouth in a face, buttons on a
    shirt): at least `min_size` pixels, mostly ink, with less than DETAIL_SHARE of the
    region's area in other regions. A part lying over the region (a hand on a shirt) is a
    hole too, but not a detail. The count does not change when the part moves or turns,
    unlike where it lies."""
    holes = ndimage.binary_fill_holes(region) & ~region
    if not holes.any():
        return 0
    parts, n = ndimage.label(holes)
    size = np.bincount(parts.ravel(), minlength=n + 1)[1:]
    other = np.bincount(parts[holes & ~ink], minlength=n + 1)[1:]
    return int(((size >= min_size) & (other < DETAIL_SHARE * area)).sum())


def region_descriptors(shapes: np.ndarray, frame: Frame) -> np.ndarray:
    """(count, 7) of `region_shapes` in a frame: center x, center y (frame-relative),
    sqrt(area), bbox width, bbox height (all / frame size), fill ratio (area / bbox area)
    and log(1 + inner details)."""
    cx0, cy0, scale = frame[:3]
    area, bw, bh = shapes[:, 2], shapes[:, 3], shapes[:, 4]
    desc = np.zeros((len(shapes), 7), dtype=np.float64)
    desc[:, 0] = (shapes[:, 0] - cx0) / scale
    desc[:, 1] = (shapes[:, 1] - cy0) / scale
    desc[:, 2] = np.sqrt(area) / scale
    desc[:, 3] = bw / scale
    desc[:, 4] = bh / scale
    desc[:, 5] = area / np.maximum(1, bw * bh)
    desc[:, 6] = np.log1p(shapes[:, 5])
    return desc


def match_cost(page_desc: np.ndarray, ref_desc: np.ndarray) -> np.ndarray:
    diff = page_desc[:, None, :] - ref_desc[None, :, :]
    # Details drawn on the page are evidence (a face is not a shirt); their absence is not:
    # an arm wears the face's skin, and gap closing can merge an eye into the outline.
    diff[..., 6] = np.maximum(diff[..., 6], 0.0)
    return (np.abs(diff) * DESCRIPTOR_WEIGHTS).sum(-1)


def inclusion_votes(labels: np.ndarray, count: int, n_colors: int, refs: list[ReferenceView],
                    pixel_votes: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(count x n_colors) share of every region's fit-weighted pixels landing on each
    reference color, and optionally the same per pixel (n_colors x H x W) with, per pixel,
    the part of those votes cast from reference regions that lie whole inside their
    reference (H x W: what a reference shows of a drawing the page's edge cuts)."""
    flat = labels.ravel()
    votes = np.zeros((count, n_colors), np.float64)
    per_pixel = np.zeros((n_colors,) + labels.shape, np.float32) if pixel_votes else None
    whole = np.zeros(labels.shape, np.float32) if pixel_votes else None
    for ref in refs:
        idx = ref.registration.sample(ref.index.astype(np.float32), -1.0).astype(np.int32)
        weight = ref.weight * np.maximum(ref.registration.fit, FIT_FLOOR)
        pixels = np.flatnonzero((idx >= 0) & (ref.registration.fit > 0))
        colors = idx.ravel()[pixels].astype(np.int64)
        weights = weight.ravel()[pixels]
        key = flat[pixels].astype(np.int64) * n_colors + colors
        votes += np.bincount(key, weights=weights, minlength=count * n_colors).reshape(count, n_colors)
        if per_pixel is not None:
            # Every pixel has one color per reference: one scattered add, no duplicates.
            per_pixel.reshape(-1)[colors * flat.size + pixels] += weights
            region = ref.registration.sample(ref.regions.labels.astype(np.float32), 0.0).astype(np.int64).ravel()
            closed = ~ref.regions.touches_border[region[pixels]] & (region[pixels] > 0)
            whole.reshape(-1)[pixels[closed]] += weights[closed]
    areas = np.maximum(np.bincount(flat, minlength=count), 1).astype(np.float64)
    return votes / areas[:, None], per_pixel, whole


def descriptor_votes(page_shapes: np.ndarray, n_colors: int, inner: np.ndarray, refs: list[ReferenceView],
                     min_area: float, sigma: float) -> np.ndarray:
    """Hungarian one-to-one match of the closed page regions `inner` to every reference's
    closed regions (`page_shapes`: region_shapes of the page's labels); a match votes
    exp(-cost / sigma) for its reference region's color. Regions left over (more page
    regions than reference ones) take their cheapest match."""
    votes = np.zeros((len(page_shapes), n_colors), np.float64)
    if not len(inner):
        return votes
    for ref in refs:
        areas = ref.regions.areas()
        ref_inner = np.flatnonzero(~ref.regions.touches_border & (areas >= max(4, min_area * ref.index.size)))
        ref_inner = ref_inner[ref_inner > 0]
        if not len(ref_inner):
            continue
        page_desc = region_descriptors(page_shapes[inner], ref.registration.page_frame)
        ref_desc = region_descriptors(ref.region_shapes[ref_inner], ref.registration.ref_frame)
        cost = match_cost(page_desc, ref_desc)
        rows, cols = linear_sum_assignment(cost)
        chosen = cost.argmin(1)
        chosen[rows] = cols
        c = cost[np.arange(len(inner)), chosen]
        votes[inner, ref.region_colors[ref_inner[chosen]]] += ref.weight * np.exp(-c / sigma)
    return votes


def region_gray(labels: np.ndarray, count: int, gray: np.ndarray) -> np.ndarray:
    """Median-free mean gray per region (regions are flat after descreening)."""
    flat = labels.ravel()
    area = np.maximum(np.bincount(flat, minlength=count), 1)
    return np.bincount(flat, weights=gray.ravel().astype(np.float64), minlength=count) / area


def lightness_prior(votes: np.ndarray, gray: np.ndarray, table: ColorTable, sure: np.ndarray) -> np.ndarray | None:
    """(count x n_colors) weight of each color for each region's gray, from a line
    gray -> lightness map fitted on the `sure` regions' winning colors; None when too few
    regions are sure or the map does not explain them (the page's grays are not its
    colors' lightness)."""
    color_gray = table.rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    best = votes.argmax(1)
    idx = np.flatnonzero(sure)
    if len(idx) < MIN_LIGHTNESS_FITS or np.ptp(gray[idx]) < 1.0:
        return None
    a, b = np.polyfit(gray[idx], color_gray[best[idx]], 1, w=np.sqrt(votes[idx].max(1) + 1e-9))
    if a <= 0:
        return None
    predicted = a * gray + b
    if np.median(np.abs(predicted[idx] - color_gray[best[idx]])) > LIGHTNESS_SIGMA:
        return None
    return np.exp(-0.5 * ((predicted[:, None] - color_gray[None, :]) / LIGHTNESS_SIGMA) ** 2)


def decide(votes: np.ndarray, memory_entries: np.ndarray | None, min_confidence: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(color per region, confidence per region, unsure mask). Unsure regions choose among
    `memory_entries` (color-table indices of remembered colors and paper) when given."""
    total = votes.sum(1)
    color = votes.argmax(1).astype(np.int32)
    confidence = np.where(total > 0, votes.max(1) / np.maximum(total, 1e-12), 0.0)
    unsure = (confidence < min_confidence) & (total > 0)
    if memory_entries is not None and len(memory_entries) and unsure.any():
        restricted = votes[:, memory_entries]
        color[unsure] = memory_entries[restricted[unsure].argmax(1)]
    return color, confidence, unsure
