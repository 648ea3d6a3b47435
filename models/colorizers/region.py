"""Weight-free default colorizer: segment the line art into closed regions and fill each
with the color of its counterpart regions in ALL retrieved references.

1. The page's line art is segmented gap-tolerantly (models/segmentation.py); every reference
   is split into flat-color regions of a palette shared by the pool.
2. Every reference is aligned to the page (ink boxes, refined by a chamfer-distance grid
   search over scale and shift, which handles references at other scales and positions) and
   votes for a color per page region in two ways:
   - overlay: the palette colors of the aligned reference pixels inside the region;
   - matching: a global one-to-one assignment (Hungarian) of page regions to reference
     regions on a descriptor cost (position in the aligned frame, size, extent, fill ratio),
     which survives pose changes better than the overlay.
   Voting runs at ANALYSIS_SIZE; only labels and the final fill are full resolution.
   Votes are weighted by retrieval score and summed over references; a region takes the
   winning palette color, so fills are the references' exact flat colors. With a palette
   memory (request.palette), reference colors close to one of the identity's remembered
   colors are read as it before voting, so pages agree (and votes are not split) even when
   references were colored by different hands.
3. Regions that reach the page border are where background and fills that leak through open
   strokes (a shirt cut by the frame) meet: they are filled pixel by pixel with the
   overlay's majority color, white background included; slivers left by misalignment along
   the outline become background.
4. Tiny regions, regions nobody voted for and the ink take the nearest decided color. Composite by multiplying the fill with the page's gray (a "multiply" layer), so strokes
   and their anti-aliasing stay crisp; colored trace lines (red/blue shadow borders) take
   the color of the region they border. Gray manga pages keep their shading: chroma from the
   fill, lightness from the page.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from chromaflow.conf import ColorizeConfig, Config
from chromaflow.storage.images import resize_longest
from chromaflow.models.segmentation import (
    ANALYSIS_SIZE, BALL_RADIUS_SHARE, MIN_BALL_RADIUS, Palette, Segmentation, build_palette, ink_mask, quantize, segment_line_art,
    segment_reference, snap_image, split_leaky_regions)

from .base import ColorizeRequest, Reference


@dataclass
class RegionParams:
    """Tuning knobs (ColorizeConfig region_* keys)."""

    min_region_share: float = 0.00015  # regions smaller than this share of the page inherit from neighbors
    overlay_weight: float = 1.0  # weight of the overlay vote
    match_weight: float = 2.0  # weight of the Hungarian descriptor-match vote
    match_sigma: float = 0.3  # descriptor cost at which a match's vote has fallen to 1/e
    border_smoothing: float = 0.01  # box blur (share of longest side) of pixelwise votes in border regions
    sliver_width: float = 0.02  # fills narrower than this share of the longest side are dropped in border regions
    ball_radius: float = BALL_RADIUS_SHARE  # gap closing: trapped-ball radius, share of the longest side
    leak_radius: float = 0.0  # second, coarser ball inside border-touching regions (0 = off)
    fit_power: float = 4.0  # reference vote weight = retrieval score * stroke fit ** fit_power

    @classmethod
    def from_config(cls, cfg: ColorizeConfig) -> "RegionParams":
        return cls(min_region_share=cfg.region_min_share, overlay_weight=cfg.region_overlay_weight,
                   match_weight=cfg.region_match_weight, match_sigma=cfg.region_match_sigma,
                   border_smoothing=cfg.region_border_smoothing, sliver_width=cfg.region_sliver_width,
                   ball_radius=cfg.region_ball_radius, leak_radius=cfg.region_leak_radius,
                   fit_power=cfg.region_fit_power)


def _frame(box: tuple[int, int, int, int]) -> tuple[float, float, float]:
    """Center and scale of an ink box: positions are measured relative to these."""
    x0, y0, x1, y1 = box
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0, float(max(x1 - x0, y1 - y0, 1))


def region_descriptors(labels: np.ndarray, count: int, frame: tuple[float, float, float]) -> np.ndarray:
    """(count, 6): center x, center y (ink-box frame), sqrt(area), bbox width, bbox height
    (all / ink-box size) and fill ratio (area / bbox area). Row 0 (ink) is unused."""
    cx0, cy0, scale = frame
    flat = labels.ravel()
    h, w = labels.shape
    ys, xs = np.divmod(np.arange(flat.size, dtype=np.int64), w)
    area = np.bincount(flat, minlength=count).astype(np.float64)
    sx = np.bincount(flat, weights=xs, minlength=count)
    sy = np.bincount(flat, weights=ys, minlength=count)
    safe = np.maximum(area, 1)
    desc = np.zeros((count, 6), dtype=np.float64)
    desc[:, 0] = (sx / safe - cx0) / scale
    desc[:, 1] = (sy / safe - cy0) / scale
    desc[:, 2] = np.sqrt(area) / scale
    for i, sl in enumerate(ndimage.find_objects(labels, max_label=count - 1), start=1):
        if sl is None:
            continue
        bh, bw = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
        desc[i, 3] = bw / scale
        desc[i, 4] = bh / scale
        desc[i, 5] = area[i] / max(1, bw * bh)
    return desc


# Relative weights of the descriptor components in the match cost.
DESCRIPTOR_WEIGHTS = np.array([1.0, 1.0, 1.5, 0.5, 0.5, 0.3])


def match_cost(page_desc: np.ndarray, ref_desc: np.ndarray) -> np.ndarray:
    diff = np.abs(page_desc[:, None, :] - ref_desc[None, :, :]) * DESCRIPTOR_WEIGHTS
    return diff.sum(-1)


def _ink_points(ink: np.ndarray, limit: int) -> np.ndarray:
    """Up to `limit` ink pixel coordinates (x, y), evenly subsampled (deterministic)."""
    ys, xs = np.nonzero(ink)
    step = max(1, len(xs) // limit)
    return np.stack([xs[::step], ys[::step]], axis=1).astype(np.float32)


MIN_PIXEL_VOTE = 0.12  # border regions: share of the (normalized) reference weight a pixel color needs

# Alignment search: scales and shifts (share of the ink-box size) tried around the box fit.
ALIGN_SCALES = (0.85, 0.92, 1.0, 1.08, 1.17)
ALIGN_SHIFTS = (-0.12, -0.06, 0.0, 0.06, 0.12)
ALIGN_POINTS = 600
ALIGN_CLIP = 0.05  # chamfer distances are clipped at this share of the box size (robust to extra strokes)


def align_frames(page_ink: np.ndarray, ref_ink: np.ndarray) -> tuple[tuple, tuple, float]:
    """Frames (center x, center y, size) of page and reference such that mapping one onto
    the other overlays their strokes best: start from the ink boxes, then try a small grid
    of scales and shifts, scoring the symmetric clipped chamfer distance of the strokes.
    Also returns the fit in [0, 1]: 1 = every stroke lies on a stroke of the other drawing,
    0 = none is within the clip distance (a different drawing)."""
    page_frame = _frame(_mask_box(page_ink))
    ref_frame = _frame(_mask_box(ref_ink))
    if not page_ink.any() or not ref_ink.any():
        return page_frame, ref_frame, 0.0
    pcx, pcy, ps = page_frame
    rcx, rcy, rs = ref_frame
    clip = ALIGN_CLIP * ps
    page_dt = np.minimum(cv2.distanceTransform((~page_ink).astype(np.uint8), cv2.DIST_L2, 3), clip)
    ref_dt = np.minimum(cv2.distanceTransform((~ref_ink).astype(np.uint8), cv2.DIST_L2, 3), clip * rs / ps)
    page_pts = _ink_points(page_ink, ALIGN_POINTS)
    ref_pts = _ink_points(ref_ink, ALIGN_POINTS)
    best, best_cost = ref_frame, np.inf
    for scale in ALIGN_SCALES:
        size = rs * scale
        for dy in ALIGN_SHIFTS:
            for dx in ALIGN_SHIFTS:
                frame = (rcx + dx * size, rcy + dy * size, size)
                cost = _chamfer(page_pts, ref_dt, page_frame, frame, clip) \
                    + _chamfer(ref_pts, page_dt, frame, page_frame, clip * ps / size) * size / ps
                if cost < best_cost - 1e-9:
                    best, best_cost = frame, cost
    return page_frame, best, float(max(0.0, 1.0 - best_cost / (2 * clip)))


def _chamfer(points: np.ndarray, dt: np.ndarray, src: tuple, dst: tuple, outside: float) -> float:
    """Mean distance-transform value of `points` (in the src frame) mapped into dst's frame."""
    s = dst[2] / src[2]
    x = np.rint((points[:, 0] - src[0]) * s + dst[0]).astype(np.int64)
    y = np.rint((points[:, 1] - src[1]) * s + dst[1]).astype(np.int64)
    h, w = dt.shape
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    values = np.full(len(points), outside, dtype=np.float32)
    values[inside] = dt[y[inside], x[inside]]
    return float(values.mean())


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        h, w = mask.shape
        return 0, 0, w, h
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _align_reference(ref_index: np.ndarray, ref_paper: np.ndarray, ref_frame, page_frame, shape):
    """Warp a reference's palette-index map onto the page (frames from align_frames).
    Returns (index map, valid mask)."""
    h, w = shape
    pcx, pcy, ps = page_frame
    rcx, rcy, rs = ref_frame
    s = rs / ps
    xs = ((np.arange(w, dtype=np.float32) - pcx) * s + rcx)
    ys = ((np.arange(h, dtype=np.float32) - pcy) * s + rcy)
    map_x, map_y = np.meshgrid(xs, ys)
    idx = cv2.remap(ref_index.astype(np.float32), map_x, map_y, cv2.INTER_NEAREST,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=-1).astype(np.int32)
    paper = cv2.remap(ref_paper.astype(np.uint8), map_x, map_y, cv2.INTER_NEAREST,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0
    return idx, paper & (idx >= 0)


class RegionColorizer:
    name = "region"

    def __init__(self, params: RegionParams | None = None, background=(255, 255, 255)):
        self.params = params or RegionParams()
        self.background = np.array(background, dtype=np.uint8)

    @classmethod
    def from_config(cls, config: Config) -> "RegionColorizer":
        return cls(RegionParams.from_config(config.colorize))

    # -- main entry ---------------------------------------------------------------------
    def colorize(self, request: ColorizeRequest) -> np.ndarray:
        lines = request.lines
        h, w = lines.shape
        page = request.page if request.page.shape[:2] == (h, w) else cv2.cvtColor(lines, cv2.COLOR_GRAY2RGB)
        seg = self.segment(lines)
        refs = [r for r in request.references if r.color.size]
        if refs:
            palette, fill_index, decided = self.fill_regions(seg, refs, request.palette, request.palette_tolerance)
        else:
            palette = Palette(lab=np.array([[255, 128, 128]], np.float32), rgb=self.background[None].copy())
            fill_index = np.zeros((h, w), np.int32)
            decided = seg.labels > 0
        return self._composite(page, seg, palette, fill_index, decided, request.kind)

    def segment(self, lines: np.ndarray) -> Segmentation:
        """The page's regions (gap-tolerant; optionally a second pass on leaky regions)."""
        longest = max(lines.shape)
        seg = segment_line_art(lines, radius=max(MIN_BALL_RADIUS, self.params.ball_radius * longest))
        if self.params.leak_radius > 0:
            seg = split_leaky_regions(seg, self.params.leak_radius * longest)
        return seg

    # -- voting ---------------------------------------------------------------------------
    def fill_regions(self, seg: Segmentation, refs: list[Reference], memory: np.ndarray | None = None,
                     tolerance: float = 0.0) -> tuple[Palette, np.ndarray, np.ndarray]:
        """Palette of the pool, palette index per page pixel, and the mask of pixels whose
        color was decided by votes (ink and tiny regions are not: they take the nearest
        decided color). Voting runs at ANALYSIS_SIZE; only the labels are full resolution.
        `memory`: the identities' remembered colors (palette memory); every reference color
        within `tolerance` of one is read as it, so references colored by different hands
        vote for one color instead of splitting their votes over near-identical shades."""
        p = self.params
        h, w = seg.labels.shape
        scale = min(1.0, ANALYSIS_SIZE / max(h, w))
        aw, ah = max(1, round(w * scale)), max(1, round(h * scale))
        labels = seg.labels if scale == 1.0 else cv2.resize(seg.labels, (aw, ah), interpolation=cv2.INTER_NEAREST)
        colors = [snap_image(_analysis_size(r.color, ANALYSIS_SIZE), memory, tolerance) for r in refs]
        ref_lines = [_analysis_size(r.lines if r.lines.shape == r.color.shape[:2]
                                    else np.full(r.color.shape[:2], 255, np.uint8), ANALYSIS_SIZE) for r in refs]
        papers = [~ink_mask(l) for l in ref_lines]
        palette = build_palette(colors, papers)
        n_colors = len(palette.rgb)
        white = int(np.argmin(((palette.lab - np.array([255, 128, 128], np.float32)) ** 2).sum(1)))
        page_ink = labels == 0
        areas_full = seg.areas()
        big = areas_full >= max(4, p.min_region_share * h * w)
        big[0] = False
        inner = np.flatnonzero(~seg.touches_border & big)
        flat = labels.ravel()
        areas = np.maximum(np.bincount(flat, minlength=seg.count), 1).astype(np.float64)
        votes = np.zeros((seg.count, n_colors), dtype=np.float64)
        border_present = bool(seg.touches_border.any())
        pixel_votes = np.zeros((n_colors, ah, aw), dtype=np.float32) if border_present else None
        alignments = [align_frames(page_ink, ~paper) for paper in papers]
        # Retrieval score times stroke fit: a reference drawn like the page (same character,
        # near pose) leads; one that only looked similar to the descriptor (another
        # character with a similar face) barely votes.
        weights = np.array([max(r.score, 1e-3) * max(fit, 1e-3) ** p.fit_power
                            for r, (_, _, fit) in zip(refs, alignments)])
        weights = weights / weights.sum()
        page_desc_cache: dict[tuple, np.ndarray] = {}
        for color, lines_r, paper, weight, (page_frame, ref_frame, _) in zip(colors, ref_lines, papers, weights,
                                                                             alignments):
            index = quantize(color, palette)
            # Overlay vote: share of each region's pixels under each aligned palette color.
            idx, valid = _align_reference(index, paper, ref_frame, page_frame, (ah, aw))
            v = valid.ravel()
            key = flat[v].astype(np.int64) * n_colors + idx.ravel()[v]
            counts = np.bincount(key, minlength=seg.count * n_colors).reshape(seg.count, n_colors)
            votes += p.overlay_weight * weight * counts / areas[:, None]
            if pixel_votes is not None:
                for c in np.unique(idx[valid]):
                    pixel_votes[c] += weight * ((idx == c) & valid)
            # Matching vote: one-to-one assignment of inner page regions to reference regions.
            if p.match_weight > 0 and len(inner):
                ref_seg, ref_colors = segment_reference(color, lines_r, palette)
                ref_areas = ref_seg.areas()
                ref_inner = np.flatnonzero(~ref_seg.touches_border
                                           & (ref_areas >= max(4, p.min_region_share * paper.size)))
                ref_inner = ref_inner[ref_inner > 0]
                if len(ref_inner):
                    if page_frame not in page_desc_cache:
                        page_desc_cache[page_frame] = region_descriptors(labels, seg.count, page_frame)
                    page_desc = page_desc_cache[page_frame]
                    ref_desc = region_descriptors(ref_seg.labels, ref_seg.count, ref_frame)
                    cost = match_cost(page_desc[inner], ref_desc[ref_inner])
                    rows, cols = linear_sum_assignment(cost)
                    # Regions left unassigned (more page regions than reference ones) take
                    # their cheapest reference region instead.
                    chosen = cost.argmin(1)
                    chosen[rows] = cols
                    c = cost[np.arange(len(inner)), chosen]
                    votes[inner, ref_colors[ref_inner[chosen]]] += p.match_weight * weight * np.exp(-c / p.match_sigma)
        region_color = votes.argmax(1).astype(np.int32)
        has_vote = votes.max(1) > 0
        decided_region = big & has_vote
        fill_index = region_color[seg.labels]
        decided = decided_region[seg.labels]
        if pixel_votes is not None:
            k = max(1, int(p.border_smoothing * max(ah, aw))) | 1
            smoothed = np.stack([cv2.blur(pv, (k, k)) for pv in pixel_votes])
            pixel_color = smoothed.argmax(0).astype(np.int32)
            # Where only weakly weighted references reach (outside the aligned frame of the
            # leading ones), their colors would win unopposed: such pixels stay background.
            pixel_color[smoothed.max(0) <= MIN_PIXEL_VOTE] = white
            # Misalignment leaves thin slivers of a reference's fills along the page's
            # outline; fills that really leak through open strokes are wide. An opening
            # of the non-background mask removes the slivers.
            k_open = max(3, int(p.sliver_width * max(ah, aw))) | 1
            colored = (pixel_color != white).astype(np.uint8)
            kept = cv2.morphologyEx(colored, cv2.MORPH_OPEN,
                                    cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_open, k_open)))
            pixel_color[(colored > 0) & (kept == 0)] = white
            if scale != 1.0:
                pixel_color = cv2.resize(pixel_color, (w, h), interpolation=cv2.INTER_NEAREST)
            border = seg.touches_border[seg.labels]
            fill_index[border] = pixel_color[border]
            decided |= border
        return palette, fill_index, decided

    # -- output -----------------------------------------------------------------------------
    def _composite(self, page: np.ndarray, seg: Segmentation, palette: Palette, fill_index: np.ndarray,
                   decided: np.ndarray, kind: str) -> np.ndarray:
        ink = seg.labels == 0
        # Ink, tiny regions and regions nobody voted for take the nearest decided color, so
        # a "multiply" composite keeps anti-aliased stroke edges (ink * color) and colored
        # trace lines can be recolored.
        if decided.any() and not decided.all():
            fill_index = _nearest_fill(fill_index, decided)
        fill = palette.rgb[fill_index]
        if kind == "gray":
            return keep_page_luminance(fill, page)
        shade = cv2.cvtColor(page, cv2.COLOR_RGB2GRAY)
        # Colored strokes (BasicPBC red/blue shadow/highlight borders) are region borders,
        # not ink to keep: they take the region's color instead of darkening it.
        ys, xs = np.nonzero(ink)
        if len(ys):
            hsv = cv2.cvtColor(page[ys, xs][None], cv2.COLOR_RGB2HSV)[0]
            colored = (hsv[:, 1] > 80) & (hsv[:, 2] > 80)
            shade[ys[colored], xs[colored]] = 255
        # "Multiply" layer: paper (255) shows the fill, ink (0) stays ink, edges blend.
        return cv2.multiply(fill, cv2.cvtColor(shade, cv2.COLOR_GRAY2RGB), scale=1.0 / 255.0)


