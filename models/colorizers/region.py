"""Weight-free default colorizer: segment the page into regions bounded by its own strokes
and fill each with the color its counterparts wear in ALL retrieved references.

1. **Style** (request.kind, models/page_styles.py): color pages pass through unchanged
   (`colorize.color_pages: keep`); gray pages are white-balanced; tone pages descreened
   (models/descreen.py), so a screened area is one flat gray.
2. **Regions**: the line art segmented gap-tolerantly (models/segmentation.py); two
   strokes that stop side by side (an arm's two lines ending in the air) are capped
   (models/stroke_ends.py), so the part they hold is a region of its own; on gray and
   tone pages regions are also split where the gray level jumps without a stroke (hair
   against skin). Speech balloons with lettering (models/lettering.py) keep paper.
3. **Correspondence** (models/correspondence.py): every reference is registered onto the
   page (models/registration.py: partial multi-scale alignment + dense flow + local stroke
   fit); regions vote by where their pixels land in each reference (inclusion), by a
   one-to-one descriptor match, and on gray/tone pages by gray level. Closed regions take
   the winning color as a whole; unsure ones fall back to the identity's remembered colors
   (request.remembered_colors) and are reported in request.diagnostics["low_confidence"].
4. **Paper stays paper** (models/open_fills.py): in regions that touch the page border
   (the background and fills leaking through open outlines) a reference color is kept
   only as a fill the page's strokes hold (or the lines between their last ends, where a
   part drawn open stops); everything else is paper. Capped regions are filled so too,
   unless no one fill covers most of one (a raised arm the references show lowered):
   then it takes the color of the reference region its shape matches. No reference pixel
   crosses a page stroke. The paper inside a panel frame (models/panel_frames.py: a
   rectangle of ink around the page that the references do not have) counts as
   border-touching too, and the frame neither registers references nor holds fills.
5. **Composite** (models/colorizers/composite.py): ink and tiny regions take the nearest
   decided color; line pages multiply the fill by the page's gray (crisp strokes; colored
   trace lines take their region's color); gray pages take chroma from the fill and
   lightness from the (white-balanced) page; tone pages take each region's lightness from
   its fill plus the descreened page's smooth shading inside it (a screen's coverage is not
   the drawing's gray: see tone_lightness), or the original screen with
   `colorize.tone_output: screen`. On both, a region left as bare paper takes a light
   fill's own lightness (unscreened skin is not white: with_bare_paper_filled).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from chromaflow.conf import ColorizeConfig, Config
from chromaflow.models.content_cache import ContentCache
from chromaflow.models.correspondence import (
    ReferenceView, decide, descriptor_votes, inclusion_votes, lightness_prior, region_gray,
    region_shapes)
from chromaflow.models.descreen import PageTone, white_balanced
from chromaflow.models.lettering import find_balloons
from chromaflow.models.open_fills import open_fills
from chromaflow.models.page_styles import COLOR, GRAY, TONE, descreen_page, style_name
from chromaflow.models.panel_frames import frame_strokes, regions_on_frame
from chromaflow.models.registration import Strokes, register
from chromaflow.models.stroke_ends import closing_joins, open_edges
from chromaflow.models.segmentation import (
    ANALYSIS_SIZE, MIN_BALL_RADIUS, ColorTable, Segmentation, build_color_table, ink_mask, quantize, rgb_to_lab,
    nearest_fill, segment_line_art, segment_reference, split_at_closures, snap_image, split_by_gray, split_leaky_regions)
from chromaflow.storage.images import resize_longest

from .base import ColorizeRequest, Reference
from .composite import keep_page_luminance, multiply_strokes, tone_lightness, with_bare_paper_filled

log = logging.getLogger(__name__)

NO_STROKES_SHARE = 0.0005  # a page with less ink than this share has no strokes
ALL_INK_SHARE = 0.9  # a page with more ink than this share is black
ALL_SCREEN_SHARE = 0.8  # a tone page screened over this share of it is all screentone
MAX_REPORTED_REGIONS = 40  # low-confidence regions listed per page (largest first)
SURE = 0.6  # regions this sure (vote share) teach the gray -> lightness map
JOINED_COVER_SHARE = 0.5  # a joined region no open fill covers this share of takes its shape match
POOLS_KEPT = 4  # prepared reference pools kept per colorizer (a few MB each at analysis size)


class RegionParams:
    """The `region_*` keys of a ColorizeConfig (its defaults are the only defaults),
    optionally overridden by name without the prefix: RegionParams(match_weight=1.0)."""

    def __init__(self, config: ColorizeConfig | None = None, **overrides):
        unknown = [k for k in overrides if f"region_{k}" not in ColorizeConfig.model_fields]
        if unknown:
            raise TypeError(f"unknown region parameter(s): {', '.join(unknown)}")
        cfg = (config or ColorizeConfig()).model_copy(update={f"region_{k}": v for k, v in overrides.items()})
        self.min_region_share = cfg.region_min_share  # smaller regions inherit from neighbors
        self.overlay_weight = cfg.region_overlay_weight  # inclusion vote weight
        self.match_weight = cfg.region_match_weight  # descriptor-match vote weight
        self.match_sigma = cfg.region_match_sigma  # descriptor cost at which a match's vote is 1/e
        self.border_smoothing = cfg.region_border_smoothing  # box blur of pixel votes in open regions
        self.sliver_width = cfg.region_sliver_width  # open-region fills narrower than this are dropped
        self.ball_radius = cfg.region_ball_radius  # gap closing, share of the longest side
        self.leak_radius = cfg.region_leak_radius  # second, coarser ball in border regions (0 = off)
        self.fit_power = cfg.region_fit_power  # reference weight = score * global fit ** this
        self.min_confidence = cfg.region_min_confidence  # below: palette-memory fallback, reported
        self.color_pages = cfg.color_pages  # keep | recolor
        self.tone_output = cfg.tone_output  # descreened | screen


class RegionColorizer:
    name = "region"

    def __init__(self, params: RegionParams | None = None, background=(255, 255, 255)):
        self.params = params or RegionParams()
        self.background = np.array(background, dtype=np.uint8)
        self._pools = ContentCache(POOLS_KEPT)  # prepared reference pools (_pool_tables)

    @classmethod
    def from_config(cls, config: Config) -> "RegionColorizer":
        return cls(RegionParams(config.colorize))

    # -- main entry ---------------------------------------------------------------------
    def colorize(self, request: ColorizeRequest) -> np.ndarray:
        lines = request.lines
        h, w = lines.shape
        page = request.page if request.page.shape[:2] == (h, w) else cv2.cvtColor(lines, cv2.COLOR_GRAY2RGB)
        style = style_name(request.kind)
        diag = request.diagnostics
        diag["style"] = style
        if style == COLOR and self.params.color_pages == "keep":
            diag["color_page_kept"] = True
            return page.copy()
        balanced = white_balanced(page)
        shade = cv2.cvtColor(balanced, cv2.COLOR_RGB2GRAY)
        if style == TONE:
            tone = request.tone
            if tone is None or tone.gray.shape != (h, w):
                tone = PageTone.of(descreen_page(shade))
            shade = tone.gray
            diag["screens"] = tone.screens
            if tone.texture_share > ALL_SCREEN_SHARE:
                self._warn(diag, f"page {request.key} is almost entirely screentone: colored as one gray area")
        self._check_strokes(lines, request.key, diag)
        # Stroke ends (models/stroke_ends.py) need clean strokes: a tone page's screens
        # leave spurs along its strokes that read as ends.
        ends = style != TONE
        seg = self.segment(lines, shade if style in (GRAY, TONE) else None, close_strokes=ends)
        frame = panel_frame(seg, request.references)
        if frame.any():  # the paper inside a panel frame is the page's background
            seg.touches_border = seg.touches_border | regions_on_frame(seg.labels, seg.count, frame)
            diag["panel_frame"] = True
        balloons = find_balloons(seg, lines, shade)
        diag["balloons"] = balloons.boxes
        diag["regions"] = int(seg.count - 1)
        refs = [r for r in request.references if r.color.size]
        if refs:
            table, fill_index, decided = self.fill_regions(seg, refs, request.remembered_colors,
                                                           request.palette_tolerance,
                                                           shade if style in (GRAY, TONE) else None,
                                                           balloons.regions, diag, request.key, frame,
                                                           open_edges_hold=ends)
        else:
            table = ColorTable(lab=rgb_to_lab(self.background[None]), rgb=self.background[None].copy())
            fill_index = np.zeros((h, w), np.int32)
            decided = seg.labels > 0
        palette = np.vstack([table.rgb, self.background[None]])  # the last entry: balloons' paper
        fill_index = self._fill_index(fill_index, decided)
        fill_index[balloons.mask] = len(palette) - 1
        return self._composite(page, balanced, shade, seg, palette[fill_index], fill_index, style)

    def segment(self, lines: np.ndarray, gray: np.ndarray | None = None, close_strokes: bool = True
                ) -> Segmentation:
        """The page's regions (gap-tolerant; optionally a second pass on leaky regions;
        with `close_strokes`, open parts capped between stroke ends; split where the gray
        level jumps when the page's gray is given)."""
        longest = max(lines.shape)
        seg = segment_line_art(lines, radius=max(MIN_BALL_RADIUS, self.params.ball_radius * longest))
        if self.params.leak_radius > 0:
            seg = split_leaky_regions(seg, self.params.leak_radius * longest)
        if close_strokes:
            seg = split_at_closures(seg, closing_joins(ink_mask(lines)))
        if gray is not None:
            seg = split_by_gray(seg, gray)
        return seg

    @staticmethod
    def _warn(diag: dict, message: str) -> None:
        log.warning(message)
        diag.setdefault("warnings", []).append(message)

    def _check_strokes(self, lines: np.ndarray, key: str, diag: dict) -> None:
        ink = float(ink_mask(lines).mean()) if lines.size else 0.0
        if ink < NO_STROKES_SHARE:
            self._warn(diag, f"page {key} has no strokes: nothing to fill, paper kept")
        elif ink > ALL_INK_SHARE:
            self._warn(diag, f"page {key} is almost entirely ink (a black page): kept as drawn")

    # -- voting ---------------------------------------------------------------------------
    def prepare_references(self, refs: list[Reference], labels: np.ndarray, memory: np.ndarray | None,
                           tolerance: float, page_ink: np.ndarray | None = None
                           ) -> tuple[ColorTable, list[ReferenceView]]:
        """The pool's color table and every reference registered onto the page (labels at
        analysis size; `page_ink`: the strokes to register on, default all ink), weighted
        by retrieval score x global stroke fit ** fit_power."""
        table, prepared = self._pool_tables(refs, memory, tolerance)
        page = Strokes(labels == 0 if page_ink is None else page_ink)
        views = []
        for ref, (index, regions, region_colors, shapes, strokes) in zip(refs, prepared):
            registration = register(page, strokes)
            weight = max(ref.score, 1e-3) * max(registration.global_fit, 1e-3) ** self.params.fit_power
            views.append(ReferenceView(index, regions, region_colors, shapes, weight, registration))
        total = sum(v.weight for v in views)
        for v in views:
            v.weight /= total
        return table, views

    def _pool_tables(self, refs: list[Reference], memory: np.ndarray | None, tolerance: float) -> tuple:
        """What does not depend on the page: the pool's color table and per reference its
        color index (-1: ink), flat-color regions with their shapes, and strokes. A
        chapter's pages draw on the same few references, so the last few pools are kept, by
        content."""
        parts = [memory, np.float64(tolerance), self.background] + [a for r in refs for a in (r.color, r.lines)]
        return self._pools.get(parts, lambda: self._prepare_pool(refs, memory, tolerance))

    def _prepare_pool(self, refs: list[Reference], memory: np.ndarray | None, tolerance: float) -> tuple:
        colors = [snap_image(_analysis_size(r.color), memory, tolerance) for r in refs]
        ref_lines = [_analysis_size(r.lines if r.lines.shape == r.color.shape[:2]
                                    else np.full(r.color.shape[:2], 255, np.uint8)) for r in refs]
        papers = [~ink_mask(lines) for lines in ref_lines]
        table = with_paper(build_color_table(colors, papers), self.background)
        prepared = []
        for color, lines, paper in zip(colors, ref_lines, papers):
            index = quantize(color, table)
            regions, region_colors = segment_reference(color, lines, table, index)
            index[~paper] = -1
            prepared.append((index, regions, region_colors, region_shapes(regions.labels, regions.count),
                             Strokes(~paper)))
        return table, prepared

    def fill_regions(self, seg: Segmentation, refs: list[Reference], memory: np.ndarray | None = None,
                     tolerance: float = 0.0, gray: np.ndarray | None = None, forced_paper: np.ndarray | None = None,
                     diag: dict | None = None, key: str = "", frame: np.ndarray | None = None,
                     open_edges_hold: bool = True) -> tuple[ColorTable, np.ndarray, np.ndarray]:
        """(color table, index per page pixel, mask of pixels decided by votes: ink and
        tiny regions are not, they take the nearest decided color). Voting runs at
        ANALYSIS_SIZE; labels and the result are full resolution. `memory`: the identities'
        remembered colors: reference colors within `tolerance` of one are read as it, and
        unsure regions choose among them. `gray`: the page's gray (gray/tone pages). `frame`:
        the page's panel-frame ink (models/panel_frames.py), which holds no fill and
        registers nothing. `open_edges_hold`: the lines between stroke ends hold open fills
        (stroke_ends.open_edges)."""
        p = self.params
        diag = {} if diag is None else diag
        h, w = seg.labels.shape
        labels = _analysis_size(seg.labels)
        strokes = labels == 0
        frame_ink = None
        if frame is not None and frame.any():
            frame_ink = _analysis_size(frame.astype(np.uint8)).astype(bool)
            strokes &= ~frame_ink
        table, views = self.prepare_references(refs, labels, memory, tolerance, strokes)
        for i in table.unflat:
            self._warn(diag, f"page {key}: reference {refs[i].name} has no flat colors (painting-like); "
                             f"its colors were quantized")
        paper = table.nearest(self.background)
        n_colors = len(table.rgb)
        big = seg.areas() >= max(4, p.min_region_share * h * w)
        big[0] = False
        joined = self._joined_regions(seg)
        # Regions the joins close are matched apart from the closed ones: one-to-one among
        # themselves, so adding them never changes a closed region's match.
        inner = np.flatnonzero(~seg.touches_border & big & ~joined)
        capped = np.flatnonzero(joined & big)
        border = bool(seg.touches_border.any())
        votes, pixel_votes, whole = inclusion_votes(labels, seg.count, n_colors, views, pixel_votes=border)
        votes *= p.overlay_weight
        capped_votes = np.zeros_like(votes)
        if p.match_weight > 0:
            page_shapes = region_shapes(labels, seg.count)
            votes += p.match_weight * descriptor_votes(page_shapes, n_colors, inner, views, p.min_region_share,
                                                       p.match_sigma)
            capped_votes = descriptor_votes(page_shapes, n_colors, capped, views, p.min_region_share,
                                            p.match_sigma)
            votes += p.match_weight * capped_votes
        if gray is not None:
            votes = self._weigh_by_gray(votes, seg, labels, gray, table, inner)
        if forced_paper is not None:
            votes[forced_paper] = 0.0
            votes[forced_paper, paper] = 1.0
        color, confidence, unsure = decide(votes, memory_entries(table, memory, paper), p.min_confidence)
        fill_index = color[seg.labels]
        decided = (big & (votes.sum(1) > 0))[seg.labels]
        voted = np.zeros(seg.count, bool)  # capped regions that take their region vote
        if border:
            # Regions only joins between stroke ends close (segmentation.split_at_closures)
            # are filled as open ones too (pixel by pixel: a face whose cheek stops short
            # ends where the references end it), unless no one open fill covers most of
            # one: an arm raised on the page, lowered in every reference, is paper or bits
            # of shirt there, and takes the color of the reference region its shape and
            # place match.
            open_regions = seg.touches_border | joined
            region_mask = open_regions[labels]
            filled = open_fills(region_mask, pixel_votes, paper, strokes, p.border_smoothing, p.sliver_width,
                                whole, frame_ink, open_edges(strokes) if open_edges_hold else None)
            if filled.shape != (h, w):
                filled = cv2.resize(filled, (w, h), interpolation=cv2.INTER_NEAREST)
            voted = joined & ~_covered_by_one_open_fill(seg, filled, paper, n_colors)
            by_shape = voted & (capped_votes.sum(1) > 0)
            if by_shape.any():  # the overlay there is another part's (or the paper beside it)
                color[by_shape] = capped_votes[by_shape].argmax(1)
                fill_index = color[seg.labels]
            on_open = (open_regions & ~voted)[seg.labels]
            fill_index[on_open] = filled[on_open]
            decided |= on_open
        report = np.zeros(seg.count, bool)
        report[inner] = unsure[inner]
        report[voted] = unsure[voted]
        diag["low_confidence"] = low_confidence_regions(seg, report, confidence, table.rgb[color])
        return table, fill_index, decided

    @staticmethod
    def _joined_regions(seg: Segmentation) -> np.ndarray:
        """Per label: the region is closed only by joins between stroke ends."""
        joined = np.zeros(seg.count, bool)
        if seg.joined is not None:
            joined[np.unique(seg.labels[seg.joined])] = True
        joined[0] = False
        return joined

    @staticmethod
    def _weigh_by_gray(votes: np.ndarray, seg: Segmentation, labels: np.ndarray, gray: np.ndarray,
                       table: ColorTable, inner: np.ndarray) -> np.ndarray:
        """Votes times each color's fit to the region's gray level (when the page's grays
        follow its colors' lightness, see correspondence.lightness_prior)."""
        grays = region_gray(labels, seg.count, _analysis_size(gray))
        total = votes.sum(1)
        share = np.where(total > 0, votes.max(1) / np.maximum(total, 1e-12), 0.0)
        sure = np.zeros(seg.count, bool)
        sure[inner] = share[inner] >= SURE
        prior = lightness_prior(votes, grays, table, sure)
        return votes if prior is None else votes * prior

    # -- output -----------------------------------------------------------------------------
    @staticmethod
    def _fill_index(fill_index: np.ndarray, decided: np.ndarray) -> np.ndarray:
        """Color index per pixel: ink, tiny regions and regions nobody voted for take the
        nearest decided color, so the composite keeps anti-aliased stroke edges and recolors
        trace lines."""
        if decided.any() and not decided.all():
            return nearest_fill(fill_index, decided)
        return fill_index.copy()

    def _composite(self, page: np.ndarray, balanced: np.ndarray, shade: np.ndarray, seg: Segmentation,
                   fill: np.ndarray, fill_index: np.ndarray, style: str) -> np.ndarray:
        if style == COLOR:  # a recolored color page keeps its lightness
            return keep_page_luminance(fill, balanced, index=fill_index)
        if style == GRAY or (style == TONE and self.params.tone_output == "screen"):
            page_l = cv2.cvtColor(balanced, cv2.COLOR_RGB2LAB)[..., 0]
            fill_l = cv2.cvtColor(fill, cv2.COLOR_RGB2LAB)[..., 0]
            return keep_page_luminance(fill, None, with_bare_paper_filled(page_l, fill_l, seg.labels),
                                       index=fill_index)
        if style == TONE:
            return keep_page_luminance(fill, None, tone_lightness(fill, shade, seg.labels), index=fill_index)
        return multiply_strokes(fill, balanced, seg.labels == 0)


