"""Speech balloons with lettering, drawn over a page and its ground truth for the evaluation.

A balloon is a white ellipse with a black outline and a tail pointing at the drawing,
holding two to four lines of text set in a real font (Pillow's built-in scalable font,
Aileron, so nothing is downloaded). It goes where it hides least of the drawing. The
ground truth gets the same balloon: its interior must stay paper and its letters black.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

PHRASES = ("WHAT?!", "Wait for me!", "I told you so.", "No way...", "Let's go!", "Is that you?", "HEY!",
           "Over here!", "Not again...", "I'm hungry.", "Look out!", "Thank you!")
BALLOON_SIZE = (0.42, 0.26)  # width, height as shares of the page's longest side
OUTLINE = 0.006  # outline thickness, share of the longest side


@dataclass
class Balloon:
    area: np.ndarray  # bool H x W: the whole balloon, outline included
    interior: np.ndarray  # bool H x W: paper inside the balloon (letters and outline excluded)
    letters: np.ndarray  # bool H x W: the lettering's ink
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the balloon with its outline


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _letters(shape: tuple[int, int], center: tuple[int, int], box_w: int, box_h: int,
             rng: np.random.Generator) -> np.ndarray:
    """Text lines centered in the balloon, as an 8-bit image (0 = ink)."""
    n_lines = int(rng.integers(2, 5))
    size = max(8, int(box_h / (n_lines + 1.5)))
    font = _font(size)
    canvas = Image.new("L", (shape[1], shape[0]), 255)
    draw = ImageDraw.Draw(canvas)
    lines = [str(rng.choice(PHRASES)) for _ in range(n_lines)]
    widths = [draw.textlength(t, font=font) for t in lines]
    # Shrink until the widest line fits the ellipse's middle.
    while max(widths) > 0.78 * box_w and size > 8:
        size -= 1
        font = _font(size)
        widths = [draw.textlength(t, font=font) for t in lines]
    line_h = int(size * 1.15)
    y = center[1] - line_h * n_lines // 2
    for text, width in zip(lines, widths):
        draw.text((center[0] - width / 2, y), text, fill=0, font=font)
        y += line_h
    return np.asarray(canvas)


def _place(foreground: np.ndarray, box_w: int, box_h: int) -> tuple[int, int]:
    """The candidate center (corners and edge middles) where the balloon covers the least
    foreground."""
    h, w = foreground.shape
    xs = (box_w // 2 + 4, w // 2, w - box_w // 2 - 4)
    ys = (box_h // 2 + 4, h // 2, h - box_h // 2 - 4)
    best, best_cover = (xs[0], ys[0]), np.inf
    for y in ys:
        for x in xs:
            if (x, y) == (w // 2, h // 2):
                continue
            cover = foreground[max(0, y - box_h // 2):y + box_h // 2, max(0, x - box_w // 2):x + box_w // 2].sum()
            if cover < best_cover:
                best, best_cover = (x, y), cover
    return best


def add_balloon(page: np.ndarray, truth: np.ndarray, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, Balloon]:
    """(page, truth) with one balloon drawn over both, and where it is."""
    h, w = page.shape[:2]
    side = max(h, w)
    box_w, box_h = int(BALLOON_SIZE[0] * side), int(BALLOON_SIZE[1] * side)
    box_w, box_h = min(box_w, w - 8), min(box_h, h - 8)
    foreground = np.any(truth < 235, axis=2)
    cx, cy = _place(foreground, box_w, box_h)
    thickness = max(2, int(round(OUTLINE * side)))
    shape = np.zeros((h, w), np.uint8)
    cv2.ellipse(shape, (cx, cy), (box_w // 2, box_h // 2), 0, 0, 360, 255, -1, cv2.LINE_AA)
    # Tail: a triangle from the balloon's edge toward the page's center.
    direction = np.array([w / 2 - cx, h / 2 - cy], np.float64)
    direction /= max(1e-6, np.linalg.norm(direction))
    normal = np.array([-direction[1], direction[0]])
    base = np.array([cx, cy]) + direction * np.array([box_w, box_h]) * 0.35
    tip = np.array([cx, cy]) + direction * np.array([box_w, box_h]) * 0.75
    tail = np.array([base + normal * box_h * 0.12, base - normal * box_h * 0.12, tip]).astype(np.int32)
    cv2.fillPoly(shape, [tail], 255, cv2.LINE_AA)
    inside = shape >= 128
    ring = cv2.dilate(inside.astype(np.uint8), cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * thickness + 1, 2 * thickness + 1))) > 0
    letters = _letters((h, w), (cx, cy), box_w, box_h, rng)
    text = (letters < 128) & inside
    outline = ring & ~inside
    pages = []
    for img in (page, truth):
        out = img.copy()
        out[ring] = 255
        out[outline] = 0
        # Anti-aliased letters over the white interior.
        out[inside] = np.minimum(out[inside], letters[inside][:, None]) if out.ndim == 3 \
            else np.minimum(out[inside], letters[inside])
        pages.append(out)
    ys, xs = np.nonzero(ring)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    # Paper of the interior, kept away from the letters' anti-aliased rims.
    near_text = cv2.dilate(text.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    interior = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    return pages[0], pages[1], Balloon(ring, interior & ~near_text, text, box)
