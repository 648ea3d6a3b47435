"""Classical line extraction: what the page's ink looks like, without weights.

Four styles of page arrive (models/page_styles.py): clean line art (black strokes on
white), gray manga pages (shading), screentoned manga pages (halftone screens, descreened
first so that a screened area is one flat gray, not thousands of dots) and colored
pages/frames. All come out as one uint8 image, 0 = ink and 255 = paper, so retrieval and
colorization see the same domain for pages and references. On gray and tone pages XDoG
also traces sharp steps of the gray level (hair against skin): borders without a stroke.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from chromaflow.conf import LinesConfig
from chromaflow.storage.images import resize_longest

from .descreen import PageTone
from .page_styles import COLOR, GRAY, LINE, LINE_INK_LEVEL, TONE, analyse_page, classify_page  # noqa: F401 (re-exported)

DARK_INK_LEVEL = 40  # gray level below which a pixel of a gray/tone/color page is ink
# A dark area whose half-width exceeds this share of the longest side is a fill, not a stroke.
SOLID_FILL_HALF_WIDTH = 0.025
STROKE_HALF_WIDTH = 0.012  # rim kept as outline of such a fill
FILL_STROKE_RATIO = 2.5  # ... and wider than this many of the page's own median stroke half-widths


@dataclass
class LineArt:
    lines: np.ndarray  # uint8 H x W, 0 = ink, 255 = paper
    kind: str  # the page style: line, gray, tone or color (models/page_styles.py)
    tone: PageTone | None = None  # tone pages: the descreened gray (at the page's size) and screens


def xdog(gray: np.ndarray, cfg: LinesConfig) -> np.ndarray:
    """eXtended Difference of Gaussians (Winnemöller 2012): soft, stroke-like edges.
    Returns float32 in [0, 1], 1 = paper."""
    g = gray.astype(np.float32) / 255.0
    g1 = cv2.GaussianBlur(g, (0, 0), cfg.xdog_sigma)
    g2 = cv2.GaussianBlur(g, (0, 0), cfg.xdog_sigma * cfg.xdog_k)
    dog = g1 - cfg.xdog_tau * g2
    out = np.where(dog >= cfg.xdog_epsilon, 1.0, 1.0 + np.tanh(cfg.xdog_phi * (dog - cfg.xdog_epsilon)))
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _remove_specks(ink: np.ndarray, min_area: int) -> np.ndarray:
    if min_area <= 0:
        return ink
    count, labels, stats, _ = cv2.connectedComponentsWithStats(ink.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def _strip_solid_fills(dark: np.ndarray, longest_side: int) -> np.ndarray:
    """Remove the inside of dark areas much wider than a stroke, keeping a stroke-wide rim.
    "Much wider" is against the page's size and against its own strokes (the median
    half-width along the dark areas' ridges, FILL_STROKE_RATIO x): a close-up's strokes
    are zoomed in, as wide as a small drawing's black hair."""
    dist = cv2.distanceTransform(dark.astype(np.uint8), cv2.DIST_L2, 5)
    ridge = (dist >= 1.0) & (dist >= cv2.dilate(dist, np.ones((3, 3), np.uint8)))
    # Only strokes that run at least the page's longest side in all say what a stroke is
    # (a lone black blob's ridge is its center).
    stroke = float(np.median(dist[ridge])) if ridge.sum() >= longest_side else 0.0
    half_width = max(3.0, SOLID_FILL_HALF_WIDTH * longest_side, FILL_STROKE_RATIO * stroke)
    rim = max(1.0, STROKE_HALF_WIDTH * longest_side, stroke)
    core = dist > half_width
    if not core.any():
        return dark
    # Grow the core back to where the area's rim starts (dist == rim): a stroke never has
    # a core, a wide fill keeps only its outer `rim` pixels as outline.
    size = 2 * int(half_width - rim) + 1
    inside = cv2.dilate(core.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) > 0
    return dark & ~(inside & (dist > rim))


def extract_lines(rgb: np.ndarray, cfg: LinesConfig | None = None) -> LineArt:
    """Ink mask of a page at its own resolution (processing happens at cfg.work_size)."""
    cfg = cfg or LinesConfig()
    h, w = rgb.shape[:2]
    work = resize_longest(rgb, cfg.work_size)
    page = analyse_page(work, detect_screens=cfg.descreen)
    kind, gray = page.style, page.gray
    if kind == LINE:
        # Already ink on paper: keep anti-aliased strokes, just clean the paper.
        ink = gray < LINE_INK_LEVEL
    else:
        if kind == GRAY and cfg.screentone_smoothing:
            # Fine texture the descreener did not take for a screen (light grain, film
            # noise) is flattened while the strokes' edges stay, so XDoG does not trace it.
            gray = cv2.bilateralFilter(gray, 7, 50, 5)
        soft = xdog(gray, cfg)
        ink = soft < 0.5
        # XDoG only outlines a thick stroke (its flat dark core has no edge response), so
        # dark pixels are ink too: stroke cores in color pages, solid blacks in gray pages.
        dark = gray < DARK_INK_LEVEL
        if kind == COLOR:
            # In color pages a wide dark area is a fill (black hair, a night sky), not a
            # stroke: keep only its outline ring.
            dark = _strip_solid_fills(dark, max(gray.shape))
        ink |= dark
    ink = _remove_specks(ink, cfg.min_component_area)
    lines = np.where(ink, 0, 255).astype(np.uint8)
    if lines.shape[:2] != (h, w):
        lines = cv2.resize(lines, (w, h), interpolation=cv2.INTER_LINEAR)
        lines = np.where(lines < 128, 0, 255).astype(np.uint8)
    tone = page.tone
    if tone is not None and tone.gray.shape != (h, w):
        tone = replace(tone, gray=cv2.resize(tone.gray, (w, h), interpolation=cv2.INTER_AREA))
    return LineArt(lines=lines, kind=kind, tone=tone)