def _covered_by_one_open_fill(seg: Segmentation, filled: np.ndarray, paper: int, n_colors: int) -> np.ndarray:
    """Per region: one color of the open fills (`filled`, per pixel) covers at least
    JOINED_COVER_SHARE of it."""
    painted = filled != paper
    pairs = np.bincount((seg.labels[painted].astype(np.int64) * n_colors + filled[painted]),
                        minlength=seg.count * n_colors).reshape(seg.count, n_colors)
    return pairs.max(1) >= JOINED_COVER_SHARE * seg.areas()


def panel_frame(seg: Segmentation, refs: list[Reference]) -> np.ndarray:
    """The page's panel-frame ink, unless a reference is framed too (then the frame is part
    of what the references show, e.g. an animation keyframe of the same shot)."""
    frame = frame_strokes(seg.labels == 0)
    if frame.any() and any(r.lines.size and frame_strokes(ink_mask(_analysis_size(r.lines))).any() for r in refs):
        return np.zeros_like(frame)
    return frame


def with_paper(table: ColorTable, paper) -> ColorTable:
    """The table with the paper color in it (a pool colored edge to edge has none)."""
    lab = rgb_to_lab(np.array([paper], np.uint8))[0]
    if len(table.rgb) and np.linalg.norm(table.lab - lab, axis=1).min() <= 4.0:
        return table
    return ColorTable(np.vstack([table.lab, lab[None]]), np.vstack([table.rgb, np.array([paper], np.uint8)]),
                      table.unflat)


