"""A classical screentone renderer for ColorFlow's screenstyle augmentation.

ColorFlow (section 3.2) interpolates the gray page with ScreenVAE's screentone rendering at a
random weight. ScreenVAE's weights are not available, so the tone here is a clustered-dot
halftone (AM screen, 45 degrees): a pixel is ink when the screen's threshold at that pixel
is below the page's darkness. Thresholds are the ranks of a cos x cos spot function, so
the share of ink in a flat area equals its darkness (tone is preserved), white stays white
and solid black stays black.

Note for unification: the evaluation flow's `tone` style renderer (models/, written in
parallel) does the same job; the two should become one function.
"""

from __future__ import annotations

import numpy as np


def render_screentone(gray: np.ndarray, period: float = 6.0, angle_degrees: float = 45.0) -> np.ndarray:
    """Binary screentone version of a uint8 gray page (0 = ink, 255 = paper), same size."""
    if gray.ndim != 2:
        raise ValueError("render_screentone expects a single-channel uint8 page")
    if period <= 0:
        raise ValueError(f"screentone period must be positive, got {period}")
    height, width = gray.shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = np.deg2rad(angle_degrees)
    scale = 2.0 * np.pi / period
    u = (xx * np.cos(angle) + yy * np.sin(angle)) * scale
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) * scale
    spot = np.cos(u) * np.cos(v)  # 1 at dot centres, where ink starts first
    # thresholds uniform in (0, 1]: rank of the spot value, highest spot first
    order = np.argsort(-spot.ravel(), kind="stable")
    threshold = np.empty(spot.size, np.float32)
    threshold[order] = (np.arange(spot.size, dtype=np.float32) + 1) / spot.size
    darkness = 1.0 - gray.astype(np.float32).ravel() / 255.0
    ink = threshold <= darkness
    return np.where(ink, 0, 255).astype(np.uint8).reshape(height, width)


def screenstyle_variant(gray: np.ndarray, tone: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) * gray + weight * tone, as uint8 (ColorFlow's linear interpolation)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"screenstyle weight must be in [0, 1], got {weight}")
    mixed = (1.0 - weight) * gray.astype(np.float32) + weight * tone.astype(np.float32)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