def _analysis_size(img: np.ndarray, longest: int) -> np.ndarray:
    """Nearest-neighbor downscale: flat colors stay exact palette colors."""
    return resize_longest(img, longest, cv2.INTER_NEAREST)


def _nearest_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Every unknown pixel takes the value of the nearest known pixel (Euclidean)."""
    _, nearest = cv2.distanceTransformWithLabels((~known).astype(np.uint8), cv2.DIST_L2, 3,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(int(nearest.max()) + 1, dtype=values.dtype)
    lut[nearest[known]] = values[known]
    return lut[nearest]


def keep_page_luminance(color: np.ndarray, page: np.ndarray) -> np.ndarray:
    """Manga pages carry shading in their gray levels: take chroma from the fill and
    lightness from the page. Where a chroma is out of gamut at the page's lightness (vivid
    color on white paper), it is reduced until the lightness survives the trip to RGB."""
    lab = cv2.cvtColor(color, cv2.COLOR_RGB2LAB).astype(np.float32)
    target_l = cv2.cvtColor(page, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    lab[..., 0] = target_l
    chroma = lab[..., 1:] - 128.0
    for _ in range(6):
        lab[..., 1:] = chroma + 128.0
        rgb = cv2.cvtColor(np.clip(lab + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
        off = np.abs(cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32) - target_l) > 2
        if not off.any():
            break
        chroma[off] *= 0.6
    return rgb