def memory_entries(table: ColorTable, memory: np.ndarray | None, paper: int) -> np.ndarray | None:
    """Color-table indices of the remembered colors (references were snapped to them, so
    they are exact entries) plus paper; None without a memory."""
    if memory is None or not len(memory):
        return None
    d = np.linalg.norm(table.lab[:, None, :] - rgb_to_lab(memory)[None], axis=2)
    entries = set(np.flatnonzero(d.min(1) <= 1.0).tolist()) | {paper}
    return np.array(sorted(entries), np.int64)


def low_confidence_regions(seg: Segmentation, unsure: np.ndarray, confidence: np.ndarray,
                           colors: np.ndarray) -> list[dict]:
    """The unsure regions as JSON: box in page pixels, confidence, chosen color."""
    from scipy import ndimage

    ids = np.flatnonzero(unsure)
    if not len(ids):
        return []
    areas = seg.areas()
    ids = ids[np.argsort(-areas[ids], kind="stable")][:MAX_REPORTED_REGIONS]
    slices = ndimage.find_objects(seg.labels, max_label=seg.count - 1)
    out = []
    for i in ids:
        sl = slices[i - 1]
        if sl is None:
            continue
        out.append({"box": [int(sl[1].start), int(sl[0].start), int(sl[1].stop), int(sl[0].stop)],
                    "confidence": round(float(confidence[i]), 3), "color": [int(c) for c in colors[i]]})
    return out


def _analysis_size(img: np.ndarray) -> np.ndarray:
    """Nearest-neighbor downscale to ANALYSIS_SIZE: flat colors and labels stay exact."""
    return resize_longest(img, ANALYSIS_SIZE, cv2.INTER_NEAREST)
