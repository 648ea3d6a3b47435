"""What kind of page arrived: its style, and the page's lightness as the colorizer uses it.

    line   clean line art: paper and ink, nearly two-toned
    gray   a gray manga page: shading as continuous gray levels
    tone   a screentoned manga page: gray printed as halftone dots, lines or grains
    color  an already colored page (a chapter's color opening, a colored frame)

Pages are judged after white balance (the paper made white), so a yellowed scan is not a
color page and its paper is not a gray. Tone is told from gray by its screens
(models/descreen.py): spectral peaks of a periodic screen, or paper textured by grains.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from chromaflow.storage.images import resize_longest

from .descreen import PageTone, descreen, white_balanced

LINE, GRAY, TONE, COLOR = "line", "gray", "tone", "color"
STYLES = (LINE, GRAY, TONE, COLOR)
# Older shards wrote "lineart" for line pages.
LEGACY_NAMES = {"lineart": LINE}

COLORED_SHARE = 0.02  # a page is color when this share of it is clearly colored
COLORED_CHROMA = 15.0  # CIELAB chroma of a clearly colored pixel (pastel skin is ~20)
PAPER_LEVEL, INK_LEVEL = 235, 80  # line art is paper (lighter) or ink (darker), little between
TWO_TONE_SHARE = 0.93  # line art: at least this share of pixels is paper or ink
MIN_TEXTURE_SHARE = 0.02  # tone: at least this share of the page is screened


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
    if detect_screens:
        result = descreen(gray)
        peaks = result.peaks
        if peaks or result.texture_share >= MIN_TEXTURE_SHARE:
            tone = PageTone.of(result)
            return PageAnalysis(TONE, tone.gray, tone)
    small = resize_longest(gray, 512)
    two_tone = float(((small > PAPER_LEVEL) | (small < INK_LEVEL)).mean())
    return PageAnalysis(LINE if two_tone > TWO_TONE_SHARE else GRAY, gray)


def classify_page(rgb: np.ndarray) -> str:
    """line | gray | tone | color (see the module docstring)."""
    return analyse_page(rgb).style
