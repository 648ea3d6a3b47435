"""Printed-manga look-alikes of a colored drawing, for the evaluation: gray and screentoned
pages, and what a scanner does to them.

- `gray_page`: the drawing's luminance (a gray manga page: shading as gray levels).
- `tone_page`: the luminance printed as halftone screens, as B/W manga are printed: paper
  stays paper, black stays black, every gray in between becomes a screen of black dots,
  lines or noise grains whose coverage is the gray's darkness. Each flat color of the
  drawing takes one of the page's few screens (artists lay one tone sheet per part), so a
  page carries several screens at different periods and angles.
- `scan_degrade`: paper yellowing, slight blur, paper grain, slight rotation and JPEG.

Everything is seeded (numpy Generator) so a variant is the same from run to run.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SCREEN_KINDS = ("dots", "lines", "noise")
PERIODS = (4.0, 10.0)  # screen period range in pixels of the page
ANGLES = (0.0, 75.0)  # screen angle range in degrees
PAPER_LEVEL = 245  # grays at least this light stay paper (manga leaves light parts white)
SOLID_LEVEL = 40  # grays at most this dark print solid black
SUPERSAMPLE = 4  # screens are drawn at 4x and area-averaged: soft dot edges as in print


@dataclass(frozen=True)
class Screen:
    kind: str  # "dots", "lines" or "noise"
    period: float  # pixels between dot/line centers (noise: grain size x 3)
    angle: float  # degrees

    def describe(self) -> dict:
        return {"kind": self.kind, "period": round(self.period, 2), "angle": round(self.angle, 1)}


def luminance(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def gray_page(color: np.ndarray) -> np.ndarray:
    """The drawing as a gray manga page (RGB, R = G = B = luminance)."""
    return cv2.cvtColor(luminance(color), cv2.COLOR_GRAY2RGB)


def random_screens(rng: np.random.Generator, count: int) -> list[Screen]:
    """`count` screens of random kind, period and angle (dots most often, as in manga)."""
    screens = []
    for _ in range(count):
        kind = str(rng.choice(SCREEN_KINDS, p=[0.6, 0.25, 0.15]))
        screens.append(Screen(kind, float(rng.uniform(*PERIODS)), float(rng.uniform(*ANGLES))))
    return screens


def threshold_map(screen: Screen, rows: tuple[int, int], width: int, noise: np.ndarray | None) -> np.ndarray:
    """Threshold in [0, 1] for supersampled rows [r0, r1): a pixel of darkness d is inked
    where d > threshold. Dots: the classic cosine spot function; lines: a cosine across the
    lines; noise: `noise` (uniform white noise on a grain grid, drawn once per page)."""
    r0, r1 = rows
    if screen.kind == "noise":
        grain = max(1, int(round(screen.period / 3 * SUPERSAMPLE)))
        ys = np.arange(r0, r1) // grain
        xs = np.arange(width) // grain
        return noise[ys[:, None], xs[None, :]]
    ys, xs = np.mgrid[r0:r1, 0:width].astype(np.float32)
    a = np.deg2rad(screen.angle)
    k = 2 * np.pi / (screen.period * SUPERSAMPLE)
    u = (xs * np.cos(a) + ys * np.sin(a)) * k
    if screen.kind == "lines":
        return (1.0 - np.cos(u)) / 2.0
    v = (-xs * np.sin(a) + ys * np.cos(a)) * k
    # Spot function: dots grow from the cell centers and merge into a checkerboard at 50%.
    return (2.0 - np.cos(u) - np.cos(v)) / 4.0


BLOCK_ROWS = 64  # output rows drawn at a time (bounds the supersampled arrays' memory)


def tone_page(color: np.ndarray, rng: np.random.Generator, screens: list[Screen] | None = None
              ) -> tuple[np.ndarray, list[Screen]]:
    """The drawing printed with halftone screens. Returns (RGB page, the screens used).
    Each distinct flat color picks one of `screens` (default: 1-3 random ones)."""
    screens = screens or random_screens(rng, int(rng.integers(1, 4)))
    gray = luminance(color).astype(np.float32)
    h, w = gray.shape
    keys = (color[..., 0].astype(np.int64) << 16) | (color[..., 1].astype(np.int64) << 8) | color[..., 2]
    uniq, inverse = np.unique(keys.ravel(), return_inverse=True)
    screen_of_pixel = rng.integers(0, len(screens), len(uniq))[inverse].reshape(h, w).astype(np.uint8)
    s = SUPERSAMPLE
    noise = rng.random((h * s + 1, w * s + 1)).astype(np.float32) if any(sc.kind == "noise" for sc in screens) else None
    page = np.empty((h, w), np.uint8)
    for y0 in range(0, h, BLOCK_ROWS):
        y1 = min(h, y0 + BLOCK_ROWS)
        # Sample the gray at supersampled pixel centers (linear), the screen index nearest.
        big_h = (y1 - y0) * s
        yy = (np.arange(y0 * s, y1 * s, dtype=np.float32) + 0.5) / s - 0.5
        xx = (np.arange(w * s, dtype=np.float32) + 0.5) / s - 0.5
        map_x, map_y = np.meshgrid(xx, yy)
        darkness = 1.0 - cv2.remap(gray, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) / 255.0
        which = cv2.remap(screen_of_pixel, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
        ink = np.zeros((big_h, w * s), np.float32)
        for i, screen in enumerate(screens):
            mask = which == i
            if mask.any():
                t = threshold_map(screen, (y0 * s, y1 * s), w * s, noise)
                ink[mask] = (darkness[mask] > t[mask]).astype(np.float32)
        # Paper stays paper, solid blacks stay black (lines, black hair).
        ink[darkness <= 1.0 - PAPER_LEVEL / 255.0] = 0.0
        ink[darkness >= 1.0 - SOLID_LEVEL / 255.0] = 1.0
        small = cv2.resize(ink, (w, y1 - y0), interpolation=cv2.INTER_AREA)
        page[y0:y1] = np.clip(255.0 * (1.0 - small) + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(page, cv2.COLOR_GRAY2RGB), screens


def rotation_matrix(shape: tuple[int, int], degrees: float) -> np.ndarray:
    h, w = shape
    return cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, 1.0)


def rotate(img: np.ndarray, matrix: np.ndarray, nearest: bool = False) -> np.ndarray:
    """Rotate with white outside (the scanner bed is paper-colored after cropping)."""
    h, w = img.shape[:2]
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(255, 255, 255))


def scan_degrade(page: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A scan of the printed page: yellowed paper, slight blur, grain, a slight rotation
    (returned as its 2x3 matrix, so the ground truth can be rotated along) and JPEG."""
    matrix = rotation_matrix(page.shape[:2], float(rng.uniform(-1.5, 1.5)))
    out = rotate(page, matrix).astype(np.float32)
    out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.3, 0.8)))
    paper = np.array([1.0, rng.uniform(0.94, 1.0), rng.uniform(0.82, 0.97)], np.float32)  # yellowed paper
    out = out * paper[None, None, :]
    out += rng.normal(0.0, rng.uniform(2.0, 6.0), out.shape[:2])[..., None].astype(np.float32)  # paper grain
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    quality = int(rng.integers(55, 90))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), matrix
