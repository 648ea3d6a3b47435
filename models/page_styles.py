"""What kind of page arrived: its style, and the page's lightness as the colorizer uses it.

    line   clean line art: paper and ink, nearly two-toned
    gray   a gray manga page: shading as continuous gray levels
    tone   a screentoned manga page: gray printed as halftone dots, lines or grains
    color  an already colored page (a chapter's color opening, a colored frame)

Pages are judged after white balance (the paper made white), so a yellowed scan is not a
color page and its paper is not a gray. Tone is told from gray by its screens
(models/descreen.py): a screened area, found by the spectral peaks of a periodic screen or
as paper textured by grains.
Small lettering looks like grains to the texture measures (many small ink pieces close
together), so a two-toned page (line art) whose grain texture lies only inside speech
balloons (models/lettering.py, on the page's ink as it is) is line art, not tone. Only
two-toned pages: the balloon test can take a light, noise-screened face for a balloon,
and such a page is not two-toned (the scan greys its grains).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from chromaflow.storage.images import resize_longest

from .descreen import Descreened, PageTone, descreen, white_balanced
from .lettering import find_balloons
from .segmentation import ball_radius, segment_line_art

LINE, GRAY, TONE, COLOR = "line", "gray", "tone", "color"
STYLES = (LINE, GRAY, TONE, COLOR)
# Older shards wrote "lineart" for line pages.
LEGACY_NAMES = {"lineart": LINE}

COLORED_SHARE = 0.02  # a page is color when this share of it is clearly colored
COLORED_CHROMA = 15.0  # CIELAB chroma of a clearly colored pixel (pastel skin is ~20)
PAPER_LEVEL, INK_LEVEL = 235, 80  # line art is paper (lighter) or ink (darker), little between
TWO_TONE_SHARE = 0.93  # line art: at least this share of pixels is paper or ink
MIN_TEXTURE_SHARE = 0.02  # tone: at least this share of the page is screened
LINE_INK_LEVEL = 160  # on a line page grays below this are ink (also when looking for balloons)


def style_name(kind: str) -> str:
    """The style name of a stored kind (accepts the legacy "lineart")."""
    return LEGACY_NAMES.get(kind, kind)


@dataclass
class PageAnalysis:
    style: str
    gray: np.ndarray  # uint8 H x W: white-balanced gray, descreened on tone pages
    tone: PageTone | None = None  # tone pages: what descreening found


def is_colored(rgb: np.ndarray) -> bool:
    """Clearly colored pixels (CIELAB chroma above COLORED_CHROMA, after a small blur so
    JPEG's chroma noise does not count) cover COLORED_SHARE of the page. Absolute chroma,
    not HSV saturation: a noisy near-black pixel is very "saturated" but not colored."""
    small = cv2.GaussianBlur(resize_longest(rgb, 512), (5, 5), 0)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    chroma = np.hypot(lab[..., 1] - 128.0, lab[..., 2] - 128.0)
    return float((chroma > COLORED_CHROMA).mean()) > COLORED_SHARE


def analyse_page(rgb: np.ndarray, detect_screens: bool = True) -> PageAnalysis:
    """Style of a page (RGB uint8) and its gray as the later steps should see it."""
    balanced = white_balanced(rgb)
    gray = cv2.cvtColor(balanced, cv2.COLOR_RGB2GRAY)
    if is_colored(balanced):
        return PageAnalysis(COLOR, gray)
    small = resize_longest(gray, 512)
    two_tone = float(((small > PAPER_LEVEL) | (small < INK_LEVEL)).mean()) > TWO_TONE_SHARE
    if detect_screens:
        balloons = functools.cache(lambda: balloon_mask(gray))  # found once, if at all
        result = descreen_page(gray, balloons)
        # Spectral peaks with no screened area behind them are the aliasing of long straight
        # strokes (a drawing zoomed in), not a screen.
        screened = result.texture_share >= MIN_TEXTURE_SHARE
        if screened and (result.peaks or not (two_tone and lettering_only(result.textured, balloons()))):
            tone = PageTone.of(result)
            return PageAnalysis(TONE, tone.gray, tone)
    return PageAnalysis(LINE if two_tone else GRAY, gray)


def descreen_page(gray: np.ndarray, balloons: Callable[[], np.ndarray] | None = None) -> Descreened:
    """The page descreened (models/descreen.py), its speech balloons' lettering never
    taken for a noise screen (`balloons`: the page's balloon_mask, when the caller keeps it)."""
    return descreen(gray, lettering=balloons or (lambda: balloon_mask(gray)))


def balloon_mask(gray: np.ndarray) -> np.ndarray:
    """The speech balloons (paper and lettering) of a page's own ink, as drawn (before
    descreening: gray < LINE_INK_LEVEL is ink)."""
    lines = np.where(gray < LINE_INK_LEVEL, 0, 255).astype(np.uint8)
    return find_balloons(segment_line_art(lines, radius=ball_radius(lines.shape)), lines, gray).mask


def lettering_only(textured: np.ndarray, balloons: np.ndarray) -> bool:
    """The textured area is (nearly all) inside the speech balloons (balloon_mask)."""
    return float((textured & ~balloons).mean()) < MIN_TEXTURE_SHARE


def classify_page(rgb: np.ndarray) -> str:
    """line | gray | tone | color (see the module docstring)."""
    return analyse_page(rgb).style
